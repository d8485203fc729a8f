"""Distillation, stochastic depth and the BCE loss in whole train.py runs on the demo set:
a ResNet-18 student with drop_path_rate, distilled from the mobilenet_v3_small the
`mobilenet_run` fixture trained, learns; its weight files hold the student alone; stopped
mid-epoch and run again, it ends exactly as the uninterrupted run."""
from __future__ import annotations

import signal

import nnabla as nn
import numpy as np
from fault_fixtures import Process, paused, run
from marks import slow
from paths import CFG
from run_fixtures import assert_same_run
from train_fixtures import CONFIG, PREEMPTED, train_args, values

from models import NORMALIZATIONS
from utils.recipe.config import load_config
from utils.train.checkpoint import load_checkpoint
from utils.train.step import Teacher, TrainingNetwork, build_training_graph, renormalisation
from utils.weights.files import read_parameters

DISTILLING = CONFIG.format(epochs=3, mixup=0, base_lr=0.0005) + """\
loss: bce
bce_target_threshold: 0.2
drop_path_rate: 0.2
distillation_alpha: 0.5
distillation_temperature: 2.0
"""


def command(setup, monitor, config, teacher):
    return ["train.py", *train_args(setup, monitor, "-v", 0, "--no-tensorboard",
                                    "--teacher", teacher, "--teacher-arch",
                                    "mobilenet_v3_small", arch="resnet18",
                                    config=config, train_list=setup.small_list, epochs=3)]


@slow
def test_a_distilled_run_learns_and_resumes_exactly(setup, mobilenet_run, tmp_path):
    teacher = mobilenet_run[0] / "param_003.h5"
    config = tmp_path / "distil.yaml"
    config.write_text(DISTILLING)
    reference = tmp_path / "reference"
    done = run(command(setup, reference, config, teacher), tmp_path, "reference")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"teacher mobilenet_v3_small {teacher}" in done.stderr
    losses = values(reference, "Train-loss")
    assert losses[-1] < losses[0], losses
    # The student's parameters alone are trained, saved and checkpointed.
    saved = read_parameters(str(reference / "param_003.h5"))
    assert saved and all(name.startswith(("conv1/", "res", "fc/")) for name in saved)
    newest = load_checkpoint(str(sorted((reference / "checkpoints").iterdir())[-1]))
    assert not any("teacher" in name for name in newest.params)
    assert newest.meta["identity"]["teacher"] == str(teacher)
    assert newest.meta["identity"]["config"]["drop_path_rate"] == 0.2
    assert f"teacher={teacher}" in (reference / "Arguments.txt").read_text()

    monitor = tmp_path / "stopped"
    first = Process(command(setup, monitor, config, teacher), tmp_path, "first",
                    pause="epoch 1 iteration 2")
    first.wait_for(paused("epoch 1 iteration 2"))
    first.signal(signal.SIGTERM)
    assert first.finish().returncode == PREEMPTED
    resumed = run(command(setup, monitor, config, teacher), tmp_path, "resumed")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr
    assert_same_run(reference, monitor, ("Train-loss", "Train-error"))


@slow
def test_another_teacher_does_not_resume_the_run(setup, mobilenet_run, tmp_path):
    config = tmp_path / "distil.yaml"
    config.write_text(DISTILLING)
    monitor = tmp_path / "run"
    first = command(setup, monitor, config, mobilenet_run[0] / "param_003.h5")
    first[first.index("-e") + 1] = "1"
    assert run(first, tmp_path, "first").returncode == 0
    other = command(setup, monitor, config, mobilenet_run[0] / "param_002.h5")
    refused = run(other, tmp_path, "other")
    assert refused.returncode == 2
    assert "cannot resume a different run (teacher:" in refused.stderr


def test_the_teacher_sees_the_batch_in_its_own_normalisation():
    mean_d, std_d = NORMALIZATIONS["default"]
    mean_s, std_s = NORMALIZATIONS["senet_author"]
    pixels = np.random.default_rng(0).uniform(0, 255, (5, 3))
    student = (pixels - mean_d) / std_d
    scale, shift = renormalisation("default", "senet_author", 4)
    np.testing.assert_allclose(student * scale[:3] + shift[:3], (pixels - mean_s) / std_s,
                               rtol=1e-9, atol=1e-9)
    assert (scale[3], shift[3]) == (1, 0)  # half precision's zero 4th channel stays 0


def test_the_teacher_is_neither_trained_nor_among_the_student_parameters():
    nn.clear_parameters()
    teacher = Teacher("mobilenet_v3_small", "default")
    config = load_config(CFG / "quickstart.yaml")
    graph = build_training_graph(TrainingNetwork("resnet18", 3, False, config, teacher=teacher),
                                 (4, 3, 32, 32))
    student = nn.get_parameters(grad_only=False)
    with nn.parameter_scope("teacher", teacher.params):
        taught = nn.get_parameters(grad_only=False)
    assert taught and not any("teacher" in name for name in student)
    assert all(not v.need_grad for v in taught.values())
    for v in taught.values():
        v.grad.zero()
    graph.image.d = np.random.default_rng(0).normal(size=graph.image.shape)
    graph.label.d = [[0], [1], [2], [1]]
    graph.mask.d = 1
    nn.forward_all([graph.loss, graph.error])
    graph.loss.backward()
    assert all(not np.any(v.g) for v in taught.values())
    assert any(np.any(v.g) for v in student.values() if v.need_grad)
    nn.clear_parameters()
