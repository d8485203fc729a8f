"""The rewrites of exported ONNX graphs: ReLU6 as one Clip (the same outputs, a model ONNX
Runtime fuses, no activation-sized constants) and -inf padding moved into MaxPool (a range
ONNX Runtime's quantizer can read).

Small graphs are built with ONNX's helper in the converter's own patterns (each ReLU6 bound an
Add of two Constant nodes of the activation's full shape; a Pad of -inf before a MaxPool) and
run in ONNX Runtime before and after the rewrite; then real exports are inspected.
"""
import importlib.util
import warnings

import numpy as np
import pytest

from utils.deploy import export as ex
from utils.deploy.onnx_graph import padding_into_max_pool, relu6_as_clip, simplify
from utils.deploy.quantize import quantize_model

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxruntime")),
    reason="export extra not installed (bash scripts/setup.sh --export)")

SHAPE = (2, 3, 4, 4)


def constant(name, value):
    """A Constant node: int64 values (pads) as they are, any other as float32."""
    from onnx import helper, numpy_helper

    value = np.asarray(value)
    if value.dtype != np.int64:
        value = value.astype(np.float32)
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name))


def bound(prefix, value, shape=SHAPE):
    """The converter's way of writing a scalar bound: zeros of `shape` plus a scalar."""
    return [constant(f"{prefix}_zeros", np.zeros(shape)), constant(f"{prefix}_scalar", [value]),
            helper_node("Add", [f"{prefix}_zeros", f"{prefix}_scalar"], [prefix])]


def helper_node(op, inputs, outputs):
    from onnx import helper

    return helper.make_node(op, inputs, outputs, name=outputs[0])


def model(nodes, outputs=("y",), opset=11, input_shape=SHAPE, output_shape=SHAPE):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, output_shape) for o in outputs])
    made = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    made.ir_version = ex.ONNX_IR_VERSION
    return made


def relu6(lower=0.0, upper=6.0, upper_shape=SHAPE, max_output="m"):
    # The Add of the upper bound is listed before its Constant nodes, as the converter does.
    upper_nodes = bound("hi", upper, upper_shape)
    return (bound("lo", lower) + [helper_node("Max", ["x", "lo"], [max_output])]
            + upper_nodes[2:] + upper_nodes[:2] + [helper_node("Min", [max_output, "hi"], ["y"])])


