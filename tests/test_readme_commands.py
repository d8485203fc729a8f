"""Every command the README shows parses with its script's own argument parser, and runs.

The commands run as written, in README order, in a folder that looks like a checkout with
ImageNet and the published weight files beside it (stand-ins: see `readme_sandbox`). What is
changed to make them fit a 2-core CPU machine in a test is listed below and nothing else:
size options appended (argparse keeps the last value), GPU-only flags dropped without a GPU,
the quickstart's epoch count. Each run is checked for what the README says it does.
"""
from __future__ import annotations

import csv
import hashlib
import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import readme_sandbox
from markdown_links import broken_links
from paths import REPO
from PIL import Image
from tensorboard_server import tensorboard

from models.registry import get_architecture
from utils.context import gpu_available
from utils.imagenet import imagenet_class_names, imagenet_val_ground_truth
from utils.published import published
from utils.weights import layout_of, read_parameters, shapes_of

pytestmark = pytest.mark.slow  # every test here runs scripts end to end


# Appended to the README's arguments: smaller images, batches and runs, same code paths.
SMALLER = {
    "train.py": ["-e", "1", "-b", "4", "--spatial-size", "32"],
    "validation.py": ["-b", "8", "--spatial-size", "32"],
    "benchmark.py": ["-b", "2", "--spatial-size", "32", "--warmup", "0", "--iterations", "1"],
}
# Refused on a CPU with a one-line error (tests/test_train.py); dropped when there is no GPU.
GPU_ONLY_FLAGS = ("--channel-last",)
ENVIRONMENT = {"scripts/quickstart.sh": {"QUICKSTART_EPOCHS": "2"}}
NOT_RUN_HERE = {
    "bash scripts/test.sh": "it runs this test suite; CI runs it through .ci/run",
    "bash scripts/test.sh --fast": "it runs this test suite's fast subset; a test of the "
                                   "script's selection runs it with --collect-only",
    "mpirun -f hosts -n 8 python train.py -a resnet50 -b 32 -C cfg/cos90.yaml -T train/ -V "
    "val/": "it needs two machines; tests/test_two_hosts.py runs a small one on two network "
            "namespaces",
    "bash scripts/setup.sh --gpu": "it installs NNabla's CUDA extension (1.7 GiB of CUDA 12 "
                                   "libraries), useful only on a GPU machine",
}


def readme_commands() -> List[str]:
    """Shell commands of the README's indented code blocks, continuation lines joined."""
    commands, current = [], ""
    for line in (REPO / "README.md").read_text().splitlines():
        if not line.startswith("    ") or line.lstrip().startswith("|"):
            current = ""
            continue
        text = line.strip().split("  #")[0].strip()
        current = f"{current} {text}".strip() if current else text
        if current.endswith("\\"):
            current = current[:-1].strip()
            continue
        if re.match(r"(python|mpirun|bash|tensorboard) ", current):
            commands.append(current)
        current = ""
    return commands


COMMANDS = readme_commands()
IDS = [c if len(c) <= 80 else c[:77] + "..." for c in COMMANDS]


def script_of(argv: List[str]) -> str:
    return argv[argv.index("python") + 1] if "python" in argv else argv[1]


def test_the_readme_shows_commands():
    assert len(COMMANDS) >= 15
    assert set(NOT_RUN_HERE) <= set(COMMANDS), "NOT_RUN_HERE names a command the README lost"
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert "bash scripts/test.sh" in ci, "CI must run the README's test command"


@pytest.mark.parametrize("page", ["README.md", "results/README.md", "data/demo/README.md",
                                  "obsolete/README.md"])
def test_links_lead_somewhere(page):
    assert broken_links(REPO / page) == []


@pytest.mark.parametrize("command", COMMANDS, ids=IDS)
def test_readme_command_parses(command, capsys):
    argv = shlex.split(command)
    if argv[0] == "bash":
        assert (REPO / argv[1]).is_file(), command
        return
    if argv[0] == "tensorboard":  # installed by scripts/setup.sh --tensorboard (and --dev)
        assert argv[1] == "--logdir" and len(argv) == 3, command
        assert (Path(sys.executable).parent / "tensorboard").is_file(), command
        return
    script, args = script_of(argv), argv[argv.index("python") + 2:]
    assert script.endswith(".py") and (REPO / script).is_file(), command
    module = importlib.import_module(script[:-3])
    try:
        module.parse_args(args)
    except SystemExit as e:
        pytest.fail(f"{command!r} does not parse: {capsys.readouterr().err.strip()} ({e})")


