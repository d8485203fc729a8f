"""The run's ETA: durations as people read them, from the last epochs' wall times."""
import pytest

from utils.progress import format_duration, run_eta


@pytest.mark.parametrize("seconds, text", [
    (0, "0 s"), (44.6, "45 s"), (59.4, "59 s"), (60, "1 min"), (3599, "59 min"),
    (3600, "1 h 00 min"), (3 * 3600 + 5 * 60 + 20, "3 h 05 min"), (86399, "23 h 59 min"),
    (86400, "1 d 00 h"), (2 * 86400 + 4 * 3600 + 59 * 60, "2 d 04 h"), (-3, "0 s"),
])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_run_eta_follows_the_last_five_epochs():
    assert run_eta([100.0] * 3, 10) == "10 epoch(s) left, about 16 min"
    # A slow first epoch (start-up) is forgotten once five others exist.
    assert run_eta([1000.0, 60, 60, 60, 60, 60], 60) == "60 epoch(s) left, about 1 h 00 min"
    assert run_eta([50.0], 0) == "" and run_eta([], 5) == ""
