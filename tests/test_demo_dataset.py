"""The committed Fashion-MNIST demo set (data/demo) and the script that makes it.

The checks of data/demo need only the committed files. The reproducibility check runs
scripts/make_demo_dataset.py on a tiny subset and needs the Fashion-MNIST idx files (the
Debian package dataset-fashion-mnist); without them it is skipped.
"""
import hashlib
import importlib.util
import sys
from collections import Counter
from pathlib import Path

import pytest
from paths import DEMO, REPO
from PIL import Image

# Class folder names; their alphabetical order gives the class ids 0..9.
CLASSES = [
    "ankle_boot", "bag", "coat", "dress", "pullover",
    "sandal", "shirt", "sneaker", "trouser", "tshirt_top",
]  # fmt: skip
TRAIN_PER_CLASS = 200
VAL_PER_CLASS = 40
NUM_VAL = VAL_PER_CLASS * len(CLASSES)


def _load_script():
    """Import scripts/make_demo_dataset.py (scripts/ is not a package)."""
    name = "make_demo_dataset"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up here
        spec.loader.exec_module(module)
    return sys.modules[name]


def _assert_demo_image(path: Path) -> None:
    with Image.open(path) as image:
        assert image.format == "JPEG", path
        assert image.size == (28, 28), path
        image.load()
        assert image.convert("RGB").size == (28, 28)


def _tree_digest(root: Path) -> dict:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_train_folders():
    assert sorted(p.name for p in (DEMO / "train").iterdir()) == CLASSES
    for name in CLASSES:
        files = sorted((DEMO / "train" / name).iterdir())
        assert len(files) == TRAIN_PER_CLASS, name
        for path in files:
            assert path.name.startswith(f"{name}_") and path.suffix == ".JPEG", path
            _assert_demo_image(path)


def test_val_folder_and_ground_truth():
    files = sorted(p.name for p in (DEMO / "val").iterdir())
    assert files == [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, NUM_VAL + 1)]
    for name in files:
        _assert_demo_image(DEMO / "val" / name)

    lines = (DEMO / "val_ground_truth.txt").read_text().splitlines()
    assert len(lines) == NUM_VAL
    ids = [int(line) for line in lines]
    assert set(ids) <= set(range(len(CLASSES)))
    assert Counter(ids) == {class_id: VAL_PER_CLASS for class_id in range(len(CLASSES))}
    # Shuffled, not grouped by class: the first 40 images are not all one class.
    assert len(set(ids[:VAL_PER_CLASS])) > 1


def test_readme_attributes_fashion_mnist():
    text = (DEMO / "README.md").read_text(encoding="utf-8")
    for needle in ("Zalando", "MIT", "Fashion-MNIST: a Novel Image Dataset", "Xiao"):
        assert needle in text


def test_class_ids_are_alphabetical():
    script = _load_script()
    assert list(script.CLASS_NAMES) == CLASSES
    assert sorted(script.FASHION_LABEL_NAMES) == CLASSES


def test_script_is_deterministic(tmp_path):
    script = _load_script()
    if not script.source_available(script.DEFAULT_SOURCE):
        pytest.skip(
            f"Fashion-MNIST idx files not in {script.DEFAULT_SOURCE} "
            "(apt-get install dataset-fashion-mnist)"
        )
    digests = []
    for run in ("a", "b"):
        summary = script.make_demo_dataset(
            script.DEFAULT_SOURCE, tmp_path / run, train_per_class=3, val_per_class=2
        )
        assert (summary.train_count, summary.val_count) == (3 * len(CLASSES), 2 * len(CLASSES))
        digests.append(_tree_digest(tmp_path / run))
    assert digests[0] == digests[1]
    assert len(digests[0]) == 5 * len(CLASSES) + 1  # images + ground truth
    gt = (tmp_path / "a" / "val_ground_truth.txt").read_text().split()
    assert Counter(gt) == {str(i): 2 for i in range(len(CLASSES))}

    # The committed set was made with the default seed: the same selection comes out.
    committed = sorted(p.name for p in (DEMO / "train" / "sneaker").iterdir())
    full = script.make_demo_dataset(script.DEFAULT_SOURCE, tmp_path / "full")
    assert full.train_count == TRAIN_PER_CLASS * len(CLASSES)
    assert sorted(p.name for p in (tmp_path / "full" / "train" / "sneaker").iterdir()) == committed
    assert (tmp_path / "full" / "val_ground_truth.txt").read_bytes() == (
        DEMO / "val_ground_truth.txt"
    ).read_bytes()
