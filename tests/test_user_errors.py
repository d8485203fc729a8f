"""Every failure a user can cause is one line naming what they gave, with one exit status for
all scripts (2), and nothing finished is lost; a programming error keeps its traceback."""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest
from data_fixtures import class_tree
from eval_fixtures import error_lines, make_weight_file, run_main, run_script
from paths import DEMO, REPO

import benchmark
import convert_parameter_format
import create_input_files
import export
import infer
import plot_curves
import train
import validation
from utils.outputs.monitor import MonitorSeries
from utils.process.errors import USER_ERROR_STATUS, DataError
from utils.process.run import run


def one_line(capsys, *parts: str) -> str:
    """The one error line, the last on stderr (warnings and listings may come before it)."""
    lines = [line for line in error_lines(capsys.readouterr().err) if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], lines
    assert "Traceback" not in "".join(lines)
    for part in parts:
        assert part in errors[0], (part, errors[0])
    return errors[0]


def test_a_programming_error_keeps_its_traceback_and_a_user_error_does_not():
    def bug() -> int:
        raise ValueError("an internal invariant broke")

    with pytest.raises(ValueError, match="invariant"):
        run(bug)
    assert run(lambda: (_ for _ in ()).throw(DataError("x.txt: bad"))) == USER_ERROR_STATUS


def test_create_input_files_checks_its_output_folder_first(tmp_path, capsys):
    class_tree(str(tmp_path / "train"), ["cat", "dog"], 1)
    afile = tmp_path / "afile"
    afile.write_text("mine\n")
    for out in (afile, afile / "below"):
        status = run(lambda out=out: create_input_files.main(
            ["-T", str(tmp_path / "train"), "-o", str(out), "--no-progress"]))
        assert status == USER_ERROR_STATUS
        one_line(capsys, f"cannot write to the output folder (-o) {out}: {afile} is a file")
    assert afile.read_text() == "mine\n"


def test_an_empty_split_after_verify_is_an_error(tmp_path, capsys):
    for name in ("cat", "dog"):
        (tmp_path / "train" / name).mkdir(parents=True)
        (tmp_path / "train" / name / "x.JPEG").write_bytes(b"\xff\xd8 not a jpeg")
    status = run(lambda: create_input_files.main(
        ["-T", str(tmp_path / "train"), "--train-fraction", "0.5", "--verify", "--workers", "1",
         "-o", str(tmp_path / "out"), "--no-progress"]))
    assert status == USER_ERROR_STATUS
    one_line(capsys, "no training images left: nothing to write")
    assert not (tmp_path / "out" / "train_label").exists()


def test_plot_curves_names_a_corrupt_series_line_and_an_unwritable_output(tmp_path, capsys):
    monitor = tmp_path / "run"
    monitor.mkdir()
    MonitorSeries(str(monitor), "Train-loss").add(0, 1.5)
    with open(monitor / "Train-loss.series.txt", "a") as f:
        f.write("1 not-a-number\n2 1.0\n")
    assert run(lambda: plot_curves.main([str(monitor)])) == USER_ERROR_STATUS
    one_line(capsys, f"{monitor / 'Train-loss.series.txt'}:2: expected '<index> <value>', "
                     "got '1 not-a-number'")
    (monitor / "Train-loss.series.txt").write_text("0 1.5\n1 1.0\n")
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert run(lambda: plot_curves.main([str(monitor), "-o", str(afile)])) == \
        USER_ERROR_STATUS
    one_line(capsys, str(afile))


def test_paths_that_exist_but_are_not_what_was_expected(tmp_path, capsys):
    args = ["-a", "mobilenet_v3_small", "--num-classes", "10", "--spatial-size", "32",
            "-e", "1", "-b", "4", "-v", "0", "--dali-num-threads", "1"]
    listed = tmp_path / "train_label"
    listed.write_text("".join(f"bag/{n} 0\n" for n in sorted(os.listdir(DEMO / "train" /
                                                                       "bag"))[:4]))
    cases = [
        (["-T", str(DEMO / "train"), "--train-list", str(tmp_path), "-m", str(tmp_path / "m1")],
         f"list file {tmp_path} is a folder; expected a file"),
        (["-T", str(listed), "--train-list", str(listed), "-m", str(tmp_path / "m2")],
         f"image folder {listed} is a file; expected a folder"),
        (["-T", str(DEMO / "train"), "--train-list", str(listed), "-m", str(listed)],
         f"cannot write to the monitor path {listed}: {listed} is a file"),
    ]
    for extra, message in cases:
        assert run_main(train.main, *args, *extra) == USER_ERROR_STATUS
        one_line(capsys, message)


