"""utils/deploy/quantize.py: INT8 models by ONNX Runtime's static quantization, calibrated on
a seeded sample of training images, cached by the calibration's content; export.py --int8,
validation.py --runtime onnxruntime-int8 (issue 33, item 2)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from eval_fixtures import (
    DEMO,
    demo_val_images,
    error_lines,
    make_weight_file,
    run_script,
    write_val_list,
)

from utils.deploy.quantize import (
    agreement,
    calibration_digest,
    calibration_files,
    int8_model_name,
)
from utils.labels.file_list import FileList
from utils.process.errors import UsageError
from utils.weights.files import open_weight_file

onnx = pytest.importorskip("onnx")
if tuple(int(part) for part in onnx.__version__.split(".")[:2]) < (1, 16):
    pytest.skip(f"ONNX Runtime's quantizer needs onnx >= 1.16, installed {onnx.__version__}: "
                "pip install --no-deps -r requirements-export.txt", allow_module_level=True)

CLASSES = sorted(os.listdir(DEMO / "train"))


def train_list(path, per_class: int) -> str:
    """A list of the first `per_class` demo training images of each class, sorted by class
    (as create_input_files.py writes them)."""
    rows = [f"{c}/{name} {i}\n" for i, c in enumerate(CLASSES)
            for name in sorted(os.listdir(DEMO / "train" / c))[:per_class]]
    path.write_text("".join(rows))
    return str(path)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return open_weight_file(str(make_weight_file(
        tmp_path_factory.mktemp("w") / "r18.h5", "resnet18", num_classes=10)), "resnet18")


def test_the_calibration_sample_is_seeded_and_spans_the_classes(tmp_path):
    listed = train_list(tmp_path / "train.txt", 5)
    sample = calibration_files(listed, str(DEMO / "train"), count=20)
    again = calibration_files(listed, str(DEMO / "train"), count=20)
    assert sample.paths == again.paths and len(sample) == 20
    assert sample.paths == sorted(sample.paths)  # (the list's order: by class)
    assert len(set(sample.labels.tolist())) >= 6  # not the first 4 classes of a sorted list
    assert len(calibration_files(listed, str(DEMO / "train"), count=500)) == 50
    folder = calibration_files(str(DEMO / "train" / "bag"), count=7)
    assert len(folder) == 7 and all(p.startswith(str(DEMO / "train" / "bag")) for p in
                                    folder.paths)
    with pytest.raises(UsageError, match=r"^--calibration .*nothing: no such list file or"):
        calibration_files(str(tmp_path / "nothing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no images in this folder"):
        calibration_files(str(tmp_path / "empty"))


def test_the_digest_follows_the_images_content_and_the_preprocessing(tmp_path):
    for name, content in (("a.jpg", b"one"), ("b.jpg", b"two")):
        (tmp_path / name).write_bytes(content)
    files = FileList.from_files([str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")])
    first = calibration_digest(files, "48x48 default")
    assert calibration_digest(files, "48x48 default") == first
    assert calibration_digest(files, "64x64 default") != first
    (tmp_path / "b.jpg").write_bytes(b"twO")
    assert calibration_digest(files, "48x48 default") != first
    assert int8_model_name("/c/m-b8-opset13.onnx", "ab" * 32, False) == \
        "m-b8-opset13-int8-calabababababababab.onnx"
    assert int8_model_name("/c/m.onnx", "ab" * 32, True) != int8_model_name("/c/m.onnx",
                                                                            "ab" * 32, False)


def test_agreement_counts_top1_and_measures_the_cosine():
    a = np.array([[1.0, 2.0, 3.0], [3.0, 0.0, 0.0]])
    b = np.array([[2.0, 4.0, 6.0], [0.0, 3.0, 0.0]])
    close = agreement(a, b)
    assert (close.images, close.top1_agreements) == (2, 1)
    assert close.mean_cosine == pytest.approx(0.5)


@pytest.mark.slow  # (an export, a quantization, three evaluations)
def test_int8_model_is_qdq_per_channel_cached_and_scored(weights, tmp_path, monkeypatch):
    import onnx
    from onnx import numpy_helper

    monkeypatch.setenv("NNABLA_IMAGENET_CACHE", str(tmp_path / "cache"))
    listed = train_list(tmp_path / "train.txt", 4)
    val_list = write_val_list(tmp_path / "val40.txt", demo_val_images(40))
    common = [weights.path, "-a", "resnet18", "--num-classes", "10", "--spatial-size", "32",
              "-V", "data/demo/val", "--val-list", val_list, "-b", "8", "--json",
              "--no-progress", "--runtime", "onnxruntime-int8", "--calibration", listed,
              "--calibration-root", DEMO / "train", "--calibration-images", "24"]
    first = run_script("validation.py", *common, "-M", tmp_path / "a", check=True)
    assert "INT8 model quantized on 24 images" in first.stderr
    (model,) = (tmp_path / "cache" / "onnx").glob("resnet18-*-b8-32x32-opset13-g2-int8-cal*.onnx")
    graph = onnx.load(str(model)).graph
    ops = {node.op_type for node in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    weights_int8 = [t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert len(weights_int8) >= 20  # every convolution's and the classifier's weights
    scales = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    per_channel = [node for node in graph.node if node.op_type == "DequantizeLinear"
                   and scales.get(node.input[1]) is not None and scales[node.input[1]].size > 1]
    assert len(per_channel) >= 20
    result = json.loads(first.stdout)
    assert result["num_images"] == 40 and 0 <= result["top1_error"] <= 1

    again = run_script("validation.py", *common, "-M", tmp_path / "b", check=True)
    assert "INT8 model cached" in again.stderr
    assert json.loads(again.stdout)["top1_error"] == result["top1_error"]
    other = run_script("validation.py", *common[:-1], "16", "-M", tmp_path / "c", check=True)
    assert "INT8 model quantized on 16 images" in other.stderr
    assert len(list((tmp_path / "cache" / "onnx").glob("*-int8-cal*.onnx"))) == 2

    missing = run_script("validation.py", *common[:-6], "-M", tmp_path / "d")
    assert missing.returncode == 2 and error_lines(missing.stderr)[-1] == (
        "error: --runtime onnxruntime-int8 needs --calibration: a list file or a folder of "
        "training images")
    stray = run_script("validation.py", *common[:-8], "--calibration", listed, "-M",
                       tmp_path / "e")
    assert stray.returncode == 2 and error_lines(stray.stderr)[-1].startswith(
        "error: --calibration ")


@pytest.mark.slow  # (an export and a quantization)
def test_export_py_int8_writes_a_quantized_model_close_to_the_float_one(weights, tmp_path):
    import onnx

    listed = train_list(tmp_path / "train.txt", 3)
    out = tmp_path / "r18-int8.onnx"
    done = run_script("export.py", weights.path, "-a", "resnet18", "--num-classes", "10",
                      "--spatial-size", "32", "-b", "10", "-o", out, "--int8", "--calibration",
                      listed, "--calibration-root", DEMO / "train", check=True)
    model = onnx.load(str(out))
    assert model.opset_import[0].version == 13
    assert any(node.op_type == "QuantizeLinear" for node in model.graph.node)
    line = [x for x in done.stdout.splitlines() if x.startswith(f"wrote {out}")][0]
    assert "calibrated on 30 images" in line and "top-1 equal for " in line
    cosine = float(line.rsplit("mean cosine of the logits ", 1)[1])
    assert cosine > 0.5  # (random weights: ranges of noise; a trained model is in the docs)
    nnp = run_script("export.py", weights.path, "-a", "resnet18", "--num-classes", "10",
                     "-o", tmp_path / "m.nnp", "--int8", "--calibration", listed)
    assert nnp.returncode == 2 and "--int8 writes ONNX models" in nnp.stderr
    opset = run_script("export.py", weights.path, "-a", "resnet18", "--num-classes", "10",
                       "-o", tmp_path / "m.onnx", "--int8", "--calibration", listed,
                       "--opset", "11")
    assert opset.returncode == 2 and "--int8 writes opset 13" in opset.stderr


@pytest.mark.slow  # (benchmark.py: an export and a quantization)
def test_benchmark_gives_int8_its_own_row(tmp_path):
    import csv

    out = tmp_path / "b.csv"
    run_script("benchmark.py", "-a", "resnet18", "-b", "2", "--spatial-size", "32",
               "--warmup", "0", "--iterations", "2", "--no-train", "--runtimes", "onnxruntime",
               "onnxruntime-int8", "-o", out, check=True)
    rows = list(csv.DictReader(out.open()))
    assert [(r["runtime"], r["precision"]) for r in rows] == [
        ("onnxruntime", "float"), ("onnxruntime-int8", "int8")]
    assert all(float(r["infer_images_per_s"]) > 0 for r in rows)
