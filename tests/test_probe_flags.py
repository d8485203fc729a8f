"""scripts/probe_flags.py, the probe of every script's flags: its classification of a run's
stderr and status, and a few of its cases run for real, so that the tool cannot rot."""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, Set

import pytest
from marks import slow
from paths import REPO


def _load_probe():
    spec = importlib.util.spec_from_file_location("probe_flags", REPO / "scripts" /
                                                  "probe_flags.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


probe = _load_probe()

USAGE = "usage: train.py [-h] -a ARCH\n                [--num-classes N]\n"
TRACEBACK = ('Traceback (most recent call last):\n  File "train.py", line 3, in <module>\n'
             "TypeError: ufunc 'isnan' not supported\n")


@pytest.mark.parametrize("expect, status, stderr, names, outcome", [
    ("refuse", 2, USAGE + "train.py: error: argument -e/--epochs: must be a positive integer, "
     "got -1\n", ["-e"], "one-line"),
    ("refuse", 2, "warning: cfg/x.yaml: the warm-up covers the run\n"
     "2026-12-06 19:55:01,280 [nnabla][INFO]: 10 images\nerror: w.h5: no such weight file\n",
     ["w.h5"], "one-line"),
    ("refuse", 2, "error: w.h5: no such weight file\n", ["--labels"], "does not name it"),
    ("refuse", 1, TRACEBACK, ["-e"], "traceback"),
    ("refuse", 2, "[nnabla][ERROR]: Extension 'cudnn' does not exist.\nerror: -c cudnn: no "
     "CUDA extension\n", ["-c"], "third-party line"),
    ("refuse", 2, "/x/plots.py:12: UserWarning: Glyph 26085 missing from font\nerror: -o: x\n",
     ["-o"], "third-party line"),
    ("refuse", 2, "something printed\nerror: -o: x\n", ["-o"], "extra lines"),
    ("refuse", 0, "", ["-o"], "bad value accepted"),
    ("refuse", 3, "error: -o: x\n", ["-o"], "wrong status"),
    ("refuse", None, "", ["-o"], "timeout"),
    ("ok", 0, "2026-12-06 19:55:01,280 [nnabla][INFO]: finished 1 epochs\n", [], "ok"),
    ("ok", 2, "error: -o: x\n", [], "good value refused"),
])
def test_classify_tells_the_expected_outcome_from_each_defect(expect, status, stderr, names,
                                                             outcome):
    assert probe.classify(expect, status, stderr, names, "train.py") == outcome


def test_a_replaced_user_file_is_a_defect_even_with_the_right_line():
    assert probe.classify("refuse", 2, "error: -o: keep.onnx is not a model\n", ["-o"],
                          "export.py", replaced=True) == "user file replaced"


def test_with_flag_replaces_every_value_of_a_flag_and_keeps_the_others():
    base = ("w.h5", "--spatial-size", "32", "40", "-b", "-4", "-o", "x")
    assert probe.with_flag(base, "--spatial-size", ["7"]) == \
        ("w.h5", "-b", "-4", "-o", "x", "--spatial-size", "7")
    assert probe.with_flag(base, "-b", ["2"]) == \
        ("w.h5", "--spatial-size", "32", "40", "-o", "x", "-b", "2")


def flags_of(help_text: str) -> Dict[str, Set[str]]:
    """Each flag of a script's usage (without -h), with the other spellings its help gives."""
    usage = help_text[:help_text.index("\n\n")]
    flags = {f: {f} for f in re.findall(r"\[(-{1,2}[\w-]+)", usage) + re.findall(
        r" (-{1,2}[A-Za-z][\w-]*) [A-Z]", usage) if f != "-h"}
    for line in help_text.splitlines():
        if line.strip().startswith("-"):
            spellings = {part.split()[0] for part in line.strip().split(", ")
                         if part.startswith("-")}
            for f in spellings & set(flags):
                flags[f] |= spellings
    return flags


@slow  # runs every script's --help
def test_the_cases_cover_every_flag_of_every_script_with_unique_names():
    cases = probe.all_cases()
    assert len(cases) >= 350
    assert len({c.name for c in cases}) == len(cases)
    scripts = {c.script for c in cases}
    assert scripts == {p.name for p in REPO.glob("*.py")}
    for script in scripts:
        help_text = subprocess.run([sys.executable, str(REPO / script), "--help"],
                                   capture_output=True, text=True, cwd=REPO).stdout
        flags = flags_of(help_text)
        assert flags, script
        tried = {a for c in cases if c.script == script for a in c.args}
        untried = sorted(f for f, spellings in flags.items() if not spellings & tried)
        assert untried == [], (script, untried)


@slow
def test_the_probe_runs_cases_and_classifies_them(tmp_path: Path):
    """Three real runs: a good conversion, an argparse refusal, a bad recipe key."""
    wanted = {"convert good": "ok", "convert-parameter-format -m=bogus": "one-line",
              "recipe momentum=1": "one-line"}
    cases = [c for c in probe.all_cases() if c.name in wanted]
    assert len(cases) == len(wanted)
    (tmp_path / "ws").mkdir()
    probe._demo_lists(tmp_path / "ws")
    probe._weight_file(tmp_path / "ws" / "weights.h5")
    outcomes = probe.run_cases(cases, tmp_path / "ws", jobs=2, timeout=300, progress=False)
    assert {o.case.name: o.outcome for o in outcomes} == wanted
    report = probe.table(outcomes)
    assert report.startswith("3 cases: 2 one-line, 1 ok\n")
    assert ("| convert-parameter-format -m=bogus | "
            "`convert_parameter_format.py '$WS/weights.h5' ") in report
    assert "argument -m/--memory-layout: invalid choice: 'bogus'" in report
