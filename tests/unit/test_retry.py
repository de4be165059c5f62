"""The retry schedule: parsing, jitter and the next delay."""

from __future__ import annotations

import random

import pytest

from shared.webhooks.retry import (
    DEFAULT_SCHEDULE,
    MAX_DELAY_S,
    next_delay,
    parse_duration,
    parse_schedule,
    with_jitter,
)


def test_default_schedule() -> None:
    assert parse_schedule(DEFAULT_SCHEDULE) == (5, 300, 1800, 7200, 18000, 36000, 36000)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("5s", 5.0),
        ("1.5m", 90.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        (" 10 S ", 10.0),
        ("3MS", 0.003),
    ],
)
def test_parse_duration_units(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


def test_parse_schedule_tolerates_spaces() -> None:
    assert parse_schedule(" 100ms , 1s,2m ") == pytest.approx((0.1, 1.0, 120.0))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("5", "unit"),
        ("5x", "unit"),
        ("-5s", "unit"),
        ("5s,,5m", "step 2 is empty"),
        ("5s,", "step 2 is empty"),
        ("1e3s", "unit"),
        ("0s", "greater than zero"),
        ("50d", "maximum"),
        ("5s;5m", "step 1"),
        ("five seconds", "unit"),
    ],
)
def test_parse_schedule_rejects_junk(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_schedule(spec)


def test_max_delay_matches_broker_limit() -> None:
    assert parse_duration("49d") < MAX_DELAY_S < 50 * 86400


def test_jitter_stays_within_fraction() -> None:
    rng = random.Random(7)
    values = [with_jitter(100.0, 0.1, rng) for _ in range(1000)]
    assert all(90.0 <= value <= 110.0 for value in values)
    assert len(set(values)) > 900  # actually spread, not constant
    assert min(values) < 92
    assert max(values) > 108


def test_jitter_is_reproducible_with_a_seeded_rng() -> None:
    assert with_jitter(60.0, 0.2, random.Random(1)) == with_jitter(60.0, 0.2, random.Random(1))


def test_jitter_zero_fraction_and_zero_delay() -> None:
    assert with_jitter(5.0, 0.0) == 5.0
    assert with_jitter(0.0, 0.5) == 0.0


@pytest.mark.parametrize(("delay", "fraction"), [(-1.0, 0.1), (1.0, -0.1), (1.0, 1.0)])
def test_jitter_rejects_bad_arguments(delay: float, fraction: float) -> None:
    with pytest.raises(ValueError, match="must"):
        with_jitter(delay, fraction)


def test_next_delay_walks_the_ladder_then_stops() -> None:
    schedule = parse_schedule("5s,5m,30m")
    assert [next_delay(schedule, n) for n in (1, 2, 3, 4)] == [5.0, 300.0, 1800.0, None]
    with pytest.raises(ValueError, match="at least 1"):
        next_delay(schedule, 0)
