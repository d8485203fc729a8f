"""The evaluation sets the field reports, in miniature: ImageNetV2's numbered folders,
ImageNet-A and -R (their 200 WordNet IDs, masked to them), ImageNet-Sketch (1000 WordNet IDs,
images that are not JPEG) and ImageNet-ReaL's labels, each scored by validation.py directly
and checked against errors computed by hand for weights whose predictions are fixed.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from eval_fixtures import DEMO, error_lines, run_main, run_script, write_val_list
from eval_set_fixtures import (
    ARCH,
    FAVOURITES,
    SIZE,
    expected,
    fixed_prediction_weights,
    flat_val,
    tree,
    wnid_folders,
    write_json,
)

import create_input_files
import validation
from utils.eval.sets import (
    IMAGENET_A_CLASSES,
    IMAGENET_R_CLASSES,
    RealCounts,
    read_class_mask,
    read_real_labels,
    real_labels_of,
)
from utils.labels.file_list import FileList
from utils.labels.image_folders import folder_numbers, scan_class_folders, string_order_note
from utils.labels.imagenet import imagenet_wnids
from utils.process.errors import DataError

V2_FOLDERS = ["0", "1", "2", "10", "11", "100", "999"]  # a sparse ImageNetV2


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return fixed_prediction_weights(tmp_path_factory.mktemp("w") / "fixed.h5")


def score(weights, folder, *extra, monitor=None):
    """validation.py --json on `folder` as a user runs it; the parsed result. The monitor
    folder is beside `folder` unless named (not the default ./tmp.val in the checkout, which
    another test process may be using)."""
    args = [weights, "-a", ARCH, "-V", folder, "--spatial-size", SIZE, "-b", 50, "--json",
            "--no-progress", *extra]
    result = run_script("validation.py", *args, "-M", monitor or Path(folder).parent / "mon")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), result.stderr


def assert_errors(result, want):
    assert result["top1_error"] == pytest.approx(want["top1_error"], abs=1e-12)
    assert result["top5_error"] == pytest.approx(want["top5_error"], abs=1e-12)
    assert result["loss"] == pytest.approx(want["loss"], rel=1e-5)


# --------------------------------------------------------------------------- numbered folders


def test_numbered_folders_are_their_own_ids():
    shuffled = ["100", "2", "999", "0", "11", "1", "10"]
    assert folder_numbers(shuffled, "v2") == [100, 2, 999, 0, 11, 1, 10]
    assert folder_numbers(["cat", "dog"], "pets") is None
    with pytest.raises(DataError, match=r"^v2: the class folders mix numbers \(0 1\) and "
                                        r"names \(cat\)"):
        folder_numbers(["0", "1", "cat"], "v2")
    with pytest.raises(DataError, match="^v2: folders 7 and 007 are both class 7$"):
        folder_numbers(["7", "007"], "v2")


def test_a_numbered_tree_is_scanned_in_numeric_order(tmp_path):
    tree(tmp_path, V2_FOLDERS)
    scan = scan_class_folders(str(tmp_path), progress=False)
    assert scan.classes == V2_FOLDERS and scan.numbers == [0, 1, 2, 10, 11, 100, 999]
    assert [p.split("/")[0] for p in scan.paths] == V2_FOLDERS


def test_string_order_that_differs_from_the_numbers_is_said():
    assert string_order_note(["n01440764", "n01443537"]) is None
    assert string_order_note(["class1", "class10", "class2"]) == (
        "class ids follow the string order of the folder names, not the numbers in them: "
        "class10 is id 1, before class2 (id 2)")


def test_create_input_files_writes_the_numbers_as_ids(tmp_path, capsys):
    tree(tmp_path / "train", V2_FOLDERS)
    tree(tmp_path / "val", ["1", "10", "999"])
    assert create_input_files.main(["-T", str(tmp_path / "train"), "--val-dir",
                                    str(tmp_path / "val"), "-o", str(tmp_path / "out"),
                                    "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "numbered folders: the numbers are the class ids, 0..999; 993 id(s) without a " \
           "folder" in out
    train = (tmp_path / "out" / "train_label").read_text().split()
    assert [int(c) for c in train[1::2]] == [0, 1, 2, 10, 11, 100, 999]
    assert (tmp_path / "out" / "val_label").read_text() == \
        "1/1_0.JPEG 1\n10/10_0.JPEG 10\n999/999_0.JPEG 999\n"
    ids = (tmp_path / "out" / "label_wordnetid.csv").read_text().splitlines()
    assert len(ids) == 1000 and ids[10] == "10,10" and ids[3] == "3,3"


def test_imagenet_v2_is_scored_with_its_numbers(weights, tmp_path):
    tree(tmp_path / "v2", V2_FOLDERS, per_class=2)
    result, err = score(weights, tmp_path / "v2")
    labels = [int(f) for f in V2_FOLDERS for _ in range(2)]
    assert result["num_images"] == 14 and result["class_mask"] is None
    assert_errors(result, expected(labels))
    # folder 10 is class 10 (the favourite): string order would have made it class 3
    assert result["top1_error"] == pytest.approx(12 / 14)
    assert "(numbered folders as class ids), scored over all 1000 classes" in err


def test_a_class_mask_file_scores_over_its_classes(weights, tmp_path):
    tree(tmp_path / "v2", [f for f in V2_FOLDERS if f != "10"])
    kept = [0, 1, 2, 11, 100, 999, 5]  # not 10, the favourite
    mask = tmp_path / "mask.txt"
    mask.write_text("\n".join(map(str, kept)) + "\n")
    result, _ = score(weights, tmp_path / "v2", "--class-mask", mask)
    assert result["class_mask"] == {"classes": sorted(kept), "source": str(mask)}
    assert_errors(result, expected([0, 1, 2, 11, 100, 999], kept))
    assert result["top1_error"] == pytest.approx(5 / 6)  # 999 is the best kept class


# --------------------------------------------------------------------------- ImageNet-A, -R


def test_the_two_known_subsets_are_200_imagenet_classes():
    assert len(IMAGENET_A_CLASSES) == len(IMAGENET_R_CLASSES) == 200
    assert max(IMAGENET_A_CLASSES | IMAGENET_R_CLASSES) < 1000
    assert imagenet_wnids()[6] == "n01498041"  # ImageNet-A's first class, the stingray


def test_imagenet_a_is_masked_to_its_200_classes(weights, tmp_path):
    classes = sorted(IMAGENET_A_CLASSES)
    tree(tmp_path / "imagenet-a", wnid_folders(classes))
    result, err = score(weights, tmp_path / "imagenet-a")
    assert result["num_images"] == 200
    assert result["class_mask"]["classes"] == classes
    assert_errors(result, expected(classes, IMAGENET_A_CLASSES))
    # over the 200 classes the best are 6, 11, 13 (favourites), then 15 and 17
    assert result["top1_error"] == pytest.approx(199 / 200)
    assert result["top5_error"] == pytest.approx(195 / 200)
    assert "masked to 200 classes (ImageNet-A's classes)" in err


@pytest.mark.slow
def test_imagenet_r_is_masked_and_the_mask_turns_off(weights, tmp_path):
    classes = sorted(IMAGENET_R_CLASSES)
    tree(tmp_path / "imagenet-r", wnid_folders(classes), per_class=1, kinds=("JPEG", "PNG"))
    masked, _ = score(weights, tmp_path / "imagenet-r")
    assert masked["class_mask"]["source"] == "ImageNet-R's classes"
    assert_errors(masked, expected(classes, IMAGENET_R_CLASSES))
    everything, err = score(weights, tmp_path / "imagenet-r", "--no-class-mask")
    assert everything["class_mask"] is None and "scored over all 1000 classes" in err
    assert_errors(everything, expected(classes))
    assert masked["top5_error"] == pytest.approx(195 / 200)  # 6, 11, 100, 2, 13
    assert everything["top5_error"] == pytest.approx(197 / 200)  # 6, 11, 100 of the 5 best


# --------------------------------------------------------------------------- ImageNet-Sketch


@pytest.mark.slow
def test_imagenet_sketch_with_images_that_are_not_jpeg(weights, tmp_path):
    """1000 WordNet-ID folders; files named .JPEG that are PNG (RGBA, palette), greyscale."""
    tree(tmp_path / "sketch", imagenet_wnids(), kinds=("JPEG", "PNG", "L", "RGBA", "P"))
    result, _ = score(weights, tmp_path / "sketch", monitor=tmp_path / "mon")
    assert result["num_images"] == 1000
    assert_errors(result, expected(range(1000)))
    assert result["top1_error"] == pytest.approx(999 / 1000)
    per_class = (tmp_path / "mon" / "per_class.csv").read_text().splitlines()
    assert len(per_class) == 1001 and per_class[11].startswith('10,"brambling, ')


# --------------------------------------------------------------------------- ImageNet-ReaL

REAL = [[10], [], [1, 10], [6, 2], [3], [], [999, 4], [0], [100], [10, 11], [5, 7], [2]]


@pytest.mark.slow
def test_real_labels_score_any_correct_class(weights, tmp_path):
    names = flat_val(tmp_path / "val", range(1, 13))
    val_list = write_val_list(tmp_path / "val_label", [(n, i % 10) for i, n in
                                                      enumerate(names)])
    real = write_json(tmp_path / "real.json", REAL)
    args = [weights, "-a", ARCH, "-V", tmp_path / "val", "--val-list", val_list,
            "--spatial-size", SIZE, "--real-labels", real, "--no-progress",
            "-M", tmp_path / "mon"]
    result = run_script("validation.py", *args, "--json")
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    # by hand: 10 images have labels; top-1 (class 10) is right for 3 of them; the top 5
    # (10, 6, 999, 11, 100) hit the lists of images 1, 3, 4, 7, 9 and 10
    assert got["real"] == {"top1_error": 1 - 3 / 10, "top5_error": 1 - 6 / 10,
                           "num_images": 10}
    assert_errors(got, expected([i % 10 for i in range(12)]))
    line = run_script("validation.py", *args, "-b", "4", mpi_ranks=2)  # ranks sum their hits
    assert "ReaL top-1 error 70.00 %, top-5 error 40.00 % (10 images with ReaL labels)" \
        in line.stdout
    series = tmp_path / "mon" / "Validation-ReaL-error.series.txt"
    assert series.read_text() == "0 0.7\n"
    assert (tmp_path / "mon" / "Validation-ReaL-top5-error.series.txt").read_text() == \
        "0 0.4\n"


def test_real_counts_by_hand():
    counts = RealCounts([(2,), (), (0, 1), (3,)])

    class Batch:
        indices = np.array([0, 1, 2, 3, 0])
        mask = np.array([[1], [1], [1], [1], [0]], np.float32)

    scores = np.array([[0, 1, 2, 3, 4, 5, 6]] * 5, np.float32)  # ranks 6, 5, 4, 3, 2
    counts.add(scores, Batch)
    counts.all_reduce(type("One", (), {"all_reduce_sum": staticmethod(lambda x: x)}))
    errors = counts.errors()
    assert (errors.top1_error, errors.top5_error, errors.num_images) == (1.0, 1 - 2 / 3, 3)


# --------------------------------------------------------------------------- bad input


def test_real_label_files_that_do_not_fit_are_named(tmp_path):
    files = FileList("val", ["ILSVRC2012_val_00000003.JPEG"], np.zeros(1, np.int32))
    short = write_json(tmp_path / "short.json", [[1], [2]])
    with pytest.raises(DataError, match=r"short.json has labels for 2 images, and "
                                        r"val/ILSVRC2012_val_00000003.JPEG is image 3"):
        real_labels_of(files, read_real_labels(str(short), 1000), str(short))
    for bad, what in (({"a": 1}, "got a JSON dict"), ([1, 2], "entry 1 .* is not a list"),
                      ([[1], ["x"]], "entry 2"), ([[1000]], "entry 1"), ([], "empty list"),
                      ([[True]], "entry 1")):
        path = write_json(tmp_path / "bad.json", bad)
        with pytest.raises(DataError, match=what):
            read_real_labels(str(path), 1000)
    others = FileList("val", ["photo.jpg"], np.zeros(1, np.int32))
    with pytest.raises(DataError, match="not an ILSVRC2012_val_NNNNNNNN file"):
        real_labels_of(others, [[1]], "real.json")
    with pytest.raises(DataError, match="none of the 1 images has ReaL labels"):
        real_labels_of(FileList("v", ["ILSVRC2012_val_00000001.JPEG"], np.zeros(1, np.int32)),
                       [()], "real.json")


def test_mask_files_are_checked(tmp_path):
    path = tmp_path / "mask.txt"
    path.write_text("1, 2\n3\n")
    assert read_class_mask(str(path), 10).classes == (1, 2, 3)
    for text, what in (("1\n10\n", "class id 10 out of range \\(0..9\\)"),
                       ("1\nx\n", "expected class ids, got 'x'"), ("\n", "no class ids")):
        path.write_text(text)
        with pytest.raises(DataError, match=what):
            read_class_mask(str(path), 10)


def one_line(capsys, weights, folder, *extra):
    status = run_main(validation.main, weights, "-a", ARCH, "-V", folder, "--spatial-size",
                      SIZE, "--no-progress", *extra)
    return status, error_lines(capsys.readouterr().err)


def test_bad_trees_and_files_are_one_line_with_status_2(weights, tmp_path, capsys):
    tree(tmp_path / "mixed", ["0", "1", "cat"])
    assert one_line(capsys, weights, tmp_path / "mixed") == (2, [
        f"error: {tmp_path / 'mixed'}: the class folders mix numbers (0 1) and names (cat); "
        "numbered folders are class ids, named ones are sorted: remove or rename the odd "
        "ones"])
    tree(tmp_path / "big", ["1", "1000"])
    assert one_line(capsys, weights, tmp_path / "big") == (2, [
        f"error: {tmp_path / 'big' / '1000'}: class folder 1000 is not a class of the "
        "weight file (0..999)"])
    tree(tmp_path / "pets", ["cat", "dog"])
    status, lines = one_line(capsys, weights, tmp_path / "pets")
    assert status == 2 and len(lines) == 1 and "are neither WordNet IDs nor class numbers: " \
        "give --labels, the id,folder-name csv" in lines[0]
    partial = tmp_path / "partial.csv"
    partial.write_text("".join(f"{i},{'cat' if i == 0 else f'c{i}'}\n" for i in range(1000)))
    status, lines = one_line(capsys, weights, tmp_path / "pets", "--labels", partial)
    assert status == 2 and lines == [
        f"error: {tmp_path / 'pets'}: class folders cat dog are neither WordNet IDs nor class "
        f"numbers: {partial} does not name dog: give the id,folder-name csv of the weight "
        "file's classes (label_wordnetid.csv of create_input_files.py)"]
    tree(tmp_path / "ok", ["1", "3"])
    mask = tmp_path / "mask.txt"
    mask.write_text("3\n1000\n")
    assert one_line(capsys, weights, tmp_path / "ok", "--class-mask", mask) == (2, [
        f"error: {mask}: class id 1000 out of range (0..999)"])
    mask.write_text("3\n")
    status, lines = one_line(capsys, weights, tmp_path / "ok", "--class-mask", mask)
    assert status == 2 and len(lines) == 1 and \
        "class 1 is outside the 1 classes scored" in lines[0]
    real = write_json(tmp_path / "real.json", {"not": "a list"})
    status, lines = one_line(capsys, weights, DEMO / "val", "--val-list",
                             write_val_list(tmp_path / "l", [("ILSVRC2012_val_00000001.JPEG",
                                                              1)]),
                             "--real-labels", real)
    assert status == 2 and lines == [f"error: {real}: expected a list with one list of class "
                                     "ids per validation image, got a JSON dict"]


def test_a_labels_csv_gives_the_ids_of_other_names(weights, tmp_path, capsys):
    tree(tmp_path / "pets", ["cat", "dog"])
    labels = tmp_path / "label_wordnetid.csv"
    names = {0: "cat", FAVOURITES[0]: "dog"}
    labels.write_text("".join(f"{i},{names.get(i, f'c{i}')}\n" for i in range(1000)))
    status = run_main(validation.main, weights, "-a", ARCH, "-V", tmp_path / "pets",
                      "--spatial-size", SIZE, "--no-progress", "--labels", labels, "--json",
                      "-M", tmp_path / "mon")
    assert status == 0
    result = json.loads(capsys.readouterr().out)
    assert_errors(result, expected([0, FAVOURITES[0]]))
    assert result["top1_error"] == 0.5  # dog is class 10, the favourite


def test_a_list_file_still_wins(weights, tmp_path, capsys):
    tree(tmp_path / "v2", V2_FOLDERS)
    listed = write_val_list(tmp_path / "v2" / "val_label", [("10/10_0.JPEG", 3)])
    status = run_main(validation.main, weights, "-a", ARCH, "-V", tmp_path / "v2",
                      "--spatial-size", SIZE, "--no-progress", "--json",
                      "-M", tmp_path / "mon")
    assert status == 0 and listed.exists()
    assert json.loads(capsys.readouterr().out)["num_images"] == 1


def test_the_default_list_of_another_dataset_is_passed_over(weights, tmp_path, capsys,
                                                             caplog, monkeypatch):
    """ImageNet's ./val_label left where ImageNetV2 is scored lists none of its files."""
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.INFO)
    tree(tmp_path / "v2", V2_FOLDERS)
    write_val_list(tmp_path / "val_label", [("ILSVRC2012_val_00000001.JPEG", 65)])
    args = [weights, "-a", ARCH, "-V", "v2", "--spatial-size", SIZE, "--no-progress",
            "--json", "-M", "mon"]
    assert run_main(validation.main, *args) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["num_images"] == len(V2_FOLDERS)
    assert "val_label lists files that are not in v2: scoring its class folders" in \
        caplog.text
    write_val_list(tmp_path / "val_label", [("10/10_0.JPEG", 10), ("2/2_0.JPEG", 2)])
    assert run_main(validation.main, *args) == 0  # a list of its files still wins
    assert json.loads(capsys.readouterr().out)["num_images"] == 2
