"""create_input_files.py --verify stopped by a signal takes its decoding workers with it
(issue 34 item 5): SIGTERM and SIGHUP ended the script alone, its two workers decoding on
under PID 1, and SIGINT waited for them to decode every image. Run as a user would, on enough
large images that it is still verifying when the signal comes."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from fault_fixtures import DEADLINE, Process, alive, descendants
from marks import slow
from PIL import Image

IMAGES_PER_CLASS = 100  # about 0.1 s of decoding each: ~10 s of work for two workers


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """Two classes of the same 2000x2000 noise JPEG (hard links: one file's space)."""
    root = tmp_path_factory.mktemp("verify")
    pixels = np.random.default_rng(0).integers(0, 256, (2000, 2000, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(root / "noise.jpg", quality=90)
    for name in ("a", "b"):
        (root / "tree" / name).mkdir(parents=True)
        for i in range(IMAGES_PER_CLASS):
            os.link(root / "noise.jpg", root / "tree" / name / f"{i}.JPEG")
    return root


def workers_of(pid: int, count: int) -> list:
    """The process's `count` children once they all run (polled, under the deadline)."""
    deadline = time.monotonic() + DEADLINE
    while len(descendants(pid)) < count:
        assert time.monotonic() < deadline, "the decoding workers never started"
        time.sleep(0.02)
    return descendants(pid)


@slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP],
                         ids=["SIGTERM", "SIGINT", "SIGHUP"])
def test_a_signal_ends_the_decoding_workers_too(tree, tmp_path, signum):
    out = tmp_path / "out"
    script = Process(["create_input_files.py", "-T", tree / "tree", "--verify", "--workers",
                      "2", "-o", out], tmp_path, "verify")
    script.wait_for("verifying train")
    workers = workers_of(script.pid, 2)
    script.signal(signum)
    finished = script.finish()
    survivors = [pid for pid in workers if alive(pid)]
    for pid in survivors:  # (a failing test leaves none behind)
        os.kill(pid, signal.SIGKILL)
    assert survivors == []
    assert finished.returncode == -signum, finished.stderr[-2000:]  # ended by the signal
    assert "Traceback" not in finished.stderr
    assert not (out / "train_label").exists()
