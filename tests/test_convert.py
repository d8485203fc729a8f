"""convert_parameter_format.py: every family converts, round trips exactly, refuses nonsense.

The per-architecture checks run the conversion the script runs (`weights.adapt` to the target
`Layout`) in memory on a network built with random weights, at 1000 classes so that the
converted shapes can be compared with the published NHWC spec. The script itself (files,
flags, messages, exit status) runs on small 10-class files: as a user runs it for the round
trips, in-process for the refusals.

efficientnet_b5..b8 and l2 are left out of the per-architecture loop: building them costs
1-3 s each (30-480 M parameters; l2 needs ~2 GB per copy) and they are made of exactly the
blocks b0..b4 are made of, converted by the same rule.
"""
from __future__ import annotations

import json

import h5py
import nnabla as nn
import nnabla.functions as F
import numpy as np
import pytest
from data_fixtures import load_images
from eval_fixtures import (
    make_weight_file,
    randomise_parameters,
    run_main,
    run_script,
)
from marks import marking_slow
from paths import PARAM_SPEC_DIR

import convert_parameter_format
from models import available_architectures, build_network
from utils.process.errors import USER_ERROR_STATUS
from utils.weights import files as weights
from utils.weights.files import Layout, WeightFile, adapt, layout_of, shapes_of

HUGE = {"efficientnet_b5", "efficientnet_b6", "efficientnet_b7", "efficientnet_b8",
        "efficientnet_l2"}
SIZE = 32


@pytest.fixture(scope="module")
def photo_batch():
    import matplotlib

    path = f"{matplotlib.get_data_path()}/sample_data/grace_hopper.jpg"
    return load_images([path], SIZE)


def assert_same_parameters(a, b):
    assert list(a) == list(b)
    for name in a:
        assert a[name].need_grad == b[name].need_grad, name
        assert a[name].data.shape == b[name].data.shape, name
        np.testing.assert_array_equal(a[name].data, b[name].data, err_msg=name)


@pytest.mark.parametrize("arch", marking_slow(
    [a for a in available_architectures() if a not in HUGE],
    ("resnet18", "resnet101", "resnet152")))
def test_every_architecture_round_trips_and_classifies_the_same(arch, photo_batch):
    nn.seed(0)
    x = nn.Variable.from_numpy_array(photo_batch)
    logits, _ = build_network(x, 1000, arch, test=True)
    randomise_parameters()
    probabilities = F.softmax(logits)
    probabilities.forward()
    nchw = probabilities.d.copy()
    params = weights.network_parameters()

    nhwc4, _ = adapt(params, Layout(channel_last=True, channels=4))
    assert layout_of(shapes_of(nhwc4)) == Layout(True, 4)
    spec_file = PARAM_SPEC_DIR / f"{arch}_nhwc4.json"
    spec = [(name, tuple(shape)) for name, shape in json.loads(spec_file.read_text())]
    assert list(shapes_of(nhwc4).items()) == spec
    for name, p in params.items():  # 1-D and 2-D tensors are copied untouched
        if p.data.ndim < 4:
            np.testing.assert_array_equal(nhwc4[name].data, p.data)

    back, _ = adapt(nhwc4, Layout(channel_last=False, channels=3))
    assert_same_parameters(back, params)

    # The NHWC file runs on this CPU through the in-memory conversion, same probabilities
    # (the file's contents are passed in; reading files is tested below and in test_weights).
    for v in nn.get_parameters(grad_only=False).values():
        v.d = 0
    in_memory = WeightFile("nhwc4.h5", nhwc4, layout_of(shapes_of(nhwc4)), None)
    assert in_memory.load_into(arch) == (
        "converted from NHWC, 4 input channels to NCHW, 3 input channels")
    probabilities.forward()
    np.testing.assert_allclose(probabilities.d, nchw, rtol=1e-5, atol=1e-7)
    assert nchw.max() > 2 * nchw.min()  # not a degenerate uniform output


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    return make_weight_file(tmp_path_factory.mktemp("rn18") / "in.h5", "resnet18")


def convert(*args):
    """In-process run (fast) for the messages; the round trips below run the real command."""
    return run_main(convert_parameter_format.main, *args)


@pytest.mark.parametrize("arch", marking_slow(["resnet18", "mobilenet_v3_small"], ["resnet18"]))
def test_command_round_trip_gives_the_identical_file(arch, tmp_path, resnet18_file):
    src = resnet18_file if arch == "resnet18" else make_weight_file(tmp_path / "in.h5", arch)
    before = src.read_bytes()
    nhwc, back = tmp_path / "nhwc4.h5", tmp_path / "back.h5"
    first = run_script("convert_parameter_format.py", src, nhwc, "-m", "NHWC",
                       "--force-4-channels")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip().startswith(
        f"{src} (NCHW, 3 input channels) -> {nhwc} (NHWC, 4 input channels): ")
    second = run_script("convert_parameter_format.py", nhwc, back, "-m", "Nchw", "-3")
    assert second.returncode == 0, second.stderr
    assert_same_parameters(weights.read_parameters(str(back)), weights.read_parameters(str(src)))
    assert src.read_bytes() == before
    # NNabla reads the converted file, in the original order.
    nn.load_parameters(str(nhwc))
    assert list(nn.get_parameters(grad_only=False)) == list(weights.read_parameters(str(src)))


