#!/usr/bin/env python
"""Try every flag of every script with good and bad values, as a user would, and tabulate what
each run gives: a developer's check that a mistake ends in one clear line and a good value runs.

Each case is one run of a top-level script in a folder of its own (a subprocess at nice 10,
under a deadline, at most two at a time), on tiny inputs the tool makes first (a few demo
images, a 10-class mobilenet_v3_small weight file for 32x32 inputs, a 1-epoch recipe, a
monitor folder of one short training run). A case expects `ok` (status 0) or a refusal; a
refusal is `one-line` when the status is 2 and stderr ends in the project's line naming the
flag or file (`error: ...` or argparse's `<script>: error: ...`), with nothing else on stderr
but argparse's usage and the project's `warning:` lines. Anything else is a defect: a
traceback, a third-party line (NNabla's log, a Python warning, DALI's, MPI's, ONNX Runtime's),
another status, a refusal that does not name what to fix, a bad value accepted, a user's file
replaced, a run that hangs.

    .venv/bin/python scripts/probe_flags.py                    # every case; writes docs/probe.md
    .venv/bin/python scripts/probe_flags.py -k 'train-epochs'  # cases whose name matches
    .venv/bin/python scripts/probe_flags.py --list             # the cases, without running them
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures
import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "demo"
ARCH = "mobilenet_v3_small"
HUGE = str(2**63)  # beyond int64: where a value reaching NumPy or HParams used to fail
NEGATIVE_HUGE = str(-2**63 - 1)
UNWRITABLE = "/proc/probe-unwritable"  # a place even root cannot create files in

OK = "ok"
ONE_LINE = "one-line"
REFUSE = "refuse"
# The defects, as the table names them.
TRACEBACK = "traceback"
NOISE = "third-party line"
EXTRA = "extra lines"
STATUS = "wrong status"
UNCLEAR = "does not name it"
ACCEPTED = "bad value accepted"
REFUSED = "good value refused"
REPLACED = "user file replaced"
HUNG = "timeout"

# Lines that are not the project's: NNabla's log, Python warnings, DALI, MPI, ONNX Runtime.
FOREIGN = re.compile(
    r"\[nnabla\]\[(ERROR|WARNING|CRITICAL)\]|^\S*:\d+: \w*Warning: |^\s*warnings\.warn\(|"
    r"^\[/opt/dali|^\[DALI|"
    r"DALI error|^-{40,}$|Open MPI|ORTE|PMIX|MPI_ABORT|^\S* \[W:onnxruntime|\[E:onnxruntime|"
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \[[WE]")
PROJECT_ERROR = re.compile(r"^(error: |[\w.]+\.py: error: )")


@dataclasses.dataclass(frozen=True)
class Case:
    """One run: `args` after the script, with {ws} the fixtures' folder and {out} the case's
    own; `names`: what the refusal line must name (any one); `files`: written into {out}
    before the run ('' makes a folder), `keep`: those that must come out unchanged."""
    name: str
    script: str
    args: Tuple[str, ...]
    expect: str = REFUSE
    names: Tuple[str, ...] = ()
    files: Tuple[Tuple[str, str], ...] = ()
    keep: Tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Outcome:
    case: Case
    command: str
    status: Optional[int]
    outcome: str
    last_line: str
    seconds: float


PROJECT_LOG = re.compile(r"\[nnabla\]\[INFO\]|\d+%\||\r")  # the scripts' log and progress


def project_lines(stderr: str, script: str) -> List[str]:
    """stderr without argparse's usage block, the project's `warning:` lines, its log and its
    progress bars."""
    lines, in_usage = [], False
    for line in stderr.splitlines():
        if line.startswith("usage: "):
            in_usage = True
            continue
        if in_usage and (line.startswith(" ") or not line.strip()):
            continue
        in_usage = False
        if line.strip() and not line.startswith("warning: ") and not PROJECT_LOG.search(line):
            lines.append(line)
    return lines


def classify(expect: str, status: Optional[int], stderr: str, names: Sequence[str],
             script: str, replaced: bool = False) -> str:
    """The outcome of a run: OK or ONE_LINE when it did what `expect` says, else the defect."""
    if status is None:
        return HUNG
    if "Traceback (most recent call last)" in stderr:
        return TRACEBACK
    if replaced:
        return REPLACED
    foreign = [line for line in stderr.splitlines()
               if FOREIGN.search(line) and not PROJECT_ERROR.match(line)
               and not line.startswith("warning: ")]
    if foreign:
        return NOISE
    if expect == OK:
        return OK if status == 0 else REFUSED
    if status == 0:
        return ACCEPTED
    lines = project_lines(stderr, script)
    if status != 2:
        return STATUS
    if len(lines) != 1 or not PROJECT_ERROR.match(lines[0]):
        return EXTRA
    if names and not any(name in lines[0] for name in names):
        return UNCLEAR
    return ONE_LINE


def last_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""


# --- the tiny inputs -------------------------------------------------------------------------

QUICK_RECIPE = """\
weight_decay: 5.0e-05
momentum: 0.9
epochs: 1
label_smoothing: 0.1
loss_scaling: 128
mixup: 0
lr_scheduler:
  type: EpochCosineLearningRateScheduler
  args: {base_lr: 0.002, warmup_epochs: 0}
  per_iteration: false
