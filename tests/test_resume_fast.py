"""One resume of train.py in the fast subset (test_resume.py and test_reliability.py hold
the rest, marked slow): stopped by SIGTERM mid-epoch at a known iteration, run again, and
ended exactly as an uninterrupted run. Tiny: 24 images at 32x32, 3 iterations an epoch, 2
epochs, no validation."""
from __future__ import annotations

import signal

from fault_fixtures import Process, paused, run
from run_fixtures import assert_same_run, checkpoint_names
from train_fixtures import PREEMPTED, train_args


def test_a_run_stopped_mid_epoch_resumes_to_the_uninterrupted_result(setup, tmp_path):
    def command(monitor):
        return ["train.py", *train_args(setup, monitor, "-v", 0, "--no-tensorboard",
                                        train_list=setup.three_list, classes=3, epochs=2)]

    reference = tmp_path / "reference"
    assert run(command(reference), tmp_path, "reference").returncode == 0

    monitor = tmp_path / "stopped"
    first = Process(command(monitor), tmp_path, "first", pause="epoch 0 iteration 1")
    first.wait_for(paused("epoch 0 iteration 1"))
    first.signal(signal.SIGTERM)
    stopped = first.finish()
    assert stopped.returncode == PREEMPTED, stopped.stderr[-3000:]
    saved = monitor / "checkpoints" / "checkpoint_e0000_i0000002.npz"
    assert f"stopped by SIGTERM at epoch 0, iteration 2; saved {saved}" in stopped.stderr
    assert checkpoint_names(monitor) == [saved.name]

    resumed = run(command(monitor), tmp_path, "resumed")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {saved} (epoch 0, iteration 2)" in resumed.stderr
    assert_same_run(reference, monitor, ("Train-loss", "Train-error"))
