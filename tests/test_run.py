"""`utils.process.run.run`, the one exit wrapper of every script: light to import, and what it
leaves behind when main fails (no open progress bar, no watchdog, one line)."""
from __future__ import annotations

import subprocess
import sys

import pytest
from paths import HANG_GUARD, REPO
from tqdm import tqdm

from utils.process.comm import Communicator
from utils.process.errors import INTERRUPTED_STATUS, USER_ERROR_STATUS, DataError
from utils.process.run import run
from utils.process.watchdog import start_watchdog


def test_importing_it_loads_neither_nnabla_nor_tqdm():
    """plot_curves.py and create_input_files.py use it and must stay quick and quiet."""
    probe = ("import sys, utils.process.run; "
             "print(sorted(m for m in ('nnabla', 'tqdm') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == "[]" and result.stderr == ""


def test_a_user_error_closes_the_open_bar_and_is_one_line_of_its_own(capsys):
    bars = []

    def main() -> int:
        bars.append(tqdm(total=10, file=sys.stderr))
        bars[0].update(3)
        raise DataError("labels.csv: line 3 has no class")

    assert run(main) == USER_ERROR_STATUS
    assert bars[0].disable  # what tqdm's close() leaves
    assert capsys.readouterr().err.endswith("\nerror: labels.csv: line 3 has no class\n")


def test_ctrl_c_is_status_130_and_one_line(capsys):
    def main() -> int:
        raise KeyboardInterrupt

    assert run(main) == INTERRUPTED_STATUS
    assert capsys.readouterr().err == "interrupted\n"


@pytest.mark.parametrize("ending", ["returns", "user error", "bug"])
def test_the_watchdog_main_started_stops_with_it(ending):
    started = []

    def main() -> int:
        started.append(start_watchdog(60, Communicator()))
        if ending == "user error":
            raise DataError("x")
        if ending == "bug":
            raise RuntimeError("x")
        return 0

    if ending == "bug":
        with pytest.raises(RuntimeError):
            run(main)
    else:
        run(main)
    (dog,) = started
    assert dog._stopped.is_set(), "run left the watchdog watching"
    # Stopped, its thread ends when next scheduled: joined, however busy the machine.
    dog._thread.join(HANG_GUARD)
    assert not dog._thread.is_alive()
