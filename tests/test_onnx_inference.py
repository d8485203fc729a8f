"""utils/deploy/onnx_runtime.py: a weight file's ONNX model exported once, verified, cached by the
file's content, and run by ONNX Runtime with the logits of NNabla (issue 33, item 1's core)."""
from __future__ import annotations

import os

import numpy as np
import pytest
from eval_fixtures import make_weight_file

from utils.deploy.export import build_inference_graph, load_weights, sample_images
from utils.deploy.onnx_runtime import (
    ModelKey,
    OnnxNetwork,
    file_digest,
    onnx_model,
    threads_per_rank,
)
from utils.weights.files import open_weight_file

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return open_weight_file(str(make_weight_file(
        tmp_path_factory.mktemp("w") / "r18.h5", "resnet18", num_classes=10)), "resnet18")


@pytest.mark.slow  # (an export and its verification)
def test_the_model_is_exported_once_and_gives_nnablas_logits(weights, tmp_path):
    path, check = onnx_model(weights, "resnet18", 10, 4, (32, 32), folder=str(tmp_path))
    assert check is not None and check.passed and check.top1_agreements == 4
    assert os.path.basename(path) == (f"resnet18-{file_digest(weights.path)[:16]}-10c-b4-"
                                      "32x32-opset11-g2.onnx")
    written = os.stat(path).st_mtime_ns
    again, check_again = onnx_model(weights, "resnet18", 10, 4, (32, 32), folder=str(tmp_path))
    assert (again, check_again) == (path, None) and os.stat(path).st_mtime_ns == written

    graph = build_inference_graph("resnet18", 10, 4, (32, 32))
    load_weights(graph, weights)
    images = sample_images((4, 3, 32, 32), seed=7)
    network = OnnxNetwork(path, threads=1)
    assert network.input_shape == (4, 3, 32, 32)
    np.testing.assert_allclose(network.logits(images), graph.forward(images), rtol=1e-4,
                               atol=1e-4)


def test_the_name_follows_the_content_and_the_shape(weights, tmp_path):
    key = ModelKey("ab" * 32, "resnet18", 10, 4, (32, 32))
    assert key.file_name() == "resnet18-abababababababab-10c-b4-32x32-opset11-g2.onnx"
    assert ModelKey("ab" * 32, "resnet18", 10, 4, (32, 32), graph_revision=1).file_name() \
        != key.file_name()  # a model exported before the graph rewrites is not reused
    assert ModelKey("cd" * 32, "resnet18", 10, 4, (32, 32)).file_name() != key.file_name()
    assert ModelKey("ab" * 32, "resnet18", 10, 8, (32, 32)).file_name() != key.file_name()
    copy = tmp_path / "copy.h5"
    copy.write_bytes(open(weights.path, "rb").read())
    assert file_digest(str(copy)) == file_digest(weights.path)
    with open(copy, "r+b") as f:  # one byte changed: another digest
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 1]))
    assert file_digest(str(copy)) != file_digest(weights.path)


def test_the_cores_are_shared_among_a_machines_ranks():
    assert threads_per_rank(1, cores=8) == 8
    assert threads_per_rank(2, cores=8) == 4
    assert threads_per_rank(3, cores=2) == 1
    assert threads_per_rank(1) == len(os.sched_getaffinity(0))


@pytest.mark.slow  # (an export, two evaluations)
def test_evaluation_through_onnx_runtime_counts_what_nnabla_counts(weights, tmp_path,
                                                                     monkeypatch):
    """The same weight file over 40 demo images: the same top-1 and top-5 error counts, the
    loss within float32 rounding; the model exported into the cache once."""
    import nnabla as nn
    from eval_fixtures import DEMO, demo_val_images

    import train
    from utils.cli import flags as cli
    from utils.eval.evaluation import evaluate, network_for_weights
    from utils.labels.file_list import FileList
    from utils.process.comm import Communicator
    from utils.process.context import float_context, select_context
    from utils.process.runtime import Runtime

    monkeypatch.setenv("NNABLA_IMAGENET_CACHE", str(tmp_path / "cache"))
    images = demo_val_images(40)
    files = FileList(str(DEMO / "val"), [n for n, _ in images],
                     np.array([c for _, c in images], np.int32))
    ctx = select_context("cpu")[0]
    logged = []
    rt = Runtime(ctx, float_context(ctx), "cpu", Communicator(), 0)
    rt.log = logged.append
    args = train.parse_args(["-a", "resnet18", "--num-classes", "10", "--spatial-size", "32"])
    pipeline = cli.input_pipeline(args, rt, None)
    results = {}
    for runtime in ("nnabla", "onnxruntime"):
        nn.clear_parameters()
        batches, graph = network_for_weights(weights, "resnet18", 10, files, 8, rt, pipeline,
                                             engine=runtime)
        with batches:
            results[runtime] = evaluate(graph, batches, Communicator(), progress=False)
    ours, theirs = results["nnabla"], results["onnxruntime"]
    assert theirs.num_images == ours.num_images == 40
    assert round(theirs.top1_error * 40) == round(ours.top1_error * 40)
    assert round(theirs.top5_error * 40) == round(ours.top5_error * 40)
    assert 0 < ours.top5_error < 1
    assert theirs.loss == pytest.approx(ours.loss, rel=1e-4)
    exported = list((tmp_path / "cache" / "onnx").glob("resnet18-*-10c-b8-32x32-opset11-g2.onnx"))
    assert len(exported) == 1
    assert any(line.startswith("onnxruntime ") and "(exported and verified:" in line
               for line in logged)


