"""utils/outputs/sink.py: rank 0's sink writes every output of train.py and validation.py; the
sink of the other ranks takes the same calls and writes nothing."""
from __future__ import annotations

import inspect
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from paths import REPO

from utils.eval.evaluation import EvaluationResult
from utils.eval.per_class import ClassCounts
from utils.outputs.batch_grid import batch_grid
from utils.outputs.monitor import VALIDATION_EMA
from utils.outputs.sink import EpochResult, IterationPoint, NoOutputs, OutputSink, output_sink
from utils.process.errors import OutputError
from utils.recipe.config import load_config
from utils.weights.files import Parameter, read_parameters

NAMES = ["bag", "trouser", None]


def public_methods(cls: type) -> set:
    return {name for name, _ in inspect.getmembers(cls, inspect.isfunction)
            if not name.startswith("_")}


def test_the_other_ranks_sink_overrides_every_method_that_writes():
    """A method added to OutputSink and not to NoOutputs would write on every rank."""
    written = public_methods(OutputSink)
    assert {"claim_for_training", "evaluation", "weight_file", "batch"} <= written
    missing = sorted(name for name in written if name not in NoOutputs.__dict__)
    assert missing == []


def counts_of_three_classes() -> ClassCounts:
    counts = ClassCounts.empty(3)
    scores = np.array([[3.0, 1, 0], [0, 2, 1], [1, 0, 2], [2, 1, 0]])
    counts.add(scores, SimpleNamespace(labels=np.array([[0], [1], [1], [2]]),
                                       mask=np.ones((4, 1))))
    return counts


def a_grid():
    images = np.random.RandomState(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    return batch_grid(images, np.array([[0], [1]]), NAMES, False, "default")


def every_call(sink: OutputSink, folder: Path) -> None:
    """The calls train.py and validation.py make, in their order."""
    result = EvaluationResult(1.5, 0.25, 0.0625, 4, 2.0)
    sink.claim_for_training(str(folder / "checkpoints"))
    sink.check_room(1000, 3000)
    sink.run_description({"arch": "resnet18", "seed": 0}, load_config(
        str(REPO / "cfg" / "quickstart.yaml")), "quickstart.yaml")
    sink.start_session(0, 0, resumed=False, tensorboard=True)
    sink.session(0, {"arch": "resnet18"}, {"epochs": 2}, ["validation/loss"])
    sink.batch(a_grid(), 0)
    sink.iteration(IterationPoint(1, 2.0, 0.5, 0.1, 100.0))
    sink.epoch(EpochResult(0, 1, 2.0, 0.5, 3.0, 1, 0.1))
    sink.validation(result, 1, 1, counts=counts_of_three_classes(), names=NAMES)
    sink.validation(result, 1, 1, part=VALIDATION_EMA)
    sink.weight_file("param_001.h5", {"w": Parameter(np.ones((2, 2), np.float32), True)})
    sink.end_of_epoch()
    sink.finished(1)
    sink.close()
    sink.evaluation(result, "a summary", counts_of_three_classes(), NAMES, a_grid())
    sink.warn("a warning")


def test_rank_0_writes_every_output_and_the_others_nothing(tmp_path, capsys):
    lines = []
    rank0, rank1 = tmp_path / "rank0", tmp_path / "rank1"
    every_call(output_sink(str(rank0), 0, lines.append), rank0)
    assert {p.name for p in rank0.iterdir()} >= {
        "Arguments.txt", "cfg", "train_batch.png", "param_001.h5", "tensorboard",
        "Train-loss.series.txt", "Train-loss-iteration.series.txt",
        "Validation-loss.series.txt", "Validation-EMA-error.series.txt", "loss.png",
        "per_class.csv", "confusion.png", "val_batch.png"}
    assert (rank0 / "Arguments.txt").read_text() == "arch=resnet18\nseed=0\n"
    assert (rank0 / "cfg" / "quickstart.yaml").is_file()
    assert read_parameters(str(rank0 / "param_001.h5"))["w"].data.tolist() == [[1, 1], [1, 1]]
    # validation.py's series hold its evaluation alone, at index 0
    assert (rank0 / "Validation-error.series.txt").read_text() == "0 0.25\n"
    assert (rank0 / "per_class.csv").read_text().splitlines()[1:] == [
        "0,bag,1,0,0,,", "1,trouser,2,0.5,0,2,", "2,,1,1,0,0,bag"]
    out = capsys.readouterr()
    assert out.out == "a summary\n" and out.err == "a warning\n"
    assert lines[0].startswith("epoch 0: train loss 2.0000") and len(lines) == 3

    other = []
    every_call(output_sink(str(rank1), 1, other.append), rank1)
    assert not rank1.exists() and other == []
    assert capsys.readouterr() == ("", "")


def test_an_evaluation_folder_that_holds_a_training_run_is_refused_before_any_work(tmp_path):
    (tmp_path / "Train-loss.series.txt").write_text("0 1.0\n")
    with pytest.raises(OutputError, match=r"\(-M\) holds a training run"):
        output_sink(str(tmp_path), 0, print).claim_for_evaluation("-M")
    output_sink(str(tmp_path), 1, print).claim_for_evaluation("-M")  # (rank 0 decides)
