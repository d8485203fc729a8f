"""Datasets as people have them, prepared by create_input_files.py and run end to end: a
3-class subset of ImageNet (real WordNet IDs) with a class-folder validation set trains one
short epoch and validates; with --imagenet-ids a published-style 1000-class weight file
validates on the subset directly."""
from __future__ import annotations

import json
from pathlib import Path

from data_fixtures import class_tree
from eval_fixtures import make_weight_file, run_script

SUBSET = ("n01751748", "n02105855", "n09193705")  # ImageNet-1k classes 65, 230 and 970


def prepare(tmp_path: Path, *extra: str) -> Path:
    class_tree(str(tmp_path / "train"), SUBSET, 6, size=(40, 36))
    class_tree(str(tmp_path / "val"), SUBSET, 2, size=(40, 36))
    out = tmp_path / ("lists" + "".join(extra))
    run_script("create_input_files.py", "-T", tmp_path / "train", "--val-dir",
               tmp_path / "val", "-o", out, "--no-progress", *extra, check=True)
    return out


def validate(weights: Path, lists: Path, tmp_path: Path, *extra: str) -> dict:
    result = run_script("validation.py", weights, "-a", "mobilenet_v3_small", "--spatial-size",
                        "32", "-V", tmp_path / "val", "--val-list", lists / "val_label",
                        "-b", "4", "-M", tmp_path / "val-monitor", "--json", "--no-progress",
                        "--dali-num-threads", "1", *extra, check=True)
    return json.loads(result.stdout)


def test_an_imagenet_subset_trains_and_validates(tmp_path):
    lists = prepare(tmp_path)
    monitor = tmp_path / "run"
    run_script("train.py", "-a", "mobilenet_v3_small", "-b", "4", "--spatial-size", "32",
               "-e", "1", "-C", "cfg/quickstart.yaml", "--num-classes", "3",
               "-T", tmp_path / "train", "--train-list", lists / "train_label",
               "-V", tmp_path / "val", "--val-list", lists / "val_label", "-m", monitor,
               "-v", "1", "--dali-num-threads", "1", check=True)
    result = validate(monitor / "param_001.h5", lists, tmp_path, "--labels",
                      lists / "label_words.csv")
    assert result["num_images"] == 6 and result["num_classes"] == 3
    assert result["class_names"][1].startswith("Shetland sheepdog")


def test_a_1000_class_weight_file_validates_on_the_subset_with_imagenet_ids(tmp_path):
    lists = prepare(tmp_path, "--imagenet-ids")
    labels = {int(line.split()[1]) for line in (lists / "val_label").read_text().splitlines()}
    assert labels == {65, 230, 970}
    weights = make_weight_file(tmp_path / "imagenet.h5", "mobilenet_v3_small",
                               num_classes=1000)
    result = validate(weights, lists, tmp_path)
    assert result["num_images"] == 6 and result["num_classes"] == 1000
    assert result["class_names"][65] == "sea snake"  # the ImageNet names by default