def run(made, x):
    import onnxruntime

    session = onnxruntime.InferenceSession(made.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def op_types(made):
    return sorted(n.op_type for n in made.graph.node)


@pytest.mark.parametrize("opset", [9, 11, 13])
def test_relu6_becomes_one_clip_with_the_same_outputs(opset):
    import onnx

    x = np.linspace(-9, 9, int(np.prod(SHAPE)), dtype=np.float32).reshape(SHAPE)
    made = model(relu6(), opset=opset)
    before = run(made, x)[0]
    size_before = made.ByteSize()
    assert relu6_as_clip(made, opset) == 1
    onnx.checker.check_model(made, full_check=True)
    assert op_types(made) == ["Clip"]  # the bounds' Constant and Add nodes are gone
    after = run(made, x)[0]
    np.testing.assert_array_equal(after, before)
    np.testing.assert_array_equal(after, np.clip(x, 0, 6))
    assert made.ByteSize() < size_before / 2


@pytest.mark.parametrize("case, nodes, outputs", [
    ("lower above upper", relu6(lower=7.0, upper=6.0), ("y",)),
    ("Max read by another node too", relu6() + [helper_node("Neg", ["m"], ["z"])], ("y", "z")),
    ("Max's output a graph output", relu6(), ("y", "m")),
    ("bound that broadcasts x to a larger shape", relu6(upper_shape=(3,) + SHAPE), ("y",)),
    ("bound of several values",
     bound("lo", 0.0) + [helper_node("Max", ["x", "lo"], ["m"]),
                         constant("hi", np.arange(np.prod(SHAPE)).reshape(SHAPE)),
                         helper_node("Min", ["m", "hi"], ["y"])], ("y",)),
])
def test_other_patterns_are_left_as_they_are(case, nodes, outputs):
    made = model(nodes, outputs)
    before = made.SerializeToString()
    assert relu6_as_clip(made, 11) == 0, case
    assert made.SerializeToString() == before


def test_exported_mobilenet_v2_has_clips_and_no_activation_sized_constants(tmp_path):
    import onnx

    graph = ex.build_inference_graph("mobilenet_v2", 10, 4, (32, 32))
    path = tmp_path / "m.onnx"
    (exported,) = ex.export(graph, [str(path)])
    assert exported.check.passed  # the rewritten model still matches NNabla
    made = onnx.load(str(path))
    types = [n.op_type for n in made.graph.node]
    assert types.count("Clip") == 35 and "Max" not in types and "Min" not in types
    parameters = sum(int(np.prod(v.shape)) for v in graph.parameters().values())
    assert path.stat().st_size < 1.05 * 4 * parameters  # float32 weights and little else


POOLED = (2, 3, 2, 2)  # SHAPE padded by 1 on each side, pooled 3x3 with stride 2


def padded_pool(opset, fill=-np.inf, pads=(0, 0, 1, 1, 0, 0, 1, 1), kernel=3, pool_pads=None,
                extra_reader=False):
    """The converter's padded max pooling: Pad(x, pads, fill) then an unpadded MaxPool."""
    from onnx import helper

    if opset >= 11:
        nodes = [constant("pads", np.asarray(pads, np.int64)), constant("fill", fill),
                 helper.make_node("Pad", ["x", "pads", "fill"], ["p"], mode="constant")]
    else:
        nodes = [helper.make_node("Pad", ["x"], ["p"], mode="constant", pads=list(pads),
                                  value=float(fill))]
    nodes.append(helper.make_node("MaxPool", ["p"], ["y"], kernel_shape=[kernel, kernel],
                                  strides=[2, 2], pads=list(pool_pads or [0, 0, 0, 0])))
    if extra_reader:
        nodes.append(helper_node("Neg", ["p"], ["z"]))
    return nodes


@pytest.mark.parametrize("opset", [9, 11, 13])
def test_minus_infinity_padding_moves_into_the_max_pool(opset):
    import onnx

    x = np.random.RandomState(0).randn(*SHAPE).astype(np.float32) - 5  # all below the pad 0
    made = model(padded_pool(opset), opset=opset, output_shape=POOLED)
    before = run(made, x)[0]
    assert padding_into_max_pool(made, opset) == 1
    onnx.checker.check_model(made, full_check=True)
    (pool,) = made.graph.node
    assert pool.op_type == "MaxPool" and list(pool.input) == ["x"]
    assert [list(a.ints) for a in pool.attribute if a.name == "pads"] == [[1, 1, 1, 1]]
    np.testing.assert_array_equal(run(made, x)[0], before)
    assert before.shape == POOLED and before.max() < 0  # no padding value won


@pytest.mark.parametrize("case, kwargs, outputs", [
    ("zero padding", dict(fill=0.0), ("y",)),
    ("padding of the channels", dict(pads=(0, 1, 1, 1, 0, 1, 1, 1)), ("y",)),
    ("pad as large as the kernel", dict(pads=(0, 0, 1, 1, 0, 0, 1, 1), kernel=1), ("y",)),
    ("pool with padding of its own", dict(pool_pads=[1, 1, 1, 1]), ("y",)),
    ("Pad read by another node too", dict(extra_reader=True), ("y", "z")),
])
def test_other_paddings_are_left_as_they_are(case, kwargs, outputs):
    made = model(padded_pool(11, **kwargs), outputs, output_shape=None)
    before = made.SerializeToString()
    assert padding_into_max_pool(made, 11) == 0, case
    assert made.SerializeToString() == before


def test_an_exported_resnet_quantizes_without_an_infinite_range(tmp_path):
    """The -inf padding gave the quantizer the range [-inf, max]: NaN zero points and NumPy
    warnings. After the rewrite the INT8 model is made without a warning and agrees."""
    graph = ex.build_inference_graph("resnet18", 10, 4, (32, 32))
    float_model = tmp_path / "f.onnx"
    ex.export(graph, [str(float_model)], opset=13)
    import onnx

    assert "Pad" not in [n.op_type for n in onnx.load(str(float_model)).graph.node]
    assert simplify(onnx.load(str(float_model)), 13) == {  # nothing left to rewrite
        "relu6_as_clip": 0, "padding_into_max_pool": 0}
    images = [ex.sample_images((4, 3, 32, 32), seed) for seed in range(3)]
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        quantize_model(str(float_model), str(tmp_path / "q.onnx"), images)
