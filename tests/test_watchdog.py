"""The watchdog's clock: beats keep it quiet, silence makes it give up (in-process, with the
giving-up replaced by a record and the backstop left out; the real giving-up, ending a job,
is in test_reliability).

The watchdog reads a clock the test moves (its polling thread still runs on real time), so
what is checked is the rule, not how fast this machine lets that thread run."""
import threading

import pytest

import utils.process.watchdog
from utils.process.comm import Communicator
from utils.process.watchdog import Watchdog, heartbeat, start_watchdog, stop_watchdog

TIMEOUT = 1.0  # its thread checks every 0.1 s


class Clock:
    """`time` for the watchdog module: `monotonic` is the test's, and counts the readings of
    the watching thread (each of its checks reads it once)."""

    def __init__(self):
        self.now = 1000.0
        self.checks = 0
        self.watching = True  # False once the watchdog gave up (no more checks come)
        self._changed = threading.Condition()

    def monotonic(self) -> float:
        if threading.current_thread().name == "watchdog":
            with self._changed:
                self.checks += 1
                self._changed.notify_all()
        return self.now

    def wait_for_checks(self, count: int) -> None:
        """Until the watching thread has checked the clock `count` more times, or gave up."""
        with self._changed:
            target = self.checks + count
            assert self._changed.wait_for(
                lambda: self.checks >= target or not self.watching, timeout=120), \
                "the watching thread stopped checking"

    def given_up(self) -> None:
        with self._changed:
            self.watching = False
            self._changed.notify_all()


class Recorded(Watchdog):
    def __init__(self, timeout, clock):
        self.gave_up = []
        self.ended = threading.Event()
        self.clock = clock
        super().__init__(timeout, Communicator())

    def _arm_backstop(self):
        """The faulthandler backstop ends the process after 2 timeouts of real time: not in
        the test process (a busy machine would end pytest)."""

    def _give_up(self, idle):
        self.gave_up.append(idle)
        self.stop()
        self.ended.set()
        self.clock.given_up()


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(utils.process.watchdog, "time", fake)
    return fake


def test_beats_keep_it_quiet_and_silence_ends_it(clock):
    dog = Recorded(TIMEOUT, clock)
    try:
        for _ in range(4):  # progress: a beat every 3/4 timeout, each seen by two checks
            clock.now += 0.75 * TIMEOUT  # (sums exact in binary)
            dog.beat()
            clock.wait_for_checks(2)
        assert dog.gave_up == []
        clock.now += TIMEOUT  # exactly the timeout: not yet
        clock.wait_for_checks(2)
        assert dog.gave_up == []
        clock.now += 1.5
        assert dog.ended.wait(120), "no give-up after the timeout"
        assert dog.gave_up == [TIMEOUT + 1.5]
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