"""


def _demo_lists(ws: Path) -> None:
    """Training and validation lists over demo images: 2 per class, and the first 10 val."""
    classes = sorted(p.name for p in (DEMO / "train").iterdir() if p.is_dir())
    rows = []
    for class_id, name in enumerate(classes):
        for image in sorted((DEMO / "train" / name).iterdir())[:2]:
            rows.append(f"{name}/{image.name} {class_id}\n")
    (ws / "train_list").write_text("".join(rows))
    truth = (DEMO / "val_ground_truth.txt").read_text().split()
    (ws / "val_list").write_text("".join(
        f"ILSVRC2012_val_{i:08d}.JPEG {truth[i - 1]}\n" for i in range(1, 11)))
    (ws / "labels.csv").write_text("".join(f"{i},{name}\n" for i, name in enumerate(classes)))
    scored = sorted({int(truth[i]) for i in range(10)})  # the val images' classes, and no other
    (ws / "mask.txt").write_text("".join(f"{i}\n" for i in scored))
    (ws / "images").mkdir(exist_ok=True)
    shutil.copy(DEMO / "val" / "ILSVRC2012_val_00000001.JPEG", ws / "images" / "a.JPEG")
    shutil.copy(DEMO / "val" / "ILSVRC2012_val_00000002.JPEG", ws / "images" / "b.JPEG")
    for tree, count in (("tree", 3), ("valtree", 1)):
        for name in ("cat", "dog"):
            (ws / tree / name).mkdir(parents=True, exist_ok=True)
            for i, image in enumerate(sorted((DEMO / "train" / "bag").iterdir())[:count]):
                shutil.copy(image, ws / tree / name / f"{name}_{i}.JPEG")


def _weight_file(path: Path) -> None:
    """A random 10-class mobilenet_v3_small for 32x32 inputs, built in a child so that this
    process stays free of NNabla."""
    code = ("import nnabla as nn\nfrom models import build_network\n"
            "from utils.weights.files import network_parameters, write_parameters\n"
            f"nn.seed(0)\nbuild_network(nn.Variable((1, 3, 32, 32)), 10, {ARCH!r}, test=True)\n"
            f"write_parameters({str(path)!r}, network_parameters())\n")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True)


def make_workspace(ws: Path) -> None:
    """The inputs every case reads; made once (a `ready` file marks a finished one)."""
    if (ws / "ready").exists():
        return
    ws.mkdir(parents=True, exist_ok=True)
    _demo_lists(ws)
    (ws / "quick.yaml").write_text(QUICK_RECIPE)
    (ws / "notes.txt").write_text("a user's notes, not an output of any script\n")
    (ws / "empty.txt").write_text("")
    (ws / "folder").mkdir(exist_ok=True)
    _weight_file(ws / "weights.h5")
    monitor = ws / "mon"
    if monitor.exists():
        shutil.rmtree(monitor)
    subprocess.run([sys.executable, str(REPO / "train.py"), *fill(TRAIN_ARGS, ws, ws),
                    "-m", str(monitor), "--no-tensorboard"], cwd=ws, check=True,
                   capture_output=True, env=_environment())
    (ws / "ready").write_text("")


# --- the cases -------------------------------------------------------------------------------

TRAIN_ARGS = ("-a", ARCH, "--num-classes", "10", "--spatial-size", "32", "-b", "4",
              "-C", "{ws}/quick.yaml", "-T", f"{DEMO}/train", "--train-list", "{ws}/train_list",
              "-V", f"{DEMO}/val", "--val-list", "{ws}/val_list", "-e", "1", "-v", "1",
              "-s", "1", "--dali-num-threads", "1", "-c", "cpu")
BASES: Dict[str, Tuple[str, ...]] = {
    "train.py": TRAIN_ARGS + ("-m", "{out}/run"),
    "validation.py": ("{ws}/weights.h5", "-a", ARCH, "--spatial-size", "32", "-V", f"{DEMO}/val",
                      "--val-list", "{ws}/val_list", "-b", "4", "-M", "{out}/val",
                      "--no-progress", "--dali-num-threads", "1", "-c", "cpu"),
    "infer.py": ("{ws}/images/a.JPEG", "{ws}/images/b.JPEG", "{ws}/weights.h5", "-a", ARCH,
                 "--spatial-size", "32", "-c", "cpu", "--dali-num-threads", "1"),
    "export.py": ("{ws}/weights.h5", "-a", ARCH, "--spatial-size", "32", "-o", "{out}/m.nnp"),
    "benchmark.py": ("-a", ARCH, "--num-classes", "10", "--spatial-size", "32", "-b", "2",
                     "--warmup", "0", "--iterations", "1", "-C", "{ws}/quick.yaml",
                     "-o", "{out}/bench.csv", "-c", "cpu"),
    "convert_parameter_format.py": ("{ws}/weights.h5", "{out}/converted.h5", "-m", "nhwc"),
    "create_input_files.py": ("-T", "{ws}/tree", "--val-dir", "{ws}/valtree", "-o", "{out}/lists",
                              "--no-progress", "--no-imagenet-check"),
    "plot_curves.py": ("{ws}/mon", "-o", "{out}/plots"),
}

POSITIVE = ("-1", "0", HUGE, "ten", "", "2.5")
NON_NEGATIVE = ("-1", HUGE, "ten", "")
CHOICE = ("bogus", "")
SPATIAL = ("0", "-3", HUGE, "x", "1000000")


def fill(args: Iterable[str], ws: Path, out: Path) -> List[str]:
    return [a.replace("{ws}", str(ws)).replace("{out}", str(out)) for a in args]


def with_flag(base: Sequence[str], flag: str, values: Sequence[str]) -> Tuple[str, ...]:
    """`base` with `flag` given `values` (replacing its own, removed with values None)."""
    args = list(base)
    if flag in args:
        at = args.index(flag)
        end = at + 1
        while end < len(args) and not (args[end].startswith("-") and len(args[end]) > 1
                                       and not args[end][1].isdigit()):
            end += 1
        del args[at:end]
    return tuple(args) + (flag, *values)


class CaseList:
    """The cases, built per script; `bad`/`good` add one with a flag's value changed."""

    def __init__(self) -> None:
        self.cases: List[Case] = []

    def add(self, case: Case) -> None:
        assert all(case.name != c.name for c in self.cases), case.name
        self.cases.append(case)

    def bad(self, script: str, flag: str, values: Iterable[str], names: Sequence[str] = (),
            also: Sequence[str] = (), base: Optional[Sequence[str]] = None) -> None:
        for value in values:
            label = value if value and len(value) < 24 else ("empty" if not value else "huge")
            label = re.sub(r"[^\w.+-]+", "_", label.replace("{ws}/", "").replace("{out}/", ""))
            self.add(Case(f"{_stem(script)}{flag}={label}", script,
                          with_flag(base or BASES[script], flag,
                                    value.split("\0") if value else [""])
                          + tuple(also), REFUSE, tuple(names) or (flag,)))

    def good(self, script: str, flag: str, *values: str, also: Sequence[str] = (),
             base: Optional[Sequence[str]] = None) -> None:
        label = "_".join(values) or "on"
        label = re.sub(r"[^\w.+-]+", "_", label.replace("{ws}/", "").replace("{out}/", ""))
        self.add(Case(f"{_stem(script)}{flag}={label}:good", script,
                      with_flag(base or BASES[script], flag, values) + tuple(also), OK))


