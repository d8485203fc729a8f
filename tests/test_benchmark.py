"""benchmark.py and the MAC and parameter counts of utils/weights/stats.py.

The counts are checked on tiny graphs against numbers worked out by hand, and on ResNet-50
and MobileNetV2 at 224 against the published figures (graphs built, never run at size).
The script runs as a user runs it, on tiny images.
"""
import csv
import re
import subprocess
import sys
from pathlib import Path

import nnabla as nn
import nnabla.functions as F
import nnabla.parametric_functions as PF
import pytest
from paths import HANG_GUARD, REPO

import benchmark
from models import build_network
from utils.process.comm import Communicator
from utils.process.progress import Progress
from utils.process.run import run
from utils.weights.stats import (
    count_forward_values,
    count_macs,
    count_parameters,
    largest_step_values,
    model_stats,
)


def test_grouped_convolution_counts_its_input_channels_per_group():
    # 6 outputs over 8x8 positions, each from 4 / 2 groups = 2 channels x 3x3: 6912 per image.
    y = PF.convolution(nn.Variable((2, 4, 8, 8)), 6, (3, 3), pad=(1, 1), group=2)
    assert y.shape == (2, 6, 8, 8)
    assert count_macs(y) == 6 * 8 * 8 * 2 * 3 * 3


def test_strided_convolution_counts_its_output_positions_in_either_layout():
    # 9x9, kernel 3, stride 2, no padding: 4x4 outputs x 5 channels x 3 inputs x 3x3 = 2160.
    nchw = PF.convolution(nn.Variable((1, 3, 9, 9)), 5, (3, 3), stride=(2, 2), name="a")
    nhwc = PF.convolution(nn.Variable((1, 9, 9, 3)), 5, (3, 3), stride=(2, 2),
                          channel_last=True, name="b")
    assert count_macs(nchw) == count_macs(nhwc) == 16 * 5 * 3 * 9 == 2160


def test_depthwise_and_deconvolution():
    # Depthwise, multiplier 2: 6 output maps of 3x3 positions, each 3x3 taps of one channel.
    dw = PF.depthwise_convolution(nn.Variable((1, 3, 5, 5)), (3, 3), multiplier=2)
    assert dw.shape == (1, 6, 3, 3) and count_macs(dw) == 6 * 9 * 9
    # Deconvolution 4 -> 2 channels, kernel 2 stride 2: each of the 36 inputs feeds 2x2x2.
    up = PF.deconvolution(nn.Variable((1, 4, 3, 3)), 2, (2, 2), stride=(2, 2))
    assert up.shape == (1, 2, 6, 6) and count_macs(up) == 36 * 8


def test_affine_counts_every_row_before_base_axis():
    assert count_macs(PF.affine(nn.Variable((3, 5)), 7, name="flat")) == 35
    # base_axis 2: each image has 4 rows of 5 features.
    assert count_macs(PF.affine(nn.Variable((2, 4, 5)), 7, base_axis=2, name="rows")) == 4 * 35


def test_only_convolutions_and_affine_layers_are_counted():
    x = nn.Variable((2, 3, 8, 8))
    h = PF.convolution(x, 4, (3, 3), pad=(1, 1), name="conv")
    h = F.relu(PF.batch_normalization(h, name="bn"))
    h = F.average_pooling(h, (2, 2)) * 2.0 + 1.0
    y = F.softmax(PF.affine(h, 10, name="fc"))
    assert count_macs(y) == 4 * 64 * 3 * 9 + 4 * 4 * 4 * 10


def test_forward_values_are_every_output_per_image():
    x = nn.Variable((2, 3, 8, 8))
    h = F.relu(PF.convolution(x, 4, (3, 3), pad=(1, 1), name="conv"))  # 256 + 256 per image
    y = PF.affine(h, 10, name="fc")  # 10 per image
    assert count_forward_values(y) == 256 + 256 + 10


def test_the_largest_step_is_one_functions_data_in_and_out_without_parameters():
    nn.clear_parameters()
    x = nn.Variable((2, 3, 8, 8))  # 192 values per image
    h = PF.convolution(x, 4, (3, 3), pad=(1, 1), name="conv")  # 192 in, 256 out
    h = PF.batch_normalization(h, batch_stat=False, name="bn")  # 256 in, 256 out
    y = PF.affine(F.relu(h), 10, name="fc")  # relu 256 + 256, affine 256 + 10
    # The weights, bias and batch-norm statistics are left out; batch norm and relu tie.
    assert largest_step_values(y, nn.get_parameters(grad_only=False)) == 512
    assert largest_step_values(y, {}) > 512  # with the parameters counted
    nn.clear_parameters()


