"""Scenario 2: the broker stops and starts again (app, then the whole node) under load.

The broker is shared with whoever else runs tests on this machine: the outage is kept short
and the broker is always brought back in a `finally`, whatever happens to the test.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from tests.reliability.harness import HandlerProcess, Service, document, open_service
from tests.reliability.ledger import Ledger

pytestmark = pytest.mark.integration

CLIENT_PAUSE_S = 0.2
"""A refused client's pause before it retries (the service asks for `Retry-After`: 5 s)."""


async def rabbitmqctl(*args: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        "rabbitmqctl",
        "-q",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(180):
        out, _ = await proc.communicate()
    assert proc.returncode == 0, f"rabbitmqctl {' '.join(args)}: {out.decode()}"


async def stop_app() -> None:
    await rabbitmqctl("stop_app")


async def start_app() -> None:
    await rabbitmqctl("start_app")
    await rabbitmqctl("await_startup", "--timeout", "120")


def pid_file() -> str:
    """Where the local node writes its pid file (`rabbitmqctl wait` watches for it)."""
    if path := os.environ.get("RABBITMQ_PID_FILE"):
        return path
    found = sorted(Path("/var/lib/rabbitmq/mnesia").glob("*.pid"))
    assert found, "no RabbitMQ pid file: set RABBITMQ_PID_FILE"
    return str(found[0])


def node_restart() -> tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]:
    """Stop the whole node, and start it again the way `infra/services.sh` does."""
    path = ""

    async def stop() -> None:
        nonlocal path
        path = pid_file()  # the node removes it when it stops
        await rabbitmqctl("stop")

    async def start() -> None:
        proc = await asyncio.create_subprocess_exec("rabbitmq-server", "-detached")
        await proc.wait()
        # `-detached` returns at once: wait for the new node's pid file, then for its apps.
        await rabbitmqctl("wait", path or pid_file(), "--timeout", "120")
        await rabbitmqctl("await_startup", "--timeout", "120")

    return stop, start


async def run_outage(
    svc: Service,
    dev: HandlerProcess,
    ledger: Ledger,
    label: str,
    stop: Callable[[], Awaitable[None]],
    start: Callable[[], Awaitable[None]],
) -> None:
    rec = await ledger.receiver("hook")
    numbers = itertools.count()
    uploading = True

    async def client() -> None:
        while uploading:
            pdf, words = document(next(numbers))
            up = await ledger.upload(pdf, words, receiver=rec)
            if up.status != 202:
                await asyncio.sleep(CLIENT_PAUSE_S)

    async def acknowledged(n: int) -> None:
        async with asyncio.timeout(90), ledger.changed:
            await ledger.changed.wait_for(lambda: ledger.counts.acknowledged >= n)

    async def refused(n: int) -> None:
        async with asyncio.timeout(60), ledger.changed:
            await ledger.changed.wait_for(lambda: len(ledger.refusals) >= n)

    clients = [asyncio.create_task(client()) for _ in range(3)]
    try:
        await acknowledged(6)
        async with ledger.fault(label):
            try:
                await stop()
                await refused(3)
                ready = await svc.http.get(f"{svc.base_url}/readyz")
                assert ready.status == 503
                assert ready.headers["Retry-After"]
                assert (await ready.json())["checks"]["broker"] != "ok"
            finally:
                await start()
        back = time.monotonic()
        # Accepted again, extracted and delivered: every consumer came back by itself.
        await acknowledged(ledger.counts.acknowledged + 6)
        ledger.figures["accepting_again_after_s"] = round(
            min(t for t in ledger.accepts if t >= back) - back, 3
        )
    finally:
        uploading = False
        await asyncio.gather(*clients)
    await ledger.check(within=90)
    assert ledger.counts.refused, "no upload was refused while the broker was away"
    # 503 + Retry-After (the ledger checks the header): SERVICE_UNAVAILABLE, or QUEUE_FULL for
    # a publish the stopping broker nacked.
    assert {u.status for u in ledger.refusals} == {503}, ledger.counts.refused
    topo = svc.ctx.topology
    # A connection of its own: the test's context (idle meanwhile) reconnects in its own time.
    async with await aio_pika.connect(svc.settings.amqp_url.get_secret_value()) as connection:
        channel = await connection.channel()
        for queue in (topo.extract, topo.webhooks, topo.extract_dead):
            declared = await channel.declare_queue(queue, passive=True)
            consumers = declared.declaration_result.consumer_count
            assert consumers, f"no consumer on {queue} after the restart"
    assert dev.proc.returncode is None, dev.text[-3000:]


@pytest.mark.timeout(240)
async def test_broker_stop_app_under_load(fault_settings: Any, tmp_path: Path) -> None:
    settings = fault_settings(extract_workers=2)
    async with open_service(settings, tmp_path / "logs") as svc:
        dev = await svc.spawn("dev")
        async with Ledger(
            "2-broker-restart",
            "`rabbitmqctl stop_app` / `start_app` while three clients upload",
            settings,
            svc.http,
            svc.base_url,
        ) as ledger:
            await run_outage(svc, dev, ledger, "broker app stopped", stop_app, start_app)


@pytest.mark.slow
@pytest.mark.timeout(400)
async def test_broker_node_restart_under_load(fault_settings: Any, tmp_path: Path) -> None:
    settings = fault_settings(extract_workers=2)
    async with open_service(settings, tmp_path / "logs") as svc:
        dev = await svc.spawn("dev")
        async with Ledger(
            "2b-broker-node-restart",
            "`rabbitmqctl stop` / `rabbitmq-server -detached` while three clients upload",
            settings,
            svc.http,
            svc.base_url,
        ) as ledger:
            await run_outage(svc, dev, ledger, "broker node stopped", *node_restart())