class Sandbox:
    """The stand-in folder and what earlier commands left for later ones to check."""

    def __init__(self, root: Path):
        self.root = root
        self.monitors: List[Path] = []  # monitor folders made by train.py, in order
        self.results: Dict[str, dict] = {}
        self.original_digest = digest(root / "rn50-nhwc.h5")

    def run(self, command: str) -> subprocess.CompletedProcess:
        argv = shlex.split(command)
        script = script_of(argv)
        if not gpu_available():
            argv = [a for a in argv if a not in GPU_ONLY_FLAGS]
        argv += SMALLER.get(script, [])
        env = {**os.environ, "MPLBACKEND": "Agg", **ENVIRONMENT.get(script, {}),
               "PATH": f"{self.root / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"}
        before = set(self.root.glob("tmp.monitor.*"))
        result = subprocess.run(shlex.join(argv), shell=True, cwd=self.root, env=env,
                                capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, (
            f"{shlex.join(argv)} failed with status {result.returncode}:\n"
            f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
        self.monitors += sorted(set(self.root.glob("tmp.monitor.*")) - before)
        return result


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    if sys.prefix == sys.base_prefix:
        pytest.skip("the README's commands run in the virtual environment scripts/setup.sh makes")
    return Sandbox(readme_sandbox.build(tmp_path_factory.mktemp("readme") / "checkout"))


def check_setup(argv, result, box):
    assert "setup: no CPython" not in result.stderr


def check_quickstart(argv, result, box):
    final = re.search(r"Final top-1 error on the 400 demo validation images: ([0-9.]+) %",
                      result.stdout)
    assert final, result.stdout[-2000:]
    assert float(final.group(1)) < 60  # chance: 90 %; 2 epochs reach about 30 %
    out = box.root / re.search(r"Results in (\S+):", result.stdout).group(1)
    assert {"train", "validation.json", "label_words.csv"} <= {p.name for p in out.iterdir()}
    assert (out / "train" / "param_002.h5").is_file() and (out / "train" / "loss.png").is_file()


def check_infer(argv, result, box):
    names = set(imagenet_class_names())
    if "--json" in argv:
        out = json.loads(result.stdout)
        images = sorted(str(Path(argv[2]) / p.name) for p in (box.root / argv[2]).iterdir())
        assert sorted(p["image"] for p in out["predictions"]) == images
        for prediction in out["predictions"]:
            probabilities = [g["probability"] for g in prediction["top_k"]]
            assert len(probabilities) == 5 and probabilities == sorted(probabilities)[::-1]
            assert 0 < sum(probabilities) <= 1 + 1e-6
            assert all(g["name"] in names for g in prediction["top_k"])
    else:
        lines = result.stdout.splitlines()
        assert lines[0] == argv[2] and len(lines) == 6
        assert all(re.match(r"\s+\d\.\s+[0-9.]+ %\s+class \d+\s+\S", line) for line in lines[1:])
        known = published(argv[3])
        assert f"published {known.arch} weights" in result.stderr and "warning" not in \
            result.stderr
        if known.channel_last and not gpu_available():  # a GPU runs NHWC files as they are
            assert "converted from NHWC, 4 input channels to NCHW, 3 input channels" in \
                result.stderr


def check_create_input_files(argv, result, box):
    if "--train-fraction" in argv:  # the Caltech101 split
        out = box.root / argv[argv.index("-o") + 1]
        train = (out / "train_label").read_text().splitlines()
        val = (out / "val_label").read_text().splitlines()
        assert (len(train), len(val)) == (10 * 2 + 1, 10 * 1 + 1)  # 3 of 10 classes, 2 of one
        assert not any(line.startswith("Faces_easy/") for line in train + val)
        assert len((out / "label_words.csv").read_text().splitlines()) == 11
        return
    lines = (box.root / "train_label").read_text().splitlines()
    assert len(lines) == readme_sandbox.TRAIN_IMAGES and lines[0] == "n01440764/n01440764_1.JPEG 0"
    assert "984 class folder(s) without images" in result.stderr
    val = (box.root / "val_label").read_text().splitlines()
    if "--val-dir" in argv:
        truth = imagenet_val_ground_truth()
        assert val == [f"ILSVRC2012_val_{i:08d}.JPEG {truth[i - 1]}"
                       for i in range(1, readme_sandbox.VAL_IMAGES + 1)]
    else:
        assert len(val) == 50000
    assert len((box.root / "label_words.csv").read_text().splitlines()) == 1000


def check_train(argv, result, box):
    monitor = box.root / argv[argv.index("-m") + 1] if "-m" in argv else box.monitors[-1]
    assert (monitor / "param_001.h5").is_file() and list((monitor / "checkpoints").iterdir())
    assert len((monitor / "Validation-error.series.txt").read_text().splitlines()) == 1
    params = read_parameters(str(monitor / "param_001.h5"))
    scope = get_architecture(argv[argv.index("-a") + 1]).classifier_scope
    classes = [p.data.shape for name, p in params.items() if name.startswith(scope + "/")]
    wanted = int(argv[argv.index("--num-classes") + 1]) if "--num-classes" in argv else 1000
    assert wanted in classes[0]
    if "-t" in argv and not gpu_available():
        assert "-t half runs in float on the CPU" in result.stderr
    if "--model-load-path" in argv:
        assert "(new classifier); converted from NHWC" in result.stderr


def check_validation(argv, result, box):
    folder = Path(argv[argv.index("-V") + 1]).name
    if folder in readme_sandbox.EVAL_SETS:  # scored from its class folders, no list
        masked = folder in ("imagenet-a", "imagenet-r")
        assert f"{readme_sandbox.EVAL_SET_IMAGES} images: top-1 error" in result.stdout
        assert ("(masked to 200 classes" in result.stdout) == masked, result.stdout
        return
    if "--real-labels" in argv:
        assert f"({readme_sandbox.VAL_IMAGES - 1} images with ReaL labels)" in result.stdout
    if "--json" in argv:
        out = json.loads(result.stdout)
    else:
        found = re.search(r"(\d+) images: top-1 error ([0-9.]+) %, top-5 error ([0-9.]+) %, "
                          r"loss ([0-9.]+)", result.stdout)
        out = dict(num_images=int(found.group(1)), top1_error=float(found.group(2)) / 100,
                   top5_error=float(found.group(3)) / 100, loss=float(found.group(4)))
    assert out["num_images"] == readme_sandbox.VAL_IMAGES
    earlier = box.results.setdefault("validation", out)
    for key in ("top1_error", "top5_error", "loss"):  # one rank or two: the same numbers
        np.testing.assert_allclose(out[key], earlier[key], rtol=1e-4)


def check_convert(argv, result, box):
    layout = layout_of(shapes_of(read_parameters(str(box.root / argv[3]))))
    if "-3" in argv:
        assert (layout.channel_last, layout.channels) == (False, 3)
    else:
        assert (layout.channel_last, layout.channels) == (True, 4)
        assert digest(box.root / argv[3]) == box.original_digest  # the round trip is exact


def check_export(argv, result, box):
    outputs = argv[argv.index("-o") + 1:]
    outputs = outputs[:next((i for i, a in enumerate(outputs) if a.startswith("-")),
                            len(outputs))]
    for name in outputs:
        assert (box.root / name).stat().st_size > 0
        assert re.search(rf"wrote {re.escape(name)} .*top-1 equal", result.stdout)


def check_plot_curves(argv, result, box):
    out = argv[argv.index("-o") + 1] if "-o" in argv else argv[2]
    for name in ("loss.png", "error.png", "top5-error.png"):
        with Image.open(box.root / out / name) as img:
            assert img.format == "PNG" and img.width > 100


def check_benchmark(argv, result, box):
    archs = argv[argv.index("-a") + 1:argv.index("-b")]
    with open(box.root / "benchmark.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["arch"] for r in rows] == archs
    for row in rows:
        assert int(row["macs_per_image"]) > 0 and int(row["parameters"]) > 0
        assert float(row["infer_images_per_s"]) > 0 and float(row["train_images_per_s"]) > 0
    table = result.stdout.splitlines()
    assert [line.split()[0] for line in table[2:2 + len(archs)]] == archs


def check_tensorboard(argv: List[str], box: Sandbox) -> None:
    """The server on 127.0.0.1 (a free port appended) shows the runs' scalars; stopped after.
    A parent folder of runs (`runs/`, where the quickstart trains) gets the runs trained so
    far beside its own, to be compared."""
    logdir = box.root / argv[2]
    if not logdir.exists() and argv[2].startswith("tmp.monitor."):
        box.monitors[0].rename(logdir)  # the main training run's folder, as plot_curves
        box.monitors[0] = logdir
    if not (logdir / "tensorboard").is_dir():
        for monitor in box.monitors:
            shutil.copytree(monitor / "tensorboard", logdir / monitor.name / "tensorboard")
    expected = sorted(str(p.relative_to(logdir)) if p != logdir / "tensorboard" else
                      "tensorboard" for p in logdir.rglob("tensorboard"))
    assert expected == ["tensorboard"] or len(expected) >= 2, expected
    env = {**os.environ, "PATH": f"{box.root / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    with tensorboard(argv, box.root / "tensorboard.log", box.root, env) as server:
        runs = server.runs(expected)
        assert sorted(runs) == expected, server.log.read_text()
        for run in runs:
            assert server.get(f"/data/plugin/scalars/scalars?run={run}&tag=epoch/train_loss")


CHECKS = {
    "scripts/setup.sh": check_setup,
    "scripts/quickstart.sh": check_quickstart,
    "infer.py": check_infer,
    "create_input_files.py": check_create_input_files,
    "train.py": check_train,
    "validation.py": check_validation,
    "convert_parameter_format.py": check_convert,
    "export.py": check_export,
    "plot_curves.py": check_plot_curves,
    "benchmark.py": check_benchmark,
}


@pytest.mark.parametrize("command", COMMANDS, ids=IDS)
def test_readme_command_runs(command, sandbox):
    if command in NOT_RUN_HERE:
        pytest.skip(f"not run here: {NOT_RUN_HERE[command]}")
    argv = shlex.split(command)
    if argv[0] == "tensorboard":
        check_tensorboard(argv, sandbox)
        return
    script = script_of(argv)
    assert script in CHECKS, f"no check for {script}: add one so that {command!r} is tested"
    if script == "plot_curves.py" and not (sandbox.root / argv[2]).exists():
        sandbox.monitors[0].rename(sandbox.root / argv[2])  # the main training run's folder
    CHECKS[script](argv, sandbox.run(command), sandbox)
