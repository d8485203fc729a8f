"""create_input_files.py and the list-file facts it relies on, on small real photographs."""
from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from data_fixtures import class_tree, photo, save
from paths import REPO

import create_input_files
from utils.labels.file_list import read_file_list
from utils.labels.imagenet import (
    compare_with_imagenet,
    imagenet_class_names,
    imagenet_val_ground_truth,
    imagenet_wnids,
)
from utils.process.run import run as run_script_main

# sha256 of the official example's label files (section 12 of the reference notes).
OFFICIAL_SHA256 = {
    "label_wordnetid.csv": "4f799b3943e8482553d866e343b8af0b6c26e069ca20447e78ec30c04885c037",
    "label_words.csv": "5b15343f8d1815704dd356259ee04d1fe3e68d8ec25ccbbac6f81c9cf50d5c69",
    "validation_data_label.txt":
        "098d797749a19d2c76f3243494b4d38079446eab41f3b8775212a33e4558a35f",
}


def run(*args: str) -> int:
    """The script's status, as its command line gives it (user errors: one line, 2)."""
    return run_script_main(lambda: create_input_files.main([*args, "--no-progress"]))


def lines(path: Path) -> list:
    return path.read_text().splitlines()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def tiny_jpeg() -> bytes:
    buf = io.BytesIO()
    photo(8, 8).save(buf, "JPEG")
    return buf.getvalue()


def test_train_and_class_folder_validation(tmp_path, capsys):
    train, val, out = tmp_path / "train", tmp_path / "val", tmp_path / "out" / "lists"
    class_tree(str(train), ["zebra", "apple", "mango"], 2)
    save(photo(20, 20), str(train / "mango" / "more" / "deep.jpg"))
    (train / "apple" / "notes.txt").write_text("not an image")
    (train / "README").write_text("top-level file")
    class_tree(str(val), ["zebra", "apple"], 1)

    assert run("-T", str(train), "--val-dir", str(val), "-o", str(out)) == 0
    assert lines(out / "train_label") == [
        "apple/apple_0.JPEG 0", "apple/apple_1.JPEG 0",
        "mango/mango_0.JPEG 1", "mango/mango_1.JPEG 1", "mango/more/deep.jpg 1",
        "zebra/zebra_0.JPEG 2", "zebra/zebra_1.JPEG 2"]
    assert lines(out / "val_label") == ["apple/apple_0.JPEG 0", "zebra/zebra_0.JPEG 2"]
    assert (out / "label_words.csv").read_bytes() == b"0,apple\r\n1,mango\r\n2,zebra\r\n"
    assert (out / "label_wordnetid.csv").read_bytes() == (out / "label_words.csv").read_bytes()
    assert sorted(os.listdir(out)) == ["label_wordnetid.csv", "label_words.csv", "train_label",
                                       "val_label"]  # no temporary files left
    assert "2 non-image file(s) skipped" in capsys.readouterr().out
    files = read_file_list(str(out / "train_label"), str(train), num_classes=3)
    assert files.labels.tolist() == [0, 0, 1, 1, 1, 2, 2]


def test_flat_validation_labelled_by_a_ground_truth_file(tmp_path, capsys):
    train, val = tmp_path / "train", tmp_path / "val"
    class_tree(str(train), ["a", "b", "c"], 1)
    for i in (1, 2, 3):
        save(photo(16, 16, seed=i), str(val / f"ILSVRC2012_val_{i:08d}.JPEG"))
    (val / "LICENSE").write_text("x")
    truth = tmp_path / "truth.txt"
    truth.write_text("2\n0\n1\n")
    assert run("-T", str(train), "--val-dir", str(val), "-V", str(truth),
               "-o", str(tmp_path)) == 0
    assert lines(tmp_path / "val_label") == [
        "ILSVRC2012_val_00000001.JPEG 2", "ILSVRC2012_val_00000002.JPEG 0",
        "ILSVRC2012_val_00000003.JPEG 1"]

    # Without --val-dir: one line per ground-truth line, as the official script wrote.
    assert run("-T", str(train), "-V", str(truth), "-o", str(tmp_path / "plain")) == 0
    assert lines(tmp_path / "plain" / "val_label")[2] == "ILSVRC2012_val_00000003.JPEG 1"

    truth.write_text("2\n0\n")
    assert run("-T", str(train), "--val-dir", str(val), "-V", str(truth)) == 2
    assert "ILSVRC2012_val_00000003.JPEG: image number 3 has no line" in capsys.readouterr().err
    truth.write_text("2\n7\n1\n")
    assert run("-T", str(train), "--val-dir", str(val), "-V", str(truth)) == 2
    assert "truth.txt:2: class id 7 out of range (0..2)" in capsys.readouterr().err
    assert run("-T", str(train), "--val-dir", str(val)) == 2
    assert "flat folder: give its labels with -V" in capsys.readouterr().err