def _stem(script: str) -> str:
    return script[:-3].replace("_", "-") + " "


def _runtime_flags(cases: CaseList, script: str, hang: bool) -> None:
    cases.bad(script, "-c", CHOICE + ("cudnn", "cuda"), names=("-c", "cud"))
    cases.bad(script, "-d", NON_NEGATIVE)
    cases.bad(script, "-t", CHOICE)
    cases.good(script, "-t", "half")
    if hang:
        cases.bad(script, "--hang-timeout", ("nan", "inf", "1e400", "x", ""))
        cases.good(script, "--hang-timeout", "-1")


def _dali_flags(cases: CaseList, script: str) -> None:
    cases.bad(script, "--dali-num-threads", POSITIVE + ("100000",))
    cases.bad(script, "--dali-prefetch-queue", POSITIVE + ("100000",))
    cases.bad(script, "--dali-nvjpeg-memory-padding-mb", NON_NEGATIVE + ("4096",))
    cases.good(script, "--dali-prefetch-queue", "1")


def _network_flags(cases: CaseList, script: str, num_classes: bool = True) -> None:
    cases.bad(script, "-a", ("resnet", "") + (("mobilenet_v2",) if num_classes else ()),
              names=("-a", "mobilenet_v2", "weights.h5"))
    cases.bad(script, "--spatial-size", SPATIAL + ("32\x0032\x0032",))
    cases.good(script, "--spatial-size", "32", "40")
    if num_classes:
        cases.bad(script, "--num-classes", POSITIVE + ("7",), names=("--num-classes",
                                                                    "weights.h5"))


def _input_file(cases: CaseList, script: str, flag: str, kind_wrong: str,
                also: Sequence[str] = ()) -> None:
    """A file to read: missing, a folder, empty, of another kind."""
    cases.bad(script, flag, ("{ws}/missing.file", "{ws}/folder", "{ws}/empty.txt", kind_wrong),
              names=(flag, "missing.file", "folder", "empty.txt", Path(kind_wrong).name),
              also=also)


def _output_file(cases: CaseList, script: str, flag: str, kind: str,
                 makes_parent: bool = True) -> None:
    """A file to write: a folder, under a missing folder (made), under a file, unwritable,
    and an existing file of another kind that must stay as it was."""
    stem = _stem(script)
    names = (flag, "folder", "notes.txt", "probe-unwritable", "keep")
    for label, value in (("folder", "{ws}/folder"), ("under-file", "{ws}/notes.txt/x" + kind),
                         ("unwritable", UNWRITABLE + "/x" + kind)):
        cases.add(Case(f"{stem}{flag}={label}", script,
                       with_flag(BASES[script], flag, [value]), REFUSE, names))
    cases.add(Case(f"{stem}{flag}=missing-parent" + (":good" if makes_parent else ""), script,
                   with_flag(BASES[script], flag, ["{out}/new/sub/x" + kind]),
                   OK if makes_parent else REFUSE, ("sub",)))
    cases.add(Case(f"{stem}{flag}=other-kind", script,
                   with_flag(BASES[script], flag, ["{out}/keep" + kind]), REFUSE, names,
                   files=(("keep" + kind, "a user's file, not an output\n"),),
                   keep=("keep" + kind,)))


def _output_dir(cases: CaseList, script: str, flag: str) -> None:
    stem = _stem(script)
    names = (flag, "notes.txt", "probe-unwritable", "a-file")
    for label, value in (("file", "{ws}/notes.txt"), ("under-file", "{ws}/notes.txt/sub"),
                         ("unwritable", UNWRITABLE)):
        cases.add(Case(f"{stem}{flag}={label}", script, with_flag(BASES[script], flag, [value]),
                       REFUSE, names))
    cases.add(Case(f"{stem}{flag}=existing-file", script,
                   with_flag(BASES[script], flag, ["{out}/a-file"]), REFUSE, names,
                   files=(("a-file", "a user's file\n"),), keep=("a-file",)))
    cases.add(Case(f"{stem}{flag}=missing-parent:good", script,
                   with_flag(BASES[script], flag, ["{out}/new/sub"]), OK))


def _input_dir(cases: CaseList, script: str, flag: str) -> None:
    cases.bad(script, flag, ("{ws}/missing.dir", "{ws}/notes.txt"),
              names=(flag, "missing.dir", "notes.txt"))


def _int8_flags(cases: CaseList, script: str, int8: Sequence[str]) -> None:
    """--calibration and --calibration-root: without INT8, a missing list or folder."""
    stem = _stem(script)
    cases.add(Case(f"{stem}--calibration without int8", script,
                   BASES[script] + ("--calibration", "{ws}/images"), REFUSE, ("--calibration",)))
    cases.add(Case(f"{stem}--calibration=missing", script,
                   BASES[script] + (*int8, "--calibration", "{ws}/missing.dir"), REFUSE,
                   ("--calibration", "missing.dir")))
    cases.add(Case(f"{stem}--calibration-root=missing", script,
                   BASES[script] + (*int8, "--calibration", "{ws}/train_list",
                                    "--calibration-root", "{ws}/missing.dir"), REFUSE,
                   ("--calibration-root", "missing.dir")))
    cases.add(Case(f"{stem}--calibration-root=file", script,
                   BASES[script] + (*int8, "--calibration", "{ws}/train_list",
                                    "--calibration-root", "{ws}/notes.txt"), REFUSE,
                   ("--calibration-root", "notes.txt")))


