"""Every integer a flag or a recipe gives has a bound that fits what uses it (issue 34 item 2):
an integer of 2**63 or more given to a count ended in a C library's traceback (DALI's thread
pool), a nan loss (--accumulate-steps), a run that could never finish (-e), or reached
TensorBoard's HParams, which keep numbers as float64. And `-e` replaces the recipe's
`epochs` only once the recipe itself is valid."""
from __future__ import annotations

from pathlib import Path
from typing import List

import pytest
from fault_fixtures import run, write_config
from marks import slow

import benchmark
import create_input_files
import infer
import train
import validation
from utils.process.errors import USER_ERROR_STATUS
from utils.recipe.config import ConfigError, load_config

HUGE = str(2**63)  # the first integer an int64 cannot hold

# (script, the arguments it needs, flag, the error after "argument <flag>: ")
FLAGS = [
    (train, ["-a", "resnet18"], "-e/--epochs", f"must be at most 2147483647, got {HUGE}"),
    (train, ["-a", "resnet18"], "-v/--val-interval",
     f"must be at most 2147483647 (<= 0 disables), got {HUGE}"),
    (train, ["-a", "resnet18"], "-s/--model-save-interval",
     f"must be at most 2147483647, got {HUGE}"),
    (train, ["-a", "resnet18"], "--log-interval", f"must be at most 2147483647, got {HUGE}"),
    (train, ["-a", "resnet18"], "--keep-checkpoints", f"must be at most 2147483647, got {HUGE}"),
    (train, ["-a", "resnet18"], "--accumulate-steps", f"must be at most 2147483647, got {HUGE}"),
    (train, ["-a", "resnet18"], "-b/--batch-size", f"must be at most 2147483647, got {HUGE}"),
    (train, ["-a", "resnet18"], "--recompute-bn", f"must be at most 2147483647, got {HUGE}"),
    (train, ["-a", "resnet18"], "--num-classes", f"must be at most 2147483647, got {HUGE}"),
    (train, ["-a", "resnet18"], "--dali-num-threads", f"must be in 1..1024, got {HUGE}"),
    (train, ["-a", "resnet18"], "--dali-prefetch-queue", f"must be in 1..256, got {HUGE}"),
    (validation, ["w.h5", "-a", "resnet18"], "-b/--batch-size",
     f"must be at most 2147483647, got {HUGE}"),
    (validation, ["w.h5", "-a", "resnet18"], "--recompute-bn",
     f"must be at most 2147483647, got {HUGE}"),
    (validation, ["w.h5", "-a", "resnet18"], "--dali-num-threads",
     f"must be in 1..1024, got {HUGE}"),
    (infer, ["x.jpg", "w.h5", "-a", "resnet18"], "-k/--top-k",
     f"must be at most 2147483647, got {HUGE}"),
    (benchmark, [], "--iterations", f"must be at most 2147483647, got {HUGE}"),
    (benchmark, [], "--warmup", f"must be at most 2147483647, got {HUGE}"),
    (create_input_files, ["-T", "x"], "--workers", f"must be at most 1024, got {HUGE}"),
    (train, ["-a", "resnet18"], "-v/--val-interval",
     f"must be in -2147483647..2147483647, got -{HUGE}"),
]


def usage_error(capsys, script, argv: List[str]) -> str:
    """The one error line of a refused command line (after argparse's usage lines)."""
    with pytest.raises(SystemExit) as stopped:
        script.parse_args(argv)
    assert stopped.value.code == USER_ERROR_STATUS
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("usage: "), lines
    errors = [line for line in lines if "error:" in line or "Traceback" in line]
    assert errors == [lines[-1]], lines
    return lines[-1]


@pytest.mark.parametrize("script, needed, flag, words", FLAGS,
                         ids=[f"{s.__name__} {f}" for s, _, f, _ in FLAGS])
def test_an_integer_beyond_the_bound_of_a_flag_is_one_line(script, needed, flag, words, capsys):
    value = words.rsplit("got ", 1)[1]
    line = usage_error(capsys, script, [*needed, f"{flag.split('/')[-1]}={value}"])
    assert line.split(": ", 1)[1] == f"error: argument {flag}: {words}"  # (after the prog)


