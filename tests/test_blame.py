"""Messages that blame the right thing: what the file really is, the published name it
resembles, the file that stands where a folder should, the flag and folder of a default."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from eval_fixtures import error_lines, make_weight_file, run_main
from paths import DEMO, REPO

import convert_parameter_format
import export
import infer
import plot_curves
import train
from utils.outputs.monitor import MonitorSeries
from utils.process.atomic import atomic_write_text
from utils.process.errors import USER_ERROR_STATUS
from utils.process.run import run
from utils.weights.download import CACHE_ENV
from utils.weights.published import resembling

PHOTO = DEMO / "val" / "ILSVRC2012_val_00000001.JPEG"
SMALL = ["-a", "mobilenet_v3_small", "--spatial-size", "32"]


def the_line(capsys) -> str:
    lines = [line for line in error_lines(capsys.readouterr().err) if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return make_weight_file(tmp_path_factory.mktemp("w") / "w.h5", "mobilenet_v3_small")


@pytest.mark.parametrize("typed, meant", [
    ("rn50_nhwc_cos90.h5", "rn50-nhwc_cos90.h5"),
    ("RN50-NHWC_COS90.H5", "rn50-nhwc_cos90.h5"),
    ("efficientnet_b0_nhwc_cos350.h5", "efficientnet_b0_nhwc_cos340.h5"),
    ("mbnv3_small_nchw_cos90.h5", "mbnv3_small_nchw_cos90.v2.h5"),
    ("w.h5", None), ("param_010.h5", None), ("rn50-nhwc_cos90.h5", None)])
def test_a_misspelt_published_name_is_recognised(typed, meant):
    assert resembling(typed) == meant


def test_a_misspelt_published_name_is_suggested(tmp_path, capsys, monkeypatch):
    """It was told "-a is required", or "no such weight file" alone."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="^2$"):  # a usage error
        infer.parse_args([str(PHOTO), "rn50_nhwc_cos90.h5"])
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        "(only a published weight file's name tells its network); did you mean the "
        "published rn50-nhwc_cos90.h5?")
    assert run_main(infer.main, PHOTO, "rn50_nhwc_cos90.h5", "-a", "resnet50") == \
        USER_ERROR_STATUS
    assert the_line(capsys) == ("error: rn50_nhwc_cos90.h5: no such weight file; did you mean "
                                "the published rn50-nhwc_cos90.h5?")


@pytest.mark.slow
def test_an_nnp_file_or_a_checkpoint_given_as_weights_is_named_as_such(weights, tmp_path,
                                                                       capsys):
    """Both are zip archives and were called truncated. (infer.py and validation.py run an
    NNP file as the model; a script that needs a weight file names it.)"""
    model = tmp_path / "m.nnp"
    assert run_main(export.main, weights, *SMALL, "-o", model, "--no-verify") == 0
    capsys.readouterr()
    assert run_main(infer.main, PHOTO, model, *SMALL) == 0
    capsys.readouterr()
    assert run_main(convert_parameter_format.main, model, tmp_path / "m.h5", "-m",
                    "nhwc") == USER_ERROR_STATUS
    assert the_line(capsys) == (f"error: {model}: an NNP model (export.py writes them for "
                                "NNabla's runtimes), not a weight file: give the .h5 it was "
                                "exported from")
    run = tmp_path / "run"
    listed = tmp_path / "train_label"
    listed.write_text("".join(f"bag/{n} 0\n" for n in sorted(os.listdir(DEMO / "train" /
                                                                       "bag"))[:2]))
    assert run_main(train.main, "-a", "mobilenet_v3_small", "--num-classes", "10",
                    "--spatial-size", "32", "-e", "1", "-b", "2", "-v", "0",
                    "--dali-num-threads", "1", "-T", DEMO / "train", "--train-list", listed,
                    "-m", run) == 0
    capsys.readouterr()
    [checkpoint] = (run / "checkpoints").glob("*.npz")
    assert run_main(convert_parameter_format.main, checkpoint, tmp_path / "c.h5", "-m",
                    "nhwc") == USER_ERROR_STATUS
    assert the_line(capsys) == (f"error: {checkpoint}: a training checkpoint, not a weight "
                                "file: train.py resumes from it (the same command, the same "
                                "-m); the run's weight files are its param_NNN.h5")