def test_bad_folders_are_named(tmp_path, capsys):
    class_tree(str(tmp_path / "train"), ["a", "b"], 1)
    class_tree(str(tmp_path / "val"), ["a", "zz"], 1)
    assert run("-T", str(tmp_path / "missing")) == 2
    assert f"folder not found: {tmp_path / 'missing'}" in capsys.readouterr().err
    assert run("-T", str(tmp_path / "train"), "--val-dir", str(tmp_path / "val")) == 2
    assert "not among the training classes: zz" in capsys.readouterr().err


def test_label_wordnetid_csv_fixes_the_ids(tmp_path, capsys):
    class_tree(str(tmp_path / "train"), ["a", "b"], 1)
    csv = tmp_path / "ids.csv"
    csv.write_text("0,c\n1,b\n2,a\n")
    assert run("-T", str(tmp_path / "train"), "-L", str(csv), "-o", str(tmp_path)) == 0
    assert lines(tmp_path / "train_label") == ["a/a_0.JPEG 2", "b/b_0.JPEG 1"]
    assert lines(tmp_path / "label_wordnetid.csv") == ["0,c", "1,b", "2,a"]
    csv.write_text("0,b\n")
    assert run("-T", str(tmp_path / "train"), "-L", str(csv)) == 2
    assert "no id for class folder(s) a" in capsys.readouterr().err


def test_verify_lists_and_leaves_out_unreadable_images(tmp_path, capsys):
    train = tmp_path / "train"
    class_tree(str(train), ["a", "b"], 2)
    (train / "a" / "empty.JPEG").write_bytes(b"")
    (train / "a" / "garbage.JPEG").write_bytes(b"\xff\xd8 not really a JPEG")
    photo(16, 16).save(train / "b" / "anim.JPEG", "GIF")
    save(photo(16, 16), str(train / "b" / "png.JPEG"), "PNG")  # DALI decodes PNG: kept
    assert run("-T", str(train), "--verify", "--workers", "2", "-o", str(tmp_path)) == 0
    err = capsys.readouterr().err
    unreadable = sorted(line.split(": ")[1] for line in err.splitlines()
                        if line.startswith("unreadable"))
    assert unreadable == sorted(str(train / p) for p in
                                ["a/empty.JPEG", "a/garbage.JPEG", "b/anim.JPEG"])
    assert "unsupported image format GIF" in err and "left out 3 unreadable" in err
    assert [p.split()[0] for p in lines(tmp_path / "train_label")] == [
        "a/a_0.JPEG", "a/a_1.JPEG", "b/b_0.JPEG", "b/b_1.JPEG", "b/png.JPEG"]


# --------------------------------------------------------------------------- ImageNet


def test_imagenet_facts_from_the_package():
    wnids = imagenet_wnids()
    assert len(set(wnids)) == 1000 and list(wnids) == sorted(wnids)
    assert wnids[0] == "n01440764" and wnids[-1] == "n15075141"
    names = imagenet_class_names()
    assert names[0] == "tench, Tinca tinca" and names[134] == names[517] == "crane"
    truth = imagenet_val_ground_truth()
    assert truth[:5] == [65, 970, 230, 809, 516]
    assert set(Counter(truth).values()) == {50}
    text = "".join(f"{c}\n" for c in truth).encode()
    assert sha256(text) == OFFICIAL_SHA256["validation_data_label.txt"]


@pytest.fixture(scope="module")
def imagenet_train(tmp_path_factory, tiny_jpeg) -> Path:
    root = tmp_path_factory.mktemp("imagenet") / "train"
    for wnid in imagenet_wnids():
        (root / wnid).mkdir(parents=True)
        (root / wnid / f"{wnid}_1.JPEG").write_bytes(tiny_jpeg)
    return root