def _published_name(cases: CaseList, script: str, weights_at: int) -> None:
    """A published weight file's name that does not exist, with --no-download."""
    args = list(BASES[script])
    args[weights_at] = "rn50-nope.h5"
    cases.add(Case(f"{_stem(script)}--no-download unknown name", script,
                   tuple(args) + ("--no-download",), REFUSE, ("rn50-nope.h5",)))
    args[weights_at] = "rn50-nhwc.h5"
    cases.add(Case(f"{_stem(script)}--no-download published name", script,
                   tuple(args) + ("--no-download",), REFUSE, ("rn50-nhwc.h5", "--no-download")))


def train_cases(cases: CaseList) -> None:
    s = "train.py"
    cases.add(Case("train good", s, BASES[s], OK))
    cases.add(Case("train no -a", s, tuple(a for a in BASES[s] if a not in ("-a", ARCH)),
                   REFUSE, ("-a",)))
    _network_flags(cases, s, num_classes=False)
    cases.bad(s, "--num-classes", POSITIVE + ("5",), names=("--num-classes", "train_list"))
    cases.bad(s, "-b", POSITIVE)
    # a batch larger than the 20 images is padded, not refused: it runs (-b 100000 too, if the
    # memory check passes, but for minutes)
    cases.good(s, "-b", "32")
    cases.bad(s, "--accumulate-steps", POSITIVE)
    cases.good(s, "--accumulate-steps", "2")
    cases.bad(s, "-e", POSITIVE)
    cases.bad(s, "--seed", ("-1", HUGE, str(2**31), "x", ""))
    cases.bad(s, "-v", (HUGE, NEGATIVE_HUGE, "x", ""))
    cases.good(s, "-v", "0")
    cases.bad(s, "-s", POSITIVE)
    cases.bad(s, "--keep-checkpoints", POSITIVE)
    cases.good(s, "--keep-checkpoints", "1")
    cases.bad(s, "--log-interval", NON_NEGATIVE)
    cases.good(s, "--log-interval", "1")
    cases.bad(s, "--recompute-bn", NON_NEGATIVE)
    cases.good(s, "--recompute-bn", "1")
    cases.bad(s, "--ema-decay", ("-0.5", "1", "1.5", "nan", "inf", "x", ""))
    cases.good(s, "--ema-decay", "0.9")
    _input_file(cases, s, "-C", "{ws}/weights.h5")
    _input_file(cases, s, "--model-load-path", "{ws}/notes.txt")
    cases.good(s, "--model-load-path", "{ws}/weights.h5")
    cases.bad(s, "--model-load-path", ("rn50-nope.h5",), names=("rn50-nope.h5",),
              also=("--no-download",))
    _input_file(cases, s, "--teacher", "{ws}/notes.txt")
    cases.good(s, "--teacher", "{ws}/weights.h5", also=("--teacher-arch", ARCH))
    cases.bad(s, "--teacher-arch", ("resnet", ""), also=("--teacher", "{ws}/weights.h5"))
    _input_file(cases, s, "--labels", "{ws}/weights.h5")
    cases.good(s, "--labels", "{ws}/labels.csv")
    _input_file(cases, s, "--train-list", "{ws}/weights.h5")
    _input_file(cases, s, "--val-list", "{ws}/weights.h5")
    _input_dir(cases, s, "-T")
    _input_dir(cases, s, "-V")
    _output_dir(cases, s, "-m")
    cases.add(Case("train -m=mon-as-file-tensorboard", s,
                   with_flag(BASES[s], "-m", ["{out}/run"]), REFUSE,
                   ("tensorboard",), files=(("run/tensorboard", "a file\n"),),
                   keep=("run/tensorboard",)))
    cases.add(Case("train --resume without checkpoint", s, BASES[s] + ("--resume",), REFUSE,
                   ("--resume", "checkpoint")))
    cases.add(Case("train --finetune without load path", s, BASES[s] + ("--finetune",), REFUSE,
                   ("--finetune", "--model-load-path")))
    cases.good(s, "--finetune", also=("--model-load-path", "{ws}/weights.h5"))
    cases.good(s, "--dynamic-loss-scaling")
    cases.good(s, "--no-tensorboard")
    cases.bad(s, "--channel-last", ("",), names=("--channel-last", "''"))
    cases.bad(s, "--no-tensorboard", ("",), names=("--no-tensorboard", "''"))
    _runtime_flags(cases, s, hang=True)
    _dali_flags(cases, s)


