"""Datasets as people have them, prepared by create_input_files.py and run end to end, each in
miniature with real photographs: a 3-class subset of ImageNet (real WordNet IDs) with a
class-folder validation set; Kaggle's ImageNet layout with LOC_val_solution.csv; the
Tiny-ImageNet layout. Each trains one short epoch through train.py and validates; with
--imagenet-ids a 1000-class weight file validates on the subset directly."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Optional

import pytest
import yaml
from data_fixtures import class_tree, photo, save
from eval_fixtures import make_weight_file, run_script
from paths import CFG

from utils.labels.imagenet import imagenet_val_ground_truth, imagenet_wnids

SUBSET = ("n01751748", "n02105855", "n09193705")  # ImageNet-1k classes 65, 230 and 970


def prepare(tmp_path: Path, *extra: str) -> Path:
    class_tree(str(tmp_path / "train"), SUBSET, 6, size=(40, 36))
    class_tree(str(tmp_path / "val"), SUBSET, 2, size=(40, 36))
    out = tmp_path / ("lists" + "".join(extra))
    run_script("create_input_files.py", "-T", tmp_path / "train", "--val-dir",
               tmp_path / "val", "-o", out, "--no-progress", *extra, check=True)
    return out


def validate(weights: Path, lists: Path, tmp_path: Path, *extra: str,
             val_dir: Optional[Path] = None) -> dict:
    result = run_script("validation.py", weights, "-a", "mobilenet_v3_small", "--spatial-size",
                        "32", "-V", val_dir or tmp_path / "val", "--val-list",
                        lists / "val_label",
                        "-b", "4", "-M", tmp_path / "val-monitor", "--json", "--no-progress",
                        "--dali-num-threads", "1", *extra, check=True)
    return json.loads(result.stdout)


def train_one_epoch(lists: Path, train_dir: Path, val_dir: Path, monitor: Path,
                    classes: int = 3) -> Path:
    run_script("train.py", "-a", "mobilenet_v3_small", "-b", "4", "--spatial-size", "32",
               "-e", "1", "-C", "cfg/quickstart.yaml", "--num-classes", str(classes),
               "-T", train_dir, "--train-list", lists / "train_label",
               "-V", val_dir, "--val-list", lists / "val_label", "-m", monitor,
               "-v", "1", "--dali-num-threads", "1", check=True)
    return monitor / "param_001.h5"


def test_an_imagenet_subset_trains_and_validates(tmp_path):
    lists = prepare(tmp_path)
    weights = train_one_epoch(lists, tmp_path / "train", tmp_path / "val", tmp_path / "run")
    result = validate(weights, lists, tmp_path, "--labels",
                      lists / "label_words.csv")
    assert result["num_images"] == 6 and result["num_classes"] == 3
    assert result["class_names"][1].startswith("Shetland sheepdog")
    with open(tmp_path / "val-monitor" / "per_class.csv", newline="") as f:
        per_class = list(csv.reader(f))
    assert [row[:3] for row in per_class[1:]] == [
        ["0", "sea snake", "2"], ["1", result["class_names"][1], "2"], ["2", "alp", "2"]]
    assert (tmp_path / "val-monitor" / "confusion.png").exists()


@pytest.mark.slow
def test_a_1000_class_weight_file_validates_on_the_subset_with_imagenet_ids(tmp_path):
    lists = prepare(tmp_path, "--imagenet-ids")
    labels = {int(line.split()[1]) for line in (lists / "val_label").read_text().splitlines()}
    assert labels == {65, 230, 970}
    weights = make_weight_file(tmp_path / "imagenet.h5", "mobilenet_v3_small",
                               num_classes=1000)
    result = validate(weights, lists, tmp_path)
    assert result["num_images"] == 6 and result["num_classes"] == 1000
    assert result["class_names"][65] == "sea snake"  # the ImageNet names by default


@pytest.mark.slow
def test_the_kaggle_layout_gives_the_official_labels(tmp_path):
    """ILSVRC/Data/CLS-LOC/{train,val} with LOC_val_solution.csv: the same val_label as the
    official ground truth gives for the same images (images 1-4: classes 65, 970, 230, 809)."""
    root = tmp_path / "kaggle"
    data = root / "ILSVRC" / "Data" / "CLS-LOC"
    class_tree(str(data / "train"), SUBSET, 6, size=(40, 36))
    (data / "val").mkdir()
    truth = imagenet_val_ground_truth()
    rows = ["ImageId,PredictionString"]
    for i in (1, 2, 3, 4):
        save(photo(40, 36, seed=i), str(data / "val" / f"ILSVRC2012_val_{i:08d}.JPEG"))
        wnid = imagenet_wnids()[truth[i - 1]]
        rows.append(f"ILSVRC2012_val_{i:08d},{wnid} 10 20 30 40 {wnid} 1 2 3 4")
    (root / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    (root / "LOC_synset_mapping.txt").write_text(
        "".join(f"{w} kaggle name {i}\n" for i, w in enumerate(imagenet_wnids())))
    lists = tmp_path / "lists"
    official = tmp_path / "official"
    for out, extra in ((lists, ["-V", root / "LOC_val_solution.csv"]), (official, [])):
        run_script("create_input_files.py", "-T", data / "train", "--val-dir", data / "val",
                   "-o", out, "--no-progress", *extra, check=True)
    assert (lists / "val_label").read_text() == (official / "val_label").read_text()
    assert (lists / "val_label").read_text().splitlines() == [
        "ILSVRC2012_val_00000001.JPEG 0", "ILSVRC2012_val_00000002.JPEG 2",
        "ILSVRC2012_val_00000003.JPEG 1"]
    assert (lists / "label_words.csv").read_text().splitlines()[0] == "0,kaggle name 65"
    weights = train_one_epoch(lists, data / "train", data / "val", tmp_path / "run")
    assert validate(weights, lists, tmp_path, val_dir=data / "val")["num_images"] == 3


@pytest.mark.slow
def test_the_tiny_imagenet_layout(tmp_path):
    """train/<wnid>/images/*.JPEG (and a boxes file), val/images with val_annotations.txt,
    words.txt for the names; one WordNet ID that is not an ImageNet-1k class."""
    root = tmp_path / "tiny-imagenet-200"
    wnids = ("n01443537", "n01629819", "n99999999")
    for c, wnid in enumerate(wnids):
        for i in range(6):
            save(photo(40, 36, seed=10 * c + i),
                 str(root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG"))
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("0 0 1 1\n")
    annotations = []
    for i in range(6):
        save(photo(40, 36, seed=100 + i), str(root / "val" / "images" / f"val_{i}.JPEG"))
        annotations.append(f"val_{i}.JPEG\t{wnids[i % 3]}\t0\t0\t10\t10\n")
    (root / "val" / "val_annotations.txt").write_text("".join(annotations))
    (root / "wnids.txt").write_text("".join(f"{w}\n" for w in wnids))
    (root / "words.txt").write_text("n01443537\tgoldfish, Carassius auratus\n"
                                    "n01629819\tEuropean fire salamander\n"
                                    "n99999999\tsomething else\n")
    lists = tmp_path / "lists"
    result = run_script("create_input_files.py", "-T", root / "train", "--val-dir",
                        root / "val", "-o", lists, "--no-progress", check=True)
    assert "1 of the 3 WordNet-ID class folders are not ImageNet-1k classes" in result.stdout
    assert "train: 18 images, 3 classes" in result.stdout and "3 non-image" in result.stdout
    assert (lists / "val_label").read_text().splitlines()[:3] == [
        "images/val_0.JPEG 0", "images/val_1.JPEG 1", "images/val_2.JPEG 2"]
    assert (lists / "label_words.csv").read_text().splitlines()[2] == "2,something else"
    weights = train_one_epoch(lists, root / "train", root / "val", tmp_path / "run")
    result = validate(weights, lists, tmp_path, "--labels", lists / "label_words.csv",
                      val_dir=root / "val")
    assert result["num_images"] == 6
    assert result["class_names"] == ["goldfish, Carassius auratus", "European fire salamander",
                                     "something else"]


@pytest.mark.slow
def test_train_py_runs_a_policy_crop_ranges_and_cutmix_from_the_config(tmp_path):
    lists = prepare(tmp_path)
    config = tmp_path / "policy.yaml"
    recipe = yaml.safe_load((CFG / "quickstart.yaml")
                            .read_text())
    recipe.update(augmentation={"random_area": [0.35, 1], "policy": "trivialaugment"},
                  cutmix=1.0)
    config.write_text(yaml.safe_dump(recipe))
    monitor = tmp_path / "run"
    result = run_script("train.py", "-a", "mobilenet_v3_small", "-b", "4", "--spatial-size",
                        "32", "-e", "1", "-C", config, "--num-classes", "3",
                        "-T", tmp_path / "train", "--train-list", lists / "train_label",
                        "-v", "0", "-m", monitor, "--dali-num-threads", "1", check=True)
    assert "finished 1 epochs" in result.stderr
    saved = (monitor / "cfg" / "policy.yaml").read_text()
    assert "policy: trivialaugment" in saved and "- 0.35" in saved and "cutmix: 1.0" in saved


@pytest.mark.slow
def test_train_py_accumulates_gradients(tmp_path):
    lists = prepare(tmp_path)
    result = run_script("train.py", "-a", "mobilenet_v3_small", "-b", "4", "--spatial-size",
                        "32", "-e", "1", "-C", "cfg/quickstart.yaml", "--num-classes", "3",
                        "-T", tmp_path / "train", "--train-list", lists / "train_label",
                        "-v", "0", "-m", tmp_path / "run", "--dali-num-threads", "1",
                        "--accumulate-steps", "2", check=True)
    # 18 images: 5 iterations of 4, updates of 2 batches (the last of 1)
    assert "batch 4 per rank x 1 rank(s) x 2 accumulated batches = 8 images per update; " \
           "5 iterations per epoch" in result.stderr
    assert "finished 1 epochs" in result.stderr