@pytest.mark.slow
def test_a_list_and_a_label_file_given_through_pipes_are_read(tmp_path, capsys):
    """`--train-list <(head -4 train_label)` and a FIFO for --labels: read as any file."""
    names = sorted(os.listdir(DEMO / "train" / "bag"))[:4]
    pipe = tmp_path / "train_label.fifo"
    labels = tmp_path / "labels.fifo"
    os.mkfifo(pipe)
    os.mkfifo(labels)

    def feed(path: Path, text: str) -> None:
        with open(path, "w") as f:
            f.write(text)

    writers = [threading.Thread(target=feed, args=(pipe, "".join(f"bag/{n} 0\n" for n in names))),
               threading.Thread(target=feed, args=(labels, "".join(f"{i},class {i}\n"
                                                                   for i in range(10))))]
    for writer in writers:
        writer.start()
    weights = make_weight_file(tmp_path / "w.h5", "mobilenet_v3_small", num_classes=10)
    assert run_main(train.main, "-a", "mobilenet_v3_small", "--num-classes", "10",
                    "--spatial-size", "32", "-e", "1", "-b", "4", "-v", "0",
                    "--dali-num-threads", "1", "-T", DEMO / "train", "--train-list", pipe,
                    "-m", tmp_path / "run") == 0
    assert run_main(infer.main, DEMO / "train" / "bag" / names[0], weights, "-a",
                    "mobilenet_v3_small", "--spatial-size", "32", "--labels", labels) == 0
    assert "class " in capsys.readouterr().out
    for writer in writers:
        writer.join()


def test_messages_name_what_the_user_gave(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        train.parse_args(["-a", "resnet18", "-e", "0"])
    assert stopped.value.code == USER_ERROR_STATUS
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        ": error: argument -e/--epochs: must be a positive integer, got 0")
    broken = tmp_path / "broken.JPEG"
    data = (DEMO / "val" / "ILSVRC2012_val_00000001.JPEG").read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    weights = make_weight_file(tmp_path / "w.h5", "mobilenet_v3_small", num_classes=10)
    result = run_script("infer.py", broken, weights, "-a", "mobilenet_v3_small",
                        "--spatial-size", "32")
    assert result.returncode == USER_ERROR_STATUS
    [line] = [line for line in error_lines(result.stderr) if line.startswith("error")]
    assert line.startswith(f"error: cannot decode {broken}: ") and "<memory>" not in line
    assert "Traceback" not in result.stderr


def test_the_readme_documents_one_status_convention():
    page = (REPO / "docs" / "troubleshooting.md").read_text()
    section = page.split("## Exit statuses", 1)[1].split("\n#", 1)[0]
    for status in ("`0`", "`1`", "`2`", "`3`", "`75`", "`124`", "`130`"):
        assert status in section, status


@pytest.mark.slow
def test_an_export_that_fails_its_verification_has_its_own_status(tmp_path):
    pytest.importorskip("onnxruntime")
    weights = make_weight_file(tmp_path / "w.h5", "mobilenet_v3_small", num_classes=10)
    result = run_script("export.py", weights, "-a", "mobilenet_v3_small", "--spatial-size",
                        "32", "-o", tmp_path / "m.onnx", "--tolerance", "0")
    assert result.returncode == 3, result.stderr
    assert "nothing written" in result.stderr and not (tmp_path / "m.onnx").exists()


def test_a_binary_file_given_for_a_text_file_is_named(tmp_path, capsys):
    """A JPEG given as a list, csv, ground-truth or series file: one line, not a traceback."""
    jpeg = str(DEMO / "val" / "ILSVRC2012_val_00000001.JPEG")
    weights = make_weight_file(tmp_path / "w.h5", "mobilenet_v3_small", num_classes=10)
    assert run_main(validation.main, weights, "-a", "mobilenet_v3_small", "-V", DEMO / "val",
                    "--val-list", jpeg, "-M", tmp_path / "val") == USER_ERROR_STATUS
    one_line(capsys, f"list file {jpeg} is not UTF-8 text")
    assert run_main(infer.main, jpeg, weights, "-a", "mobilenet_v3_small", "--labels",
                    jpeg) == USER_ERROR_STATUS
    one_line(capsys, f"csv file {jpeg} is not UTF-8 text")
    for flag, what in (("-L", "csv file"), ("-V", "ground-truth file")):
        assert run(lambda flag=flag: create_input_files.main(
            ["-T", str(DEMO / "train"), flag, jpeg, "-o", str(tmp_path / "out"),
             "--no-progress"])) == USER_ERROR_STATUS
        one_line(capsys, f"{what} {jpeg} is not UTF-8 text")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "Train-loss.series.txt").write_bytes(b"\xff\xd8\xff\xe0 binary\n")
    assert run(lambda: plot_curves.main([str(tmp_path / "run")])) == USER_ERROR_STATUS
    one_line(capsys, f"series file {tmp_path / 'run' / 'Train-loss.series.txt'} is not UTF-8")