def validation_cases(cases: CaseList) -> None:
    s = "validation.py"
    cases.add(Case("validation good", s, BASES[s], OK))
    cases.add(Case("validation no weights", s, BASES[s][1:], REFUSE, ("WEIGHTS", "weights.h5",
                                                                      "-M", "val")))
    _network_flags(cases, s)
    cases.bad(s, "-b", POSITIVE)
    cases.good(s, "-b", "100000")  # any -b scores every image once
    cases.bad(s, "--crop-pct", ("0", "-0.5", "1.5", "nan", "inf", "x", ""))
    cases.good(s, "--crop-pct", "1.0")
    cases.bad(s, "--val-resize", POSITIVE + ("4",))
    cases.good(s, "--val-resize", "36")
    cases.add(Case("validation --val-resize with --crop-pct", s,
                   BASES[s] + ("--val-resize", "36", "--crop-pct", "0.9"), REFUSE,
                   ("--val-resize", "--crop-pct")))
    cases.bad(s, "-n", CHOICE)
    cases.good(s, "-n", "senet_author")
    cases.bad(s, "--tta", CHOICE)
    cases.good(s, "--tta", "flip")
    cases.bad(s, "--runtime", CHOICE)
    cases.good(s, "--runtime", "onnxruntime")
    cases.bad(s, "--calibration-images", POSITIVE)
    _input_file(cases, s, "--labels", "{ws}/weights.h5")
    cases.good(s, "--labels", "{ws}/labels.csv")
    _input_file(cases, s, "--class-mask", "{ws}/weights.h5")
    cases.good(s, "--class-mask", "{ws}/mask.txt")
    cases.add(Case("validation --class-mask with --no-class-mask", s,
                   BASES[s] + ("--class-mask", "{ws}/mask.txt", "--no-class-mask"), REFUSE,
                   ("--class-mask", "--no-class-mask")))
    _input_file(cases, s, "--real-labels", "{ws}/weights.h5")
    cases.bad(s, "--recompute-bn", NON_NEGATIVE)
    cases.add(Case("validation --recompute-bn without -T", s, BASES[s] + ("--recompute-bn", "1"),
                   REFUSE, ("--recompute-bn", "-T", "--train-list", "train_label")))
    cases.good(s, "--recompute-bn", "1", also=("-T", f"{DEMO}/train", "--train-list",
                                                "{ws}/train_list"))
    _input_file(cases, s, "--val-list", "{ws}/weights.h5")
    _input_dir(cases, s, "-V")
    _output_dir(cases, s, "-M")
    cases.add(Case("validation -M=training-run", s, with_flag(BASES[s], "-M", ["{ws}/mon"]),
                   REFUSE, ("-M", "mon")))
    _output_file(cases, s, "--table", ".csv")
    cases.bad(s, "--table", ("{out}/table.md",), names=("--table", ".csv"))
    cases.good(s, "--json")
    cases.good(s, "-E")
    cases.bad(s, "--json", ("",), names=("--json", "''"))
    cases.good(s, "--channel-last")
    _int8_flags(cases, s, ("--runtime", "onnxruntime-int8"))
    _published_name(cases, s, 0)
    for label, weights in (("missing", "{ws}/missing.h5"), ("folder", "{ws}/folder"),
                           ("text", "{ws}/notes.txt"), ("empty", "{ws}/empty.txt")):
        cases.add(Case(f"validation WEIGHTS={label}", s, ("{ws}" + weights[4:],) + BASES[s][1:],
                       REFUSE, (Path(weights).name,)))
    _runtime_flags(cases, s, hang=True)
    _dali_flags(cases, s)


def infer_cases(cases: CaseList) -> None:
    s = "infer.py"
    cases.add(Case("infer good", s, BASES[s], OK))
    cases.add(Case("infer only weights", s, BASES[s][2:], REFUSE, ("IMAGE", "WEIGHTS",
                                                                  "weights.h5", "b.JPEG")))
    cases.add(Case("infer images after flags", s,
                   (BASES[s][2], "-a", ARCH, "--spatial-size", "32", BASES[s][0]), REFUSE,
                   ("a.JPEG", "IMAGE", "--spatial-size")))
    _network_flags(cases, s)
    cases.bad(s, "-b", POSITIVE)
    cases.good(s, "-b", "100000")  # any -b scores every image once
    cases.bad(s, "-k", POSITIVE, names=("-k",))
    cases.good(s, "-k", "11")  # more than the 10 classes: all of them, in order
    cases.bad(s, "--crop-pct", ("0", "-0.5", "1.5", "nan", "x"))
    cases.bad(s, "-n", CHOICE)
    cases.bad(s, "--tta", CHOICE)
    cases.good(s, "--tta", "flip")
    cases.bad(s, "--runtime", CHOICE)
    cases.bad(s, "--calibration-images", POSITIVE)
    _input_file(cases, s, "--labels", "{ws}/weights.h5")
    cases.good(s, "--labels", "{ws}/labels.csv")
    cases.good(s, "--json")
    _output_file(cases, s, "--output", ".csv")
    cases.good(s, "--output", "{out}/predictions.csv")
    cases.good(s, "--channel-last")
    _int8_flags(cases, s, ("--runtime", "onnxruntime-int8"))
    _published_name(cases, s, 2)
    for label, weights in (("missing", "missing.h5"), ("folder", "folder"),
                           ("text", "notes.txt")):
        cases.add(Case(f"infer WEIGHTS={label}", s, BASES[s][:2] + ("{ws}/" + weights,)
                       + BASES[s][3:], REFUSE, (weights,)))
    for label, image in (("missing", "missing.JPEG"), ("text", "notes.txt"),
                         ("empty", "empty.txt"), ("empty-folder", "folder")):
        cases.add(Case(f"infer IMAGE={label}", s, ("{ws}/" + image,) + BASES[s][1:], REFUSE,
                       (image,)))
    cases.add(Case("infer IMAGE=folder:good", s, ("{ws}/images",) + BASES[s][2:], OK))
    _runtime_flags(cases, s, hang=False)
    _dali_flags(cases, s)


