"""Stage 0: ``prune()``'s options -> a checked :class:`Request` (settings, data, paths).

Everything that can be refused before the model is loaded is refused here, in the order the
options are read: the keywords, the gates and artifact options, the recipe or the pruning
options, the data, and the paths the run would read and write.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..calibrate.sources import DataSource
from ..checks import Gates
from ..config import SENSITIVITY_ALLOCATIONS, PruneConfig, parse_pattern
from ..deploy import DeployConfig
from ..errors import UsageError
from ..inputs import DataOptions, read_image_spec, resolve_data, resolve_model
from ..io import BIG_MODEL_BYTES, default_output_path, is_big_model
from ..options import CONFIG, DEPLOY, GATES, default, only, options_for, resolve
from ..recipe import load_recipe
from .paths import check_paths


@dataclass(frozen=True)
class Settings:
    """What to do: the pruning configuration, the gates, the artifact, and a replayed recipe."""

    config: PruneConfig
    gates: Gates
    deploy: DeployConfig
    # The --recipe being replayed (None: none), and whether --update was stated (by the
    # caller, a config or a recipe) rather than left to the method's default.
    replayed: dict[str, Any] | None
    update_asked: bool
    search: bool  # --sparsity auto


@dataclass(frozen=True)
class Request:
    """One run, checked: settings, data sources and the files it reads and writes."""

    arguments: dict[str, Any]  # every option's value (``options.resolve``)
    settings: Settings
    calib: DataSource  # as given (with --method magnitude and no --calib: --eval)
    model_path: Path
    calib_source: DataSource
    eval_source: DataSource | None
    calib_input: dict[str, Any] | None  # how the calibration input was made (text, images)
    output_path: Path
    extra_outputs: dict[str, Path]  # "--report" / "--plot" -> path
    notes: list[str]  # warnings known before the model is loaded

    @property
    def config(self) -> PruneConfig:
        return self.settings.config

    @property
    def eval_data(self) -> DataSource | None:
        return self.arguments["eval_data"]  # type: ignore[no-any-return]

    @property
    def hold_out(self) -> Any:
        """The held-out split a recipe was made with (older recipes: as --eval decides now)."""
        replayed = self.settings.replayed
        return replayed.get("held_out") if replayed is not None else None


def prepare(
    model: str | Path, calib: DataSource | None, config: PruneConfig | None, options: Any
) -> Request:
    """Check ``prune()``'s options (``options``: its keywords) and name what the run reads."""
    arguments = resolve(options, explicit=("calib",), others=("config", "progress"))
    eval_data = arguments["eval_data"]
    if calib is None:
        if arguments["method"] != "magnitude" or eval_data is None:
            raise UsageError(
                "--calib is required (only --method magnitude runs without it, and then "
                "--eval measures fidelity)"
            )
        calib = eval_data  # magnitude reads no statistics; --eval is the check
    settings = _settings(arguments, config)
    given_path = Path(model)
    model_path = resolve_model(given_path, arguments["model_file"])
    notes = _recipe_notes(arguments, settings.replayed)
    data_options = _data_options(arguments, settings.replayed, given_path)
    calib_source, calib_input = resolve_data(calib, model_path, data_options)
    assert calib_source is not None
    eval_source, _ = resolve_data(eval_data, model_path, data_options)
    output = arguments["output"]
    output_path = Path(output) if output is not None else default_output_path(model_path)
    if output is None and settings.deploy.output_format == "ort":
        output_path = output_path.with_suffix(".ort")
    extra_outputs = check_paths(
        model_path,
        output_path,
        calib,
        eval_data,
        arguments["report_path"],
        arguments["plot"],
        arguments["recipe"],
    )
    config, default_notes = _costly_defaults_give_way(
        settings.config, model_path, settings.update_asked
    )
    return Request(
        arguments,
        dataclasses.replace(settings, config=config),
        calib,
        model_path,
        calib_source,
        eval_source,
        calib_input,
        output_path,
        extra_outputs,
        notes + default_notes,
    )


def _data_options(
    arguments: dict[str, Any], replayed: dict[str, Any] | None, given_path: Path
) -> DataOptions:
    """How text and image data become model inputs (a replayed recipe's --preprocess unless
    one is given)."""
    preprocess = arguments["preprocess"]
    if isinstance(preprocess, str):
        preprocess = read_image_spec(preprocess)
    if preprocess is None and replayed is not None:
        preprocess = (replayed.get("calibration_input") or {}).get("preprocess")
    tokenizer = arguments["tokenizer"]
    return DataOptions(
        Path(tokenizer) if tokenizer is not None else None,
        arguments["max_length"],
        preprocess,
        given_path if given_path.is_dir() else None,
    )


