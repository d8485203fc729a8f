"""Messages that did not say what to do (issue 34 item 6), each now one line that does, with
status 2 and the user's files unchanged."""
from __future__ import annotations

from pathlib import Path

import pytest
from data_fixtures import class_tree
from eval_fixtures import error_lines, make_weight_file, run_main
from fault_fixtures import run, write_config
from marks import slow
from paths import DEMO

import create_input_files
import infer
from utils.labels.file_list import read_id_csv
from utils.process.errors import USER_ERROR_STATUS

IMAGE = sorted((DEMO / "train" / "bag").iterdir())[0]


def only_line(capsys) -> str:
    lines = [line for line in error_lines(capsys.readouterr().err) if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


@slow
@pytest.mark.parametrize("name", ["tensorboard", "checkpoints", "cfg"])
def test_a_file_where_the_run_makes_a_folder_is_named_before_any_work(tmp_path, name):
    """It was "[Errno 17] File exists", for checkpoints only after an epoch had trained."""
    monitor = tmp_path / "run"
    monitor.mkdir()
    (monitor / name).write_text("mine\n")
    listed = tmp_path / "train_label"
    listed.write_text("".join(f"bag/{p.name} 0\n" for p in sorted(
        (DEMO / "train" / "bag").iterdir())[:4]))
    result = run(["train.py", "-a", "mobilenet_v3_small", "--spatial-size", "32",
                  "--num-classes", "2", "-b", "2", "-T", DEMO / "train", "--train-list", listed,
                  "-v", "0", "-C", write_config(tmp_path / "r.yaml"), "-m", monitor],
                 tmp_path, "train")
    assert result.returncode == USER_ERROR_STATUS
    assert [line for line in result.stderr.splitlines() if line.strip()] == [
        f"error: cannot write to the monitor path {monitor}: {monitor / name} is a file, where "
        f"the run makes its folder {name}/; move the file away or give another folder"]
    assert sorted(p.name for p in monitor.iterdir()) == [name]  # nothing trained or written
    assert (monitor / name).read_text() == "mine\n"


@slow
def test_a_null_recipe_key_is_named_with_its_line(tmp_path):
    """It was "unknown key 'None' in the top level", without a line."""
    recipe = write_config(tmp_path / "r.yaml")
    recipe.write_text(recipe.read_text() + "null: 3\n")
    before = recipe.read_text()
    result = run(["train.py", "-a", "mobilenet_v3_small", "-C", recipe, "-e", "1",
                  "-m", tmp_path / "run"], tmp_path, "train")
    assert result.returncode == USER_ERROR_STATUS
    assert [line for line in result.stderr.splitlines() if line.strip()] == [
        f"error: {recipe}, line {len(before.splitlines())}: key 'null' is YAML's null, not a "
        "name: remove it, or quote it"]
    assert recipe.read_text() == before


def test_a_class_folder_ending_in_a_space_round_trips_through_the_labels_csv(tmp_path, capsys):
    """label_wordnetid.csv wrote `0,cat ` and read it back as 'cat': given as -L, the folder
    'cat ' then had "no id"."""
    class_tree(str(tmp_path / "train"), ["cat ", "dog"], 1)
    assert run_main(create_input_files.main, "-T", tmp_path / "train", "-o", tmp_path / "one",
                    "--no-progress") == 0
    written = tmp_path / "one" / "label_wordnetid.csv"
    assert read_id_csv(str(written)) == ["cat ", "dog"]
    assert run_main(create_input_files.main, "-T", tmp_path / "train", "-o", tmp_path / "two",
                    "-L", written, "--no-progress") == 0
    assert (tmp_path / "two" / "train_label").read_text() \
        == (tmp_path / "one" / "train_label").read_text()
    capsys.readouterr()


@pytest.fixture(scope="module")
def three_classes(tmp_path_factory) -> Path:
    return make_weight_file(tmp_path_factory.mktemp("w") / "w.h5", "mobilenet_v3_small",
                            num_classes=3)


@pytest.mark.parametrize("text, problem", [
    ('0,cat\n1,"dog\n2,eel\n',
     ':2: a quote (") opened on this line is not closed on it; close it or remove it'),
    ('0,cat\n1,dog\n2,"eel\n',
     ':3: a quote (") opened on this line is not closed on it; close it or remove it'),
    ("0,cat\n2,eel\n",
     ": no line for id 1: the ids must run from 0 to the largest, 2, without gaps"),
])
def test_a_labels_csv_says_what_is_wrong_with_it(three_classes, tmp_path, capsys, text,
                                                 problem):
    """An unterminated quote read as "names 2 classes, the weights have 3"; ids 0 and 2 as
    "ids must be 0..1 without gaps"."""
    labels = tmp_path / "labels.csv"
    labels.write_text(text)
    assert run_main(infer.main, IMAGE, three_classes, "-a", "mobilenet_v3_small",
                    "--spatial-size", "32", "--labels", labels) == USER_ERROR_STATUS
    assert only_line(capsys) == f"error: {labels}{problem}"
    assert labels.read_text() == text


def test_a_file_taken_for_the_spatial_size_says_to_put_the_files_first(capsys):
    """`infer.py -a A --spatial-size 32 IMG W.h5` took IMG as a size: "invalid integer
    value"."""
    with pytest.raises(SystemExit) as stopped:
        infer.parse_args(["-a", "resnet18", "--spatial-size", "32", "img.jpg", "w.h5"])
    assert stopped.value.code == USER_ERROR_STATUS
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.split(": ", 1)[1] == (
        "error: argument --spatial-size: expected a size in pixels, got 'img.jpg'; if it is a "
        "file, give the files before --spatial-size, which takes every value after it")
