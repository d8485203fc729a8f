"""The GPU side of the DALI graph, checked without a GPU: every graph the scripts can ask for
(training with each augmentation policy, validation; float or half, NCHW or NHWC) built with
its GPU operators (nvJPEG's "mixed" decoder, "gpu" resize, policy and normalisation) inside
a CPU pipeline and serialised. Building checks every operator's name, arguments and the
device of every input, so a wrong one fails here as it would on a GPU."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from utils.data.pipelines import DaliOptions, ImageFormat, dali_graph
from utils.recipe.augmentation import POLICIES, Augmentation

# The image formats of -t float/half with and without --channel-last (half NHWC networks
# take a zero 4th channel).
FORMATS = {"float NCHW": ImageFormat((32, 32), 3, False, np.float32),
           "float NHWC": ImageFormat((32, 32), 3, True, np.float32),
           "half NCHW": ImageFormat((32, 32), 3, False, np.float16),
           "half NHWC": ImageFormat((32, 32), 4, True, np.float16)}
GPU = DaliOptions(num_threads=1, prefetch=1, device_id=0, decoder_padding=64 << 20)
GRAPHS = [(f, True, p) for f, p in itertools.product(FORMATS, POLICIES)] + \
    [(f, False, "none") for f in FORMATS]


def never_called():
    raise AssertionError("the graph is only built")


def serialised(graph, *args) -> bytes:
    """`graph(*args)` in a pipeline without a device (device_id None), serialised."""
    from nvidia.dali import pipeline_def

    return pipeline_def(graph, batch_size=2, num_threads=1, device_id=None,
                        enable_conditionals=True)(*args).serialize()


@pytest.mark.parametrize("name, training, policy", GRAPHS,
                         ids=[f"{f} {'train ' + p if t else 'val'}" for f, t, p in GRAPHS])
def test_each_gpu_graph_builds_with_its_operators_on_the_gpu(name, training, policy):
    graph = serialised(dali_graph, never_called, FORMATS[name], GPU, training,
                       Augmentation(policy=policy))
    decoder = b"decoders__ImageSlice" if training else b"decoders__Image"
    for operator in (decoder, b"Resize", b"CropMirrorNormalize"):
        assert operator in graph
    assert b"mixed" in graph and b"gpu" in graph


def test_an_operator_on_the_wrong_device_fails_the_same_check():
    """What the check catches: a CPU operator fed by a GPU one."""
    from nvidia.dali import fn, types

    def wrong(source):
        data = fn.external_source(source=source, batch=True, dtype=types.UINT8, ndim=1)
        images = fn.decoders.image(data, device="mixed")
        return fn.resize(images, device="cpu", size=[8, 8])

    with pytest.raises(RuntimeError, match='cpu operator .*resize.* incompatible device "gpu"'):
        serialised(wrong, never_called)