@pytest.mark.parametrize("length", [241, 250, 255])
def test_an_output_name_that_fits_is_written(tmp_path, weights, length):
    """The temporary name (.tmp-<name>.<8 random>) was longer: 'File name too long'."""
    text = tmp_path / ("t" * (length - 4) + ".txt")
    atomic_write_text(str(text), "kept\n")
    assert text.read_text() == "kept\n"
    out = tmp_path / ("w" * (length - 3) + ".h5")
    assert run_main(convert_parameter_format.main, weights, out, "-m", "nhwc") == 0
    assert out.is_file() and len(out.name) == length
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([text.name, out.name])


def test_a_file_where_a_folder_should_be_is_named(weights, tmp_path, capsys, monkeypatch):
    afile = tmp_path / "afile"
    afile.write_text("mine\n")
    monkeypatch.setenv(CACHE_ENV, str(afile / "cache"))
    assert run_main(infer.main, PHOTO, "rn50-nhwc.h5") == USER_ERROR_STATUS
    assert the_line(capsys) == (f"error: cannot write to the weight cache "
                                f"($NNABLA_IMAGENET_CACHE) {afile / 'cache'}: {afile} is a file")
    assert run(lambda: plot_curves.main([str(afile)])) == USER_ERROR_STATUS
    assert the_line(capsys) == f"error: monitor folder {afile} is a file; expected a folder"
    monitor = tmp_path / "run"
    monitor.mkdir()
    MonitorSeries(str(monitor), "Train-loss").add(0, 1.5)
    assert run(lambda: plot_curves.main([str(monitor), "-o", str(afile)])) == \
        USER_ERROR_STATUS
    assert the_line(capsys) == (f"error: cannot write to the output folder (-o) {afile}: "
                                f"{afile} is a file")
    out = afile / "sub" / "m.nnp"
    assert run_main(export.main, weights, *SMALL, "-o", out) == USER_ERROR_STATUS
    assert the_line(capsys) == f"error: {out}: {afile} is a file, not a folder"
    assert afile.read_text() == "mine\n"


def test_the_default_list_names_its_flag_and_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_main(train.main, "-a", "mobilenet_v3_small", "--num-classes", "10",
                    "-T", DEMO / "train", "-m", tmp_path / "run") == USER_ERROR_STATUS
    assert the_line(capsys) == (f"error: list file train_label (--train-list) not found in "
                                f"{os.getcwd()}: create_input_files.py -T <training folder> "
                                "-o <folder> writes it as <folder>/train_label")


def test_another_class_count_without_finetune_names_finetune(weights, tmp_path, capsys):
    listed = tmp_path / "train_label"
    shutil.copy(DEMO / "train" / "bag" / sorted(os.listdir(DEMO / "train" / "bag"))[0],
                tmp_path / "a.JPEG")
    listed.write_text("a.JPEG 0\n")
    assert run_main(train.main, "-a", "mobilenet_v3_small", "--num-classes", "5",
                    "--spatial-size", "32", "-e", "1", "-b", "2", "-v", "0",
                    "-T", tmp_path, "--train-list", listed, "-m", tmp_path / "run",
                    "--model-load-path", weights) == USER_ERROR_STATUS
    lines = capsys.readouterr().err.splitlines()  # (the short run's warm-up is warned of)
    assert lines[-1].endswith("the network needs (1024, 5); its classifier has 10 "
                                     "classes: add --finetune to train a new one of "
                                     "--num-classes 5")


def test_a_batch_norm_over_a_single_value_is_named_before_training():
    """Batch 1 at 32x32 (a 1x1 map in mobilenet_v3_small's last blocks) ended in "training
    diverged; train with a lower learning rate"."""
    import nnabla as nn

    from utils.process.errors import UsageError
    from utils.recipe.config import load_config
    from utils.train.step import TrainingNetwork, build_training_graph

    network = TrainingNetwork("mobilenet_v3_small", 10, False,
                              load_config(REPO / "cfg" / "cos90.yaml"))
    with pytest.raises(UsageError, match=r"^batch-norm layer 'mbconv-008/conv-dw/bn' would "
                                         r"normalise a single value per channel \(batch 1, "
                                         r"a 1x1 map there, at a 32x32 input\): train with a "
                                         r"batch \(-b\) of 2 or more"):
        build_training_graph(network, (1, 3, 32, 32))
    nn.clear_parameters()
    build_training_graph(network, (2, 3, 32, 32))
    nn.clear_parameters()
    build_training_graph(network, (1, 3, 64, 64))


