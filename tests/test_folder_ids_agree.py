"""The same class-folder trees given to both scripts get the same ids: create_input_files.py
writing val_label, and validation.py scoring the tree directly (no list file).

Each validation folder holds a different number of images (the k-th one k + 1), so the
per_class.csv validation.py writes (id, images) tells which id it gave each folder.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import pytest
from data_fixtures import photo, save
from eval_fixtures import error_lines, run_main
from eval_set_fixtures import ARCH, SIZE, fixed_prediction_weights

import create_input_files
import validation
from utils.labels.folder_labels import (
    BY_NAMES,
    BY_NUMBERS,
    BY_ORDER,
    BY_WORDNET_IDS,
    ClassNames,
    class_folder_ids,
)
from utils.labels.imagenet import imagenet_wnids
from utils.process.errors import DataError
from utils.process.run import run

WNIDS = imagenet_wnids()


def folders_of_images(root: Path, counts: Dict[str, int]) -> Path:
    """One folder per name holding `counts[name]` tiny JPEGs."""
    for c, (name, count) in enumerate(counts.items()):
        for i in range(count):
            save(photo(20, 18, seed=10 * c + i), str(root / name / f"{i}.JPEG"))
    return root


def validation_tree(root: Path, folders: Sequence[str]) -> Dict[str, int]:
    """The k-th folder with k + 1 images; returns the counts."""
    counts = {name: k + 1 for k, name in enumerate(folders)}
    folders_of_images(root, counts)
    return counts


def listed_ids(val_label: Path) -> Dict[str, int]:
    """folder -> id, as create_input_files.py wrote val_label."""
    ids: Dict[str, int] = {}
    for line in val_label.read_text().splitlines():
        path, label = line.rsplit(" ", 1)
        assert ids.setdefault(path.split("/")[0], int(label)) == int(label)
    return ids


def scored_ids(per_class: Path, counts: Dict[str, int]) -> Dict[str, int]:
    """folder -> id, as validation.py scored the tree: each folder is known by its count."""
    with open(per_class, newline="") as f:
        rows = list(csv.DictReader(f))
    folder_of = {n: name for name, n in counts.items()}
    return {folder_of[int(r["images"])]: int(r["class"]) for r in rows}


def run_create(tmp_path: Path, *extra: str) -> Tuple[int, Path]:
    out = tmp_path / "lists"
    status = run(lambda: create_input_files.main(
        ["-T", str(tmp_path / "train"), "--val-dir", str(tmp_path / "val"), "-o", str(out),
         "--no-progress", *extra]))
    return status, out


def run_validation(weights: Path, tmp_path: Path, monitor: str, *extra: object) -> int:
    return run_main(validation.main, weights, "-a", ARCH, "-V", tmp_path / "val",
                    "--spatial-size", SIZE, "--no-progress", "-b", 8,
                    "-M", tmp_path / monitor, *extra)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Weight files of 1000, 12, 4 and 3 classes (their predictions do not matter here)."""
    folder = tmp_path_factory.mktemp("weights")
    return {k: fixed_prediction_weights(folder / f"w{k}.h5", k) for k in (1000, 12, 4, 3)}


# (training folders, validation folders, create_input_files.py flags, classes of the weight
# file, validation.py flags, the ids both must give)
LABELS_CSV = "{lists}/label_wordnetid.csv"
CASES = {
    "numbered folders": (
        ["0", "1", "2", "10", "11"], ["1", "10", "11"], [], 12, [],
        {"1": 1, "10": 10, "11": 11}),
    "numbered folders, the written csv": (
        ["0", "1", "2", "10", "11"], ["2", "11"], [], 12, ["--labels", LABELS_CSV],
        {"2": 2, "11": 11}),
    "WordNet IDs with their ImageNet-1k ids": (
        [WNIDS[900], WNIDS[5], WNIDS[7], WNIDS[10]], [WNIDS[10], WNIDS[900], WNIDS[7]],
        ["--imagenet-ids"], 1000, [],
        {WNIDS[10]: 10, WNIDS[900]: 900, WNIDS[7]: 7}),
    "WordNet IDs of a subset, the written csv": (
        [WNIDS[900], WNIDS[5], WNIDS[7], WNIDS[10]], [WNIDS[900], WNIDS[7]], [], 4,
        ["--labels", LABELS_CSV], {WNIDS[7]: 1, WNIDS[900]: 3}),
    "names of a csv": (
        ["cat", "dog", "emu", "fox"], ["fox", "cat", "emu"], ["-L", "{tmp}/names.csv"], 4,
        ["--labels", "{tmp}/names.csv"], {"fox": 0, "cat": 1, "emu": 2}),
    "names in alphabetical order, the written csv": (
        ["fox", "cat", "emu", "dog"], ["emu", "dog"], [], 4, ["--labels", LABELS_CSV],
        {"dog": 1, "emu": 2}),
}


def filled(flags: Sequence[str], tmp_path: Path, lists: Path) -> List[str]:
    return [f.format(tmp=tmp_path, lists=lists) for f in flags]


