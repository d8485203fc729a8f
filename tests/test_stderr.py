"""The user's error is the last and only line on stderr: no library's start-up line, native
message, warning or abort notice around it, in every script, alone and under mpirun."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from eval_fixtures import make_weight_file, run_script
from paths import DEMO

from utils.data.image_probe import verify_image
from utils.process.errors import USER_ERROR_STATUS

PHOTO = DEMO / "val" / "ILSVRC2012_val_00000001.JPEG"


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return make_weight_file(tmp_path_factory.mktemp("w") / "w.h5", "mobilenet_v3_small")


def data_error_cases(folder: Path, weights: Path):
    """(script, arguments, the start of its one line): a typical missing-file mistake each."""
    missing = folder / "missing"
    return [
        ("train.py", ["-a", "mobilenet_v3_small", "--num-classes", "10", "-T", DEMO / "train",
                      "--train-list", missing, "-m", folder / "run"], "error: "),
        ("infer.py", [missing / "photo.jpg", weights, "-a", "mobilenet_v3_small"],
         "error: no such image or folder: "),
        ("export.py", [missing / "w.h5", "-a", "mobilenet_v3_small", "-o", folder / "m.nnp"],
         "error: "),
        ("convert_parameter_format.py", [missing / "w.h5", folder / "out.h5", "-m", "nhwc"],
         "error: "),
        ("create_input_files.py", ["-T", DEMO / "train", "-L", missing / "labels.csv",
                                   "-o", folder / "lists", "--no-progress"], "error: "),
        ("plot_curves.py", [missing], "error: "),
        ("validation.py", [weights, "-a", "mobilenet_v3_small", "-V", DEMO / "val",
                           "--val-list", missing / "val_label", "-M", folder / "val"],
         "error: "),
        ("benchmark.py", ["-a", "mobilenet_v3_small", "-C", missing / "recipe.yaml",
                          "-o", folder / "b.csv"], "error: "),
    ]


SCRIPTS = ["train.py", "infer.py", "export.py", "convert_parameter_format.py",
           "create_input_files.py", "plot_curves.py", "validation.py", "benchmark.py"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_missing_file_is_the_only_line_on_stderr(script, tmp_path, weights):
    [(_, args, start)] = [c for c in data_error_cases(tmp_path, weights) if c[0] == script]
    result = run_script(script, *args)
    assert result.returncode == USER_ERROR_STATUS, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(start) and "missing" in lines[0], lines


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_usage_error_is_argparse_usage_and_error_only(script):
    result = run_script(script, "--no-such-flag")
    assert result.returncode == USER_ERROR_STATUS
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"usage: {script}"), lines
    assert lines[-1].startswith(f"{script}: error: "), lines
    assert not any("[nnabla]" in line or "error" in line for line in lines[:-1]), lines
    assert result.stdout == ""


def test_help_is_the_only_output(tmp_path):
    result = run_script("train.py", "--help")
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith("usage: train.py")


def test_under_mpirun_a_user_error_ends_the_job_with_status_2_and_our_line_last(tmp_path):
    result = run_script("train.py", "-a", "mobilenet_v3_small", "--num-classes", "10",
                        "-T", DEMO / "train", "--train-list", tmp_path / "missing",
                        "-m", tmp_path / "run", mpi_ranks=2)
    assert result.returncode == USER_ERROR_STATUS, result.stderr
    lines = [line for line in result.stderr.splitlines() if line]
    assert lines and all(line.startswith(("[rank 0] error: ", "[rank 1] error: "))
                         and "missing" in line for line in lines), lines


def test_a_damaged_jpeg_is_named_by_our_line_alone(tmp_path, weights):
    """DALI's decoder printed its own red '[ERROR] [libjpeg_turbo_decoder] ...' line (colour
    codes even into a file) above ours."""
    broken = tmp_path / "broken.JPEG"
    data = PHOTO.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    result = run_script("infer.py", broken, weights, "-a", "mobilenet_v3_small",
                        "--spatial-size", "32")
    assert result.returncode == USER_ERROR_STATUS
    lines = result.stderr.splitlines()
    assert lines[-1].startswith(f"error: cannot decode {broken}: "), lines
    assert "\x1b" not in result.stderr and "[ERROR]" not in result.stderr, lines
    assert all("[nnabla][INFO]" in line for line in lines[:-1]), lines  # the run's own log


def test_a_damaged_image_is_not_named_after_a_memory_buffer(tmp_path):
    data = bytearray(PHOTO.read_bytes())
    data[24] = 0xFF  # a marker where a table's bytes were: Pillow cannot identify it
    damaged = tmp_path / "damaged.JPEG"
    damaged.write_bytes(bytes(data))
    assert verify_image(str(damaged)) == "damaged JPEG data: no decoder recognises it"


@pytest.mark.slow
def test_the_policies_do_not_repeat_dalis_deprecation_warning():
    """DALI's policies use its deprecated fn.experimental.equalize: three lines of
    DeprecationWarning per pipeline built, 2-4 times an epoch."""
    from nvidia.dali import fn, pipeline_def, types

    from utils.data.augmentation import apply_policy
    from utils.recipe.augmentation import Augmentation

    def graph():
        images = fn.random.uniform(range=[0, 255], shape=[8, 8, 3], dtype=types.UINT8)
        return apply_policy(images, Augmentation(policy="autoaugment"))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe = pipeline_def(graph, batch_size=1, num_threads=1, device_id=None, seed=0,
                            enable_conditionals=True)()
        pipe.build()
        pipe.run()
    assert not [w for w in caught if "experimental" in str(w.message)], \
        [str(w.message) for w in caught]
