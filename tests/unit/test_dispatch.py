"""The retry ladder's choices and the sealing of stored deliveries, without a broker."""

from __future__ import annotations

import random

import pytest

from shared.adapters.topology import topology_for
from shared.settings import Settings
from shared.webhooks.dispatch import Ladder, dispatcher_secrets
from shared.webhooks.sealing import Sealer
from shared.webhooks.signing import generate_secret

LADDER = Ladder((5.0, 300.0, 1800.0, 7200.0))


def test_each_attempt_waits_its_step_jittered_downward_only() -> None:
    rng = random.Random(7)
    for attempts, delay in enumerate(LADDER.delays, start=1):
        waits = [LADDER.next_wait(attempts, rng=rng) for _ in range(200)]
        assert {w[0] for w in waits if w} == {attempts - 1}
        spread = [w[1] for w in waits if w]
        assert min(spread) >= delay * 0.9
        assert max(spread) <= delay
        assert max(spread) - min(spread) > delay * 0.05
    assert LADDER.next_wait(len(LADDER.delays) + 1) is None


def test_retry_after_picks_the_shortest_step_at_least_as_long() -> None:
    step, wait = LADDER.next_wait(1, retry_after_s=60) or (None, 0.0)
    assert step == 1
    assert 60 <= wait <= 300
    # Shorter than the step due anyway: the ladder is not sped up.
    step, wait = LADDER.next_wait(2, retry_after_s=10) or (None, 0.0)
    assert step == 1
    # Longer than every step: the longest one, not more.
    step, wait = LADDER.next_wait(1, retry_after_s=86_400) or (None, 0.0)
    assert step == 3
    assert wait == 7200.0
    # Retry-After never buys attempts beyond the schedule.
    assert LADDER.next_wait(5, retry_after_s=1) is None


def test_topology_has_one_wait_queue_per_step_named_after_its_delay() -> None:
    topo = topology_for(Settings(namespace="x", webhook_retry_schedule="200ms, 5s,5s"))
    queues = {q.name: q.arguments for q in topo.queues()}
    assert queues["x.webhooks.retry.0.200ms"]["x-message-ttl"] == 200
    assert queues["x.webhooks.retry.2.5000ms"]["x-message-ttl"] == 5000
    for step in range(3):
        args = queues[topo.webhook_retry(step)]
        assert args["x-dead-letter-exchange"] == "x.webhooks"
        assert args["x-dead-letter-routing-key"] == "x.webhooks"
    assert "x-delivery-limit" in queues["x.webhooks"]
    with pytest.raises(ValueError, match="retry schedule"):
        Settings(webhook_retry_schedule="5 minutes")


def test_secrets_split_for_rotation_and_are_checked() -> None:
    new, old = generate_secret(), generate_secret()
    settings = Settings(webhook_secret=f"{new}, {old}")
    assert settings.webhook_secrets() == (new, old)
    assert new not in repr(settings)
    assert dispatcher_secrets(settings.webhook_secrets()) == (new, old)
    with pytest.raises(ValueError, match="not set"):
        dispatcher_secrets(Settings().webhook_secrets())
    with pytest.raises(ValueError, match="base64") as info:
        dispatcher_secrets(["whsec_%%%"])
    assert "%%%" not in str(info.value)


def test_sealed_values_open_with_any_current_secret_and_only_for_their_job() -> None:
    new, old = generate_secret(), generate_secret()
    sealed = Sealer([old]).seal(b"token-123", b"job-a")
    assert b"token-123" not in sealed.encode()
    assert Sealer([new, old]).open(sealed, b"job-a") == b"token-123"
    with pytest.raises(ValueError, match="no current webhook secret"):
        Sealer([new]).open(sealed, b"job-a")
    with pytest.raises(ValueError, match="no current webhook secret"):
        Sealer([old]).open(sealed, b"job-b")
    with pytest.raises(ValueError, match="not a sealed value"):
        Sealer([old]).open("token-123", b"job-a")
