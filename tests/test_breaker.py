"""The circuit breaker's state machine, driven by a hand-set clock (the breaker reads `time.monotonic`)."""

from __future__ import annotations

import logging

import pytest

from redis_cache_middleware import breaker as breaker_module
from redis_cache_middleware.breaker import CircuitBreaker

ERROR = ConnectionError("down")


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    # The breaker imports the `time` module, so this is the process's clock, restored after each test.
    monkeypatch.setattr("redis_cache_middleware.breaker.time.monotonic", clock)
    return clock


def state(breaker: CircuitBreaker) -> str:
    """The breaker's state, read afresh (not narrowed by an earlier comparison)."""
    return breaker.state


def opened(clock: Clock, threshold: int = 3, reset_timeout: float = 5.0) -> CircuitBreaker:
    breaker = CircuitBreaker(failure_threshold=threshold, reset_timeout=reset_timeout)
    for _ in range(threshold):
        assert breaker.allow()
        breaker.failure(ERROR)
    assert state(breaker) == "open"
    return breaker


def half_open(clock: Clock) -> CircuitBreaker:
    """An open breaker whose cool-down is over, with its one probe taken."""
    breaker = opened(clock)
    clock.advance(5.0)
    assert breaker.allow()
    assert state(breaker) == "half-open"
    return breaker


@pytest.mark.parametrize(("threshold", "reset_timeout"), [(0, 1.0), (-1, 1.0), (1, 0.0), (1, -1.0)])
def test_invalid_settings_are_rejected(threshold: int, reset_timeout: float) -> None:
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreaker(failure_threshold=threshold, reset_timeout=reset_timeout)


def test_opens_after_threshold_failures_in_a_row(clock: Clock) -> None:
    breaker = CircuitBreaker(failure_threshold=3, reset_timeout=5.0)
    breaker.failure(ERROR)
    breaker.failure(ERROR)
    assert state(breaker) == "closed"
    assert breaker.allow()
    breaker.failure(ERROR)
    assert state(breaker) == "open"
    assert not breaker.allow()
    assert breaker.snapshot() == {
        "state": "open",
        "consecutive_failures": 3,
        "total_failures": 3,
        "times_opened": 1,
    }


def test_a_success_resets_the_run_of_failures(clock: Clock) -> None:
    breaker = CircuitBreaker(failure_threshold=3, reset_timeout=5.0)
    breaker.failure(ERROR)
    breaker.failure(ERROR)
    breaker.success()
    breaker.failure(ERROR)
    breaker.failure(ERROR)
    assert state(breaker) == "closed"
    assert breaker.snapshot()["total_failures"] == 4


def test_open_rejects_until_reset_timeout(clock: Clock) -> None:
    breaker = opened(clock)
    clock.advance(4.999)
    assert not breaker.allow()
    assert state(breaker) == "open"
    clock.advance(0.001)
    assert breaker.allow()
    assert state(breaker) == "half-open"


def test_half_open_lets_exactly_one_probe(clock: Clock) -> None:
    breaker = half_open(clock)
    assert not breaker.allow()
    assert not breaker.allow()
    clock.advance(100)
    assert not breaker.allow()  # the probe is still out, however long it takes


def test_successful_probe_closes(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    breaker = half_open(clock)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=breaker_module.__name__):
        breaker.success()
    assert state(breaker) == "closed"
    assert breaker.allow() and breaker.allow()
    assert [r.getMessage() for r in caplog.records] == ["cache backend recovered: circuit closed"]
    assert breaker.snapshot()["consecutive_failures"] == 0


def test_failed_probe_reopens_for_another_reset_timeout(clock: Clock) -> None:
    breaker = half_open(clock)
    breaker.failure(ERROR)
    assert state(breaker) == "open"
    clock.advance(4.9)
    assert not breaker.allow()
    clock.advance(0.1)
    assert breaker.allow()
    assert state(breaker) == "half-open"
    assert breaker.snapshot()["times_opened"] == 1  # re-opening from a probe is the same outage


def test_partial_failure_is_ignored_while_closed(clock: Clock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=5.0)
    for _ in range(10):
        breaker.partial_failure(ERROR)
    assert state(breaker) == "closed"
    assert breaker.snapshot()["total_failures"] == 0


def test_partial_failure_of_the_probe_reopens(clock: Clock) -> None:
    breaker = half_open(clock)
    breaker.partial_failure(ERROR)
    assert state(breaker) == "open"
    assert not breaker.allow()
    clock.advance(5.0)
    assert breaker.allow()


def test_abandoned_probe_lets_the_next_caller_probe(clock: Clock) -> None:
    breaker = half_open(clock)
    breaker.abandon()
    assert state(breaker) == "half-open"
    assert breaker.allow()
    assert not breaker.allow()


def test_abandon_while_closed_changes_nothing(clock: Clock) -> None:
    breaker = CircuitBreaker(failure_threshold=2, reset_timeout=5.0)
    breaker.failure(ERROR)
    breaker.abandon()
    assert state(breaker) == "closed"
    breaker.failure(ERROR)
    assert state(breaker) == "open"


def test_logs_one_warning_per_outage(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=breaker_module.__name__):
        breaker = opened(clock)
        for _ in range(3):  # failed probes: the outage goes on, no new warning
            clock.advance(5.0)
            assert breaker.allow()
            breaker.failure(ERROR)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "circuit open" in warnings[0].getMessage()
    assert breaker.snapshot()["total_failures"] == 6