def test_imagenet_tree_gives_the_official_ids_and_label_files(imagenet_train, tmp_path,
                                                              tiny_jpeg, capsys):
    val = tmp_path / "val"
    val.mkdir()
    for i in (1, 2, 3):
        (val / f"ILSVRC2012_val_{i:08d}.JPEG").write_bytes(tiny_jpeg)
    out = tmp_path / "out"
    assert run("-T", str(imagenet_train), "--val-dir", str(val), "-o", str(out)) == 0
    assert "1000 classes (ImageNet-1k)" in capsys.readouterr().out
    train = lines(out / "train_label")
    assert train[0] == "n01440764/n01440764_1.JPEG 0" and train[999].endswith(" 999")
    assert lines(out / "val_label") == [
        "ILSVRC2012_val_00000001.JPEG 65", "ILSVRC2012_val_00000002.JPEG 970",
        "ILSVRC2012_val_00000003.JPEG 230"]
    for name in ("label_wordnetid.csv", "label_words.csv"):
        assert sha256((out / name).read_bytes()) == OFFICIAL_SHA256[name]

    assert run("-T", str(imagenet_train), "-o", str(tmp_path / "all")) == 0
    val_lines = lines(tmp_path / "all" / "val_label")
    assert len(val_lines) == 50000 and val_lines[4] == "ILSVRC2012_val_00000005.JPEG 516"


def test_wordnet_id_check_names_exactly_the_missing_and_unexpected(tmp_path, capsys):
    root = tmp_path / "train"
    wnids = imagenet_wnids()
    for wnid in wnids[2:] + ("n99999999",):
        (root / wnid).mkdir(parents=True)
    assert compare_with_imagenet(os.listdir(root)) == (list(wnids[:2]), ["n99999999"])
    assert run("-T", str(root)) == 2
    err = capsys.readouterr().err
    assert "2 missing: n01440764 n01443537; 1 unexpected: n99999999" in err
    assert "--no-imagenet-check" in err
    save(photo(8, 8), str(root / "n99999999" / "x.JPEG"))
    assert run("-T", str(root), "--no-imagenet-check", "-o", str(tmp_path)) == 0
    assert lines(tmp_path / "train_label") == ["n99999999/x.JPEG 998"]
    words = lines(tmp_path / "label_words.csv")
    assert words[0] == '0,"great white shark, white shark, man-eater, man-eating shark, ' \
        'Carcharodon carcharias"' and words[998] == "998,n99999999"
    warning = [line for line in capsys.readouterr().err.splitlines() if "without images" in line]
    assert warning[0].startswith("warning: 998 class folder(s) without images: n01484850 ")
    assert warning[0].endswith(" ... (988 more)") and len(warning[0].split()) == 6 + 10 + 3
    assert not (tmp_path / "val_label").exists()  # ImageNet ground truth would not fit


def test_command_line_as_a_user_runs_it(tmp_path):
    class_tree(str(tmp_path / "train"), ["cat", "dog"], 2)
    result = subprocess.run(
        [sys.executable, str(REPO / "create_input_files.py"), "-T", str(tmp_path / "train"),
         "--val-dir", str(tmp_path / "train")],
        cwd=tmp_path, capture_output=True, text=True, check=True)
    assert "train: 4 images, 2 classes" in result.stdout
    assert "scanning" in result.stderr  # the progress bar
    assert lines(tmp_path / "train_label")[-1] == "dog/dog_1.JPEG 1"


