"""Weight files: save/load round trips, layout detection and conversion, clear refusals."""
import h5py
import nnabla as nn
import numpy as np
import pytest
from eval_fixtures import randomise_parameters

from models import build_network
from utils.weights.files import (
    Layout,
    WeightFileError,
    adapt,
    layout_of,
    network_parameters,
    open_weight_file,
    read_parameters,
    shapes_of,
    write_parameters,
)


def forward(arch, x, num_classes=10):
    pred, _ = build_network(nn.Variable.from_numpy_array(x), num_classes, arch, test=True)
    pred.forward(clear_buffer=True)
    return pred.d.copy()


@pytest.fixture
def image_batch():
    return np.random.RandomState(0).randn(2, 3, 32, 32).astype(np.float32)


@pytest.fixture
def resnet18_file(tmp_path, image_batch):
    """A resnet18 weight file (10 classes) with non-trivial BN statistics, and its logits."""
    nn.seed(1)
    forward("resnet18", image_batch)
    randomise_parameters(2)
    logits = forward("resnet18", image_batch)
    path = tmp_path / "rn18.h5"
    write_parameters(str(path), network_parameters())
    nn.clear_parameters()
    return path, logits


def test_saved_file_reloads_to_identical_logits(resnet18_file, image_batch):
    path, logits = resnet18_file
    forward("resnet18", image_batch)  # fresh random parameters
    assert open_weight_file(str(path)).load_into("resnet18") is None
    np.testing.assert_array_equal(forward("resnet18", image_batch), logits)


def test_files_are_interchangeable_with_nnabla_own_format(resnet18_file, tmp_path):
    path, _ = resnet18_file
    ours = read_parameters(str(path))
    nn.load_parameters(str(path))
    theirs = tmp_path / "nnabla.h5"
    nn.save_parameters(str(theirs))
    again = read_parameters(str(theirs))
    assert list(again) == list(ours)
    for name in ours:
        np.testing.assert_array_equal(again[name].data, ours[name].data)
        assert again[name].need_grad == ours[name].need_grad
    assert not ours["conv1/bn/mean"].need_grad and ours["conv1/conv/W"].need_grad


@pytest.mark.slow
def test_layout_round_trip_and_in_memory_conversion(resnet18_file, tmp_path, image_batch):
    path, logits = resnet18_file
    params = read_parameters(str(path))
    assert layout_of(shapes_of(params)) == Layout(False, 3)
    nhwc, note = adapt(params, Layout(True, 4))
    assert note == "converted from NCHW, 3 input channels to NHWC, 4 input channels"
    assert nhwc["conv1/conv/W"].data.shape == (64, 7, 7, 4)
    assert not nhwc["conv1/conv/W"].data[..., 3].any()
    assert nhwc["conv1/bn/gamma"].data.shape == (1, 1, 1, 64)
    assert nhwc["fc/fc/conv/W"].data.shape == (10, 1, 1, 512)
    assert nhwc["fc/fc/conv/b"].data.shape == (10,)
    back, _ = adapt(nhwc, Layout(False, 3))
    for name in params:
        np.testing.assert_array_equal(back[name].data, params[name].data)
    # An NHWC 4-channel file loads into the NCHW network this CPU can run, same logits.
    nhwc_path = tmp_path / "rn18-nhwc.h5"
    write_parameters(str(nhwc_path), nhwc)
    forward("resnet18", image_batch)
    note = open_weight_file(str(nhwc_path)).load_into("resnet18")
    assert note == "converted from NHWC, 4 input channels to NCHW, 3 input channels"
    np.testing.assert_allclose(forward("resnet18", image_batch), logits, rtol=1e-6, atol=1e-6)


def test_nhwc_three_channel_file_is_detected_as_nhwc(resnet18_file):
    path, _ = resnet18_file
    nhwc3, _ = adapt(read_parameters(str(path)), Layout(True, 3))
    assert layout_of(shapes_of(nhwc3)) == Layout(True, 3)


def test_wrong_architecture_names_first_mismatch(resnet18_file, image_batch):
    path, _ = resnet18_file
    forward("resnet34", image_batch)
    before = {k: v.d.copy() for k, v in nn.get_parameters(grad_only=False).items()}
    with pytest.raises(WeightFileError) as err:
        open_weight_file(str(path)).load_into("resnet34")
    assert str(err.value) == (
        f"{path}: does not fit resnet34: parameter 'res1/layer3/basicblock1/conv/W' "
        "(64, 64, 3, 3) is missing from the file"
    )
    for k, v in nn.get_parameters(grad_only=False).items():
        np.testing.assert_array_equal(v.d, before[k])  # nothing was loaded


def test_other_family_and_wrong_classes_are_refused(resnet18_file, image_batch):
    path, _ = resnet18_file
    forward("mobilenet_v1", image_batch)
    with pytest.raises(WeightFileError, match="does not fit mobilenet_v1: parameter 'first-conv"):
        open_weight_file(str(path)).load_into("mobilenet_v1")
    nn.clear_parameters()
    forward("resnet18", image_batch, num_classes=5)
    with pytest.raises(WeightFileError, match=r"'fc/fc/conv/W' has shape \(10, 512, 1, 1\)"):
        open_weight_file(str(path)).load_into("resnet18")


def test_skip_prefix_loads_everything_but_the_classifier(resnet18_file, image_batch):
    path, _ = resnet18_file
    forward("resnet18", image_batch, num_classes=7)
    head = nn.get_parameters()["fc/fc/conv/W"].d.copy()
    open_weight_file(str(path)).load_into("resnet18", skip_prefixes=["fc"])
    params = nn.get_parameters(grad_only=False)
    np.testing.assert_array_equal(params["fc/fc/conv/W"].d, head)
    np.testing.assert_array_equal(
        params["conv1/bn/mean"].d, read_parameters(str(path))["conv1/bn/mean"].data
    )


def test_unreadable_files_get_one_clear_error(resnet18_file, tmp_path):
    path, _ = resnet18_file
    with pytest.raises(WeightFileError, match="no such weight file"):
        read_parameters(str(tmp_path / "missing.h5"))
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(WeightFileError, match="truncated.h5: not a readable NNabla parameter"):
        read_parameters(str(truncated))
    text = tmp_path / "notes.h5"
    text.write_text("hello")
    with pytest.raises(WeightFileError, match="notes.h5: not a readable"):
        read_parameters(str(text))
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f.create_dataset("weights", data=np.zeros(3))
    with pytest.raises(WeightFileError, match="has no 'index' attribute"):
        read_parameters(str(foreign))


def test_write_is_atomic_on_failure(resnet18_file, tmp_path):
    path, _ = resnet18_file
    original = path.read_bytes()
    bad = read_parameters(str(path))
    bad["fc/fc/conv/b"].data = np.array(["x"])  # the last tensor fails: a write cut short
    with pytest.raises(ValueError):
        write_parameters(str(path), bad)
    assert path.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
