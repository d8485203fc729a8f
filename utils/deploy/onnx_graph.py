"""Rewrites of the ONNX graph NNabla's converter writes: the same values, in the form ONNX
Runtime runs fast and its quantizer can read.

- ReLU6. The converter writes it as `Max(x, 0)` then `Min(·, 6)`, each bound an `Add` of two
  `Constant` nodes of the activation's full shape (405 MB of zeros and sixes in a 14 MB
  MobileNetV2 at batch 8). ONNX Runtime fuses a `Clip` into the convolution before it, but
  not that pair, and around each `Max`/`Min` converts its blocked NCHWc layout back and
  forth: in MobileNetV2 (35 ReLU6) those took 62 % of the run (profiled here).
  `Min(Max(x, a), b)` with constant bounds a <= b becomes `Clip(x, a, b)`.
- Max pooling with padding. The converter pads with -inf in a `Pad` before a `MaxPool`;
  the quantizer then reads the range of that tensor as [-inf, max], and the INT8 model of
  every ResNet gets a NaN zero point there. A `MaxPool` pads with values that never win,
  the same thing, so the padding moves into its `pads` attribute.

Neither the converter nor ONNX Runtime's optimiser folds these patterns, hence this module.
Each rewrite is exact in float; export.py verifies the result against NNabla as before.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np

# The version of these rewrites, in the names of cached models (utils/deploy/onnx_runtime.py):
# a model exported before a rewrite changed is made again, not reused. 1: no rewrite.
GRAPH_REVISION = 2
# Constant folding is needed only as far as the converter's scalar bounds go.
_FOLDABLE = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply}
# From opset 11 Clip takes its bounds as inputs; before that, as attributes.
CLIP_BOUNDS_AS_INPUTS = 11
PAD_AS_INPUTS = 11  # and Pad its pads and fill value


def _constant_values(graph) -> Dict[str, np.ndarray]:
    """Every tensor of `graph` whose value is fixed: initializers, Constant nodes and the
    Add/Sub/Mul of those. (The converter lists some Constant nodes after their readers,
    which ONNX Runtime accepts, so the folding repeats until nothing new is found.)"""
    from onnx import numpy_helper

    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 \
                and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    pending = [n for n in graph.node if n.op_type in _FOLDABLE]
    while True:
        ready = [n for n in pending if all(i in values for i in n.input)]
        if not ready:
            return values
        for node in ready:
            values[node.output[0]] = _FOLDABLE[node.op_type](*(values[i] for i in node.input))
        pending = [n for n in pending if n not in ready]


def _known_shapes(model) -> Dict[str, tuple]:
    """The static shape of each tensor ONNX's shape inference can tell."""
    from onnx import shape_inference

    inferred = shape_inference.infer_shapes(model).graph
    shapes = {}
    for info in list(inferred.value_info) + list(inferred.input) + list(inferred.output):
        dims = info.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[info.name] = tuple(d.dim_value for d in dims)
    return shapes


def _bound_operand(node, values: Dict[str, np.ndarray], shapes: Dict[str, tuple]
                   ) -> Optional[Tuple[str, float]]:
    """(the variable input, the bound) of a two-input Max or Min whose other input is a
    constant of one repeated value that broadcasts into the variable's shape (the converter
    writes the bound as a tensor of the activation's full shape), else None."""
    if len(node.input) != 2:
        return None
    for variable, constant in (node.input, node.input[::-1]):
        if constant not in values or variable in values:
            continue
        bound = values[constant]
        if bound.size == 0 or not np.all(bound == bound.flat[0]):
            continue
        if bound.size > 1 and (variable not in shapes or np.broadcast_shapes(
                bound.shape, shapes[variable]) != shapes[variable]):
            continue
        return variable, float(bound.flat[0])
    return None


def simplify(model, opset: int) -> Dict[str, int]:
    """Apply every rewrite to `model` (an onnx ModelProto, changed in place) of `opset`;
    returns how many places each rewrite changed."""
    return {"relu6_as_clip": relu6_as_clip(model, opset),
            "padding_into_max_pool": padding_into_max_pool(model, opset)}