@pytest.mark.parametrize("case", list(CASES))
def test_both_scripts_give_a_tree_the_same_ids(case, weights, tmp_path, monkeypatch, capsys):
    train, val, create_flags, num_classes, validation_flags, want = CASES[case]
    monkeypatch.chdir(tmp_path)  # no ./val_label but the test's
    (tmp_path / "names.csv").write_text("0,fox\n1,cat\n2,emu\n3,dog\n")
    folders_of_images(tmp_path / "train", {name: 1 for name in train})
    counts = validation_tree(tmp_path / "val", val)
    status, lists = run_create(tmp_path, *filled(create_flags, tmp_path, lists=tmp_path /
                                                 "lists"))
    assert status == 0, capsys.readouterr().err
    written = listed_ids(lists / "val_label")
    status = run_validation(weights[num_classes], tmp_path, "mon",
                            *filled(validation_flags, tmp_path, lists))
    assert status == 0, capsys.readouterr().err
    scored = scored_ids(tmp_path / "mon" / "per_class.csv", counts)
    assert written == scored == want


@pytest.mark.parametrize("train, val, num_classes, validation_flags, validation_error", [
    (["cat", "dog", "emu"], ["cat", "cow"], 3, ["--labels", LABELS_CSV],
     "{val}: class folders cat cow are neither WordNet IDs nor class numbers: "
     "{lists}/label_wordnetid.csv does not name cow: give the id,folder-name csv of the "
     "weight file's classes (label_wordnetid.csv of create_input_files.py)"),
    (["0", "1", "11"], ["1", "12"], 12, [],
     "{val}/12: class folder 12 is not a class of the weight file (0..11)"),
])
def test_a_folder_that_is_no_training_class_is_refused_by_both(
        train, val, num_classes, validation_flags, validation_error, weights, tmp_path,
        monkeypatch, capsys):
    """A validation folder the training set does not have: one line naming it, status 2,
    from each script (validation.py given the csv create_input_files.py writes without it)."""
    monkeypatch.chdir(tmp_path)
    folders_of_images(tmp_path / "train", {name: 1 for name in train})
    validation_tree(tmp_path / "val", val)
    status, lists = run_create(tmp_path)
    assert status == 2 and error_lines(capsys.readouterr().err) == [
        f"error: {tmp_path / 'val'}: class folder(s) not among the training classes: "
        f"{val[1]}"]
    assert create_input_files.main(["-T", str(tmp_path / "train"), "-o", str(lists),
                                    "--no-progress"]) == 0
    status = run_validation(weights[num_classes], tmp_path, "mon",
                            *filled(validation_flags, tmp_path, lists))
    assert status == 2 and error_lines(capsys.readouterr().err) == [
        "error: " + validation_error.format(val=tmp_path / "val", lists=lists)]


# --------------------------------------------------------------------------- the rules


def test_names_then_numbers_then_wordnet_ids_decide():
    csv_names = ClassNames(["b", "a", "7"], "ids.csv")
    assert class_folder_ids(["a", "b"], None, "v", csv_names, 3).ids == [1, 0]
    numbered = class_folder_ids(["2", "7"], [2, 7], "v", csv_names, 10)
    assert (numbered.ids, numbered.rule, numbered.names[7]) == ([2, 7], BY_NUMBERS, "7")
    imagenet = class_folder_ids([WNIDS[3], WNIDS[999]], None, "v", None, 1000)
    assert (imagenet.ids, imagenet.rule) == ([3, 999], BY_WORDNET_IDS)
    assert class_folder_ids(["a", "b"], None, "v", csv_names, 3).rule == BY_NAMES
    training = class_folder_ids(["a", "b", "c"], None, "train")
    assert (training.ids, training.names, training.rule) == ([0, 1, 2], ["a", "b", "c"],
                                                              BY_ORDER)
    assert class_folder_ids(["0", "5"], [0, 5], "train").names == ["0", "1", "2", "3", "4", "5"]


def test_names_that_must_name_every_folder_refuse_in_one_line():
    strict = ClassNames(["a", "b", "c"], "the training classes", allowed=frozenset("ab"),
                        refusal="{root}: not among {source}: {folders}")
    assert class_folder_ids(["b"], None, "val", strict).ids == [1]
    with pytest.raises(DataError, match=r"^val: not among the training classes: c, d$"):
        class_folder_ids(["a", "c", "d"], None, "val", strict)
    with pytest.raises(DataError, match=r"^val: not among the training classes: 1$"):
        class_folder_ids(["1"], [1], "val", strict, 10)  # numbers do not get around it
    with pytest.raises(DataError, match=r"^v: class folder\(s\) not among ImageNet-1k's "
                                        r"classes: n00000001$"):
        class_folder_ids([WNIDS[0], "n00000001"], None, "v", None, 1000)
    with pytest.raises(DataError, match=r"^v: WordNet-ID folders are ImageNet-1k's class ids, "
                                        r"and the weight file has 4 classes"):
        class_folder_ids([WNIDS[0]], None, "v", None, 4)
    with pytest.raises(DataError, match=r"^v: class folders a b are neither WordNet IDs nor "
                                        r"class numbers: ids.csv does not name a: give the"):
        class_folder_ids(["a", "b"], None, "v", ClassNames(["b"], "ids.csv"), 4)
