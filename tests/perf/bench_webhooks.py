"""Webhook benchmark: deliveries/s and terminal-event-to-receiver latency, for real.

moto's S3 server, a RabbitMQ vhost of our own, `pdfrelay run webhooks` and the receiver each
run in their own process. The driver publishes `WebhookDelivery` messages to the dispatch queue
exactly as the extract handler does when a job ends (confirmed, persistent), so "latency" is
from that publish to the receiver having the webhook. The receiver makes a share of the
deliveries fail their first attempt (503), which then go through the retry ladder.

Phases:
1. latency: a paced load well under capacity, every delivery succeeding at once (p50/p99);
2. throughput: a burst with 10 % first-attempt failures, until every one is delivered;
3. signing + POST alone (in-process, no broker, no S3 record) and
4. the S3 record alone (one PUT per attempt), to show where the end-to-end ceiling comes from.

    python -m tests.perf.bench_webhooks [--deliveries N] [--rate R] [--seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
from aiohttp import web

from shared.adapters.broker import publish
from shared.adapters.storage import Storage
from shared.adapters.topology import topology_for
from shared.jobs.records import JobStore
from shared.models import WebhookDelivery
from shared.settings import Settings
from shared.webhooks.delivery import build_headers, deliver
from shared.webhooks.signing import generate_secret, verify
from shared.webhooks.ssrf import SsrfConnector, SsrfPolicy
from tests.perf.harness import (
    HarnessError,
    cpu_seconds,
    find_pid_by_comm,
    free_port,
    moto_server,
    rabbit_vhost,
    run_handler,
    stop_process,
    wait_consumers,
)

SCHEDULE = "200ms,1s,5s"
FAIL_SHARE = 10  # one delivery in FAIL_SHARE fails its first attempt
PREFETCH = 128
HANDLERS = 2  # `pdfrelay run webhooks` processes: one per core, as deployed on this machine
TARGET_PER_S = 1000.0
TARGET_P50_MS = 50.0
VERIFY_EVERY = 25  # the receiver checks every n-th signature (it is not what we measure)


# --- the receiver (its own process) -----------------------------------------------------------


def _receiver_app(secret: str) -> web.Application:
    arrivals: dict[str, list[float]] = {}
    bad_signatures = 0
    requests = 0

    async def hook(request: web.Request) -> web.Response:
        nonlocal bad_signatures, requests
        now = time.monotonic()
        body = await request.read()
        requests += 1
        event_id = request.headers["webhook-id"]
        seen = arrivals.setdefault(event_id, [])
        seen.append(now)
        if requests % VERIFY_EVERY == 0:
            try:
                verify(
                    event_id,
                    request.headers["webhook-timestamp"],
                    body,
                    request.headers["webhook-signature"],
                    [secret],
                )
            except Exception:
                bad_signatures += 1
        if request.query.get("fail") == "1" and len(seen) == 1:
            return web.Response(status=503)
        return web.Response(status=204)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(
            {"arrivals": arrivals, "bad_signatures": bad_signatures, "requests": requests}
        )

    async def reset(request: web.Request) -> web.Response:
        nonlocal bad_signatures, requests
        arrivals.clear()
        bad_signatures = requests = 0
        return web.Response(status=204)

    app = web.Application()
    app.add_routes([web.post("/hook", hook), web.get("/stats", stats), web.post("/reset", reset)])
    return app


def receiver_main(port: int) -> None:
    secret = os.environ["BENCH_WEBHOOK_SECRET"]
    web.run_app(_receiver_app(secret), host="127.0.0.1", port=port, access_log=None, print=None)


@contextmanager
def receiver_process(secret: str, log_dir: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    with open(log_dir / "receiver.log", "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.perf.bench_webhooks", "--receiver", str(port)],
            env={**os.environ, "BENCH_WEBHOOK_SECRET": secret},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield f"http://127.0.0.1:{port}", proc
    finally:
        stop_process(proc, grace_s=5)


async def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while True:
            if proc.poll() is not None:
                raise HarnessError("the receiver exited at start")
            try:
                async with session.get(f"{url}/stats") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise HarnessError("the receiver did not start")
            await asyncio.sleep(0.05)


# --- the driver -------------------------------------------------------------------------------


def _job_view_body(job_id: str) -> str:
    """A terminal event body of the size the extract handler sends (~1.3 KB)."""
    link = f"http://127.0.0.1:8080/v1/jobs/{job_id}"
    data = {
        "job_id": job_id,
        "status": "completed",
        "door": "http",
        "filename": "quarterly-report-2024.pdf",
        "client_ref": "bench",
        "options": {"outputs": ["text", "metadata"], "pages": None, "ocr": "auto"},
        "progress": {"pages_done": 12, "pages_total": 12},
        "error": None,
        "result": {
            "page_count": 12,
            "pages_extracted": 12,
            "artifacts": [
                {"name": "text.md", "size": 48213, "sha256": "ab" * 32, "url": f"{link}/a"},
            ],
            "result_url": f"{link}/result",
            "warnings": [],
        },
        "created_at": "2024-05-01T10:00:00+00:00",
        "started_at": "2024-05-01T10:00:01+00:00",
        "finished_at": "2024-05-01T10:00:02+00:00",
        "links": {"self": link, "result": f"{link}/result", "events": f"{link}/events"},
        "webhook": {"state": "pending", "url": "http://127.0.0.1/hook", "attempts": 0},
    }
    return json.dumps(
        {"type": "job.completed", "timestamp": "2024-05-01T10:00:02+00:00", "data": data},
        separators=(",", ":"),
    )


def _delivery(hook_url: str, fail: bool) -> WebhookDelivery:
    job_id = uuid.uuid4().hex
    return WebhookDelivery(
        event_id=f"msg_{job_id}_job_completed",
        job_id=job_id,
        event_type="job.completed",
        url=f"{hook_url}?fail=1" if fail else hook_url,
        token="bench-token",
        body=_job_view_body(job_id),
    )


@dataclass
class Phase:
    sent: dict[str, float]
    delivered: int
    requests: int
    wall_s: float
    latencies_ms: list[float]
    bad_signatures: int
    cpu_s: dict[str, float]


async def _stats(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(f"{url}/stats") as resp:
        data: dict[str, Any] = await resp.json()
        return data


async def _wait_delivered(
    session: aiohttp.ClientSession,
    url: str,
    sent: dict[str, float],
    failing: set[str],
    timeout_s: float,
) -> dict[str, Any]:
    """Poll the receiver until every event has its successful attempt (a benchmark, not a test)."""
    deadline = time.monotonic() + timeout_s
    while True:
        stats = await _stats(session, url)
        arrivals = stats["arrivals"]
        done = sum(1 for eid in sent if len(arrivals.get(eid, ())) >= (2 if eid in failing else 1))
        if done == len(sent):
            return stats
        if time.monotonic() > deadline:
            raise HarnessError(f"only {done} of {len(sent)} webhooks delivered in time")
        await asyncio.sleep(0.05)


def _cpu(pids: dict[str, list[int]]) -> dict[str, float]:
    # The driver is this process: its own time only, not its children's (the others).
    return {
        name: sum(cpu_seconds(pid, tree=pid != os.getpid()) for pid in group)
        if group
        else float("nan")
        for name, group in pids.items()
    }


async def run_phase(
    channel: aio_pika.abc.AbstractChannel,
    exchange: str,
    queue: str,
    hook_url: str,
    receiver_url: str,
    count: int,
    *,
    rate: float | None,
    pids: dict[str, list[int]],
) -> Phase:
    """Publish `count` deliveries (paced at `rate`/s, or as fast as confirms allow)."""
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{receiver_url}/reset"):
            pass
        deliveries = [
            _delivery(hook_url, fail=rate is None and i % FAIL_SHARE == 0) for i in range(count)
        ]
        failing = {d.event_id for d in deliveries if d.url.endswith("fail=1")}
        sent: dict[str, float] = {}
        window = asyncio.Semaphore(256)

        async def send(d: WebhookDelivery) -> None:
            async with window:
                sent[d.event_id] = time.monotonic()
                await publish(channel, exchange, queue, d, message_id=d.event_id)

        cpu0 = _cpu(pids)
        started = time.monotonic()
        if rate is None:
            await asyncio.gather(*(send(d) for d in deliveries))
        else:
            tasks = []
            for i, d in enumerate(deliveries):
                # Paced against the clock, so a slow publish does not slow the pace.
                delay = started + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(send(d)))
            await asyncio.gather(*tasks)
        stats = await _wait_delivered(session, receiver_url, sent, failing, timeout_s=600)
        cpu1 = _cpu(pids)
    arrivals: dict[str, list[float]] = stats["arrivals"]
    last = max(times[-1] for eid, times in arrivals.items() if eid in sent)
    latencies = [(arrivals[eid][0] - t0) * 1000 for eid, t0 in sent.items() if eid not in failing]
    return Phase(
        sent=sent,
        delivered=len(sent),
        requests=int(stats["requests"]),
        wall_s=last - started,
        latencies_ms=latencies,
        bad_signatures=int(stats["bad_signatures"]),
        cpu_s={k: cpu1[k] - cpu0[k] for k in cpu0},
    )


async def states_stored(
    connection: aio_pika.abc.AbstractConnection,
    queue: str,
    settings: Settings,
    endpoint: str,
    phase: Phase,
    timeout_s: float = 600,
) -> float:
    """Seconds until the burst's delivery states are in S3: the state queue is empty and the
    states of the last deliveries read back as `delivered` (states are stored in order)."""
    started = time.monotonic()
    last = sorted(phase.sent, key=phase.sent.__getitem__)[-20:]
    job_ids = [event_id.split("_")[1] for event_id in last]
    storage = Storage(settings, endpoint)
    jobs = JobStore(storage)
    channel = await connection.channel()
    try:
        while True:
            declared = await channel.declare_queue(queue, passive=True)
            if declared.declaration_result.message_count == 0:
                states = await asyncio.gather(*(jobs.webhook_state(j) for j in job_ids))
                if all(st is not None and st.state == "delivered" for st in states):
                    return time.monotonic() - started
            if time.monotonic() - started > timeout_s:
                raise HarnessError("the delivery states did not reach S3 in time")
            await asyncio.sleep(0.1)
    finally:
        await channel.close()
        storage.close()


async def put_ceiling(settings: Settings, endpoint: str, count: int) -> float:
    """PUTs/s of webhook-state-sized objects through the shared S3 adapter."""
    storage = Storage(settings, endpoint)
    try:
        await storage.ensure_bucket()
        blob = os.urandom(1900).hex().encode()[:2500]
        window = asyncio.Semaphore(PREFETCH)

        async def one(i: int) -> None:
            async with window:
                await storage.put_bytes(f"bench/{i:08d}/webhook.json", blob)

        started = time.monotonic()
        await asyncio.gather(*(one(i) for i in range(count)))
        return count / (time.monotonic() - started)
    finally:
        storage.close()


async def attempt_ceiling(secret: str, hook_url: str, count: int) -> float:
    """Attempts/s of signing + POST alone (`build_headers` + `deliver`, as the handler calls
    them, with its session set-up), in-process: no broker, no S3 record."""
    policy = SsrfPolicy(Settings(webhook_allowed_networks="127.0.0.0/8").webhook_allowed_networks)
    connector = SsrfConnector(policy, limit=PREFETCH, limit_per_host=PREFETCH)
    async with aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar()
    ) as session:
        deliveries = [_delivery(hook_url, fail=False) for _ in range(count)]
        window = asyncio.Semaphore(PREFETCH)

        async def one(d: WebhookDelivery) -> None:
            async with window:
                body = d.body.encode()
                headers = build_headers(d.event_id, int(time.time()), body, [secret], d.token)
                result = await deliver(session, policy, d.url, body, headers)
                if result.outcome != "delivered":
                    raise HarnessError(f"attempt failed: {result}")

        started = time.monotonic()
        await asyncio.gather(*(one(d) for d in deliveries))
        return count / (time.monotonic() - started)


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _report_latency(phase: Phase, rate: float) -> None:
    lat = phase.latencies_ms
    p50 = statistics.median(lat)
    print(
        f"  latency at {rate:g} deliveries/s ({len(lat)} deliveries): "
        f"p50 {p50:.1f} ms, p90 {_pct(lat, 0.9):.1f} ms, "
        f"p99 {_pct(lat, 0.99):.1f} ms, max {max(lat):.1f} ms "
        f"(target p50 < {TARGET_P50_MS:g} ms: {'met' if p50 < TARGET_P50_MS else 'NOT met'})"
    )


def _report_throughput(phase: Phase) -> float:
    per_s = phase.delivered / phase.wall_s
    print(
        f"  throughput: {phase.delivered} deliveries ({phase.requests} attempts, "
        f"1 in {FAIL_SHARE} failing once) in {phase.wall_s:.2f} s = {per_s:.0f} deliveries/s, "
        f"{phase.requests / phase.wall_s:.0f} attempts/s "
        f"(target {TARGET_PER_S:g}/s: {'met' if per_s >= TARGET_PER_S else 'NOT met'})"
    )
    per = ", ".join(
        f"{name} {1000 * cpu / phase.requests:.2f}" for name, cpu in phase.cpu_s.items()
    )
    print(f"  CPU ms per attempt: {per}  ({os.cpu_count()} CPUs)")
    cpus = os.cpu_count() or 1
    total_s = sum(phase.cpu_s.values()) / phase.requests
    print(
        f"  together {1000 * total_s:.2f} CPU-ms per attempt: this machine, with every party "
        f"on it, tops out near {cpus / total_s:.0f} attempts/s"
    )
    lat = phase.latencies_ms
    print(
        f"  latency under that burst (first-attempt successes): p50 "
        f"{statistics.median(lat):.0f} ms, p99 {_pct(lat, 0.99):.0f} ms (queueing)"
    )
    return per_s


async def _measure(
    args: argparse.Namespace,
    amqp_url: str,
    settings: Settings,
    s3_endpoint: str,
    receiver_url: str,
    pids: dict[str, list[int]],
    secret: str,
) -> int:
    topo = topology_for(settings)
    hook_url = f"{receiver_url}/hook"
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        print(f"phase 1: paced at {args.rate:g}/s for {args.seconds:g} s", flush=True)
        latency = await run_phase(
            channel,
            topo.webhooks_exchange,
            topo.webhooks,
            hook_url,
            receiver_url,
            int(args.rate * args.seconds),
            rate=args.rate,
            pids=pids,
        )
        _report_latency(latency, args.rate)
        print(f"phase 2: a burst of {args.deliveries}", flush=True)
        burst = await run_phase(
            channel,
            topo.webhooks_exchange,
            topo.webhooks,
            hook_url,
            receiver_url,
            args.deliveries,
            rate=None,
            pids=pids,
        )
        per_s = _report_throughput(burst)
        behind = await states_stored(connection, topo.webhook_states, settings, s3_endpoint, burst)
        print(
            f"  delivery states all in S3 {behind:.1f} s after the last delivery "
            "(written behind the deliveries, in order: shared/webhooks/statelog.py)"
        )
        bad = latency.bad_signatures + burst.bad_signatures
        print(f"  signatures checked by the receiver: {'all valid' if not bad else f'{bad} BAD'}")
    finally:
        await connection.close()
    print("phase 3: signing + POST alone (build_headers + deliver in-process; no broker, no S3)")
    ceiling = await attempt_ceiling(secret, hook_url, args.deliveries)
    print(f"  {ceiling:.0f} attempts/s", flush=True)
    print("phase 4: S3 alone (one ~2.5 KB PUT per delivery state, as the state writer stores it)")
    puts = await put_ceiling(settings, s3_endpoint, 1000)
    print(f"  {puts:.0f} PUTs/s through shared.adapters.storage to this S3 server", flush=True)
    return 0 if per_s > 0 and not bad else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.perf.bench_webhooks", description=__doc__
    )
    parser.add_argument("--deliveries", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=50.0, help="paced rate of phase 1")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of phase 1")
    parser.add_argument(
        "--handlers", type=int, default=HANDLERS, help="webhooks processes side by side"
    )
    parser.add_argument("--receiver", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(list(argv) if argv is not None else [])
    if args.receiver:
        receiver_main(args.receiver)
        return 0
    print("\n== webhooks: deliveries/s and latency (bench_webhooks) ==", flush=True)
    secret = generate_secret()
    ns = f"bench{uuid.uuid4().hex[:8]}"
    with (
        tempfile.TemporaryDirectory(prefix="pdfrelay-bench-webhooks-") as tmp,
        rabbit_vhost() as amqp_url,
        moto_server(Path(tmp)) as moto,
        receiver_process(secret, Path(tmp)) as (receiver_url, receiver),
    ):
        env = {
            "PDFRELAY_AMQP_URL": amqp_url,
            "PDFRELAY_S3_ENDPOINT": moto.endpoint,
            "PDFRELAY_NAMESPACE": ns,
            "PDFRELAY_S3_BUCKET": ns,
            "PDFRELAY_WEBHOOK_SECRET": secret,
            "PDFRELAY_WEBHOOK_RETRY_SCHEDULE": SCHEDULE,
            "PDFRELAY_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
            "PDFRELAY_WEBHOOK_PREFETCH": str(PREFETCH),
        }
        settings = Settings(namespace=ns, s3_bucket=ns, webhook_retry_schedule=SCHEDULE)
        with contextlib.ExitStack() as running:
            handlers = [
                running.enter_context(run_handler("webhooks", env, Path(tmp)))
                for _ in range(args.handlers)
            ]
            asyncio.run(_wait_http(receiver_url, receiver))
            for handler in handlers:
                asyncio.run(
                    wait_consumers(
                        amqp_url, topology_for(settings).webhooks, handler, len(handlers)
                    )
                )
            beam = find_pid_by_comm("beam.smp")
            pids = {
                "handlers": [h.pid for h in handlers],
                "receiver": [receiver.pid],
                "s3 (moto)": [moto.proc.pid],
                "rabbitmq": [beam] if beam else [],
                "driver": [os.getpid()],
            }
            print(
                f"  {args.handlers} x `pdfrelay run webhooks` (prefetch {PREFETCH}, ladder "
                f"{SCHEDULE}), receiver and moto S3 each in their own process; RabbitMQ local",
                flush=True,
            )
            return asyncio.run(
                _measure(args, amqp_url, settings, moto.endpoint, receiver_url, pids, secret)
            )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