def export_cases(cases: CaseList) -> None:
    s = "export.py"
    cases.add(Case("export good", s, BASES[s], OK))
    cases.add(Case("export no -o", s, BASES[s][:-2], REFUSE, ("-o",)))
    _network_flags(cases, s)
    # 1000000 at 32x32: the pixels (11 GiB) fit this 24 GiB machine, the largest layer's
    # activations (46 GiB) do not
    cases.bad(s, "-b", POSITIVE + ("1000000",))
    cases.bad(s, "--opset", ("6", "12", "x", ""), names=("--opset",))
    cases.good(s, "--opset", "13", also=("-o", "{out}/m.onnx"))
    cases.bad(s, "--tolerance", ("-1", "nan", "inf", "x", ""))
    cases.bad(s, "--crop-pct", ("0", "1.5", "nan", "x"))
    cases.bad(s, "-n", CHOICE)
    cases.bad(s, "--calibration-images", POSITIVE)
    cases.add(Case("export --int8 without onnx", s, BASES[s] + ("--int8", "--calibration",
                                                                 "{ws}/images"),
                   REFUSE, ("--int8", ".onnx", "-o")))
    cases.add(Case("export --int8 without --calibration", s,
                   with_flag(BASES[s], "-o", ["{out}/m.onnx"]) + ("--int8",), REFUSE,
                   ("--calibration", "--int8")))
    cases.good(s, "-o", "{out}/q.onnx", also=("--int8", "--calibration", "{ws}/images"))
    cases.good(s, "--softmax")
    _published_name(cases, s, 0)
    cases.add(Case("export --calibration-root=missing", s,
                   with_flag(BASES[s], "-o", ["{out}/q.onnx"]) + (
                       "--int8", "--calibration", "{ws}/train_list", "--calibration-root",
                       "{ws}/missing.dir"), REFUSE, ("--calibration-root", "missing.dir")))
    cases.good(s, "--no-verify")
    cases.good(s, "-o", "{out}/m.nnp", "{out}/m.onnx")
    cases.bad(s, "-o", ("{out}/m.txt",), names=("-o", "m.txt"))
    cases.good(s, "-o", "{out}/same.nnp", "{out}/same.nnp")  # written once
    _output_file(cases, s, "-o", ".onnx", makes_parent=False)  # a missing folder: one line
    cases.add(Case("export -o=other-kind.nnp", s, with_flag(BASES[s], "-o", ["{out}/keep.nnp"]),
                   REFUSE, ("-o", "keep.nnp"), files=(("keep.nnp", "not a model\n"),),
                   keep=("keep.nnp",)))
    cases.add(Case("export WEIGHTS=missing", s, ("{ws}/missing.h5",) + BASES[s][1:], REFUSE,
                   ("missing.h5",)))
    cases.add(Case("export WEIGHTS=text", s, ("{ws}/notes.txt",) + BASES[s][1:], REFUSE,
                   ("notes.txt",)))


def benchmark_cases(cases: CaseList) -> None:
    s = "benchmark.py"
    cases.add(Case("benchmark good", s, BASES[s], OK))
    cases.bad(s, "-a", ("resnet", ""))
    cases.bad(s, "--spatial-size", SPATIAL)
    cases.bad(s, "--num-classes", POSITIVE)
    cases.bad(s, "-b", POSITIVE)
    cases.bad(s, "--warmup", NON_NEGATIVE)
    cases.bad(s, "--iterations", POSITIVE)
    cases.bad(s, "--max-seconds", ("-1", "nan", "x", ""))
    cases.good(s, "--max-seconds", "0")  # one timed step each
    cases.good(s, "--max-seconds", "inf")  # never ends a measurement early
    cases.bad(s, "--runtimes", CHOICE)
    cases.good(s, "--runtimes", "nnabla", "onnxruntime")
    cases.add(Case("benchmark --no-infer --no-train", s, BASES[s] + ("--no-infer", "--no-train"),
                   REFUSE, ("--no-infer", "--no-train")))
    cases.good(s, "--no-train")
    cases.bad(s, "--channel-last", ("",), names=("--channel-last", "''"))
    cases.add(Case("benchmark --channel-last on the CPU", s, BASES[s] + ("--channel-last",),
                   REFUSE, ("--channel-last",)))
    _input_file(cases, s, "-C", "{ws}/weights.h5")
    _output_file(cases, s, "-o", ".csv")
    cases.add(Case("benchmark -o=weights.h5", s, with_flag(BASES[s], "-o", ["{out}/w.h5"]),
                   REFUSE, ("-o", "w.h5"), files=(("w.h5", "pretend weights\n"),),
                   keep=("w.h5",)))
    cases.add(Case("benchmark -o=existing-csv:good", s,
                   with_flag(BASES[s], "-o", ["{out}/old.csv"]), OK,
                   files=(("old.csv", "arch,height,width,parameters,macs_per_image,"
                                       "infer_images_per_s,train_images_per_s,batch,ranks,"
                                       "layout,precision,backend,runtime\n"),)))
    _runtime_flags(cases, s, hang=False)


def convert_cases(cases: CaseList) -> None:
    s = "convert_parameter_format.py"
    cases.add(Case("convert good", s, BASES[s], OK))
    cases.add(Case("convert no output", s, BASES[s][:1], REFUSE, ("OUTPUT",)))
    cases.bad(s, "-m", CHOICE)
    cases.good(s, "-m", "NCHW")
    cases.good(s, "--force-4-channels")
    cases.add(Case("convert -3 with --force-4-channels", s,
                   BASES[s] + ("-3", "--force-4-channels"), REFUSE, ("-3", "--force-4")))
    cases.add(Case("convert output=input", s, ("{ws}/weights.h5", "{ws}/weights.h5"), REFUSE,
                   ("weights.h5",)))
    for label, value in (("folder", "{ws}/folder"), ("under-file", "{ws}/notes.txt/x.h5"),
                         ("unwritable", UNWRITABLE + "/x.h5")):
        cases.add(Case(f"convert OUTPUT={label}", s, ("{ws}/weights.h5", value, "-m", "nhwc"),
                       REFUSE, ("folder", "notes.txt", "probe-unwritable", "OUTPUT")))
    cases.add(Case("convert OUTPUT=other-kind", s, ("{ws}/weights.h5", "{out}/keep.h5", "-m",
                                                    "nhwc"),
                   REFUSE, ("keep.h5",), files=(("keep.h5", "not weights\n"),),
                   keep=("keep.h5",)))
    for label, value in (("missing", "missing.h5"), ("folder", "folder"), ("text", "notes.txt"),
                         ("empty", "empty.txt")):
        cases.add(Case(f"convert INPUT={label}", s, ("{ws}/" + value, "{out}/c.h5"), REFUSE,
                       (value,)))
    cases.add(Case("convert INPUT=unknown-name", s, ("rn50-nope.h5", "{out}/c.h5",
                                                     "--no-download"), REFUSE, ("rn50-nope",)))