def test_a_byte_order_mark_is_not_part_of_the_first_line(tmp_path, capsys):
    """Lists and csv files saved by Excel or Notepad start with one; it is no file name."""
    bom = "\ufeff"
    weights = make_weight_file(tmp_path / "w.h5", "mobilenet_v3_small", num_classes=10)
    val_list = tmp_path / "val_label"
    val_list.write_text(bom + "".join(f"ILSVRC2012_val_{i:08d}.JPEG 0\n" for i in (1, 2)),
                        encoding="utf-8")
    labels = tmp_path / "labels.csv"
    labels.write_text(bom + "".join(f"{i},class {i}\r\n" for i in range(10)), encoding="utf-8")
    assert run_main(validation.main, weights, "-a", "mobilenet_v3_small", "--spatial-size",
                    "32", "-V", DEMO / "val", "--val-list", val_list, "--labels", labels,
                    "-M", tmp_path / "val", "--no-progress", "--json") == 0
    assert '"class_names": ["class 0", "class 1"' in capsys.readouterr().out


def test_a_repeated_or_odd_class_id_is_named(tmp_path, capsys):
    """A csv id given twice would silently rename a class; '²' passed str.isdigit, not int()."""
    weights = make_weight_file(tmp_path / "w.h5", "mobilenet_v3_small", num_classes=10)
    image = DEMO / "val" / "ILSVRC2012_val_00000001.JPEG"
    labels = tmp_path / "labels.csv"
    labels.write_text("".join(f"{i},class {i}\n" for i in [*range(10), 3]))
    assert run_main(infer.main, image, weights, "-a", "mobilenet_v3_small", "--labels",
                    labels) == USER_ERROR_STATUS
    one_line(capsys, f"{labels}:11: id 3 given again (first on line 4)")
    labels.write_text("0,a\n\u00b2,b\n")
    assert run_main(infer.main, image, weights, "-a", "mobilenet_v3_small", "--labels",
                    labels) == USER_ERROR_STATUS
    one_line(capsys, f"{labels}:2: expected '<id>,<value>', got ['\u00b2', 'b']")
    truth = tmp_path / "ground_truth.txt"
    truth.write_text("1\n\u00b2\n", encoding="utf-8")
    assert run(lambda: create_input_files.main(
        ["-T", str(DEMO / "train"), "-V", str(truth), "-o", str(tmp_path / "out"),
         "--no-progress"])) == USER_ERROR_STATUS
    one_line(capsys, f"{truth}:2: expected a class id, got '\u00b2'")


def test_a_weight_file_with_nan_values_is_refused(tmp_path, capsys):
    """Its NaN outputs compared as right answers: validation reported 0 % error."""
    weights = make_weight_file(tmp_path / "w.h5", "mobilenet_v3_small", num_classes=10)
    with h5py.File(weights, "r+") as f:
        beta = f["last-conv-1/bn/beta"][()]
        beta.flat[0] = np.nan
        f["last-conv-1/bn/beta"][...] = beta
    val_list = tmp_path / "val_label"
    val_list.write_text("ILSVRC2012_val_00000001.JPEG 7\n")
    assert run_main(validation.main, weights, "-a", "mobilenet_v3_small", "--spatial-size",
                    "32", "-V", DEMO / "val", "--val-list", val_list, "-M", tmp_path / "val",
                    "--no-progress") == USER_ERROR_STATUS
    one_line(capsys, f"{weights}: parameter 'last-conv-1/bn/beta' holds 1 NaN or infinite "
                     "value(s)")


@pytest.mark.parametrize("flag, value, words", [
    ("--seed", "-1", "argument --seed: must be in 0..2147483647, got -1"),
    ("--seed", "2147483648", "argument --seed: must be in 0..2147483647, got 2147483648"),
    ("--hang-timeout", "inf", "argument --hang-timeout: must be a number of seconds up to 1e+09"),
    ("--hang-timeout", "nan", "argument --hang-timeout: must be a number of seconds up to 1e+09"),
])
def test_a_seed_or_timeout_the_libraries_refuse_is_a_usage_error(flag, value, words, capsys):
    """These were tracebacks from nn.seed and faulthandler (nan silently disabled the watch)."""
    with pytest.raises(SystemExit) as stopped:
        train.parse_args(["-a", "resnet18", flag, value])
    assert stopped.value.code == USER_ERROR_STATUS
    assert words in capsys.readouterr().err


