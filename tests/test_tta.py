"""--tta flip (issue 33 item 6): the logits of each image and of its mirror averaged, through
NNabla (a second network on the flipped input, sharing the parameters) and through ONNX
Runtime (the model run twice), equal to the mean computed by hand."""
from __future__ import annotations

import nnabla as nn
import numpy as np
import pytest
from eval_fixtures import randomise_parameters

from models import build_network
from utils.eval.evaluation import build_evaluation_graph

SIZE = 32


def logits_of(images: np.ndarray, channel_last: bool = False) -> np.ndarray:
    logits, _ = build_network(nn.Variable.from_numpy_array(images), 10, "resnet18", test=True,
                              channel_last=channel_last)
    logits.forward()
    return logits.d.copy()


def test_nnabla_averages_the_image_and_its_mirror():
    nn.clear_parameters()
    nn.seed(0)
    shape = (3, 3, SIZE, SIZE)
    graph = build_evaluation_graph("resnet18", shape, 10, flip=True)
    randomise_parameters()
    images = np.random.RandomState(1).standard_normal(shape).astype(np.float32)
    graph.image.d = images
    graph.label.d = 0
    graph.forward(graph.sums)
    plain, mirrored = logits_of(images), logits_of(np.flip(images, 3).copy())
    assert not np.allclose(plain, mirrored)  # the mirror is another input
    np.testing.assert_allclose(graph.scores.d, (plain + mirrored) / 2, rtol=1e-5, atol=1e-5)
    nn.clear_parameters()


@pytest.mark.parametrize("channel_last, axis", [(False, 3), (True, 2)])
def test_the_mirror_is_taken_along_the_width(channel_last, axis):
    """(NHWC runs on a GPU only: its graph is checked, not run.)"""
    nn.clear_parameters()
    shape = (2, SIZE, SIZE, 3) if channel_last else (2, 3, SIZE, SIZE)
    graph = build_evaluation_graph("resnet18", shape, 10, channel_last, flip=True)
    flips = []
    graph.scores.visit(lambda f: flips.append(f.info.args["axes"])
                       if f.info.type_name == "Flip" else None)
    assert flips == [[axis]]
    nn.clear_parameters()


def test_another_runtime_is_run_on_both():
    seen = []

    def network(images: np.ndarray) -> np.ndarray:
        seen.append(images.copy())
        return images.reshape(len(images), -1)[:, :4] * 1.0

    graph = build_evaluation_graph("resnet18", (2, 3, 2, 2), 4, external=network, flip=True)
    images = np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2)
    graph.image.d = images
    graph.label.d = 0
    graph.forward(graph.sums)
    np.testing.assert_array_equal(seen[1], images[..., ::-1])
    np.testing.assert_allclose(graph.scores.d, (network(images) + network(images[..., ::-1])) / 2)