def test_the_bounds_themselves_are_accepted():
    args = train.parse_args(["-a", "resnet18", "-e", "2147483647", "-v", "-2147483647",
                             "--dali-num-threads", "1024", "--dali-prefetch-queue", "256"])
    assert (args.epochs, args.val_interval, args.dali_num_threads, args.dali_prefetch_queue) \
        == (2147483647, -2147483647, 1024, 256)


def recipe(tmp_path: Path, epochs: str) -> Path:
    path = write_config(tmp_path / "r.yaml")
    text = path.read_text()
    assert "epochs: 2\n" in text
    path.write_text(text.replace("epochs: 2\n", f"epochs: {epochs}\n"))
    return path


def epochs_line(path: Path) -> int:
    return path.read_text().splitlines().index(
        next(line for line in path.read_text().splitlines() if line.startswith("epochs:"))) + 1


@pytest.mark.parametrize("epochs, problem", [
    (HUGE, f"'epochs' must be at most 2147483647, got {HUGE}"),
    ("ninety", "'epochs' must be an integer, got str 'ninety'"),
    ("0", "'epochs' must be >= 1, got 0"),
    ("2024-01-01", "'epochs' must be an integer, got date datetime.date(2024, 1, 1)"),
    ("'90'", "'epochs' must be an integer, got str '90'"),
])
def test_a_wrong_recipe_epochs_is_reported_even_with_e(tmp_path, epochs, problem):
    """-e used to replace the file's value before it was checked: `epochs: ninety` passed."""
    path = recipe(tmp_path, epochs)
    expected = f"{path}, line {epochs_line(path)}: {problem}"
    for override in (None, 5):
        with pytest.raises(ConfigError) as caught:
            load_config(path, override)
        assert str(caught.value) == expected


def test_e_replaces_a_valid_epochs_and_fills_an_absent_one(tmp_path):
    assert load_config(recipe(tmp_path, "90"), 5).epochs == 5
    path = write_config(tmp_path / "absent.yaml")
    path.write_text(path.read_text().replace("epochs: 2\n", ""))
    assert load_config(path, 7).epochs == 7
    with pytest.raises(ConfigError) as caught:
        load_config(path, None)
    assert str(caught.value) == f"{path}: missing or empty required key 'epochs'"


def test_an_integer_key_deeper_in_the_recipe_is_bounded_too(tmp_path):
    path = write_config(tmp_path / "r.yaml")
    text = path.read_text()
    path.write_text(text.replace("warmup_epochs: 1", f"warmup_epochs: {HUGE}"))
    line = next(i for i, row in enumerate(path.read_text().splitlines(), 1)
                if "warmup_epochs" in row)
    with pytest.raises(ConfigError) as caught:
        load_config(path, 5)
    assert str(caught.value) == (f"{path}, line {line}: 'lr_scheduler.args.warmup_epochs' "
                                 f"must be at most 2147483647, got {HUGE}")


@pytest.mark.parametrize("key", ["null", "~"])
def test_a_null_key_is_named_as_written_with_its_line(tmp_path, key):
    """It was "unknown key 'None' in the top level", with no line."""
    path = write_config(tmp_path / "r.yaml")
    path.write_text(path.read_text() + f"{key}: 3\n")
    line = len(path.read_text().splitlines())
    with pytest.raises(ConfigError) as caught:
        load_config(path, None)
    assert str(caught.value) == (f"{path}, line {line}: key '{key}' is YAML's null, not a "
                                 "name: remove it, or quote it")


@slow
@pytest.mark.parametrize("epochs, problem", [
    ("ninety", "'epochs' must be an integer, got str 'ninety'"),
    (HUGE, f"'epochs' must be at most 2147483647, got {HUGE}"),
])
def test_train_reports_the_recipes_epochs_though_e_would_replace_them(tmp_path, epochs,
                                                                       problem):
    path = recipe(tmp_path, epochs)
    before = path.read_text()
    result = run(["train.py", "-a", "mobilenet_v3_small", "-C", path, "-e", "1",
                  "-m", tmp_path / "run"], tmp_path, "train")
    assert result.returncode == USER_ERROR_STATUS
    assert [line for line in result.stderr.splitlines() if line.strip()] == [
        f"error: {path}, line {epochs_line(path)}: {problem}"]
    assert path.read_text() == before
    assert not (tmp_path / "run").exists()