def test_create_input_files_needs_at_least_one_worker(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        create_input_files.main(["-T", str(DEMO / "train"), "--verify", "--workers", "0",
                                 "-o", str(tmp_path / "out"), "--no-progress"])
    assert stopped.value.code == USER_ERROR_STATUS
    assert "argument --workers: must be a positive integer, got 0" in capsys.readouterr().err


def test_a_weight_file_is_written_into_new_folders_and_not_under_a_file(tmp_path, capsys):
    """The room check measured a folder not created yet: '[Errno 2] No such file or
    directory'; and a file in the way read 'File exists'."""
    weights = make_weight_file(tmp_path / "w.h5", "mobilenet_v3_small", num_classes=10)
    new = tmp_path / "new" / "sub" / "w_nhwc.h5"
    assert run_main(convert_parameter_format.main, weights, new, "-m", "nhwc") == 0
    assert new.is_file()
    afile = tmp_path / "afile"
    afile.write_text("mine\n")
    for out in (afile / "w_nhwc.h5", afile / "below" / "w_nhwc.h5"):
        assert run_main(convert_parameter_format.main, weights, out, "-m", "nhwc") == \
            USER_ERROR_STATUS
        one_line(capsys, f"cannot write {out}: {afile} is a file, not a folder")
    assert afile.read_text() == "mine\n"


def test_a_validation_batch_beyond_the_images_is_cut_to_them(tmp_path, caplog):
    """-b 20000 over 4 images built a 20000-image batch: a minute and 3 GB at 32x32."""
    caplog.set_level(logging.INFO)
    weights = make_weight_file(tmp_path / "w.h5", "mobilenet_v3_small", num_classes=10)
    val_list = tmp_path / "val_label"
    val_list.write_text("ILSVRC2012_val_00000001.JPEG 7\nILSVRC2012_val_00000002.JPEG 0\n")
    assert run_main(validation.main, weights, "-a", "mobilenet_v3_small", "--spatial-size",
                    "32", "-V", DEMO / "val", "--val-list", val_list, "-M", tmp_path / "val",
                    "--no-progress", "-b", "1000") == 0
    assert "1 rank(s) x batch 2, 32x32" in caplog.text


def test_outputs_that_overflow_are_not_reported_as_right_answers(tmp_path, capsys):
    """Finite weights whose logits overflow give NaN outputs, which compared as no error."""
    weights = make_weight_file(tmp_path / "w.h5", "mobilenet_v3_small", num_classes=10)
    with h5py.File(weights, "r+") as f:
        f["linear/affine/W"][...] = np.full(f["linear/affine/W"].shape, 3e38, np.float32)
    val_list = tmp_path / "val_label"
    val_list.write_text("ILSVRC2012_val_00000001.JPEG 7\nILSVRC2012_val_00000002.JPEG 2\n")
    assert run_main(validation.main, weights, "-a", "mobilenet_v3_small", "--spatial-size",
                    "32", "-V", DEMO / "val", "--val-list", val_list, "-M", tmp_path / "val",
                    "--no-progress") == USER_ERROR_STATUS
    one_line(capsys, "the network's outputs are not finite (loss nan)", "try -t float")
    assert not (tmp_path / "val").exists() or not any((tmp_path / "val").iterdir())


def test_recompute_bn_without_a_training_list_names_the_flag(tmp_path, capsys, monkeypatch):
    weights = make_weight_file(tmp_path / "w.h5", "mobilenet_v3_small", num_classes=10)
    val_list = tmp_path / "val_label"
    val_list.write_text("ILSVRC2012_val_00000001.JPEG 7\n")
    monkeypatch.chdir(tmp_path)  # no train_label here, the default list
    assert run_main(validation.main, weights, "-a", "mobilenet_v3_small", "--spatial-size",
                    "32", "-V", DEMO / "val", "--val-list", val_list, "-M", tmp_path / "val",
                    "--no-progress", "--recompute-bn", "2") == USER_ERROR_STATUS
    one_line(capsys, "--recompute-bn needs the training images: list file train_label "
                     "(--train-list) not found")



@pytest.mark.parametrize("script, needed", [
    (train, ["-a", "resnet18"]), (benchmark, []), (create_input_files, ["-T", "x"]),
    (convert_parameter_format, ["in.h5", "out.h5"]),
    (export, ["w.h5", "-o", "m.nnp", "--softmax"])])
def test_an_empty_or_spaced_argument_no_flag_takes_is_shown_quoted(script, needed, capsys):
    """Found by scripts/probe_flags.py: `--channel-last ''` ended in "unrecognized arguments: "
    with nothing after it, the empty argument invisible."""
    with pytest.raises(SystemExit) as exit_info:
        script.build_parser().parse_args([*needed, "", "a b"])
    assert exit_info.value.code == USER_ERROR_STATUS
    last = capsys.readouterr().err.splitlines()[-1]  # "<prog>: error: ..." (prog: pytest's)
    assert last.split(": ", 1)[1] == "error: unrecognized arguments: '' 'a b'", last