def test_parameters_are_the_trainable_values_the_graph_reads_each_once():
    x = nn.Variable((2, 3, 8, 8))
    h = PF.batch_normalization(PF.convolution(x, 4, (3, 3), name="conv"), name="bn")
    h = PF.affine(h, 5, name="fc")
    y = PF.affine(h, 5, name="fc2") + PF.affine(h, 5, name="fc2")  # one parameter, used twice
    PF.affine(x, 100, name="unused")  # registered, not part of y's graph
    expected = (4 * 3 * 9 + 4) + (4 + 4) + (4 * 6 * 6 * 5 + 5) + (5 * 5 + 5)  # BN statistics out
    assert count_parameters(y) == expected
    assert count_parameters(y, {}) == 0


@pytest.mark.parametrize("arch, published_macs, published_params", [
    ("resnet50", 4.1e9, 25.6e6),      # torchvision: 4.09 GFLOPS (MACs), 25,557,032 parameters
    ("mobilenet_v2", 0.30e9, 3.5e6),  # Sandler et al. 2018: 300 M MACs, 3.4 M parameters
])
def test_published_figures(arch, published_macs, published_params):
    logits, _ = build_network(nn.Variable((1, 3, 224, 224)), 1000, arch, test=True)
    stats = model_stats(logits)
    assert abs(stats.macs_per_image / published_macs - 1) < 0.05
    assert abs(stats.parameters / published_params - 1) < 0.05
    assert stats.parameters == sum(v.size for v in nn.get_parameters().values())


