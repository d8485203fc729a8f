"""The watchdog's clock: beats keep it quiet, silence makes it give up (in-process, with the
giving-up replaced by a record; the real one, ending a job, is in test_reliability)."""
import time

from utils.comm import Communicator
from utils.watchdog import Watchdog, heartbeat, start_watchdog, stop_watchdog


class Recorded(Watchdog):
    def __init__(self, timeout):
        self.gave_up = []
        super().__init__(timeout, Communicator())

    def _give_up(self, idle):
        self.gave_up.append(idle)
        self.stop()


def test_beats_keep_it_quiet_and_silence_ends_it():
    dog = Recorded(1.0)
    try:
        for _ in range(25):  # 2.5 s of progress, a beat every 0.1 s
            dog.beat()
            time.sleep(0.1)
        assert dog.gave_up == []
        deadline = time.monotonic() + 5
        while not dog.gave_up and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(dog.gave_up) == 1 and 1.0 < dog.gave_up[0] < 3.0
    finally:
        dog.stop()


def test_a_zero_timeout_watches_nothing_and_heartbeat_is_then_free():
    assert start_watchdog(0, Communicator()) is None
    heartbeat()  # no watchdog: nothing happens
    watching = start_watchdog(60, Communicator())
    try:
        assert watching is not None
        heartbeat()
    finally:
        stop_watchdog()
    assert start_watchdog(-1, Communicator()) is None
