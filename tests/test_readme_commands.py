"""Every command the README and the docs/ pages show parses with its script's own argument
parser, and runs.

Each command is run once, even where two pages show it, as written, in a folder that looks
like a checkout with ImageNet and the published weight files beside it (stand-ins: see
`readme_sandbox`). What is changed to make them fit a 2-core CPU machine in a test is listed
below and nothing else: size options appended (argparse keeps the last value), the
quickstart's epoch count, and on a machine without a GPU the flags a CPU refuses
(`REFUSED_ON_CPU`): each such command is first run as written and its case asserts the exact
refusal, then runs it without them. What a CPU runs another way (`FALLBACKS_ON_CPU`: `-t half`
in float) is kept, and the case asserts the line that says so. No case depends on another
having run, so each runs alone and in any order: the module's sandbox runs, on first need,
the commands that write what a command reads (a list file, a training run: `PRODUCERS`; again
only if what it wrote is gone), and checks each command's outputs as soon as it ran, before
another command changes them; the command's own case reports that check whenever it comes. The
sandbox's `.venv` is its own (it sees the test environment's packages), so the set-up commands
run there cannot install into the developer's; the developer's is checked unchanged after the
module.
"""
from __future__ import annotations

import csv
import hashlib
import importlib
import json
import os
import re
import shlex
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest
import readme_sandbox
from paths import REPO
from PIL import Image
from tensorboard_server import tensorboard

from models.registry import get_architecture
from utils.labels.imagenet import imagenet_class_names, imagenet_val_ground_truth
from utils.process.context import gpu_available
from utils.weights.files import layout_of, read_parameters, shapes_of
from utils.weights.published import published

pytestmark = pytest.mark.slow  # every test here runs scripts end to end


# Appended to the pages' arguments: smaller images, batches and runs, same code paths.
SMALLER = {
    "train.py": ["-e", "1", "-b", "4", "--spatial-size", "32"],
    "validation.py": ["-b", "8", "--spatial-size", "32"],
    "benchmark.py": ["-b", "2", "--spatial-size", "32", "--warmup", "0", "--iterations", "1"],
}
# Refused on a CPU, before any work, with this line (status 2); dropped there after that.
REFUSED_ON_CPU = {
    "--channel-last": "error: --channel-last needs a GPU: NNabla's CPU backend runs NCHW only",
}
# Run another way on a CPU, with this in the run's stderr.
FALLBACKS_ON_CPU = {
    ("-t", "half"): "-t half runs in float on the CPU (NNabla's CPU half is ~200x slower)",
}
ENVIRONMENT = {"scripts/quickstart.sh": {"QUICKSTART_EPOCHS": "2"}}
NOT_RUN_HERE = {
    "bash scripts/test.sh": "it runs this test suite; CI runs it through .ci/run",
    "bash scripts/test.sh --fast": "it runs this test suite's fast subset; a test of the "
                                   "script's selection runs it with --collect-only",
    "mpirun -f hosts -n 8 python train.py -a resnet50 -b 32 -C cfg/cos90.yaml -T train/ -V "
    "val/ -m runs/resnet50": "it needs two machines; tests/test_two_hosts.py runs a small one "
                             "on two network namespaces",
    "bash scripts/setup.sh --gpu": "it installs NNabla's CUDA extension and, as root, Open "
                                   "MPI, then checks a GPU stack this machine has not; "
                                   "tests/test_setup_script.py runs it with stand-ins",
    "bash scripts/gpu_smoke.sh": "it needs a GPU; tests/test_gpu_smoke.py checks its one-line "
                                 "refusal without one",
    "bash scripts/gpu_smoke.sh --cpu": "tests/test_gpu_smoke.py runs it and checks each step",
    "python infer.py photo.jpg ResNet-50.nnp --labels label_words.csv -n default":
        "it needs NNabla's model-zoo file ResNet-50.nnp (a download); tests/test_nnp_model.py "
        "runs infer.py on an NNP written in that layout by NNabla's own saver",
}
# Programs whose commands are parsed here but not run (after the batch script, train.py's
# arguments).
NOT_RUN_PROGRAMS = {"sbatch": "it needs a Slurm cluster; tests/test_slurm.py and "
                              "tests/test_two_hosts.py submit the same batch script"}
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
LISTS = "python create_input_files.py -T train/ --val-dir val/ -o ."
TRAINED = ("mpirun -n 4 python train.py -a resnet50 -b 192 -t half --channel-last -C "
           "cfg/cos90.yaml -T train/ -V val/ -m runs/resnet50")