def run_benchmark(*args, cwd):
    return subprocess.run([sys.executable, str(REPO / "benchmark.py"), "-c", "cpu", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=HANG_GUARD)


def network_counts(arch, size):
    nn.clear_parameters()
    logits, _ = build_network(nn.Variable((1, 3, size, size)), 1000, arch, test=True)
    return count_macs(logits), sum(v.size for v in nn.get_parameters().values())


def test_the_script_prints_the_table_and_writes_the_csv(tmp_path):
    out = tmp_path / "new" / "speed.csv"
    result = run_benchmark("-a", "MobileNet_V3_Small", "-b", "2", "--spatial-size", "32",
                           "--warmup", "1", "--iterations", "2", "-t", "half", "-o", str(out),
                           cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "-t half runs in float on the CPU" in result.stderr
    assert "mobilenet_v3_small train" in result.stderr  # the progress bars
    lines = result.stdout.splitlines()
    assert lines[0].startswith(benchmark.processor_name())
    assert lines[1].split() == ["arch", "size", "params", "M", "GMACs", "infer", "img/s",
                                "train", "img/s", "batch", "layout", "precision", "runtime"]
    assert lines[2].split()[:2] == ["mobilenet_v3_small", "32x32"]
    assert lines[3] == f"wrote {out}"
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1
    row = rows[0]
    macs, params = network_counts("mobilenet_v3_small", 32)
    assert (int(row["macs_per_image"]), int(row["parameters"])) == (macs, params)
    assert float(row["infer_images_per_s"]) > 0 and float(row["train_images_per_s"]) > 0
    assert {k: row[k] for k in ("arch", "height", "width", "batch", "ranks", "layout",
                                "precision", "backend")} == {
        "arch": "mobilenet_v3_small", "height": "32", "width": "32", "batch": "2", "ranks": "1",
        "layout": "NCHW", "precision": "float", "backend": "cpu"}
    # The table shows the same numbers, rounded.
    cells = lines[2].split()
    assert cells[2] == f"{params / 1e6:.2f}" and cells[3] == f"{macs / 1e9:.3f}"
    # (the CSV keeps 0.01 image/s, the table 0.1: 266.9503 is 266.95 there and 267.0 here)
    assert float(cells[4]) == pytest.approx(float(row["infer_images_per_s"]), abs=0.05 + 1e-9)


@pytest.mark.slow
def test_two_networks_of_other_sizes_and_a_skipped_measurement(tmp_path):
    result = run_benchmark("-a", "resnet18", "efficientnet_b0", "-b", "2", "--spatial-size",
                           "32", "48", "--warmup", "0", "--iterations", "1", "--no-train",
                           cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "train" not in result.stderr.replace("--no-train", "")  # no training bar
    with open(tmp_path / "benchmark.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["arch"] for r in rows] == ["resnet18", "efficientnet_b0"]
    for row in rows:
        assert (row["height"], row["width"]) == ("32", "48")
        assert row["train_images_per_s"] == "" and float(row["infer_images_per_s"]) > 0
        nn.clear_parameters()
        logits, _ = build_network(nn.Variable((1, 3, 32, 48)), 1000, row["arch"], test=True)
        assert int(row["macs_per_image"]) == count_macs(logits)
    assert [line.split()[5] for line in result.stdout.splitlines()[2:4]] == ["-", "-"]


@pytest.mark.parametrize("argv, message", [
    (["--channel-last"], "--channel-last needs a GPU: NNabla's CPU backend runs NCHW only"),
    (["--no-infer", "--no-train"], "--no-infer and --no-train leave nothing to measure"),
    (["-o", "README.md/out.csv"], "cannot write to the -o folder"),
])
def test_user_errors_are_one_line(argv, message, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    status = run(lambda: benchmark.main(["-a", "resnet18", "-c", "cpu", *argv]))
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) >= 1 and message in err[-1]
    assert not (REPO / "benchmark.csv").exists()


def test_an_unknown_architecture_lists_the_known_ones(capsys):
    with pytest.raises(SystemExit) as e:
        benchmark.parse_args(["-a", "resnet50", "resnet51"])
    assert e.value.code == 2
    assert re.search(r": error: argument -a/--arch: unknown architecture 'resnet51'; "
                     r"available: resnet18, [a-z0-9_, ]+, efficientnet_l2$",
                     capsys.readouterr().err.splitlines()[-1])


def test_the_default_measures_every_architecture_once():
    from models import available_architectures

    assert benchmark.parse_args([]).arch == available_architectures()
    assert benchmark.parse_args(["-a", "resnet18", "RESNET18", "resnet34"]).arch == [
        "resnet18", "resnet34"]
    assert len(available_architectures()) == 22


class OtherRankTimeIsUp(Communicator):
    """One process standing for a job in which another rank's time is up after each step."""

    def all_reduce_sum(self, values):
        return [v + 1 for v in values]


@pytest.mark.parametrize("max_seconds, comm, timed", [
    (60.0, Communicator(), 4),
    (0.0, Communicator(), 1),
    (60.0, OtherRankTimeIsUp(), 1),  # every rank stops with it: training steps are collectives
])
def test_a_measurement_times_its_steps_after_the_warm_up_until_the_time_is_up(
        max_seconds, comm, timed):
    calls, finished = [], []
    bar = Progress(comm, 6, "test")
    steps, seconds = benchmark.timed_steps(lambda: calls.append(1), 2, 4, max_seconds, comm,
                                           bar, lambda: finished.append(len(calls)))
    bar.close()
    assert (steps, len(calls), finished) == (timed, 2 + timed, [2, 2 + timed])
    assert seconds > 0


@pytest.mark.parametrize("text", ["-1", "nan"])
def test_max_seconds_must_be_a_duration(text, capsys):
    with pytest.raises(SystemExit, match="^2$"):  # a usage error
        benchmark.parse_args(["--max-seconds", text])
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        f": error: argument --max-seconds: must be a number of seconds >= 0, got {text}")


@pytest.mark.slow
def test_under_mpirun_every_process_measures_and_rank_0_reports(tmp_path):
    mpirun = Path(sys.executable).parent / "mpirun"
    result = subprocess.run(
        [str(mpirun), "-n", "2", sys.executable, str(REPO / "benchmark.py"), "-c", "cpu", "-a",
         "mobilenet_v3_small", "-b", "2", "--spatial-size", "32", "--iterations", "2"],
        cwd=tmp_path, capture_output=True, text=True, timeout=HANG_GUARD)
    assert result.returncode == 0, result.stderr
    assert "2 processes (rates summed)" in result.stdout
    assert result.stdout.count("wrote benchmark.csv") == 1  # rank 0 alone reports
    with open(tmp_path / "benchmark.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert (row["ranks"], row["batch"]) == ("2", "2")
    assert float(row["train_images_per_s"]) > 0 and float(row["infer_images_per_s"]) > 0


@pytest.mark.parametrize("short_by, trained", [(1, False), (0, True)])
def test_a_training_step_that_would_not_fit_in_memory_is_not_measured(short_by, trained,
                                                                       tmp_path, monkeypatch):
    needed = 2 * 4 * 2 * network_stats_values("mobilenet_v3_small", 32)  # batch 2, 8 bytes
    monkeypatch.setattr(benchmark, "available_memory", lambda: needed - short_by)
    out = tmp_path / "b.csv"
    assert benchmark.main(["-a", "mobilenet_v3_small", "-b", "2", "--spatial-size", "32",
                           "--warmup", "0", "--iterations", "1", "-c", "cpu",
                           "-o", str(out)]) == 0
    with open(out, newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert (row["train_images_per_s"] != "") == trained
    assert float(row["infer_images_per_s"]) > 0


def network_stats_values(arch, size):
    nn.clear_parameters()
    logits, _ = build_network(nn.Variable((1, 3, size, size)), 1000, arch, test=True)
    return count_forward_values(logits)
