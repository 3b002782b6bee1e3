"""``onnxprune --help`` in sections (basics first), without reordering the option decorators.

A click Command whose ``format_options`` files each option under the heading its declaration
names (``onnxprune.options``); CLI-only options land in the last section unless listed here.
"""

from __future__ import annotations

from typing import ClassVar

import click

from .options import BY_NAME, SECTIONS

# Options outside ``onnxprune.options`` (CLI-only) that belong under another heading than the
# last one.
CLI_SECTIONS: dict[str, str] = {"target_cosine": "Gates and search"}


def section_of(name: str) -> str:
    option = BY_NAME.get(name)
    return option.section if option is not None else CLI_SECTIONS.get(name, SECTIONS[-1])


class SectionedCommand(click.Command):
    """Options grouped by their headings, then the subcommands (``subcommands``: name -> help)."""

    subcommands: ClassVar[dict[str, str]] = {}

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows: dict[str, list[tuple[str, str]]] = {name: [] for name in SECTIONS}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                rows[section_of(param.name or "")].append(record)
        for name in SECTIONS:
            if rows[name]:
                with formatter.section(name):
                    formatter.write_dl(rows[name])
        if self.subcommands:
            with formatter.section("Commands"):
                formatter.write_dl(sorted(self.subcommands.items()))
