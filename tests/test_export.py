"""Export to .nnp and ONNX: the files reload in NNabla and onnxruntime and reproduce NNabla.

The reloaded models are run here directly (NnpLoader, onnxruntime), not through the
module's own verification, and compared with a network built and loaded the usual way.
ONNX tests are skipped when the export extra (requirements-export.txt) is not installed.
"""
import importlib.util
import sys
from collections import OrderedDict

import nnabla as nn
import numpy as np
import pytest
from eval_fixtures import error_lines, make_weight_file, run_script
from nnabla.utils.nnp_graph import NnpLoader
from paths import REPO

from models import build_network
from utils.deploy import export as ex
from utils.process.run import run
from utils.weights.files import (
    convert_layout,
    open_weight_file,
    read_parameters,
    set_input_channels,
    write_parameters,
)

HAVE_ONNX = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime")) and (
    importlib.util.find_spec("nnabla.utils.converter.onnx") is not None
)
needs_onnx = pytest.mark.skipif(
    not HAVE_ONNX, reason="export extra not installed (bash scripts/setup.sh --export)"
)

NUM_CLASSES = 10
SIZE = 32
BATCH = 2
ARCHS = ["resnet18", "mobilenet_v3_small", "efficientnet_b0"]


def nnabla_outputs(weights, arch, images):
    """Logits of `arch` built and loaded the usual way (global parameter scope) on `images`."""
    nn.clear_parameters()
    x = nn.Variable(images.shape)
    y, _ = build_network(x, NUM_CLASSES, arch, test=True)
    open_weight_file(str(weights)).load_into(arch)
    x.d = images
    y.forward()
    nn.clear_parameters()
    return y.d.copy()


def nnp_outputs(path, images):
    with nn.parameter_scope("", OrderedDict()):
        loader = NnpLoader(str(path))
        assert loader.get_network_names() == [ex.NETWORK_NAME]
        net = loader.get_network(ex.NETWORK_NAME)
        x, y = net.inputs[ex.INPUT_NAME], net.outputs["logits"]
        x.d = images
        y.forward()
        return y.d.copy()


def onnx_outputs(path, images):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, list(inp.shape)) == (ex.INPUT_NAME, list(images.shape))
    assert out.name == "logits"
    return session.run(None, {inp.name: images})[0]


def assert_reproduces(outputs, reference):
    np.testing.assert_allclose(outputs, reference, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(outputs.argmax(axis=1), reference.argmax(axis=1))


@pytest.fixture(scope="module", params=ARCHS)
def exported(request, tmp_path_factory):
    """Each architecture exported once (NNP, and ONNX when available) from a weight file."""
    arch = request.param
    folder = tmp_path_factory.mktemp(arch)
    weights = make_weight_file(folder / "w.h5", arch, NUM_CLASSES, SIZE)
    graph = ex.build_inference_graph(arch, NUM_CLASSES, BATCH, (SIZE, SIZE))
    assert ex.load_weights(graph, open_weight_file(str(weights))) is None
    outputs = [str(folder / "m.nnp")] + ([str(folder / "m.onnx")] if HAVE_ONNX else [])
    results = ex.export(graph, outputs)
    images = ex.sample_images((BATCH, 3, SIZE, SIZE), seed=7)
    return arch, folder, results, images, nnabla_outputs(weights, arch, images)


@pytest.mark.slow
def test_nnp_reproduces_nnabla(exported):
    arch, folder, results, images, reference = exported
    assert_reproduces(nnp_outputs(folder / "m.nnp", images), reference)
    assert results[0].check.passed and results[0].check.top1_agreements == BATCH


@needs_onnx
def test_onnx_reproduces_nnabla(exported):
    arch, folder, results, images, reference = exported
    assert_reproduces(onnx_outputs(folder / "m.onnx", images), reference)
    check = results[1].check
    assert check.passed and check.top1_agreements == BATCH
    print(f"{arch}: {check.summary()}")


def test_only_the_outputs_are_left(exported):
    _, folder, _, _, _ = exported
    expected = {"w.h5", "m.nnp"} | ({"m.onnx"} if HAVE_ONNX else set())
    assert {p.name for p in folder.iterdir()} == expected


@pytest.mark.slow
def test_nhwc_four_channel_file_exports_like_nchw(tmp_path):
    """A mixed-precision style file (NHWC, zero-fed 4th channel) gives the same NCHW model."""
    nchw = make_weight_file(tmp_path / "nchw.h5", "mobilenet_v3_small", seed=3)
    params = set_input_channels(convert_layout(read_parameters(str(nchw)), True), 4, True)
    nhwc = tmp_path / "nhwc.h5"
    write_parameters(str(nhwc), params)
    images = ex.sample_images((BATCH, 3, SIZE, SIZE))
    graph = ex.build_inference_graph("mobilenet_v3_small", NUM_CLASSES, BATCH, (SIZE, SIZE))
    assert "NHWC" in ex.load_weights(graph, open_weight_file(str(nhwc)))
    ex.export(graph, [str(tmp_path / "m.nnp")])
    np.testing.assert_array_equal(nnp_outputs(tmp_path / "m.nnp", images),
                                  nnabla_outputs(nchw, "mobilenet_v3_small", images))


def test_softmax_output(tmp_path):
    graph = ex.build_inference_graph("mobilenet_v3_small", NUM_CLASSES, BATCH, (SIZE, SIZE),
                                     softmax=True)
    ex.export(graph, [str(tmp_path / "p.nnp")])
    with nn.parameter_scope("", OrderedDict()):
        net = NnpLoader(str(tmp_path / "p.nnp")).get_network(ex.NETWORK_NAME)
        x, y = net.inputs[ex.INPUT_NAME], net.outputs["probabilities"]
        x.d = ex.sample_images(x.shape)
        y.forward()
        np.testing.assert_allclose(y.d.sum(axis=1), 1.0, rtol=1e-5)


def test_failed_verification_writes_nothing(tmp_path, monkeypatch):
    graph = ex.build_inference_graph("mobilenet_v3_small", NUM_CLASSES, 1, (SIZE, SIZE))
    monkeypatch.setattr(ex, "run_nnp", lambda path, images: graph.forward(images) + 0.01)
    with pytest.raises(ex.VerificationError, match=r"tolerance 1e-03\).*nothing written"):
        ex.export(graph, [str(tmp_path / "a.nnp"), str(tmp_path / "b.nnp")])
    assert list(tmp_path.iterdir()) == []


def test_bad_outputs_are_refused_before_any_work(tmp_path):
    with pytest.raises(ex.ExportError, match="unsupported output format '.pt'"):
        ex.output_format(str(tmp_path / "m.pt"))
    with pytest.raises(ex.ExportError, match="does not exist"):
        ex.output_format(str(tmp_path / "missing" / "m.nnp"))
    with pytest.raises(ex.ExportError, match="opset 12 is not supported"):
        ex.nnp_to_onnx("m.nnp", "m.onnx", 1, opset=12)


def test_missing_extra_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ex.ExportError, match="setup.sh --export"):
        ex.check_onnx_support()


