"""utils/eval/evaluation.py: the masked evaluation loop, its series files, weight-file facts."""
from __future__ import annotations

import nnabla as nn
import numpy as np
import pytest
from data_fixtures import load_images, make_batches
from eval_fixtures import DEMO, demo_val_images, make_weight_file, randomise_parameters

import train
from models import build_network
from utils.cli import flags as cli
from utils.eval.evaluation import (
    EvaluationResult,
    build_evaluation_graph,
    evaluate,
    network_for_weights,
)
from utils.labels.file_list import FileList
from utils.outputs.sink import record_evaluation
from utils.process.comm import Communicator
from utils.process.context import float_context
from utils.process.runtime import Runtime
from utils.recipe.config import load_config
from utils.train.run import build_validator
from utils.train.spec import RunSpec
from utils.weights.files import (
    Layout,
    WeightFileError,
    adapt,
    classes_in,
    open_weight_file,
    read_parameters,
    runnable_layout,
)

SIZE = 32


@pytest.fixture(scope="module")
def demo13():
    images = demo_val_images(13)
    return FileList(str(DEMO / "val"), [n for n, _ in images],
                    np.array([c for _, c in images], np.int32))


def reference_metrics(files: FileList, logits_of):
    """Loss and errors computed image by image with numpy."""
    x = load_images([files.full_path(i) for i in range(len(files))], SIZE)
    logits = logits_of(x).astype(np.float64)
    logp = logits - logits.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    labels = files.labels
    loss = -logp[np.arange(len(labels)), labels].mean()
    rank = (logits > logits[np.arange(len(labels)), labels][:, None]).sum(1)
    return loss, (rank >= 1).mean(), (rank >= 5).mean()


@pytest.mark.parametrize("batch_size", [4, 13, 20])
def test_every_image_counts_once_whatever_the_batch(demo13, batch_size):
    nn.seed(0)
    graph = build_evaluation_graph("resnet18", (batch_size, 3, SIZE, SIZE), 10)
    randomise_parameters()

    def logits_of(x):
        logits, _ = build_network(nn.Variable.from_numpy_array(x), 10, "resnet18", test=True)
        logits.forward()
        return logits.d

    with make_batches(demo13, batch_size, spatial_size=SIZE) as batches:
        result = evaluate(graph, batches, Communicator(), progress=False)
    loss, top1, top5 = reference_metrics(demo13, logits_of)
    assert result.num_images == 13
    assert result.loss == pytest.approx(loss, rel=1e-5)
    assert result.top1_error == pytest.approx(top1)
    assert result.top5_error == pytest.approx(top5)
    assert 0 < result.top5_error < 1 and result.top5_error <= result.top1_error  # not trivial
    assert result.seconds > 0


def test_evaluation_graph_shares_the_training_parameters():
    x = nn.Variable((2, 3, SIZE, SIZE))
    build_network(x, 10, "mobilenet_v3_small", test=False)
    before = list(nn.get_parameters(grad_only=False))
    graph = build_evaluation_graph("mobilenet_v3_small", (4, 3, SIZE, SIZE), 10)
    assert list(nn.get_parameters(grad_only=False)) == before
    assert graph.probabilities.shape == (4, 10) and graph.sums.shape == (3,)


def contexts_of(output: nn.Variable) -> set:
    """(backends, array class) of every function that computes `output`."""
    found = set()
    output.visit(lambda f: found.add((tuple(f.context.backend), f.context.array_class)))
    return found


def test_train_and_validation_run_the_network_in_the_training_precision(
        demo13, half_context, tmp_path):
    """Under -t half (cudnn:half on a GPU; the CPU's half context here) train.py's validation
    between epochs and validation.py build their network in the training context, as the
    official does, with the loss and errors in float32: the same numbers from both."""
    rt = Runtime(half_context, float_context(half_context), "cpu", Communicator(), 0)
    args = train.parse_args(["-a", "resnet18", "--num-classes", "10", "--spatial-size",
                             str(SIZE), "-t", "half"])
    pipeline = cli.input_pipeline(args, rt, None)
    spec = RunSpec.from_args(args, load_config(args.train_config), pipeline, str(tmp_path))
    between_epochs = build_validator(
        spec, rt, pipeline.batches(demo13, 4, training=False), None).graph
    nn.clear_parameters()
    weights = open_weight_file(str(make_weight_file(tmp_path / "w.h5", "resnet18")), "resnet18")
    _, alone = network_for_weights(weights, "resnet18", 10, demo13, 4, rt, pipeline)
    training = (tuple(half_context.backend), half_context.array_class)
    for script, graph in (("train.py", between_epochs), ("validation.py", alone)):
        assert contexts_of(graph.scores) == {training}, script
        for metric in (graph.sums, graph.probabilities):
            assert metric.parent.context.backend == rt.float_ctx.backend, script


def test_mismatched_batches_are_refused(demo13):
    graph = build_evaluation_graph("resnet18", (4, 3, SIZE, SIZE), 10)
    with make_batches(demo13, 5, spatial_size=SIZE) as batches:
        with pytest.raises(ValueError, match=r"batches of \(5, 3, 32, 32\)"):
            evaluate(graph, batches, Communicator(), progress=False)


def test_record_appends_nnabla_series(tmp_path):
    result = EvaluationResult(1.2345678, 0.25, 0.0625, 16, 2.0)
    record_evaluation(result, str(tmp_path / "mon"), 0)
    record_evaluation(result, str(tmp_path / "mon"), 5)
    assert (tmp_path / "mon" / "Validation-loss.series.txt").read_text() == "0 1.23457\n5 1.23457\n"
    assert (tmp_path / "mon" / "Validation-error.series.txt").read_text() == "0 0.25\n5 0.25\n"
    assert (tmp_path / "mon" / "Validation-top5-error.series.txt").read_text() == (
        "0 0.0625\n5 0.0625\n")
    assert result.images_per_second == 8
    assert result.summary() == ("16 images: top-1 error 25.00 %, top-5 error 6.25 %, "
                                "loss 1.2346 (8.0 images/s)")


def test_weight_file_facts(tmp_path):
    path = make_weight_file(tmp_path / "mb.h5", "mobilenet_v3_small", num_classes=7)
    weights = open_weight_file(str(path), "mobilenet_v3_small")
    assert weights.layout == Layout(False, 3) and weights.num_classes == 7
    nhwc, _ = adapt(read_parameters(str(path)), Layout(True, 4))
    assert classes_in(nhwc, "mobilenet_v3_small") == 7
    assert classes_in(nhwc, "resnet50") is None  # no 'fc/' classifier: let loading name it
    assert runnable_layout(Layout(True, 4), on_gpu=True) == Layout(True, 4)
    assert runnable_layout(Layout(True, 4), on_gpu=False) == Layout(False, 3)
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"\x89HDF\r\n")
    with pytest.raises(WeightFileError, match="bad.h5: not a readable NNabla parameter file"):
        open_weight_file(str(bad), "resnet18")