FINETUNED = ("python train.py --finetune --model-load-path rn50-nhwc_mixup250.h5 -a resnet50 "
             "--num-classes 5 -C cfg/finetune10_per_iteration.yaml -v 1 -m runs/flowers-rn50 "
             "-T flowers/train --train-list flowers/lists/train_label -V flowers/val "
             "--val-list flowers/lists/val_label")
# What the pages' commands read that another of their commands writes -> those commands.
PRODUCERS: Dict[str, Tuple[str, ...]] = {
    "val_label": (LISTS,),
    "train_label": (LISTS,),
    "flowers/lists/train_label": (
        "python create_input_files.py -T flowers/train --val-dir flowers/val -o flowers/lists",),
    "rn50-nchw.h5": ("python convert_parameter_format.py rn50-nhwc.h5 rn50-nchw.h5 -m nchw -3",),
    "rn50.nnp": ("python export.py rn50.h5 -a resnet50 -o rn50.nnp rn50.onnx",),
    "runs/resnet50": (TRAINED,),
    "runs/flowers-rn50": (FINETUNED,),
    "runs": (TRAINED, FINETUNED),  # a folder of runs to compare
}
# Files hidden while a command runs: the evaluation walkthrough's user has the validation
# folder and nothing else, so the list file another page's command wrote must not help.
WITHOUT = {"python validation.py rn50-nhwc_cos90.h5 -V val/": ("val_label",)}
# Scoring the flat validation folder without a list lands with branch traps (issue 30 item 3).
PENDING: Dict[str, str] = {}  # command -> why it is expected to fail for now (xfail, strict)


def page_commands(page: Path) -> List[str]:
    """Shell commands of a page's indented code blocks, continuation lines joined."""
    commands, current = [], ""
    for line in page.read_text().splitlines():
        if not line.startswith("    ") or line.lstrip().startswith("|"):
            current = ""
            continue
        text = line.strip().split("  #")[0].strip()
        current = f"{current} {text}".strip() if current else text
        if current.endswith("\\"):
            current = current[:-1].strip()
            continue
        if re.match(r"(python|mpirun|bash|tensorboard|sbatch) ", current):
            commands.append(current)
        current = ""
    return commands


def docs_commands() -> List[str]:
    """Every page's commands, each once, in the order of the pages (README first)."""
    return list(dict.fromkeys(c for page in PAGES for c in page_commands(page)))


COMMANDS = docs_commands()
IDS = [c if len(c) <= 80 else c[:77] + "..." for c in COMMANDS]


def script_of(argv: List[str]) -> str:
    return argv[argv.index("python") + 1] if "python" in argv else argv[1]


def test_the_pages_show_commands():
    assert len(COMMANDS) >= 30
    for table in (NOT_RUN_HERE, WITHOUT, PENDING):
        assert set(table) <= set(COMMANDS), "a table here names a command the pages lost"
    for commands in PRODUCERS.values():
        assert set(commands) <= set(COMMANDS), "PRODUCERS names a command the pages lost"
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert "bash scripts/test.sh" in ci, "CI must run the README's test command"


