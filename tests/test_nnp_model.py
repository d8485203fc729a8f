"""utils/deploy/nnp_model.py: an NNP file as the model of validation.py and infer.py, written
by export.py or laid out as NNabla's model zoo publishes them (issue 33, item 3)."""
from __future__ import annotations

import json
import zipfile
from collections import OrderedDict

import nnabla as nn
import numpy as np
import pytest
from eval_fixtures import (
    DEMO,
    demo_val_images,
    error_lines,
    make_weight_file,
    run_script,
    write_val_list,
)

from models import build_network
from utils.deploy.nnp_model import (
    NnpModelError,
    choose_network,
    image_input,
    read_nnp_model,
    split_batches,
)
from utils.weights.files import open_weight_file


def zoo_nnp(weights_path: str, path: str, channel_last: bool = False) -> str:
    """resnet18 with `weights_path` saved by NNabla's own saver as the model zoo lays files
    out: a training and a runtime network, variable batch size, input 'x', output 'y', an
    executor naming the runtime network; nothing about the preprocessing."""
    from nnabla.utils.save import save

    scope = OrderedDict()
    with nn.parameter_scope("", scope):
        x = nn.Variable((1, 32, 32, 3) if channel_last else (1, 3, 32, 32))
        image = nn.functions.transpose(x, (0, 3, 1, 2)) if channel_last else x
        y, _ = build_network(image, 10, "resnet18", test=True)
        xt = nn.Variable((1, 3, 32, 32))
        yt, _ = build_network(xt, 10, "resnet18", test=False)
        open_weight_file(weights_path, "resnet18").load_into("resnet18")
        contents = {
            "networks": [
                {"name": "Training", "batch_size": 1, "outputs": {"y": yt}, "names": {"x": xt}},
                {"name": "Runtime", "batch_size": 1, "outputs": {"y'": y}, "names": {"x": x}},
            ],
            "executors": [{"name": "Runtime", "network": "Runtime", "data": ["x"],
                           "output": ["y'"]}],
        }
        save(path, contents, variable_batch_size=True,
             parameters=nn.get_parameters(grad_only=False))
    return path


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return str(make_weight_file(tmp_path_factory.mktemp("w") / "r18.h5", "resnet18",
                                num_classes=10))


def test_the_network_is_the_executors_else_the_only_else_the_runtime_one():
    assert choose_network("m.nnp", ["Training", "Runtime"], ["Runtime"]) == "Runtime"
    assert choose_network("m.nnp", ["net"], []) == "net"
    assert choose_network("m.nnp", ["Training", "runtime"], []) == "runtime"
    with pytest.raises(NnpModelError, match=r"^m.nnp: 2 networks \(a, b\) and no executor"):
        choose_network("m.nnp", ["a", "b"], [])


def test_the_image_input_is_the_one_with_three_channels():
    assert image_input("m", {"x": (1, 3, 224, 224)}) == ("x", False)
    assert image_input("m", {"x": (8, 224, 224, 3)}) == ("x", True)
    with pytest.raises(NnpModelError, match="one image input"):
        image_input("m", {"x": (1, 1, 28, 28)})


def test_batches_of_any_size_go_through_a_fixed_batch_in_padded_pieces():
    images = np.arange(10, dtype=np.float32).reshape(5, 2)
    pieces = split_batches(images, 2)
    assert [real for _, real in pieces] == [2, 2, 1]
    assert all(piece.shape == (2, 2) for piece, _ in pieces)
    np.testing.assert_array_equal(np.concatenate([p[:r] for p, r in pieces]), images)


def test_a_zoo_nnp_says_its_input_and_classes_but_not_its_normalisation(weights, tmp_path):
    model = read_nnp_model(zoo_nnp(weights, str(tmp_path / "zoo.nnp")))
    assert (model.network, model.input_name, model.output_name) == ("Runtime", "x", "y'")
    assert (model.spatial_size, model.channel_last, model.num_classes) == ((32, 32), False, 10)
    assert (model.norm, model.crop_pct) == (None, None)
    (tmp_path / "not.nnp").write_bytes(b"PK")
    with pytest.raises(NnpModelError, match="not.nnp: not an NNP file"):
        read_nnp_model(str(tmp_path / "not.nnp"))


@pytest.mark.slow  # (export.py, validation.py five times)
def test_nnp_files_validate_to_the_errors_of_their_weight_file(weights, tmp_path):
    val_list = write_val_list(tmp_path / "val40.txt", demo_val_images(40))
    common = ["-V", "data/demo/val", "--val-list", val_list, "-b", "16", "--json",
              "--no-progress"]

    def validate(model, *flags):
        done = run_script("validation.py", model, *common, *flags, "-M",
                          tmp_path / f"m{len(list(tmp_path.iterdir()))}", check=True)
        return json.loads(done.stdout)

    h5 = {norm: validate(weights, "-a", "resnet18", "--num-classes", "10", "--spatial-size",
                         "32", "-n", norm) for norm in ("default", "senet_author")}
    assert h5["default"]["top1_error"] != h5["senet_author"]["top1_error"] or \
        h5["default"]["loss"] != pytest.approx(h5["senet_author"]["loss"], rel=1e-3)
    exported = tmp_path / "r18.nnp"  # (batch 6: pieces of 6, the last one padded)
    run_script("export.py", weights, "-a", "resnet18", "--num-classes", "10",
               "--spatial-size", "32", "-b", "6", "-n", "senet_author", "-o", exported,
               check=True)
    said = json.loads(zipfile.ZipFile(exported).read("preprocessing.json"))
    assert said == {"norm": "senet_author", "crop_pct": 0.875}
    zoo = zoo_nnp(weights, str(tmp_path / "zoo.nnp"))
    for result, reference in ((validate(exported), h5["senet_author"]),  # the file's norm
                              (validate(zoo), h5["default"]),  # the flags' (default)
                              (validate(zoo, "-n", "senet_author"), h5["senet_author"])):
        for key in ("num_images", "top1_error", "top5_error", "worst_classes"):
            assert result[key] == reference[key], key
        assert result["loss"] == pytest.approx(reference["loss"], rel=1e-5)

    refused = run_script("validation.py", zoo, *common, "--runtime", "onnxruntime", "-M",
                         tmp_path / "r")
    assert refused.returncode == 2 and error_lines(refused.stderr)[-1] == (
        f"error: {zoo}: an NNP file runs in NNabla (--runtime nnabla); for ONNX Runtime give "
        "its weight file")


@pytest.mark.slow  # (infer.py twice)
def test_infer_py_classifies_with_an_nhwc_zoo_nnp_as_with_the_weight_file(weights, tmp_path):
    images = [DEMO / "val" / f"ILSVRC2012_val_{i:08d}.JPEG" for i in (1, 2, 3)]
    zoo = zoo_nnp(weights, str(tmp_path / "zoo_nhwc.nnp"), channel_last=True)
    top = {}
    for name, model in (("h5", [weights, "-a", "resnet18", "--num-classes", "10",
                                "--spatial-size", "32"]), ("nnp", [zoo])):
        done = run_script("infer.py", *images, *model, "-b", "2", "--json", check=True)
        top[name] = [p["top_k"] for p in json.loads(done.stdout)["predictions"]]
    for ours, theirs in zip(top["h5"], top["nnp"]):
        assert [g["class"] for g in theirs] == [g["class"] for g in ours]
        assert [g["probability"] for g in theirs] == pytest.approx(
            [g["probability"] for g in ours], abs=1e-5)
