"""How the event files are written: in the caller's thread, each call's events in the file when
it returns, and a write that fails (a full disk) one warning line after which training goes on,
however many events follow (tensorboardX's writing thread blocked the loop from the eleventh)."""
from __future__ import annotations

import subprocess
import sys
import threading

import pytest
from paths import REPO
from run_fixtures import accumulator, scalars

from utils.outputs.tensorboard import TensorBoard, tensorboard_folder

pytest.importorskip("tensorboard")  # the reader (requirements-tensorboard.txt)


def test_events_are_in_the_file_when_the_call_returns_with_no_thread_or_hook(tmp_path):
    threads, hook = threading.active_count(), threading.excepthook
    board = TensorBoard(tensorboard_folder(str(tmp_path)), 0)
    board.scalars(1, {"train/loss": 2.5, "train/error": 0.75})
    board.text("run/arguments", "arch=resnet18", 1)
    assert scalars(tmp_path) == {"train/loss": [(1, 2.5)], "train/error": [(1, 0.75)]}
    assert "run/arguments/text_summary" in accumulator(tmp_path).Tags()["tensors"]
    assert threading.active_count() == threads and threading.excepthook is hook
    board.close()


FULL_DISK_THEN_MORE = """\
import resource, signal, sys
import numpy as np
from utils.outputs.tensorboard import TensorBoard
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
board = TensorBoard(sys.argv[1], 0)
board.scalars(1, {"train/loss": 1.0})
resource.setrlimit(resource.RLIMIT_FSIZE, (20000, resource.RLIM_INFINITY))
board.image("big", np.random.RandomState(0).randint(0, 256, (300, 300, 3)).astype(np.uint8), 2)
for step in range(3, 103):
    board.scalars(step, {"train/loss": 1.0 / step})
board.finished(103)
board.close()
print("went on")
"""


def test_after_a_failed_write_the_run_goes_on_with_one_warning(tmp_path):
    folder = tensorboard_folder(str(tmp_path))
    result = subprocess.run([sys.executable, "-c", FULL_DISK_THEN_MORE, folder],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout == "went on\n", result.stderr
    assert result.stderr.splitlines() == [
        "warning: TensorBoard events no longer written: [Errno 27] File too large"]
    # What was written before the failure stays readable.
    assert scalars(tmp_path)["train/loss"] == [(1, 1.0)]
