"""infer.py as a user runs it: ImageNet names, any image a user has, NHWC files on a CPU,
labels files, and one-line errors naming the image or parameter at fault."""
from __future__ import annotations

import argparse
import json
import logging

import matplotlib
import numpy as np
import pytest
from eval_fixtures import error_lines, make_weight_file, run_main, run_script
from PIL import Image

import infer
from utils.labels.file_list import write_csv
from utils.labels.imagenet import imagenet_class_names
from utils.process.runtime import setup_runtime
from utils.weights.files import Layout, adapt, read_parameters, write_parameters

PHOTO = f"{matplotlib.get_data_path()}/sample_data/grace_hopper.jpg"
SMALL = ["--spatial-size", "32"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A 1000-class mobilenet_v3_small (NCHW) and its NHWC 4-channel conversion."""
    folder = tmp_path_factory.mktemp("infer")
    nchw = make_weight_file(folder / "mbv3s.h5", "mobilenet_v3_small", num_classes=1000)
    nhwc, _ = adapt(read_parameters(str(nchw)), Layout(True, 4))
    write_parameters(str(folder / "mbv3s-nhwc4.h5"), nhwc)
    return nchw, folder / "mbv3s-nhwc4.h5"


@pytest.fixture(scope="module")
def odd_images(tmp_path_factory):
    """Greyscale, CMYK, RGBA/palette PNG, a 3x2 image and a PNG named .JPEG, in a folder."""
    folder = tmp_path_factory.mktemp("odd")
    photo = Image.open(PHOTO)
    photo.convert("L").save(folder / "grey.jpg")
    photo.convert("CMYK").save(folder / "cmyk.jpg")
    photo.convert("RGBA").save(folder / "rgba.png")
    photo.convert("P").save(folder / "palette.png")
    photo.resize((3, 2)).save(folder / "tiny.jpg")
    photo.save(folder / "really_png.JPEG", "PNG")
    (folder / "notes.txt").write_text("not an image, skipped")
    return folder


def run_json(*args, capsys=None):
    """infer.py's JSON output, in-process (capsys) or as a command."""
    if capsys is not None:
        assert run_main(infer.main, *args, "--json") == 0
        return json.loads(capsys.readouterr().out)
    result = run_script("infer.py", *args, "--json", check=True)
    return json.loads(result.stdout), result.stderr


def test_text_output_names_imagenet_classes_for_every_kind_of_image(files, odd_images):
    result = run_script("infer.py", PHOTO, odd_images, files[0], "-a", "MobileNet_V3_Small",
                        *SMALL, "-k", "3")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    names = ["cmyk.jpg", "grey.jpg", "palette.png", "really_png.JPEG", "rgba.png", "tiny.jpg"]
    assert lines[::4] == [PHOTO] + [str(odd_images / n) for n in names]
    imagenet = imagenet_class_names()
    for block in range(len(lines) // 4):
        probabilities = []
        for rank, line in enumerate(lines[4 * block + 1:4 * block + 4], 1):
            number, percent, _, _, class_id, *name = line.split()
            assert number == f"{rank}." and " ".join(name) == imagenet[int(class_id)]
            probabilities.append(float(percent))
        assert probabilities == sorted(probabilities, reverse=True)


@pytest.mark.slow
def test_nhwc_file_runs_on_the_cpu_with_the_same_probabilities(files, capsys):
    nchw = run_json(PHOTO, files[0], "-a", "mobilenet_v3_small", *SMALL, "-k", "1000",
                    capsys=capsys)
    nhwc, log = run_json(PHOTO, files[1], "-a", "mobilenet_v3_small", *SMALL, "-k", "1000")
    assert ("NHWC, 4 input channels, 1000 classes; converted from NHWC, 4 input channels to "
            "NCHW, 3 input channels in memory") in log
    a = {g["class"]: g["probability"] for g in nchw["predictions"][0]["top_k"]}
    b = {g["class"]: g["probability"] for g in nhwc["predictions"][0]["top_k"]}
    assert sorted(a) == list(range(1000))
    np.testing.assert_allclose([b[c] for c in a], list(a.values()), rtol=1e-5, atol=1e-8)
    assert sum(a.values()) == pytest.approx(1, abs=1e-5)
    assert set(nhwc["timings"]) == {"weights", "preprocess", "forward"}


def test_labels_file_names_the_classes(tmp_path, capsys):
    weights = make_weight_file(tmp_path / "rn18.h5", "resnet18", num_classes=3)
    labels = tmp_path / "label_words.csv"
    write_csv(str(labels), enumerate(["cat", "dog, puppy", "eel"]))
    out = run_json(PHOTO, weights, "-a", "resnet18", *SMALL, "--labels", labels, capsys=capsys)
    top = out["predictions"][0]["top_k"]
    assert len(top) == 3  # -k 5 shows the 3 classes there are
    assert {g["name"] for g in top} == {"cat", "dog, puppy", "eel"}
    out = run_json(PHOTO, weights, "-a", "resnet18", *SMALL, capsys=capsys)
    assert {g["name"] for g in out["predictions"][0]["top_k"]} == {None}
    write_csv(str(labels), enumerate(["cat", "dog"]))
    assert run_main(infer.main, PHOTO, weights, "-a", "resnet18", "--labels", labels) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: {labels} names 2 classes, the weights have 3"]


def test_bad_images_are_one_line_naming_them(files, tmp_path, capsys):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "garbage.jpg").write_bytes(b"this is not a picture")
    (tmp_path / "no_images").mkdir()
    cases = {
        tmp_path / "missing.jpg": f"no such image or folder: {tmp_path / 'missing.jpg'}",
        tmp_path / "empty.jpg": f"cannot read image {tmp_path / 'empty.jpg'}: empty file",
        tmp_path / "garbage.jpg": f"cannot read image {tmp_path / 'garbage.jpg'}: not an image",
        tmp_path / "no_images": f"no images in folder {tmp_path / 'no_images'}",
    }
    for path, message in cases.items():
        assert run_main(infer.main, PHOTO, path, files[0], "-a", "mobilenet_v3_small") == 2
        lines = error_lines(capsys.readouterr().err)
        assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), lines


def test_weights_for_another_network_are_one_line(files, capsys):
    assert run_main(infer.main, PHOTO, files[0], "-a", "mobilenet_v3_large") == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: {files[0]}: does not fit mobilenet_v3_large: parameter ")


def test_half_on_the_cpu_runs_float(caplog):
    """NNabla's CPU half precision is ~200x slower than float for the same result."""
    caplog.set_level(logging.INFO)
    args = argparse.Namespace(context="auto", device_id=0, type_config="half")
    runtime = setup_runtime(args)
    assert runtime.backend == "cpu" and runtime.data_device_id is None
    assert args.type_config == "float"
    assert "context cpu" not in caplog.text  # held back until the run says something
    runtime.log("the run's first line")
    assert "context cpu (float, device 0): auto: no usable GPU (CUDA extension or device " \
        "missing); -t half runs in float on the CPU" in caplog.text
