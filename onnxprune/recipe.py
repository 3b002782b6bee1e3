"""Recipes: the fully resolved configuration of a run, saved beside the output, replayable.

A recipe records what was *decided* (the scoring variant and selection group ``auto`` chose,
the sparsity a search found), so replaying it on the same model and data reproduces the output
byte for byte without searching again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from .config import PruneConfig, option_name
from .deploy import DeployConfig
from .errors import UsageError

RECIPE_VERSION = 1
# PruneConfig fields that are tuples (JSON lists in the recipe).
TUPLE_FIELDS = ("exclude", "layer_overrides", "metric_outputs")
# Advanced PruneConfig fields written only when they differ from these defaults (recipes of
# runs that leave them alone stay as they were; a missing field replays its default).
# A recipe without one of them replays this value (stat_correction: recipes written before the
# option existed were pruned without it, whatever the method's default is now).
ADVANCED_DEFAULTS: dict[str, Any] = {
    "update_target": "pruned",
    "stat_correction": False,
    "refit_steps": 0,
    "reselect_mask": False,
    "refit_final": 0,
}
# Fields whose absence from a recipe (written before they existed) means the behaviour of
# that time, whatever their default is now.
BEFORE_FIELD: dict[str, Any] = {"structured_multiple": 1}


def recipe_path(output: Path) -> Path:
    return output.with_name(output.name + ".recipe.json")


def fingerprint(source: object) -> str | None:
    """sha256 over the calibration files (names and bytes, in order); None for Python sources."""
    if not isinstance(source, (str, Path)):
        return None
    root = Path(source)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(root) if file != root else file.name).encode())
        with file.open("rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def build_recipe(
    config: PruneConfig,
    variant: str,
    group: str | None,
    allocation: str,
    layer_sparsity: dict[str, float],
    calibration_fingerprint: str | None,
    versions: dict[str, str],
) -> dict[str, Any]:
    """Every PruneConfig field, with the method, group and allocation that actually ran."""
    recipe: dict[str, Any] = {
        f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.init
    }
    for name in TUPLE_FIELDS:
        recipe[name] = list(getattr(config, name))
    for name, default in ADVANCED_DEFAULTS.items():
        if recipe[name] == default:
            del recipe[name]
    recipe.update(
        recipe_version=RECIPE_VERSION,
        method=variant,
        requested_method=config.method,
        group=group,
        allocation=allocation,
        layers=layer_sparsity,
        calibration_fingerprint=calibration_fingerprint,
        versions=versions,
    )
    return recipe


# Recipe keys besides the PruneConfig fields, with their JSON types (None allowed for all).
_RECORD_KEYS: dict[str, tuple[type, ...]] = {
    "recipe_version": (int,),
    "requested_method": (str,),
    "layers": (dict,),
    "calibration_fingerprint": (str,),
    "versions": (dict,),
    # How the calibration set was split and read (a replay splits and reads it the same way).
    "held_out": (bool,),
    "search_split": (bool,),
    "calibration_input": (dict,),
    # The artifact options (``DeployConfig.arguments()``): a replay writes the same artifact.
    "deploy": (dict,),
}


def load_recipe(path: Path) -> tuple[PruneConfig, dict[str, Any]]:
    """The run configuration a recipe resolves to, and the recipe itself.

    Every setting goes through the same checks as the command-line options (``PruneConfig``):
    types, ranges and choices; unknown keys are reported, not ignored.
    """
    try:
        recipe = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UsageError(f"cannot read recipe {path}: {err}") from err
    except RecursionError as err:
        raise UsageError(f"cannot read recipe {path}: nested too deeply") from err
    if not isinstance(recipe, dict) or recipe.get("recipe_version") != RECIPE_VERSION:
        raise UsageError(f"{path} is not an onnxprune recipe (version {RECIPE_VERSION})")
    fields = {f.name: f for f in dataclasses.fields(PruneConfig) if f.init}
    unknown = sorted(set(recipe) - set(fields) - set(_RECORD_KEYS))
    if unknown:
        raise UsageError(f"recipe {path}: unknown key(s) {', '.join(map(repr, unknown))}")
    for key, types in _RECORD_KEYS.items():
        value = recipe.get(key)
        if value is not None and not isinstance(value, types):
            raise UsageError(f"recipe {path}: {key!r} must be a {types[0].__name__} ({value!r})")
    layers = recipe.get("layers") or {}
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in layers.values()):
        raise UsageError(f"recipe {path}: 'layers' must map weight names to sparsities")
    # A field missing from an older recipe (added since) takes its default.
    missing = [
        name
        for name, f in fields.items()
        if name not in recipe
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise UsageError(f"recipe {path} is incomplete: no {', '.join(missing)}")
    settings = {name: recipe[name] for name in fields if name in recipe}
    for name, value in {**ADVANCED_DEFAULTS, **BEFORE_FIELD}.items():
        settings.setdefault(name, value)
    for name in TUPLE_FIELDS:
        if name in settings:
            value = settings[name]
            if not isinstance(value, list):  # a string would become a tuple of characters
                raise UsageError(
                    f"recipe {path}: {option_name(name)} must be a list of strings, got {value!r}"
                )
            settings[name] = tuple(value)
    try:
        config = PruneConfig(**settings)
        if recipe.get("deploy") is not None:
            DeployConfig.from_record(recipe["deploy"])
    except UsageError as err:
        raise UsageError(f"recipe {path}: {err}") from err
    return config, recipe
