"""``onnxprune --help`` in sections (basics first), without reordering the option decorators.

A click Command whose ``format_options`` files each option under the section named in
``SECTIONS`` (by parameter name); options not listed land in the last section.
"""

from __future__ import annotations

from typing import ClassVar

import click

SECTION_ORDER = ("Basics", "Calibration data", "Method", "Structure", "Gates and search", "Output")

SECTIONS: dict[str, str] = {
    # Basics
    "calib": "Basics",
    "sparsity": "Basics",
    "output": "Basics",
    "model_file": "Basics",
    # Calibration data
    "tokenizer": "Calibration data",
    "max_length": "Calibration data",
    "preprocess": "Calibration data",
    "num_samples": "Calibration data",
    "batch_size": "Calibration data",
    "eval_data": "Calibration data",
    "sample_mask": "Calibration data",
    "seed": "Calibration data",
    # Method
    "method": "Method",
    "group": "Method",
    "allocation": "Method",
    "update": "Method",
    "stat_correction": "Method",
    "refit_steps": "Method",
    "reselect_mask": "Method",
    "refit_final": "Method",
    "min_row_weights": "Method",
    "sequential": "Method",
    "stages": "Method",
    "update_target": "Method",
    # Structure
    "pattern": "Structure",
    "structured": "Structure",
    "structured_score": "Structure",
    "exclude": "Structure",
    "layer_overrides": "Structure",
    # Gates and search
    "min_cosine": "Gates and search",
    "target_cosine": "Gates and search",
    "min_top1": "Gates and search",
    "max_abs_error": "Gates and search",
    "max_accuracy_drop": "Gates and search",
    "keep_on_fail": "Gates and search",
    "sweep": "Gates and search",
    "recipe": "Gates and search",
}


class SectionedCommand(click.Command):
    """Options grouped by ``SECTIONS``, then the subcommands (``subcommands``: name -> help)."""

    subcommands: ClassVar[dict[str, str]] = {}

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows: dict[str, list[tuple[str, str]]] = {name: [] for name in SECTION_ORDER}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                rows[SECTIONS.get(param.name or "", SECTION_ORDER[-1])].append(record)
        for name in SECTION_ORDER:
            if rows[name]:
                with formatter.section(name):
                    formatter.write_dl(rows[name])
        if self.subcommands:
            with formatter.section("Commands"):
                formatter.write_dl(sorted(self.subcommands.items()))