@pytest.mark.slow  # (validation.py twice, an export)
@pytest.mark.parametrize("tta", ["none", "flip"])
def test_validation_py_scores_alike_through_both_runtimes(weights, tmp_path, monkeypatch, tta):
    import json

    from eval_fixtures import demo_val_images, error_lines, run_script, write_val_list

    monkeypatch.setenv("NNABLA_IMAGENET_CACHE", str(tmp_path / "cache"))
    val_list = write_val_list(tmp_path / "val40.txt", demo_val_images(40))
    common = [weights.path, "-a", "resnet18", "--num-classes", "10", "--spatial-size", "32",
              "-V", "data/demo/val", "--val-list", val_list, "-b", "8", "--json",
              "--no-progress", "--tta", tta]
    results = {}
    for runtime in ("nnabla", "onnxruntime"):
        done = run_script("validation.py", *common, "-M", tmp_path / runtime, "--runtime",
                          runtime, check=True)
        results[runtime] = json.loads(done.stdout)
    ours, theirs = results["nnabla"], results["onnxruntime"]
    for key in ("num_images", "top1_error", "top5_error", "worst_classes"):
        assert theirs[key] == ours[key], key
    assert theirs["loss"] == pytest.approx(ours["loss"], rel=1e-4)
    per_class = [(tmp_path / r / "per_class.csv").read_text() for r in ("nnabla", "onnxruntime")]
    assert per_class[0] == per_class[1]
    refused = run_script("validation.py", *common, "-M", tmp_path / "r", "--runtime",
                         "onnxruntime", "--recompute-bn", "2", "-T", "data/demo/train")
    assert refused.returncode == 2
    assert error_lines(refused.stderr)[-1] == (
        "error: --recompute-bn changes the network's statistics in NNabla: use it with "
        "--runtime nnabla")


@pytest.mark.slow  # (infer.py twice, an export)
def test_infer_py_gives_the_same_top5_through_both_runtimes(weights, tmp_path, monkeypatch):
    import json

    from eval_fixtures import DEMO, run_script

    monkeypatch.setenv("NNABLA_IMAGENET_CACHE", str(tmp_path / "cache"))
    images = [DEMO / "val" / f"ILSVRC2012_val_{i:08d}.JPEG" for i in (1, 2, 3, 4, 5)]
    top5 = {}
    for runtime in ("nnabla", "onnxruntime"):
        done = run_script("infer.py", *images, weights.path, "-a", "resnet18", "--num-classes",
                          "10", "--spatial-size", "32", "-b", "4", "--json", "--runtime",
                          runtime, check=True)
        top5[runtime] = [p["top_k"] for p in json.loads(done.stdout)["predictions"]]
    for ours, theirs in zip(top5["nnabla"], top5["onnxruntime"]):
        assert [g["class"] for g in theirs] == [g["class"] for g in ours]
        assert [g["probability"] for g in theirs] == pytest.approx(
            [g["probability"] for g in ours], abs=1e-4)


@pytest.mark.slow  # (benchmark.py: a measurement and an export)
def test_benchmark_gives_onnx_runtime_its_own_row(tmp_path):
    import csv

    from eval_fixtures import error_lines, run_script

    out = tmp_path / "b.csv"
    run_script("benchmark.py", "-a", "resnet18", "-b", "2", "--spatial-size", "32",
               "--warmup", "0", "--iterations", "2", "--no-train", "--runtimes", "nnabla",
               "onnxruntime", "-o", out, check=True)
    rows = list(csv.DictReader(out.open()))
    assert [(r["arch"], r["runtime"], r["precision"]) for r in rows] == [
        ("resnet18", "nnabla", "float"), ("resnet18", "onnxruntime", "float")]
    assert all(float(r["infer_images_per_s"]) > 0 and r["train_images_per_s"] == ""
               for r in rows)
    assert rows[0]["parameters"] == rows[1]["parameters"]
    nothing = run_script("benchmark.py", "-a", "resnet18", "--no-infer", "--runtimes",
                         "onnxruntime", "-o", tmp_path / "n.csv")
    assert nothing.returncode == 2 and error_lines(nothing.stderr) == [
        "error: --no-infer with --runtimes onnxruntime leaves nothing to measure (ONNX "
        "Runtime's rows are inference)"]


def test_an_earlier_benchmark_csv_without_the_runtime_column_is_still_ours(tmp_path):
    import benchmark

    old = tmp_path / "old.csv"
    old.write_text("arch,height,width,parameters,macs_per_image,infer_images_per_s,"
                   "train_images_per_s,batch,ranks,layout,precision,backend\n")
    assert benchmark.is_benchmark_csv(str(old))
    (tmp_path / "other.csv").write_text("arch,size\n")
    assert not benchmark.is_benchmark_csv(str(tmp_path / "other.csv"))