def relu6_as_clip(model, opset: int) -> int:
    """Rewrite each `Min(Max(x, a), b)` of `model` (an onnx ModelProto, changed in place)
    whose `Max` feeds only that `Min` into `Clip(x, a, b)`; nodes left unused are removed.
    Returns the number of pairs rewritten."""
    from onnx import TensorProto, helper

    graph = model.graph
    if not any(node.op_type == "Min" for node in graph.node):
        return 0  # (no shape inference over a large network that has no ReLU6)
    values = _constant_values(graph)
    shapes = _known_shapes(model)
    consumers = _consumers(graph)
    graph_outputs = {o.name for o in graph.output}
    producer = {out: node for node in graph.node for out in node.output}
    replaced: Dict[int, object] = {}  # id(Min node) -> its Clip
    removed = set()
    for node in graph.node:
        if node.op_type != "Min":
            continue
        upper = _bound_operand(node, values, shapes)
        if upper is None or upper[0] not in producer:
            continue
        first = producer[upper[0]]
        lower = _bound_operand(first, values, shapes) if first.op_type == "Max" else None
        if lower is None or lower[1] > upper[1] or upper[0] in graph_outputs \
                or len(consumers[upper[0]]) != 1:
            continue
        name = f"{node.name or node.output[0]}_clip"
        if opset >= CLIP_BOUNDS_AS_INPUTS:
            bounds = [helper.make_tensor(f"{name}_{end}", TensorProto.FLOAT, [], [value])
                      for end, value in (("min", lower[1]), ("max", upper[1]))]
            graph.initializer.extend(bounds)
            clip = helper.make_node("Clip", [lower[0]] + [b.name for b in bounds],
                                    list(node.output), name=name)
        else:
            clip = helper.make_node("Clip", [lower[0]], list(node.output), name=name,
                                    min=lower[1], max=upper[1])
        replaced[id(node)] = clip
        removed.add(id(first))
    _replace_nodes(graph, replaced, removed)
    return len(replaced)


def _consumers(graph) -> Dict[str, List]:
    readers: Dict[str, List] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


def padding_into_max_pool(model, opset: int) -> int:
    """Rewrite each constant -inf `Pad` of the spatial axes read only by a `MaxPool` (no
    padding of its own, each pad smaller than the kernel, as ONNX Runtime requires) into
    that `MaxPool`'s `pads`. Returns the number of pools rewritten."""
    from onnx import helper

    graph = model.graph
    values = _constant_values(graph)
    readers = _consumers(graph)
    graph_outputs = {o.name for o in graph.output}
    replaced: Dict[int, object] = {}
    removed = set()
    for pad in graph.node:
        padding = _spatial_padding(pad, values, opset) if pad.op_type == "Pad" else None
        if padding is None or pad.output[0] in graph_outputs \
                or len(readers.get(pad.output[0], [])) != 1:
            continue
        (pool,) = readers[pad.output[0]]
        attributes = {a.name: helper.get_attribute_value(a) for a in pool.attribute}
        kernel = attributes.get("kernel_shape", [])
        if pool.op_type != "MaxPool" or len(pool.output) != 1 \
                or attributes.get("auto_pad", b"NOTSET") != b"NOTSET" \
                or any(attributes.get("pads", [])) or len(kernel) * 2 != len(padding) \
                or any(p >= k for p, k in zip(padding, kernel + kernel)):
            continue
        attributes["pads"] = padding
        replaced[id(pool)] = helper.make_node("MaxPool", [pad.input[0]], list(pool.output),
                                              name=pool.name, **attributes)
        removed.add(id(pad))
    _replace_nodes(graph, replaced, removed)
    return len(replaced)


def _spatial_padding(pad, values: Dict[str, np.ndarray], opset: int) -> Optional[List[int]]:
    """A constant -inf `Pad` of the axes after the first two: its pads in MaxPool's order
    (each spatial axis's begin, then each one's end), else None."""
    from onnx import helper

    attributes = {a.name: helper.get_attribute_value(a) for a in pad.attribute}
    if attributes.get("mode", b"constant") != b"constant":
        return None
    if opset >= PAD_AS_INPUTS:
        if len(pad.input) < 3 or any(i not in values for i in pad.input[1:3]):
            return None
        pads, fill = values[pad.input[1]].tolist(), values[pad.input[2]]
    else:
        pads, fill = attributes.get("pads"), np.float32(attributes.get("value", 0.0))
    if not pads or np.size(fill) != 1 or not np.isneginf(np.ravel(fill)[0]) \
            or any(p < 0 for p in pads):
        return None
    rank = len(pads) // 2
    begins, ends = pads[:rank], pads[rank:]
    if rank < 3 or any(begins[:2]) or any(ends[:2]):
        return None
    return [int(p) for p in begins[2:] + ends[2:]]


def _replace_nodes(graph, replaced: Dict[int, object], removed: set) -> None:
    """Put each new node in the place of the one it replaces, drop `removed`, then the
    nodes nothing reads any more."""
    if not replaced:
        return
    nodes = [replaced.get(id(n), n) for n in graph.node if id(n) not in removed]
    del graph.node[:]
    graph.node.extend(_without_unused(nodes, {o.name for o in graph.output}))


def _without_unused(nodes: List, graph_outputs: set) -> List:
    """`nodes` less those whose outputs nothing reads (ONNX nodes have no side effects),
    repeated until none is left, so the bounds' Constant/Add chains go too."""
    while True:
        read = {name for node in nodes for name in node.input} | graph_outputs
        kept = [n for n in nodes if any(out in read for out in n.output)]
        if len(kept) == len(nodes):
            return kept
        nodes = kept