def test_caltech_style_split_per_class_and_excluded_folders(tmp_path, capsys):
    """No validation set: of each class (sorted paths), the first int(0.8 n) train."""
    root, out = tmp_path / "101_ObjectCategories", tmp_path / "caltech"
    sizes = {"accordion": 5, "BACKGROUND_Google": 4, "Faces_easy": 3, "ant": 10, "wrench": 1}
    for c, (name, n) in enumerate(sizes.items()):
        for i in range(n):
            save(photo(12, 12, seed=10 * c + i), str(root / name / f"image_{i:04d}.jpg"))
    assert run("-T", str(root), "--exclude", "Faces_easy", "--train-fraction", "0.8",
               "-o", str(out)) == 0
    classes = ["BACKGROUND_Google", "accordion", "ant", "wrench"]  # sorted, Faces_easy out
    assert [line.split(",")[1] for line in lines(out / "label_words.csv")] == classes
    expected_train, expected_val = [], []
    for label, name in enumerate(classes):
        files = [f"{name}/image_{i:04d}.jpg {label}" for i in range(sizes[name])]
        cut = int(0.8 * sizes[name])
        expected_train += files[:cut]
        expected_val += files[cut:]
    assert lines(out / "train_label") == expected_train
    assert lines(out / "val_label") == expected_val
    assert len(expected_train) == 3 + 4 + 8 + 0 and len(expected_val) == 1 + 1 + 2 + 1
    captured = capsys.readouterr()
    assert "val: 5 images (of -T, the last 20% of each class)" in captured.out
    assert "1 class(es) too small to keep a training image at --train-fraction 0.8: wrench" \
        in captured.err
    # The lists load as train.py reads them, against the same folder.
    assert read_file_list(str(out / "val_label"), str(root), 4).labels.tolist() == [0, 1, 2, 2, 3]


def test_split_and_exclude_mistakes_are_named(tmp_path, capsys):
    class_tree(str(tmp_path / "t"), ["a", "b"], 2)
    assert run("-T", str(tmp_path / "t"), "--exclude", "Faces_eas") == 2
    assert f"error: {tmp_path / 't'}: no class folder Faces_eas to exclude" in \
        capsys.readouterr().err
    for bad in (["--train-fraction", "1.5"], ["--train-fraction", "0.8", "--val-dir", "x"]):
        with pytest.raises(SystemExit) as e:
            run("-T", str(tmp_path / "t"), *bad)
        assert e.value.code == 2
    err = capsys.readouterr().err
    assert "must be between 0 and 1, got 1.5" in err
    assert "--train-fraction makes the validation split itself" in err


# ImageNet-1k classes 65, 230 and 970: those of official validation images 1, 3 and 2.
SUBSET = {65: "n01751748", 230: "n02105855", 970: "n09193705"}


@pytest.fixture
def subset_tree(tmp_path, tiny_jpeg):
    """A 3-class ImageNet subset with a flat official validation folder of 4 images, one of a
    class that is not in the subset (image 4: class 809)."""
    train = tmp_path / "train"
    for wnid in SUBSET.values():
        (train / wnid).mkdir(parents=True)
        for i in range(2):
            (train / wnid / f"{wnid}_{i}.JPEG").write_bytes(tiny_jpeg)
    val = tmp_path / "val"
    val.mkdir()
    for i in (1, 2, 3, 4):
        (val / f"ILSVRC2012_val_{i:08d}.JPEG").write_bytes(tiny_jpeg)
    return train, val


def test_a_subset_of_imagenet_gets_ids_in_wordnet_order(subset_tree, tmp_path, capsys):
    train, val = subset_tree
    assert [imagenet_wnids()[i] for i in SUBSET] == list(SUBSET.values())
    out = tmp_path / "out"
    assert run("-T", str(train), "--val-dir", str(val), "-o", str(out)) == 0
    printed = capsys.readouterr().out
    assert "3 of the 1000 ImageNet classes; ids 0..2; --imagenet-ids keeps the 1000-class " \
           "ids" in printed
    assert "val: 1 image(s) of ImageNet classes not among the training classes left out" \
        in printed
    assert lines(out / "train_label")[::2] == [
        "n01751748/n01751748_0.JPEG 0", "n02105855/n02105855_0.JPEG 1",
        "n09193705/n09193705_0.JPEG 2"]
    assert lines(out / "val_label") == [
        "ILSVRC2012_val_00000001.JPEG 0", "ILSVRC2012_val_00000002.JPEG 2",
        "ILSVRC2012_val_00000003.JPEG 1"]
    assert lines(out / "label_wordnetid.csv") == ["0,n01751748", "1,n02105855", "2,n09193705"]
    assert lines(out / "label_words.csv")[0] == "0,sea snake"


