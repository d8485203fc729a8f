"""The run's ETA: durations as people read them, from the last epochs' wall times."""
import pytest

from utils.process.progress import format_duration, run_eta


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


class Clock:
    """tqdm's clock, moved by the test: the bar's rate is then known whatever the machine."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("seconds_per_step, first, eleventh, rate", [
    (0.5, "", ", img/s=16.0", "2.00it/s"),  # step 1 comes before tqdm knows a rate
    (4.0, ", img/s=2.0", ", img/s=2.0", "4.00s/it"),
])
def test_the_bar_shows_images_per_second_every_ten_steps(monkeypatch, capsys, seconds_per_step,
                                                         first, eleventh, rate):
    """8 images a step; the metrics are refreshed on steps 1, 11, 21..., and tqdm knows a rate
    once a second has passed since the bar began."""
    from utils.process.comm import Communicator
    from utils.process.progress import Progress

    clock = Clock()
    monkeypatch.setattr("tqdm.std.time", clock)
    bar = Progress(Communicator(), 30, "epoch 0", images_per_iteration=8)
    postfixes = []
    for step in range(1, 13):
        clock.now += seconds_per_step
        bar.update(loss=0.5 / step, error=0.25)
        postfixes.append(bar._bar.postfix)
    bar.close()
    assert postfixes[:10] == ["loss=0.5, error=0.25" + first] * 10
    assert postfixes[10:] == ["loss=0.04545, error=0.25" + eleventh] * 2
    shown = capsys.readouterr().err
    assert f"12/30 [00:{12 * seconds_per_step:02.0f}<" in shown
    assert f"{rate}, loss=0.04545, error=0.25{eleventh}]" in shown