def create_input_files_cases(cases: CaseList) -> None:
    s = "create_input_files.py"
    cases.add(Case("create-input-files good", s, BASES[s], OK))
    cases.add(Case("create-input-files no -T", s, BASES[s][2:], REFUSE, ("-T",)))
    _input_dir(cases, s, "-T")
    _input_dir(cases, s, "--val-dir")
    _input_file(cases, s, "-L", "{ws}/weights.h5")
    _input_file(cases, s, "-V", "{ws}/weights.h5", also=("--val-dir", f"{DEMO}/val"))
    no_val = with_flag(BASES[s], "--val-dir", [])[:-1]  # without --val-dir
    cases.bad(s, "--train-fraction", ("0", "-0.1", "1.5", "nan", "x", ""), base=no_val)
    cases.add(Case("create-input-files --train-fraction with --val-dir", s,
                   BASES[s] + ("--train-fraction", "0.5"), REFUSE,
                   ("--train-fraction", "--val-dir")))
    cases.good(s, "--train-fraction", "0.5", base=no_val)
    cases.bad(s, "--workers", POSITIVE + ("100000",))
    cases.good(s, "--verify", also=("--workers", "2"))
    cases.bad(s, "--exclude", ("nope",), names=("--exclude", "nope"))
    cases.good(s, "--exclude", "dog")
    cases.add(Case("create-input-files --imagenet-ids without ImageNet classes", s,
                   BASES[s] + ("--imagenet-ids",), REFUSE, ("--imagenet-ids",)))
    _output_dir(cases, s, "-o")
    cases.add(Case("create-input-files -o=kept-previous:good", s,
                   with_flag(BASES[s], "-o", ["{out}/lists"]), OK,
                   files=(("lists/train_label", "user text\n"),)))


def plot_curves_cases(cases: CaseList) -> None:
    s = "plot_curves.py"
    cases.add(Case("plot-curves good", s, BASES[s], OK))
    cases.add(Case("plot-curves no folder", s, (), REFUSE, ("MONITOR_DIR",)))
    for label, value in (("missing", "missing.dir"), ("file", "notes.txt"),
                         ("empty-folder", "folder")):
        cases.add(Case(f"plot-curves MONITOR_DIR={label}", s, ("{ws}/" + value, "-o",
                                                               "{out}/plots"),
                       REFUSE, (value,)))
    _output_dir(cases, s, "-o")
    cases.add(Case("plot-curves two folders without -o", s, ("{ws}/mon", "{ws}/mon"), REFUSE,
                   ("-o",)))


# Recipe values tried on each key: wrong type, out of range, beyond int64, null, a list.
RECIPE_KEYS: Dict[str, Tuple[str, ...]] = {
    "weight_decay": ("-1", "x", ".nan", "null", "[1]"),
    "momentum": ("1", "-0.1", ".nan", "x", "null"),
    "epochs": ("0", "ninety", HUGE, "'1'", "2020-01-01", "1.5", "null"),
    "label_smoothing": ("1", "-0.1", ".inf", "x"),
    "loss_scaling": ("0", "-1", ".nan", "x"),
    "mixup": ("-1", ".inf", "x", "[0.2]"),
    "cutmix": ("-1", ".nan", "x"),
    "mixup_switch_prob": ("1.5", "-0.1", "x"),
    "drop_path_rate": ("1", "-0.1", "x"),
    "loss": ("hinge", "null"),
    "bce_target_threshold": ("1", "-0.5"),
    "val_resize": ("4", HUGE, "x"),
    "distillation_alpha": ("1.5", "x"),
    "distillation_temperature": ("0", "-1"),
    "lr_scheduler": ("null", "[1]", "x"),
    "augmentation": ("x", "{policy: bogus}", "{n: 0}", "{m: 31}", "{random_area: [0.5, 0.1]}",
                     "{random_erasing: 2}", "{repeated_augmentation: 17}",
                     "{random_aspect_ratio: [1]}"),
    "solver": ("{type: sgdx}", "{type: adamw, beta1: 1}", "{type: lars, coefficient: 0}",
               "{type: momentum, clip_grad_norm: -1}", "{type: lamb, eps: 0}", "x"),
    "progressive_resizing": ("{start: 4, end: 32, start_epoch: 0, end_epoch: 1}",
                             "{start: 16}", "x"),
    "null": ("1",),
    "momentumm": ("0.9",),
}
SCHEDULE_ARGS: Dict[str, Tuple[str, ...]] = {
    "base_lr": ("0", "-0.1", "x", ".nan"),
    "warmup_epochs": ("-1", HUGE, "x"),
    "epochs": ("0", "x"),
    "min_lr": ("-1", "1"),
}


def _recipe_text(key: str, value: str) -> str:
    """QUICK_RECIPE with top-level `key` set to `value` (YAML text), or for `args.<name>` the
    schedule's argument <name>."""
    if key.startswith("args."):
        schedule_args = {"base_lr": "0.002", "warmup_epochs": "0", key[len("args."):]: value}
        flow = ", ".join(f"{k}: {v}" for k, v in schedule_args.items())
        return QUICK_RECIPE.replace("{base_lr: 0.002, warmup_epochs: 0}", "{" + flow + "}")
    lines = [line for line in QUICK_RECIPE.splitlines() if not line.startswith(f"{key}:")]
    if key == "lr_scheduler":
        lines = [line for line in lines if not line.startswith("  ")]
    return "\n".join(lines) + f"\n{key}: {value}\n"


# A null value is an absent key (as `epochs:` in the schedules' args): -e fills `epochs`, and
# `loss` takes its default, so these run.
RECIPE_GOOD = {("epochs", "null"), ("loss", "null")}


def recipe_cases(cases: CaseList) -> None:
    """train.py -C with one bad key each (and -e 1 given, which must not hide it)."""
    s = "train.py"
    items = [(k, v) for k, values in RECIPE_KEYS.items() for v in values]
    items += [("args." + k, v) for k, values in SCHEDULE_ARGS.items() for v in values]
    for key, value in items:
        label = re.sub(r"[^\w.+-]+", "_", value)[:24] or "empty"
        name = f"recipe {key}={label}"
        if any(c.name == name for c in cases.cases):
            name += "-2"
        good = (key, value) in RECIPE_GOOD
        cases.add(Case(name + (":good" if good else ""), s,
                       with_flag(BASES[s], "-C", ["{out}/recipe.yaml"]), OK if good else REFUSE,
                       ("recipe.yaml",), files=(("recipe.yaml", _recipe_text(key, value)),)))