# --------------------------------------------------------------------------- command line


def run_export_main(argv):
    spec = importlib.util.spec_from_file_location("export_script", REPO / "export.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return run(lambda: script.main(argv))


@pytest.mark.parametrize("value, shown", [("-1", "-1.0"), ("nan", "nan"), ("inf", "inf"),
                                           ("1e400", "inf")])
def test_a_tolerance_that_is_negative_nan_or_infinite_is_one_line(value, shown, capsys):
    """inf passed every file, a verification that could not fail (found by
    scripts/probe_flags.py)."""
    spec = importlib.util.spec_from_file_location("export_script", REPO / "export.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    with pytest.raises(SystemExit) as exit_info:
        script.parse_args(["w.h5", "-a", "resnet18", "-o", "m.nnp", "--tolerance", value])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].split(": ", 1)[1] == (
        f"error: argument --tolerance: must be a finite number, zero or positive, got {shown} "
        "(--no-verify skips the check)")


@pytest.mark.parametrize("problem, message", [
    ("missing", "no such weight file"),
    ("wrong_arch", "does not fit mobilenet_v3_small"),
    ("extension", "unsupported output format '.pb'"),
    ("classes", "r18.h5: the classifier has 10 classes, not --num-classes 7"),
])
def test_command_errors_are_one_line(problem, message, tmp_path, capsys):
    weights = make_weight_file(tmp_path / "r18.h5", "resnet18")
    argv = {
        "missing": [str(tmp_path / "none.h5"), "-a", "resnet18"],
        "wrong_arch": [str(weights), "-a", "mobilenet_v3_small"],
        "extension": [str(weights), "-a", "resnet18"],
        "classes": [str(weights), "-a", "resnet18", "--num-classes", "7"],
    }[problem]
    out = tmp_path / ("m.pb" if problem == "extension" else "m.nnp")
    assert run_export_main(argv + ["--spatial-size", "32", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not out.exists()


def test_command_end_to_end(tmp_path):
    weights = make_weight_file(tmp_path / "b0.h5", "efficientnet_b0")
    outputs = [tmp_path / "b0.nnp"] + ([tmp_path / "b0.onnx"] if HAVE_ONNX else [])
    result = run_script("export.py", str(weights), "-a", "EfficientNet_B0", "--spatial-size",
                        "32", "48", "-b", "3", "--opset", "13", "-o", *map(str, outputs))
    assert result.returncode == 0, result.stderr
    assert error_lines(result.stderr) == []
    lines = result.stdout.strip().splitlines()
    assert "input 'image' (3, 3, 32, 48) NCHW, output 'logits' (3, 10)" in lines[0]
    assert len(lines) == 1 + len(outputs)
    for line, path in zip(lines[1:], outputs):
        assert line.startswith(f"wrote {path} ") and "top-1 equal for 3/3" in line
    assert "NnpLoader vs NNabla: max |difference| 0.00e+00" in lines[1]
    if HAVE_ONNX:
        import onnx

        model = onnx.load(str(outputs[1]))
        assert [o.version for o in model.opset_import if o.domain == ""] == [13]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["b0.h5"] + [p.name for p in outputs])


def test_a_batch_whose_largest_layer_cannot_fit_is_one_line_before_any_export(
        tmp_path, capsys, monkeypatch):
    """Its pixels fit, its activations would not: the probe's `-b 100000` ran for minutes
    into a forward pass the memory check had let through."""
    import utils.process.memory as memory

    weights = make_weight_file(tmp_path / "r18.h5", "resnet18")
    # -b 4096 at 32x32: 48 MiB of pixels; resnet18's largest step there reads and writes
    # 2 x 64 x 16 x 16 values per image, 0.5 GiB for the batch.
    monkeypatch.setattr(memory, "available_memory", lambda: 256 << 20)
    out = tmp_path / "m.nnp"
    assert run_export_main([str(weights), "-a", "resnet18", "--spatial-size", "32", "-b",
                            "4096", "-o", str(out)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == ("error: -b 4096 test images at 32x32 need at least 0.5 GiB for the largest "
                    "layer of resnet18 in the verification's forward pass, more than the 0.2 "
                    "GiB of memory available: use a smaller -b or --spatial-size")
    assert not out.exists()