def test_imagenet_ids_keep_the_1000_class_ids(subset_tree, tmp_path, capsys):
    train, val = subset_tree
    out = tmp_path / "out"
    assert run("-T", str(train), "--val-dir", str(val), "-o", str(out), "--imagenet-ids") == 0
    assert "their ImageNet-1k ids kept (--imagenet-ids)" in capsys.readouterr().out
    assert {int(line.split()[1]) for line in lines(out / "train_label")} == set(SUBSET)
    assert lines(out / "val_label") == [
        "ILSVRC2012_val_00000001.JPEG 65", "ILSVRC2012_val_00000002.JPEG 970",
        "ILSVRC2012_val_00000003.JPEG 230"]
    assert sha256((out / "label_wordnetid.csv").read_bytes()) == \
        OFFICIAL_SHA256["label_wordnetid.csv"]
    class_tree(str(tmp_path / "pets"), ["cat", "dog"], 1)
    assert run("-T", str(tmp_path / "pets"), "--imagenet-ids", "-o", str(tmp_path)) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: --imagenet-ids: the class folders are not ImageNet-1k WordNet IDs"]


def test_a_near_complete_imagenet_tree_still_stops(tmp_path, capsys):
    root = tmp_path / "train"
    for wnid in imagenet_wnids()[:950]:
        (root / wnid).mkdir(parents=True)
    assert run("-T", str(root), "-o", str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert f"50 missing: {imagenet_wnids()[950]} " in err and "0 unexpected" in err
    assert "--no-imagenet-check" in err


def test_a_validation_class_missing_from_training_is_named(subset_tree, tmp_path, capsys,
                                                          tiny_jpeg):
    train, _ = subset_tree
    val = tmp_path / "val-folders"
    for wnid in [*SUBSET.values(), "n01440764"]:
        (val / wnid).mkdir(parents=True)
        (val / wnid / "x.JPEG").write_bytes(tiny_jpeg)
    for extra in ([], ["--imagenet-ids"]):
        assert run("-T", str(train), "--val-dir", str(val), "-o", str(tmp_path), *extra) == 2
        assert capsys.readouterr().err.splitlines() == [
            f"error: {val}: class folder(s) not among the training classes: n01440764"]
    (val / "n01440764" / "x.JPEG").unlink()
    (val / "n01440764").rmdir()
    assert run("-T", str(train), "--val-dir", str(val), "-o", str(tmp_path),
               "--imagenet-ids") == 0
    assert [line.split()[1] for line in lines(tmp_path / "val_label")] == ["65", "230", "970"]


def test_an_edited_list_is_kept_when_it_is_replaced(tmp_path, capsys):
    class_tree(str(tmp_path / "train"), ["cat", "dog"], 2)
    args = ("-T", str(tmp_path / "train"), "--val-dir", str(tmp_path / "train"),
            "-o", str(tmp_path))
    assert run(*args) == 0
    assert "note:" not in capsys.readouterr().out
    assert run(*args) == 0  # the same contents: nothing to keep
    assert "note:" not in capsys.readouterr().out and not list(tmp_path.glob("*.previous"))
    edited = "cat/cat_0.JPEG 0\n"
    (tmp_path / "train_label").write_text(edited)
    assert run(*args) == 0
    train = tmp_path / "train_label"
    assert capsys.readouterr().out.splitlines()[-1] == \
        f"note: {train} held other contents; the previous file is {train}.previous"
    assert (tmp_path / "train_label.previous").read_text() == edited
    assert len(lines(train)) == 4


def test_any_image_folder_tree_gets_alphabetical_ids(tmp_path, capsys):
    """Class names that are not WordNet IDs, images in nested folders, mixed-case extensions
    and PNG files."""
    root = tmp_path / "flowers"
    save(photo(20, 20), str(root / "tulip" / "field" / "a.Jpg"))
    save(photo(20, 20, seed=1), str(root / "tulip" / "b.PNG"), "PNG")
    save(photo(20, 20, seed=2), str(root / "daisy" / "c.jpeg"))
    (root / "daisy" / "notes.txt").write_text("not an image\n")
    assert run("-T", str(root), "--val-dir", str(root), "-o", str(tmp_path)) == 0
    assert "3 images, 2 classes (folder names), 1 non-image file(s)" in capsys.readouterr().out
    assert lines(tmp_path / "train_label") == [
        "daisy/c.jpeg 0", "tulip/b.PNG 1", "tulip/field/a.Jpg 1"]
    assert lines(tmp_path / "label_words.csv") == ["0,daisy", "1,tulip"]
