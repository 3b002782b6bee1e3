"""The files a run reads and writes: refuse an output that would overwrite an input or
another output, before anything is loaded."""

from __future__ import annotations

from pathlib import Path

from ..calibrate.sources import DataSource
from ..io import (
    check_model_suffix,
    check_output_path,
    external_data_files,
    is_big_model,
    read_files,
)
from ..recipe import recipe_path


def check_paths(
    model_path: Path,
    output_path: Path,
    calib: DataSource,
    eval_data: DataSource | None,
    report_path: str | Path | None,
    plot: str | Path | None,
    recipe: str | Path | None = None,
) -> dict[str, Path]:
    """Refuse outputs that would overwrite a file the run reads or each other; returns the side
    outputs.

    Read: the model, every external-data file it refers to, every file of the calibration and
    evaluation data (below a directory too), the --recipe file. Written: the model, its
    external data, the recipe, --report and --plot.
    """
    inputs: dict[str, Path] = {"the input model": model_path}
    data_files = external_data_files(model_path)
    inputs.update({f"the input model's external data {f.name}": f for f in data_files})
    for name, source in (("the calibration data", calib), ("the evaluation data", eval_data)):
        if isinstance(source, (str, Path)):
            inputs[name] = Path(source)
    if recipe is not None:
        inputs["the --recipe file"] = Path(recipe)
    protected = read_files(inputs)
    check_model_suffix(output_path)
    check_output_path(output_path, protected)
    protected["the output model"] = output_path
    if data_files or (model_path.is_file() and is_big_model(model_path)):
        data = output_path.with_name(output_path.name + ".data")
        check_output_path(data, protected, what="the output's external data")
        protected["the output's external data"] = data
    check_output_path(recipe_path(output_path), protected, what="the output's recipe")
    protected["the recipe"] = recipe_path(output_path)
    extra: dict[str, Path] = {}
    for option, value in (("--report", report_path), ("--plot", plot)):
        if value is not None:
            check_output_path(Path(value), protected, what=f"{option} path")
            protected[f"the {option} file"] = Path(value)
            extra[option] = Path(value)
    return extra