def test_channels_change_alone_keeps_the_layout(tmp_path, resnet18_file, capsys):
    """Unlike the official script, -3 on an NHWC file slices the channel axis, not a kernel
    axis, and the result is still detected as NHWC."""
    nhwc4, nhwc3 = tmp_path / "nhwc4.h5", tmp_path / "nhwc3.h5"
    assert convert(resnet18_file, nhwc4, "-m", "nhwc", "--force-4-channels") == 0
    assert convert(nhwc4, nhwc3, "-3") == 0
    assert "(NHWC, 3 input channels): layout kept" in capsys.readouterr().out
    params = weights.read_parameters(str(nhwc3))
    assert params["conv1/conv/W"].data.shape == (64, 7, 7, 3)
    assert layout_of(shapes_of(params)) == Layout(True, 3)
    original = weights.read_parameters(str(resnet18_file))["conv1/conv/W"].data
    np.testing.assert_array_equal(params["conv1/conv/W"].data.transpose(0, 3, 1, 2), original)


@pytest.mark.parametrize("args, hint", [
    (["-m", "nchw"], ""),
    (["-m", "NCHW", "-3"], ""),
    ([], "; give -m nchw|nhwc and/or -3 / --force-4-channels"),
])
def test_conversions_that_change_nothing_succeed_and_write_nothing(tmp_path, resnet18_file,
                                                                   capsys, args, hint):
    """As the official script: a no-op is not an error."""
    out = tmp_path / "out.h5"
    assert convert(resnet18_file, out, *args) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{resnet18_file} is already NCHW, 3 input channels: nothing to convert, {out} not "
        f"written{hint}"]
    assert not out.exists()


def test_input_is_never_overwritten(tmp_path, resnet18_file, capsys):
    before = resnet18_file.read_bytes()
    (tmp_path / "link.h5").symlink_to(resnet18_file)
    same = resnet18_file.parent / "." / resnet18_file.name
    for target in (resnet18_file, same, tmp_path / "link.h5"):
        assert convert(resnet18_file, target, "-m", "nhwc") == USER_ERROR_STATUS
        assert capsys.readouterr().err.splitlines() == [
            f"error: {target} is the input file; choose another output path "
            "(the input is never overwritten)"]
    assert resnet18_file.read_bytes() == before


def test_files_that_are_not_nnabla_parameters_are_refused(tmp_path, capsys):
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.zeros(3)
    cases = {
        text: "not a readable NNabla parameter file",
        other: "dataset 'x' has no 'index' attribute, so this is not an NNabla parameter file",
        tmp_path / "missing.h5": "no such weight file",
    }
    for path, reason in cases.items():
        assert convert(path, tmp_path / "out.h5", "-m", "nhwc") == USER_ERROR_STATUS
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {path}") and reason in lines[0]
    assert not (tmp_path / "out.h5").exists()


def test_help_and_bad_flags(capsys):
    with pytest.raises(SystemExit) as e:
        convert("--help")
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--memory-layout", "--force-3-channels", "--force-4-channels"):
        assert flag in out
    for args, message in ((["-m", "nhcw"], "invalid choice: 'nhcw'"),
                          (["-3", "--force-4-channels"], "not allowed with argument")):
        with pytest.raises(SystemExit) as e:
            convert("a.h5", "b.h5", *args)
        assert e.value.code == 2 and message in capsys.readouterr().err


def test_an_output_that_is_not_a_parameter_file_is_refused_and_kept(resnet18_file, tmp_path,
                                                                     capsys):
    """`W out.nnp -m nhwc` replaced an existing NNP model with an HDF5 file still named .nnp,
    status 0."""
    model = tmp_path / "out.nnp"
    model.write_bytes(b"PK\x03\x04 an NNP archive")
    notes = tmp_path / "notes.h5"
    notes.write_text("my notes\n")
    keras = tmp_path / "keras.h5"
    with h5py.File(keras, "w") as f:
        f["dense/kernel"] = np.zeros(3)
    cases = {
        model: "must be named *.h5",
        tmp_path / "new.onnx": "must be named *.h5",
        notes: "exists and is not an NNabla parameter file; it is kept",
        keras: "exists and is not an NNabla parameter file; it is kept",
    }
    for out, reason in cases.items():
        before = out.read_bytes() if out.exists() else None
        assert convert(resnet18_file, out, "-m", "nhwc") == USER_ERROR_STATUS
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {out}") \
            and reason in lines[0], lines
        assert (out.read_bytes() if out.exists() else None) == before
    previous = tmp_path / "previous.H5"  # a parameter file is replaced, any case of .h5
    assert convert(resnet18_file, previous, "-m", "nhwc") == 0
    assert convert(resnet18_file, previous, "-m", "nhwc", "-3") == 0
    assert weights.is_parameter_file(str(previous))
