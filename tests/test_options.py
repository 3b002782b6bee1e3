"""The option table (``onnxprune.options``) drives the CLI, prune(), recipes and the report.

Each option declared there must reach every place that reads options: a new option that a
generator skips fails here, not in a user's run.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path
from typing import Any

import builders
import numpy as np
import pytest

from onnxprune import PruneConfig, prune
from onnxprune.checks import Gates
from onnxprune.cli import command
from onnxprune.deploy import DeployConfig
from onnxprune.errors import UsageError
from onnxprune.options import (
    CONFIG,
    DEPLOY,
    FLAG,
    GATES,
    INT,
    KEYWORDS,
    NUMBER,
    NUMBERS,
    TEXTS,
    Option,
    Range,
    options_for,
)
from onnxprune.recipe import build_recipe, load_recipe

# Values the generic rule below cannot make up (syntax of their own), and settings an example
# needs besides itself.
_SPECIAL: dict[str, Any] = {
    "pattern": "2:4",
    "exclude": ("^conv.*",),
    "layer_overrides": ("fc1=0.3:wanda", "head=skip"),
    "metric": "cosine",
    "metric_outputs": ("logits[:, 1:]=top1",),
    "sample_mask": "attention_mask",
    "embedding_bits": 4,  # 8 or 4 only
}
_COMPANIONS: dict[str, dict[str, Any]] = {
    "pattern": {"sparsity": 0.5},
    "update_target": {"sequential": True},
}


def _example(option: Option, base: object) -> Any:
    """A valid value for ``option`` that differs from what ``base`` holds."""
    if option.name in _SPECIAL:
        return _SPECIAL[option.name]
    current = getattr(base, option.name)
    if option.choices is not None:
        return next(c for c in option.shown_choices() if c != current)
    if option.kind == FLAG:
        return not current
    if option.kind == INT:
        return (current or 1) + 1
    assert option.kind == NUMBER and option.range is not None, option
    rng = option.range
    return (rng.low + (rng.high if rng.high is not None else rng.low + 2.0)) / 2 + 0.0625


def test_every_option_is_a_cli_option_and_a_prune_keyword() -> None:
    params = {param.name: param for param in command.params}
    signature = inspect.signature(prune).parameters
    # What the command passes on when only MODEL is given: every declared default.
    with command.make_context("onnxprune", ["m.onnx"]) as ctx:
        given = ctx.params
    for option in KEYWORDS:
        param = params[option.name]
        assert option.flag in param.opts + param.secondary_opts, (option.name, param.opts)
        assert param.help == option.help
        if option.kind in (TEXTS, NUMBERS):
            assert tuple(given[option.name]) == option.default == (), option.name
        else:
            assert given[option.name] == option.default, option.name
        assert option.name in signature, option.name
        if option.name != "calib":  # positional
            assert signature[option.name].default == option.default, option.name
    # Nothing reaches the CLI or prune() without a declaration (besides the CLI's own).
    cli_only = {"model", "target_cosine", "as_json", "quiet", "verbose", "debug", "version"}
    assert set(params) - {o.name for o in KEYWORDS} == cli_only
    assert set(signature) - {o.name for o in KEYWORDS} == {"model", "config", "progress"}


@pytest.mark.parametrize(("carrier", "goes_to"), [(PruneConfig, CONFIG), (DeployConfig, DEPLOY)])
def test_typed_carriers_have_the_declared_fields_and_defaults(carrier: type, goes_to: str) -> None:
    fields = {f.name: f.default for f in dataclasses.fields(carrier) if f.init}
    declared = {o.name: o.default for o in options_for(goes_to)}
    assert set(fields) == set(declared)
    for name, value in fields.items():
        assert value is dataclasses.MISSING or value == declared[name], name


def test_gates_have_the_declared_fields() -> None:
    assert {o.name for o in options_for(GATES)} == {f.name for f in dataclasses.fields(Gates)}
    assert Gates() == Gates(**{o.name: o.default for o in options_for(GATES)})


@pytest.mark.parametrize("option", options_for(CONFIG), ids=lambda o: o.name)
def test_every_pruning_option_round_trips_through_a_recipe(option: Option, tmp_path: Path) -> None:
    base = PruneConfig(sparsity=0.4)
    value = _example(option, base)
    settings = {"sparsity": 0.4, **_COMPANIONS.get(option.name, {}), option.name: value}
    config = PruneConfig(**settings)
    assert getattr(config, option.name) != getattr(base, option.name)
    # A recipe records the allocation that ran (None: the method's, resolved).
    allocation = config.allocation_mode
    recipe = build_recipe(config, config.method, config.group, allocation, {}, None, {})
    path = tmp_path / "r.recipe.json"
    path.write_text(json.dumps(recipe))
    loaded, _ = load_recipe(path)
    assert getattr(loaded, option.name) == getattr(config, option.name)
    assert loaded == dataclasses.replace(config, allocation=allocation)


@pytest.mark.parametrize("option", options_for(DEPLOY), ids=lambda o: o.name)
def test_every_artifact_option_round_trips_through_a_recipe(option: Option) -> None:
    base = DeployConfig(quantize="int8")
    deploy = dataclasses.replace(base, **{option.name: _example(option, base)})
    record = json.loads(json.dumps(deploy.arguments()))
    assert DeployConfig.from_record(record) == deploy != base


def test_advanced_options_stay_out_of_recipes_that_leave_them_alone() -> None:
    recipe = build_recipe(PruneConfig(sparsity=0.5), "contrib", None, "group", {}, None, {})
    sparse = {o.name for o in options_for(CONFIG) if o.recipe_sparse}
    assert sparse == {
        "update_target",
        "stat_correction",
        "refit_steps",
        "reselect_mask",
        "refit_final",
        "thorough",
    }
    assert not sparse & set(recipe)
    assert {o.name for o in options_for(CONFIG)} - sparse <= set(recipe)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"sparsty": 0.5}, ("unknown option 'sparsty'", "did you mean sparsity")),
        ({"nonsense": 1}, ("unknown option 'nonsense'",)),
        ({"progres": True}, ("unknown option 'progres'", "did you mean progress")),
        ({"keep_on_fail": "yes"}, ("--keep-on-fail must be true or false",)),
        ({"sweep": "0.5"}, ("--sweep must be a list of numbers",)),
        ({"max_length": 0}, ("--max-length must be >= 1",)),
        ({"exclude": "conv"}, ("--exclude must be a list of strings",)),
        ({"batch_size": 0}, ("--batch-size must be >= 1",)),
        ({"min_cosine": "high"}, ("--min-cosine must be a number",)),
        ({"quantize": "int4"}, ("--quantize must be one of none, int8",)),
        ({"method": "obs"}, ("unknown --method 'obs'; choose one of",)),
    ],
)
def test_prune_refuses_bad_keywords_in_one_line(
    tmp_path: Path, options: dict[str, Any], words: tuple[str, ...]
) -> None:
    model = builders.save(builders.mlp_gemm(), tmp_path / "m.onnx")
    calib = builders.write_npz(
        tmp_path / "c.npz", builders.random_inputs(builders.mlp_gemm(), 8, 0)
    )
    output = tmp_path / "out.onnx"
    with pytest.raises(UsageError) as refused:
        prune(model, calib, sparsity=0.5, output=output, **options)
    message = str(refused.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message
    assert not output.exists()


def test_report_arguments_hold_every_pruning_and_artifact_option(tmp_path: Path) -> None:
    model = builders.save(builders.mlp_gemm(), tmp_path / "m.onnx")
    inputs = builders.random_inputs(builders.mlp_gemm(), 32, 0)
    calib = builders.write_npz(tmp_path / "c.npz", inputs)
    report = prune(
        model, calib, sparsity=0.5, method="wanda", exclude=["nothing"], output=tmp_path / "o.onnx"
    )
    expected = {o.name for o in options_for(CONFIG, internal=False) + options_for(DEPLOY)}
    assert expected <= set(report.arguments)
    assert report.arguments["exclude"] == ["nothing"] and report.arguments["method"] == "wanda"
    assert report.arguments["batch_size"] == 32 and report.arguments["quantize"] == "none"
    # The run's recipe replays to the same configuration.
    assert report.recipe is not None
    config, _ = load_recipe(Path(report.recipe))
    assert config.exclude == ("nothing",) and config.method == "wanda"
    assert np.isclose(config.sparsity, 0.5)


def test_range_text() -> None:
    assert str(Range(0.0, 1.0)) == "in [0, 1)"
    assert str(Range(0.0, 1.0, low_open=True, high_closed=True)) == "in (0, 1]"
    assert str(Range(1)) == ">= 1"
    assert Range(0.0, 1.0).holds(0.0) and not Range(0.0, 1.0).holds(1.0)