def all_cases() -> List[Case]:
    cases = CaseList()
    for add in (train_cases, validation_cases, infer_cases, export_cases, benchmark_cases,
                convert_cases, create_input_files_cases, plot_curves_cases, recipe_cases):
        add(cases)
    return cases.cases


# --- running ---------------------------------------------------------------------------------

def _environment() -> Dict[str, str]:
    return {**os.environ, "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}


def _case_folder(runs: Path, case: Case) -> Path:
    return runs / re.sub(r"[^\w.+=-]+", "_", case.name)


def run_case(case: Case, ws: Path, runs: Path, timeout: float) -> Outcome:
    """Run `case` in a fresh folder of its own under `runs` and classify what it gave."""
    out = _case_folder(runs, case)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    before: Dict[str, bytes] = {}
    for relative, text in case.files:
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for relative in case.keep:
        before[relative] = (out / relative).read_bytes()
    args = fill(case.args, ws, out)
    command = [sys.executable, str(REPO / case.script), *args]
    started = time.monotonic()
    try:
        done = subprocess.run(command, cwd=out, capture_output=True, text=True, timeout=timeout,
                              env=_environment(), preexec_fn=lambda: os.nice(10))
        status, stderr = done.returncode, done.stderr
    except subprocess.TimeoutExpired as e:
        status = None
        stderr = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else \
            (e.stderr or "")
    replaced = any(not (out / r).is_file() or (out / r).read_bytes() != data
                   for r, data in before.items())
    names = [n.replace("{ws}/", "").replace("{out}/", "") for n in case.names]
    outcome = classify(case.expect, status, stderr, names, case.script, replaced)
    shown = " ".join(shlex.quote(a.replace(str(ws), "$WS").replace(str(out), "$OUT"))
                     for a in args)
    line = last_line(stderr).replace(str(ws), "$WS").replace(str(out), "$OUT")
    return Outcome(case, f"{case.script} {shown}", status, outcome, line,
                   time.monotonic() - started)


def run_cases(cases: Sequence[Case], ws: Path, jobs: int, timeout: float,
              progress: bool = True,
              done: Optional[Callable[[List[Outcome]], None]] = None) -> List[Outcome]:
    """Run `cases`, at most two at a time; `done` sees the outcomes so far after each."""
    runs = ws / "runs"
    jobs = max(1, min(jobs, 2))
    outcomes: List[Outcome] = []
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        futures = [pool.submit(run_case, case, ws, runs, timeout) for case in cases]
        for i, future in enumerate(concurrent.futures.as_completed(futures), 1):
            outcomes.append(future.result())
            if progress:
                o = outcomes[-1]
                print(f"[{i}/{len(cases)}] {o.outcome:>18}  {o.case.name}  ({o.seconds:.0f} s)",
                      file=sys.stderr, flush=True)
            if done:
                done(outcomes)
    return outcomes


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ") or " "


def table(outcomes: Sequence[Outcome]) -> str:
    """The Markdown report: the counts, the defects, then one row per case."""
    counts = collections.Counter(o.outcome for o in outcomes)
    lines = [f"{len(outcomes)} cases: " + ", ".join(f"{n} {k}" for k, n in
                                                    sorted(counts.items(), key=lambda i: -i[1])),
             "", "| outcome | cases |", "|---|---|"]
    lines += [f"| {k} | {n} |" for k, n in sorted(counts.items(), key=lambda i: -i[1])]
    lines += ["", "| case | command | expected | outcome | status | last stderr line |",
              "|---|---|---|---|---|---|"]
    for o in sorted(outcomes, key=lambda o: (o.outcome in (OK, ONE_LINE), o.case.name)):
        lines.append(f"| {_cell(o.case.name)} | `{_cell(o.command)}` | {o.case.expect} | "
                     f"{o.outcome} | {o.status} | {_cell(o.last_line)} |")
    return "\n".join(lines) + "\n"


PAGE_HEAD = """\
# Probe of every script's flags

Generated by `scripts/probe_flags.py` (regenerate: `.venv/bin/python scripts/probe_flags.py
-o docs/probe.md`, about half an hour on two cores). Each case runs one script as a user would,
on tiny inputs; `one-line` is the expected refusal (status 2, one line naming the flag or
file, nothing else), `ok` a good value that ran. Any other outcome is a defect. `$WS` is the
tool's folder of inputs, `$OUT` the case's own folder.

"""


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-k", "--match", default="", help="only the cases whose name matches")
    p.add_argument("--list", action="store_true", help="print the cases, run nothing")
    p.add_argument("-j", "--jobs", type=int, default=2, choices=(1, 2))
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per case")
    p.add_argument("-w", "--workspace", default=None,
                   help="folder of the inputs and runs (default: a new temporary one)")
    p.add_argument("-o", "--output", default=None, help="the Markdown report (default: stdout)")
    args = p.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from utils.process.atomic import atomic_write_text

    cases = [c for c in all_cases() if re.search(args.match, c.name)]
    if args.list:
        for case in cases:
            print(f"{case.name}\t{case.expect}\t{case.script} {' '.join(case.args)}")
        return 0
    ws = Path(args.workspace or tempfile.mkdtemp(prefix="probe-")).resolve()
    make_workspace(ws)
    # the quick refusals first, so that an interrupted probe has covered the most flags
    cases.sort(key=lambda c: c.expect == OK)

    def write(outcomes: List[Outcome]) -> None:
        head = PAGE_HEAD if len(outcomes) == len(cases) else \
            PAGE_HEAD + f"(incomplete: {len(outcomes)} of {len(cases)} cases run)\n\n"
        if args.output:
            atomic_write_text(args.output, head + table(outcomes))
        elif len(outcomes) == len(cases):
            print(head + table(outcomes), end="")

    run_cases(cases, ws, args.jobs, args.timeout, done=write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
