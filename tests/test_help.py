"""Every script's --help has the same shape (issue 30 item 5): its flags in named groups, a
flag shared by several scripts worded the same everywhere, metavars from one vocabulary, and
an epilog with examples that parse and the files the script writes. The short flags the
official scripts use for different things (-V, -T, -m, -o) are kept, and each one's help
says what it is in the other scripts.
"""
from __future__ import annotations

import argparse
import importlib
import shlex
from collections import defaultdict
from typing import Dict, List, Tuple

import pytest

from utils.cli.help_text import SHORT_FLAG_MEANINGS, elsewhere
from utils.outputs.batch_grid import TRAIN_BATCH_PNG, VAL_BATCH_PNG
from utils.outputs.plots import CHARTS

SCRIPTS = ("train", "validation", "infer", "benchmark", "export", "create_input_files",
           "convert_parameter_format", "plot_curves")
# What each script's epilog must name as written (checked against the code's own names
# where it has them).
WRITTEN = {
    "train": ["param_NNN.h5", "param_ema_NNN.h5", "checkpoints/", "Arguments.txt",
              "Train-*", "Validation-*", TRAIN_BATCH_PNG, "tensorboard/",
              *(chart.file_name for chart in CHARTS)],
    "validation": ["Validation-loss.series.txt", "Validation-error.series.txt",
                   "Validation-top5-error.series.txt", "per_class.csv", "confusion.png",
                   VAL_BATCH_PNG],
    "infer": ["--output FILE (.csv or .json)"],
    "benchmark": ["benchmark.csv"],
    "export": [".nnp", ".onnx"],
    "create_input_files": ["train_label", "val_label", "label_words.csv",
                           "label_wordnetid.csv"],
    "convert_parameter_format": ["OUTPUT"],
    "plot_curves": [chart.file_name for chart in CHARTS],
}
# Long flags of several scripts whose help differs on purpose: what the script writes there
# (--output, --monitor-path), or does with the folder (--val-dir: read through a list in
# train.py and validation.py, scanned to write one in create_input_files.py).
PER_SCRIPT = {"--output", "--monitor-path", "--val-dir"}
METAVARS = {"N", "FILE", "DIR", "SIZE", "ARCH", "P", "MB", "SECONDS", "D", "F", "X",
            "FOLDER", "WEIGHTS", "IMAGE", "INPUT", "OUTPUT", "MONITOR_DIR"}
UNNAMED_GROUPS = {"options", "optional arguments", "positional arguments"}


def parser_of(script: str) -> argparse.ArgumentParser:
    return importlib.import_module(script).build_parser()


def options(parser: argparse.ArgumentParser) -> List[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and a.dest != "help"]


def group_of(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    return next(g.title for g in parser._action_groups if action in g._group_actions)


def test_every_option_is_in_a_named_group():
    loose = []
    for script in SCRIPTS:
        parser = parser_of(script)
        loose += [f"{script}: {'/'.join(a.option_strings)}" for a in options(parser)
                  if group_of(parser, a) in UNNAMED_GROUPS]
    assert loose == []


def test_a_shared_flag_is_worded_the_same_in_every_script():
    seen: Dict[str, List[Tuple[str, argparse.Action]]] = defaultdict(list)
    for script in SCRIPTS:
        for action in options(parser_of(script)):
            for flag in action.option_strings:
                seen[flag].append((script, action))
    shared = {flag: uses for flag, uses in seen.items() if len(uses) > 1}
    assert {"--num-classes", "-b", "-a", "--spatial-size", "-c", "-t", "--labels"} \
        <= set(shared)
    differing = []
    for flag, uses in sorted(shared.items()):
        if flag in SHORT_FLAG_MEANINGS or flag in PER_SCRIPT:
            continue
        if len({(a.help, a.metavar, str(a.choices)) for _, a in uses}) > 1:
            differing.append(f"{flag}: " + " | ".join(f"{s}: {a.help}" for s, a in uses))
    assert differing == []


@pytest.mark.parametrize("flag", sorted(SHORT_FLAG_MEANINGS))
def test_a_short_flag_of_several_meanings_names_them_all(flag):
    """-V is the validation folder in train.py and validation.py and the labels file in
    create_input_files.py: each help says what it is here and what it is elsewhere."""
    meanings = dict(SHORT_FLAG_MEANINGS[flag])
    users = {f"{s}.py": a for s in SCRIPTS for a in options(parser_of(s))
             if flag in a.option_strings}
    assert set(users) == set(meanings)
    assert len(set(meanings.values())) > 1
    for script, action in users.items():
        assert action.help.endswith(elsewhere(flag, meanings[script])), (script, action.help)
        others = {m for s, m in meanings.items() if m != meanings[script]}
        assert all(m in action.help for m in others)


def test_metavars_come_from_one_vocabulary():
    odd = []
    for script in SCRIPTS:
        for action in parser_of(script)._actions:
            if action.nargs == 0 or action.dest == "help":
                continue
            if action.choices is not None and action.metavar is None:
                continue  # the choices are the metavar
            if action.metavar not in METAVARS:
                odd.append(f"{script}: {action.option_strings or action.dest}: "
                           f"{action.metavar}")
    assert odd == []


def examples_of(parser: argparse.ArgumentParser) -> List[str]:
    text = parser.epilog.split("examples:\n", 1)[1].split("\n\n", 1)[0]
    return [line.strip() for line in text.replace(" \\\n", " ").splitlines()]


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_help_ends_with_examples_that_parse_and_the_files_written(script, capsys):
    parser = parser_of(script)
    help_text = parser.format_help()
    assert parser.description and help_text.rstrip().endswith(parser.epilog.rstrip())
    examples = examples_of(parser)
    assert 1 <= len(examples) <= 2
    module = importlib.import_module(script)
    for example in examples:
        words = shlex.split(example)
        start = words.index("python") if words[0] == "mpirun" else 0
        assert words[start:start + 2] == ["python", f"{script}.py"], example
        module.parse_args(words[start + 2:])  # the example is a command the script takes
    assert capsys.readouterr().err == ""
    written = parser.epilog.split("files written: ", 1)[1]
    missing = [name for name in WRITTEN[script] if name not in " ".join(written.split())]
    assert missing == []


def test_train_help_says_how_to_resume_a_run_started_without_m():
    import train

    monitor = next(a for a in options(parser_of("train")) if "-m" in a.option_strings)
    assert "tmp.monitor.<YYYYmmddHHMMSS>" in monitor.help
    assert "resume it with -m <that folder>" in monitor.help
    assert "resume such a run with -m <its folder>" in " ".join(train.__doc__.split())
    for example in examples_of(parser_of("train")):
        assert " -m " in example  # so that running it again resumes