def _settings(arguments: dict[str, Any], config: PruneConfig | None) -> Settings:
    """The gates, the artifact and the pruning configuration (a recipe's, ``config``, or the
    options'), with the checks that involve several of them."""
    recipe, sweep = arguments["recipe"], arguments["sweep"]
    search = arguments["sparsity"] == "auto"
    # A config or recipe states --update outright; only a call that leaves it out gets the
    # method's default (which may give way, see _costly_defaults_give_way).
    update_asked = arguments["update"] is not None or recipe is not None or config is not None
    gates = Gates(**only(arguments, GATES))
    deploy = DeployConfig(**only(arguments, DEPLOY))
    replayed: dict[str, Any] | None = None
    if recipe is not None:
        config, replayed = load_recipe(Path(recipe))
        if replayed.get("deploy") is not None:  # older recipes: the options given now
            deploy = DeployConfig.from_record(replayed["deploy"])  # checked by load_recipe
    elif config is None:
        config = _config_from_arguments(only(arguments, CONFIG), search)
    if search and not gates.active:
        raise UsageError(
            "--sparsity auto needs a fidelity gate (e.g. --min-score 0.98 or --min-cosine 0.99)"
        )
    if search and config.nm is not None:
        raise UsageError("--sparsity auto cannot be combined with an N:M --pattern")
    for point in sweep:
        if not 0.0 <= point < 1.0:
            raise UsageError(f"--sweep values must be in [0, 1), got {point}")
    if arguments["plot"] is not None:
        from ..plot import require_matplotlib

        require_matplotlib()
    return Settings(config, gates, deploy, replayed, update_asked, search)


def _config_from_arguments(settings: dict[str, Any], search: bool) -> PruneConfig:
    """The PruneConfig of ``prune()``'s ``config`` options (``settings``); --sparsity may be
    "auto" (``search``), a string, or left out when --pattern N:M or --structured fixes it."""
    sparsity = settings["sparsity"]
    nm = parse_pattern(settings["pattern"])
    if (
        settings["structured_multiple"] != default("structured_multiple")
        and not (settings["structured"])
    ):
        raise UsageError("--structured-multiple needs --structured (it rounds the units kept)")
    if settings["structured_allocation"] is not None and not settings["structured"]:
        raise UsageError(
            "--structured-allocation needs --structured (it spreads the units removed)"
        )
    if search:
        sparsity = 0.5  # a placeholder; the search sets the real value
    if sparsity is None and nm is not None:
        sparsity = nm.sparsity
    if sparsity is None and settings["structured"]:
        sparsity = 0.0  # --structured alone: shrink only
    if sparsity is None:
        raise UsageError(
            "--sparsity is required (a number, or auto with a gate), an N:M --pattern, or "
            "--structured"
        )
    if isinstance(sparsity, str):
        try:
            sparsity = float(sparsity)
        except ValueError as err:
            raise UsageError(f"--sparsity must be a number or 'auto', got {sparsity!r}") from err
    if isinstance(sparsity, (int, float)) and 1.0 < sparsity < 100.0:  # a percentage
        raise UsageError(
            f"--sparsity must be in [0, 1), got {sparsity}: did you mean {sparsity / 100:g}?"
        )
    return PruneConfig(**{**settings, "sparsity": sparsity})


def _recipe_notes(arguments: dict[str, Any], replayed: dict[str, Any] | None) -> list[str]:
    """A warning for every option given (not its default) that the --recipe replaces: the
    pruning options, and the artifact options when the recipe records them."""
    recipe = arguments["recipe"]
    if recipe is None or replayed is None:
        return []
    replaced = [(o, "pruning") for o in options_for(CONFIG, internal=False)]
    if replayed.get("deploy") is not None:
        replaced += [(o, "artifact") for o in options_for(DEPLOY)]
    return [
        f"{option.flag} {_shown(arguments[option.name])} is ignored: --recipe {recipe} sets "
        f"the {kind} options"
        for option, kind in replaced
        if arguments[option.name] != option.default
    ]


def _shown(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _costly_defaults_give_way(
    config: PruneConfig, model_path: Path, update_asked: bool
) -> tuple[PruneConfig, list[str]]:
    """Where the method's defaults give way (a note in the report each): on a model over
    1.5 GB, sensitivity allocation (its candidates are judged in memory) and the OBS update (a
    K x K correlation per layer) are left out. Asked for explicitly, both run (or are refused)
    as asked. Every other option keeps the default allocation: an option that only observes
    (--sweep) or searches (--sparsity auto) never changes how a sparsity is allocated."""
    if not (model_path.is_file() and is_big_model(model_path)):
        return config, []
    big_reason = f"a model over {BIG_MODEL_BYTES / 1e9:.1f} GB"
    notes = []
    if config.allocation is None and config.allocation_mode in SENSITIVITY_ALLOCATIONS:
        notes.append(
            f"allocation: group, not the default sensitivity ({big_reason}; "
            "--allocation sensitivity asks for it)"
        )
        config = dataclasses.replace(config, allocation="group")
    if config.update and not update_asked:
        notes.append(f"no --update, not the default ({big_reason}; --update asks for it)")
        config = dataclasses.replace(config, update=False)
    return config, notes
