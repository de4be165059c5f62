"""shared/adapters/broker.py against the real RabbitMQ: a publishing channel the broker nacks
is replaced, and publishing goes on over the new one.

After a node kill, RabbitMQ 3.10 can nack every publish of one channel to a healthy quorum queue
until the dead node is back (the cluster scenario, tests/reliability/test_cluster.py); here the
nack comes from a queue that takes nothing, which the channel cannot tell apart.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from aio_pika.abc import AbstractQueue, AbstractRobustConnection

from shared.adapters import broker as broker_module
from shared.adapters.broker import ChannelBroker
from shared.adapters.brokers import connect_robust
from shared.errors import QueueFullError

pytestmark = pytest.mark.integration


@pytest.fixture
async def connection(amqp_url: str) -> AsyncIterator[AbstractRobustConnection]:
    conn = await connect_robust(amqp_url)
    try:
        yield conn
    finally:
        await conn.close()


async def _queues(conn: AbstractRobustConnection) -> tuple[AbstractQueue, AbstractQueue]:
    """A queue that refuses every message (length limit 0, reject-publish) and one that takes
    them, both of this test's own names."""
    channel = await conn.channel()
    name = f"renewal-{uuid.uuid4().hex[:8]}"
    refusing = await channel.declare_queue(
        f"{name}.refusing", arguments={"x-max-length": 0, "x-overflow": "reject-publish"}
    )
    taking = await channel.declare_queue(f"{name}.taking")
    return refusing, taking


async def test_a_nacked_channel_is_replaced_and_publishing_goes_on(
    connection: AbstractRobustConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    refusing, taking = await _queues(connection)
    try:
        given = await connection.channel(publisher_confirms=True, on_return_raises=True)
        broker = ChannelBroker(given, connection)
        # However slow the machine, what follows is within one interval.
        monkeypatch.setattr(broker_module, "RENEW_INTERVAL_S", 3600.0)

        with pytest.raises(QueueFullError):
            await broker.publish("", refusing.name, b"{}")
        first = broker.channel
        assert first is not given
        assert not first.is_closed
        # The channel it was given (the context's, which declared the topology) stays open.
        assert not given.is_closed

        # Two refusals at once, within the interval: still one new channel.
        refused = await asyncio.gather(
            broker.publish("", refusing.name, b"{}"),
            broker.publish("", refusing.name, b"{}"),
            return_exceptions=True,
        )
        assert all(isinstance(r, QueueFullError) for r in refused), refused
        assert broker.channel is first
        assert broker.renewals == 1

        await broker.publish("", taking.name, b'{"n": 1}')

        # Refused again once the interval is over: replaced again, and the channel it had
        # opened itself is closed (its publishes are over).
        monkeypatch.setattr(broker_module, "RENEW_INTERVAL_S", 0.0)
        with pytest.raises(QueueFullError):
            await broker.publish("", refusing.name, b"{}")
        assert broker.channel is not first
        assert broker.renewals == 2
        assert first.is_closed
        assert not given.is_closed

        await broker.publish("", taking.name, b'{"n": 2}')
        bodies = [(await taking.get(timeout=5)).body for _ in range(2)]
        assert bodies == [b'{"n": 1}', b'{"n": 2}']
    finally:
        await refusing.delete(if_unused=False, if_empty=False)
        await taking.delete(if_unused=False, if_empty=False)


async def test_a_publish_in_flight_keeps_its_channel_until_it_is_over(
    connection: AbstractRobustConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A channel opened by the broker and then replaced is closed by its last publish, not
    under a publish still waiting for its confirm."""
    monkeypatch.setattr(broker_module, "RENEW_INTERVAL_S", 0.0)
    refusing, taking = await _queues(connection)
    try:
        given = await connection.channel(publisher_confirms=True, on_return_raises=True)
        broker = ChannelBroker(given, connection)
        with pytest.raises(QueueFullError):
            await broker.publish("", refusing.name, b"{}")
        own = broker.channel

        # A publish on `own` held between its start and its confirm while `own` is replaced.
        started, release = asyncio.Event(), asyncio.Event()
        real_publish = broker_module.publish

        async def held(channel: object, *args: object, **kwargs: object) -> None:
            if channel is own and not started.is_set():
                started.set()
                await release.wait()
            await real_publish(channel, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(broker_module, "publish", held)
        in_flight = asyncio.create_task(broker.publish("", taking.name, b"held"))
        async with asyncio.timeout(10):
            await started.wait()
        with pytest.raises(QueueFullError):
            await broker.publish("", refusing.name, b"{}")
        assert broker.channel is not own
        assert not own.is_closed
        release.set()
        async with asyncio.timeout(10):
            await in_flight
        assert own.is_closed
        assert (await taking.get(timeout=5)).body == b"held"
    finally:
        await refusing.delete(if_unused=False, if_empty=False)
        await taking.delete(if_unused=False, if_empty=False)
