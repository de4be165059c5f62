"""The webhook retry schedule as data: parse it, add jitter, pick the next delay."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

DEFAULT_SCHEDULE = "5s,5m,30m,2h,5h,10h,10h"

# RabbitMQ's x-message-ttl / expiration is an unsigned 32-bit count of milliseconds.
MAX_DELAY_S = (2**32 - 1) / 1000

_UNITS: dict[str, float] = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_STEP = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)", re.IGNORECASE)


def parse_duration(text: str) -> float:
    """Parse one duration such as ``500ms``, ``5s``, ``1.5m``, ``2h`` or ``1d``.

    Args:
        text: A non-negative number followed by a unit (ms, s, m, h or d).

    Returns:
        The duration in seconds.

    Raises:
        ValueError: If the text is not a positive duration with a unit, or is longer than
            the broker can delay a message.
    """
    match = _STEP.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"invalid duration {text.strip()!r}: expected a number and a unit "
            "(ms, s, m, h or d), e.g. '5s' or '30m'"
        )
    seconds = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if seconds <= 0:
        raise ValueError(f"invalid duration {text.strip()!r}: must be greater than zero")
    if seconds > MAX_DELAY_S:
        raise ValueError(
            f"invalid duration {text.strip()!r}: longer than the broker's maximum "
            f"delay of {MAX_DELAY_S:.0f}s"
        )
    return seconds


def parse_schedule(spec: str) -> tuple[float, ...]:
    """Parse a comma-separated retry schedule such as ``5s,5m,30m,2h,5h,10h,10h``.

    Element *i* is the delay between attempt *i + 1* and attempt *i + 2*; the attempt
    after the last delay is not retried any more.

    Args:
        spec: Comma-separated durations (see `parse_duration`); spaces are ignored.

    Returns:
        The delays in seconds, in order.

    Raises:
        ValueError: If the schedule is empty or any step is not a valid duration.
    """
    if not spec.strip():
        raise ValueError("retry schedule is empty: give at least one delay, e.g. '5s,5m,30m'")
    steps = spec.split(",")
    delays: list[float] = []
    for position, step in enumerate(steps, start=1):
        if not step.strip():
            raise ValueError(f"retry schedule {spec!r}: step {position} is empty")
        try:
            delays.append(parse_duration(step))
        except ValueError as exc:
            raise ValueError(f"retry schedule {spec!r}: step {position}: {exc}") from None
    return tuple(delays)


def with_jitter(delay: float, fraction: float = 0.1, rng: random.Random | None = None) -> float:
    """Spread a delay uniformly over ``delay * (1 ± fraction)`` so retries do not stampede.

    Args:
        delay: The nominal delay in seconds (not negative).
        fraction: The relative spread, from 0 (none) up to but excluding 1.
        rng: The random source; the module's shared generator when omitted.

    Returns:
        The jittered delay in seconds, never negative.

    Raises:
        ValueError: If ``delay`` is negative or ``fraction`` is outside ``[0, 1)``.
    """
    if delay < 0:
        raise ValueError(f"delay must not be negative, got {delay}")
    if not 0 <= fraction < 1:
        raise ValueError(f"jitter fraction must be in [0, 1), got {fraction}")
    if fraction == 0 or delay == 0:
        return delay
    source = rng if rng is not None else random
    return delay * (1 + source.uniform(-fraction, fraction))


def next_delay(schedule: Sequence[float], attempts_made: int) -> float | None:
    """The delay before the next attempt, or None when the schedule is exhausted.

    Args:
        schedule: The delays, as `parse_schedule` returns them.
        attempts_made: How many attempts have already failed (at least 1).

    Returns:
        The delay in seconds before attempt ``attempts_made + 1``, or None if the delivery
        should now be dead-lettered.

    Raises:
        ValueError: If ``attempts_made`` is less than 1.
    """
    if attempts_made < 1:
        raise ValueError(f"attempts_made must be at least 1, got {attempts_made}")
    if attempts_made > len(schedule):
        return None
    return schedule[attempts_made - 1]