def test_a_batch_beyond_the_memory_is_refused_before_work(weights, capsys):
    """--spatial-size 100000 (or a tiny --crop-pct) ended in DALI's std::bad_alloc traceback."""
    from utils.data.pipelines import pipeline_bytes
    from utils.process.memory import GIBIBYTE, available_memory, check_batch_fits

    assert pipeline_bytes(2, (10, 20), 3, 4, 2, None) == 2 * 2 * (200 * 3 + 200 * 12)
    assert pipeline_bytes(1, (10, 10), 4, 2, 1, (12, 14)) == 12 * 14 * 3 + 100 * 8
    check_batch_fits(GIBIBYTE, 2 * GIBIBYTE, "x", "y")
    check_batch_fits(GIBIBYTE, None, "x", "y")  # unknown: not refused
    with pytest.raises(Exception, match=r"^4 images need at least 3.0 GiB in the input "
                                        r"pipeline, more than the 2.0 GiB of memory "
                                        r"available: lower -b$"):
        check_batch_fits(3 * GIBIBYTE, 2 * GIBIBYTE, "4 images", "lower -b")
    available = available_memory()
    assert available is not None and 0 < available
    assert run_main(infer.main, PHOTO, weights, "-a", "mobilenet_v3_small",
                    "--spatial-size", "1000000") == USER_ERROR_STATUS  # (more than any machine)
    line = the_line(capsys)
    assert line.startswith("error: 1 image(s) at 1000000x1000000, resized to 1142858x1142858 "
                           "for the crop of --crop-pct 0.875, need at least 29650.3 GiB"), line
    assert line.endswith("of memory available: lower --spatial-size or -b, or raise "
                         "--crop-pct"), line
    assert run_main(infer.main, PHOTO, weights, *SMALL, "--crop-pct", "0.0001") == \
        USER_ERROR_STATUS
    assert "resized to 320000x320000 for the crop of --crop-pct 0.0001" in the_line(capsys)


def test_a_server_that_never_answers_is_named_within_the_timeout(tmp_path, capsys,
                                                                 monkeypatch):
    """It accepted and never answered: 61 s in silence, then 'timed out'."""
    import socket
    import time
    import urllib.request

    from utils.weights.download import TIMEOUT_ENV, URL_ENV, DownloadError, download_timeout

    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    assert download_timeout() == 30
    for bad in ("0", "-1", "soon", "inf"):
        monkeypatch.setenv(TIMEOUT_ENV, bad)
        with pytest.raises(DownloadError, match=f"must be a positive number of seconds, got "
                                                f"'{bad}'"):
            download_timeout()
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # the kernel accepts; nobody ever answers
        host = f"127.0.0.1:{silent.getsockname()[1]}"
        monkeypatch.setenv(URL_ENV, f"http://{host}/")
        monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
        monkeypatch.setenv(TIMEOUT_ENV, "1.5")
        opened = []  # the timeouts the request was opened with (the real urlopen runs)
        real_urlopen = urllib.request.urlopen
        monkeypatch.setattr(urllib.request, "urlopen", lambda request, timeout: (
            opened.append(timeout), real_urlopen(request, timeout=timeout))[1])
        started = time.monotonic()
        assert run_main(infer.main, PHOTO, "rn50-nhwc.h5") == USER_ERROR_STATUS
        # It waited for the 1.5 s asked for, not the default 30 s (read from the request, not
        # from the clock, which a busy machine stretches).
        assert opened == [1.5] and time.monotonic() - started >= 1.5
    assert the_line(capsys) == (
        f"error: cannot download http://{host}/rn50-nhwc.h5: {host} did not answer within "
        f"1.5 s (set ${TIMEOUT_ENV} for a slow link, or ${URL_ENV} to a mirror; or put the "
        f"file in {tmp_path / 'cache' / 'rn50-nhwc.h5'} yourself)")