@pytest.mark.parametrize("command", COMMANDS, ids=IDS)
def test_readme_command_parses(command, capsys):
    argv = shlex.split(command)
    if argv[0] == "sbatch":  # the batch script's own options, then train.py's
        script = next(a for a in argv if a.endswith(".sbatch"))
        assert (REPO / script).is_file(), command
        argv = ["python", "train.py", *argv[argv.index(script) + 1:]]
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
    """The stand-in folder and the results of the commands run in it, each run once."""

    def __init__(self, root: Path):
        self.root = root
        self.ran: Dict[str, subprocess.CompletedProcess] = {}
        self.results: Dict[str, dict] = {}
        self.original_digest = digest(root / "rn50-nhwc.h5")
        self.started = 0.0  # when the last command started (time.time())
        self.refusals: Dict[str, Dict[str, str]] = {}  # command -> flag -> last stderr line
        self.failures: Dict[str, Exception] = {}  # command -> its check's failure

    def env(self, script: str) -> Dict[str, str]:
        return {**os.environ, "MPLBACKEND": "Agg", **ENVIRONMENT.get(script, {}),
                "PATH": f"{self.root / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"}

    def prepare(self, command: str) -> None:
        """Run the commands that write what `command` reads, where it is missing."""
        argv = shlex.split(command)
        wanted = [a.rstrip("/") for a in argv]
        if script_of(argv) == "train.py" and "--train-list" not in argv:
            wanted += ["train_label", "val_label"]  # the default lists
        for path in dict.fromkeys(w for w in wanted if w in PRODUCERS):
            producers = [p for p in PRODUCERS[path] if p != command]
            if path == "runs":  # a folder of runs to compare: each of them trained
                for producer in producers:
                    self.result_of(producer)
            elif not (self.root / path).exists():
                for producer in producers:
                    self.prepare(producer)
                    self.ran[producer] = self.run_and_check(producer)

    def result_of(self, command: str) -> subprocess.CompletedProcess:
        """`command`'s result: run now, after what it needs, unless it ran for another."""
        if command not in self.ran:
            self.prepare(command)
            self.ran[command] = self.run_and_check(command)
        return self.ran[command]

    def run_and_check(self, command: str) -> subprocess.CompletedProcess:
        """Run `command` and check what it wrote at once, before another command changes it (a
        list file rewritten, a folder of runs grown); a failed check is kept for the command's
        own case, whenever that comes."""
        result = self.execute(command)
        argv = shlex.split(command)
        try:
            CHECKS[script_of(argv)](argv, result, self)
            check_on_a_cpu(command, result, self)
        except Exception as failure:  # raised again by the command's own case
            self.failures.setdefault(command, failure)
        return result

    def execute(self, command: str) -> subprocess.CompletedProcess:
        argv = shlex.split(command)
        script = script_of(argv)
        argv += SMALLER.get(script, [])
        refused = set(argv) & set(REFUSED_ON_CPU) if not gpu_available() else set()
        if refused:
            self.refusals[command] = self.refusal(argv, script, refused)
            argv = [a for a in argv if a not in refused]
        hidden = [self.root / name for name in WITHOUT.get(command, ())
                  if (self.root / name).exists()]
        for path in hidden:
            path.rename(path.with_name(path.name + ".hidden"))
        self.started = time.time()
        try:
            result = subprocess.run(shlex.join(argv), shell=True, cwd=self.root,
                                    env=self.env(script), capture_output=True, text=True,
                                    timeout=900)
        finally:
            for path in hidden:
                path.with_name(path.name + ".hidden").rename(path)
        assert result.returncode == 0, (
            f"{shlex.join(argv)} failed with status {result.returncode}:\n"
            f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
        return result

    def refusal(self, argv: List[str], script: str, flags: set) -> Dict[str, str]:
        """The command as written, on this CPU: ended with status 2 and one error line, before
        any work; that line for each refused flag."""
        result = subprocess.run(shlex.join(argv), shell=True, cwd=self.root,
                                env=self.env(script), capture_output=True, text=True,
                                timeout=900)
        assert result.returncode == 2 and "Traceback" not in result.stderr, (
            result.returncode, result.stderr[-2000:])
        last = result.stderr.strip().splitlines()[-1]
        return {flag: last for flag in flags}


def check_on_a_cpu(command: str, result: subprocess.CompletedProcess, box: Sandbox) -> None:
    """Without a GPU, the command's refused flags were refused in the expected line, and each
    fallback was said; on a GPU, nothing was dropped."""
    argv = shlex.split(command)
    if gpu_available():
        assert command not in box.refusals
        return
    refusals = box.refusals.get(command, {})
    assert set(refusals) == set(REFUSED_ON_CPU) & set(argv)
    for flag, last in refusals.items():  # on one rank, or on each under mpirun
        assert re.fullmatch(rf"(\[rank \d+\] )?{re.escape(REFUSED_ON_CPU[flag])}", last), last
    for (flag, value), line in FALLBACKS_ON_CPU.items():
        if any(a == flag and b == value for a, b in zip(argv, argv[1:])):
            assert line in result.stderr, result.stderr[-2000:]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def installed_state(prefix: Path) -> Dict[str, int]:
    """What an installation into the environment at `prefix` changes: its site-packages and
    programs (each entry's and folder's modification time). Set-up's install stamps are left
    out: a set-up run elsewhere that installs nothing rewrites them."""
    folders = [Path(sysconfig.get_path("purelib", vars={"base": str(prefix),
                                                         "platbase": str(prefix)})),
               prefix / "bin"]
    entries = [p for folder in folders if folder.is_dir() for p in (folder, *folder.iterdir())]
    return {str(p): p.lstat().st_mtime_ns for p in entries}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    if sys.prefix == sys.base_prefix:
        pytest.skip("the pages' commands run in the virtual environment scripts/setup.sh makes")
    developers = installed_state(Path(sys.prefix))
    box = Sandbox(readme_sandbox.build(tmp_path_factory.mktemp("readme") / "checkout"))
    assert not (box.root / ".venv").is_symlink()  # set-up there installs into its own
    yield box
    assert installed_state(Path(sys.prefix)) == developers, \
        f"the pages' commands changed the environment running the tests, {sys.prefix}"


def test_the_sandbox_installs_into_its_own_environment(sandbox):
    """A set-up command run there cannot install into the environment running the tests."""
    result = subprocess.run(
        [str(sandbox.root / ".venv" / "bin" / "python"), "-c",
         "import sys, sysconfig, nnabla, mpi4py; print(sys.prefix); "
         "print(sysconfig.get_path('purelib'))"], capture_output=True, text=True, check=True)
    prefix, purelib = result.stdout.split()
    assert Path(prefix) == sandbox.root / ".venv" and Path(purelib).is_relative_to(prefix)
    assert not Path(prefix).is_symlink() and Path(sys.prefix).resolve() != Path(prefix)


def check_setup(argv, result, box):
    assert "setup: no CPython" not in result.stderr
    assert "setup: installing" not in result.stdout  # the test environment has it all


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
    if "flowers/train" in argv:  # the fine-tuning walkthrough's own class folders
        out = box.root / argv[argv.index("-o") + 1]
        train = (out / "train_label").read_text().splitlines()
        val = (out / "val_label").read_text().splitlines()
        own = readme_sandbox.OWN_CLASSES
        assert train == [f"{name}/{i}.jpg {k}" for k, name in enumerate(own) for i in (0, 1)]
        assert val == [f"{name}/2.jpg {k}" for k, name in enumerate(own)]
        words = (out / "label_words.csv").read_text().splitlines()
        assert [line.split(",")[1] for line in words] == list(own)
        assert not (box.root / "flowers" / "train" / "train_label").exists()
        return
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
    else:  # the 50,000 official images, which the sandbox does not have: removed, so that a
        assert len(val) == 50000  # command reading val_label gets the --val-dir one
        (box.root / "val_label").unlink()
    assert len((box.root / "label_words.csv").read_text().splitlines()) == 1000


def check_train(argv, result, box):
    assert "-m" in argv, "a training command of the docs gives -m, so that rerunning resumes"
    monitor = box.root / argv[argv.index("-m") + 1]
    assert (monitor / "param_001.h5").is_file() and list((monitor / "checkpoints").iterdir())
    assert len((monitor / "Validation-error.series.txt").read_text().splitlines()) == 1
    params = read_parameters(str(monitor / "param_001.h5"))
    scope = get_architecture(argv[argv.index("-a") + 1]).classifier_scope
    classes = [p.data.shape for name, p in params.items() if name.startswith(scope + "/")]
    wanted = int(argv[argv.index("--num-classes") + 1]) if "--num-classes" in argv else 1000
    assert wanted in classes[0]
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
    # The same weights in the same runtime give the same numbers, on one rank or two, under
    # any of their names (stand-ins of another kind are other weights; INT8 is another model).
    models = tuple(readme_sandbox.WEIGHT_STAND_INS.get(a, a) for a in
                   argv[argv.index("validation.py") + 1:] if a.endswith((".h5", ".nnp")))
    runtime = argv[argv.index("--runtime") + 1] if "--runtime" in argv else "nnabla"
    earlier = box.results.setdefault(("validation", models, runtime), out)
    for key in ("top1_error", "top5_error", "loss"):
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
        assert (box.root / out / name).stat().st_mtime >= box.started  # drawn by this run
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
    A parent folder of runs (`runs/`) shows each run below it, to be compared."""
    box.prepare(shlex.join(argv))
    logdir = box.root / argv[2]
    expected = sorted(str(p.relative_to(logdir)) if p != logdir / "tensorboard" else
                      "tensorboard" for p in logdir.rglob("tensorboard"))
    assert expected == ["tensorboard"] or len(expected) >= 2, expected
    with tensorboard(argv, box.root / "tensorboard.log", box.root, box.env("")) as server:
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


def case(command: str):
    """The command as a test case; one whose behaviour lands with another branch is xfail."""
    if command in PENDING:
        return pytest.param(command, marks=pytest.mark.xfail(reason=PENDING[command],
                                                             strict=True))
    return command


@pytest.mark.parametrize("command", [case(c) for c in COMMANDS], ids=IDS)
def test_readme_command_runs(command, sandbox):
    argv = shlex.split(command)
    if command in NOT_RUN_HERE or argv[0] in NOT_RUN_PROGRAMS:
        pytest.skip(f"not run here: {NOT_RUN_HERE.get(command) or NOT_RUN_PROGRAMS[argv[0]]}")
    if argv[0] == "tensorboard":
        check_tensorboard(argv, sandbox)
        return
    script = script_of(argv)
    assert script in CHECKS, f"no check for {script}: add one so that {command!r} is tested"
    sandbox.result_of(command)
    if command in sandbox.failures:
        raise sandbox.failures[command]
