"""A network's size read from its NNabla graph: multiply-accumulates per image and parameters.

What is counted follows the convention of the published figures (ResNet-50: 4.1 G MACs,
MobileNetV2: 0.30 G): the multiply-accumulates of the convolutions (grouped and depthwise
too), deconvolutions and fully-connected (affine) layers, one per weight use. Bias adds,
batch normalisation, activations, pooling, element-wise products (squeeze-and-excitation's
scaling) and the loss are not counted; they add well under 1 % to these networks. The count
is per image: the graph's count divided by its batch size. Parameters are the trainable
values (batch-norm running statistics are excluded), each shared parameter counted once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional

import nnabla as nn


def _weight_size(f: Any) -> int:
    return math.prod(f.inputs[1].shape)


def _convolution_macs(f: Any) -> int:
    """Every output value takes the weights of its output channel: (C_in / groups) x kernel.

    Weights are (C_out, C_in / groups, *kernel) in either layout ((C_out, *kernel, C_in /
    groups) in NHWC; depthwise: (C_out, *kernel)), so the product is the number of output
    positions times the weight size.
    """
    out = f.outputs[0]
    out_channels = f.inputs[1].shape[0]
    return math.prod(out.shape) // out_channels * _weight_size(f)


def _deconvolution_macs(f: Any) -> int:
    """Every input value is spread by the weights of its input channel: (C_out / groups) x
    kernel; weights are (C_in, C_out / groups, *kernel), so input positions x weight size."""
    x = f.inputs[0]
    in_channels = f.inputs[1].shape[0]
    return math.prod(x.shape) // in_channels * _weight_size(f)


def _affine_macs(f: Any) -> int:
    """Every row of the input (the axes before base_axis) meets the whole weight matrix."""
    x = f.inputs[0]
    base_axis = f.info.args.get("base_axis", 1)
    return math.prod(x.shape[:base_axis]) * _weight_size(f)


MAC_RULES: Dict[str, Callable[[Any], int]] = {
    "Convolution": _convolution_macs,
    "DepthwiseConvolution": _convolution_macs,
    "Deconvolution": _deconvolution_macs,
    "DepthwiseDeconvolution": _deconvolution_macs,
    "Affine": _affine_macs,
}


def count_macs(output: nn.Variable, batch_size: Optional[int] = None) -> int:
    """Multiply-accumulates of one image through the graph ending at `output`.

    `batch_size` defaults to the first axis of `output`; the total over the graph is divided
    by it (every counted layer is linear in the batch).
    """
    batch = output.shape[0] if batch_size is None else batch_size
    total = 0

    def visit(f: Any) -> None:
        nonlocal total
        rule = MAC_RULES.get(f.info.type_name)
        if rule is not None:
            total += rule(f)

    output.visit(visit)
    if total % batch:
        raise ValueError(f"{total} MACs do not divide by the batch size {batch}")
    return total // batch


def count_parameters(output: nn.Variable,
                     parameters: Optional[Mapping[str, nn.Variable]] = None) -> int:
    """Trainable values of the graph ending at `output`: the registered parameters
    (`parameters`, default `nn.get_parameters()`, which leaves out batch-norm statistics) it
    reads, each once."""
    trainable = set((nn.get_parameters() if parameters is None else parameters).values())
    used = set()  # (Variables compare and hash by the graph node they wrap)

    def visit(f: Any) -> None:
        used.update(x for x in f.inputs if x in trainable)

    output.visit(visit)
    return sum(x.size for x in used)


def count_forward_values(output: nn.Variable, batch_size: Optional[int] = None) -> int:
    """Values one image's forward pass computes: the outputs of every function of the graph.

    Training keeps most of them for the backward pass, so (with their gradients) they bound
    what a training step needs beyond the parameters and solver state.
    """
    batch = output.shape[0] if batch_size is None else batch_size
    total = 0

    def visit(f: Any) -> None:
        nonlocal total
        total += sum(math.prod(y.shape) for y in f.outputs)

    output.visit(visit)
    return total // batch


def largest_step_values(output: nn.Variable, parameters: Mapping[str, nn.Variable],
                        batch_size: Optional[int] = None) -> int:
    """Values per image that the largest function of the forward pass reads and writes at
    once, its inputs and outputs less the `parameters` (all of them, batch-norm statistics
    included). A test-mode forward that frees each buffer after use (`clear_buffer`) holds
    about this much beyond the parameters at its peak."""
    batch = output.shape[0] if batch_size is None else batch_size
    fixed = set(parameters.values())
    largest = 0

    def visit(f: Any) -> None:
        nonlocal largest
        data = [x for x in f.inputs if x not in fixed] + list(f.outputs)
        largest = max(largest, sum(math.prod(x.shape) for x in data))

    output.visit(visit)
    return largest // batch


@dataclass(frozen=True)
class ModelStats:
    macs_per_image: int
    parameters: int
    forward_values_per_image: int


def model_stats(output: nn.Variable) -> ModelStats:
    """MACs per image, trainable parameters and forward values per image of the network
    ending at `output`."""
    return ModelStats(count_macs(output), count_parameters(output),
                      count_forward_values(output))
