"""A soak: steady mixed load on a three-node cluster with a random fault every few seconds.

    .venv/bin/python -m tests.reliability.soak --minutes 20

Starts its own cluster (tests/reliability/cluster.py; by default nodes rs1..rs3 on ports
5791-5793, so that it can run beside the test suite's rc1..rc3), an S3 server behind a proxy
that can be cut, and two ingress, two extract, one webhooks and one object-drop process
(`pdfrelay run …`). Load: small and long PDFs over HTTP (some cancelled right away), PDFs
dropped under `inbox/`, ExtractRequest messages on the broker; webhooks go to a receiver
behind a proxy that fails now and then. Every `--fault-every` seconds (on average) one fault:
a worker kill, a handler kill and restart, a broker node SIGKILL (and start), an S3 outage, a
receiver outage. Then the load stops, the faults stop, everything drains, and the ledger is
printed (and written as JSON with `--out`). Exit status 1 when a job was lost or duplicated,
or a process grew beyond the RSS bound.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aio_pika.abc import AbstractIncomingMessage

from shared.adapters.broker import publish
from shared.settings import Settings
from shared.webhooks.signing import generate_secret
from tests.conftest import _free_port, s3_server
from tests.reliability.cluster import DIST_PORT_ENV, NAME_ENV, PORT_ENV, Cluster, local_cluster
from tests.reliability.harness import (
    LONG,
    FaultProxy,
    HandlerProcess,
    Service,
    document,
    open_service,
)
from tests.reliability.ledger import TERMINAL, Ledger, Receiver

RSS_BOUND_MIB = 200
"""No handler may end more than this above its RSS at start (after its first jobs)."""
DRAIN_S = 150.0
"""How long the jobs may take to end once the load and the faults stopped."""
PACE_S = 0.3
"""Pause of each HTTP client between two uploads: a steady load, below saturation."""


class SoakLedger(Ledger):
    """The ledger, plus the jobs of the other doors, found by their `client_ref`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.by_ref: dict[str, set[str]] = {}

    async def _on_event(self, message: AbstractIncomingMessage) -> None:
        if (message.routing_key or "") in TERMINAL:
            with contextlib.suppress(ValueError, AttributeError):
                body = json.loads(message.body)
                data = body.get("data") or body
                ref, job_id = data.get("client_ref"), data.get("job_id")
                if isinstance(ref, str) and isinstance(job_id, str):
                    self.by_ref.setdefault(ref, set()).add(job_id)
        await super()._on_event(message)


@dataclass
class Soak:
    svc: Service
    cluster: Cluster
    ledger: SoakLedger
    receiver: Receiver
    s3: FaultProxy
    settings: Settings
    ingress_ports: list[int]
    handlers: dict[str, HandlerProcess] = field(default_factory=dict)
    running: bool = True
    faults: Counter[str] = field(default_factory=Counter)
    accept_s: list[float] = field(default_factory=list)
    door_refs: dict[str, str] = field(default_factory=dict)
    """client_ref → door, of the jobs submitted over the broker and by object drop."""
    cancels: int = 0
    numbers: itertools.count[int] = field(default_factory=itertools.count)
    rss_start: dict[str, int] = field(default_factory=dict)
    rss_end: dict[str, int] = field(default_factory=dict)
    rng: random.Random = field(default_factory=random.Random)

    # --- processes ---------------------------------------------------------------------------

    async def spawn(self, name: str) -> None:
        kind = name.rsplit("-", 1)[0]
        settings = self.settings
        if kind == "ingress":
            port = self.ingress_ports[int(name.rsplit("-", 1)[1]) - 1]
            settings = settings.model_copy(update={"http_port": port})
        self.handlers[name] = await self.svc.spawn(kind, settings)

    def rss(self) -> dict[str, int]:
        found = {}
        for name, proc in self.handlers.items():
            with contextlib.suppress(OSError, AssertionError):
                found[name] = proc.rss_kb() + sum(_rss(w) for w in proc.workers())
        for node in self.cluster.nodes:
            with contextlib.suppress(OSError, AssertionError):
                found[node.name] = node.rss_kb()
        return found

    # --- load --------------------------------------------------------------------------------

    async def http_client(self, k: int) -> None:
        base = f"http://127.0.0.1:{self.ingress_ports[k % len(self.ingress_ports)]}"
        while self.running:
            i = next(self.numbers)
            pages = LONG if i % 10 == 0 else 2
            pdf, words = document(i, pages)
            cancel = i % 13 == 0
            started = time.monotonic()
            up = await self.ledger.upload(
                pdf,
                words,
                receiver=self.receiver,
                base_url=base,
                outcome="any" if cancel else "completed",
            )
            if up.status == 202:
                self.accept_s.append(time.monotonic() - started)
                if cancel and up.job_id:
                    with contextlib.suppress(Exception):
                        async with self.svc.http.delete(f"{base}/v1/jobs/{up.job_id}") as resp:
                            await resp.read()
                            self.cancels += resp.status < 300
            await asyncio.sleep(PACE_S if up.status == 202 else 1.0)

    async def door_client(self) -> None:
        """Every few seconds a PDF dropped under `inbox/`, and an ExtractRequest message."""
        storage = self.svc.ctx.storage
        while self.running:
            i = next(self.numbers)
            pdf, _ = document(i)
            ref = f"inbox/soak-{i}.pdf"
            with contextlib.suppress(Exception):
                await storage.put_bytes(ref, pdf, "application/pdf")
                self.door_refs[ref] = "object-drop"
            key = f"sources/soak-{i}.pdf"
            with contextlib.suppress(Exception):
                await storage.put_bytes(key, pdf, "application/pdf")
                request = {
                    "schema": "pdfrelay.extract-request/1",
                    "source": {"s3": {"key": key}},
                    "client_ref": f"broker-{i}",
                }
                await publish(
                    self.svc.ctx.channel,
                    self.svc.ctx.topology.requests,
                    self.svc.ctx.topology.REQUEST_KEY,
                    json.dumps(request).encode(),
                    message_id=f"soak-{i}",
                )
                self.door_refs[f"broker-{i}"] = "broker"
            await asyncio.sleep(2.0)

    async def heartbeat(self) -> None:
        """A line on stderr every 15 s: how far the soak is."""
        while True:
            await asyncio.sleep(15)
            c = self.ledger.counts
            ended = sum(1 for j in self.ledger.expected if self.ledger.events.get(j))
            doors = sum(1 for r in self.door_refs if r in self.ledger.by_ref)
            print(
                f"soak: http {c.acknowledged} acknowledged, {ended} ended; doors "
                f"{len(self.door_refs)} submitted, {doors} ended; faults {dict(self.faults)}",
                file=sys.stderr,
                flush=True,
            )

    # --- faults ------------------------------------------------------------------------------

    async def fault_loop(self, every_s: float) -> None:
        kinds: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("worker kill", self.kill_workers),
            ("handler kill+restart", self.kill_handler),
            ("broker node kill", self.kill_node),
            ("S3 outage", self.s3_outage),
            ("receiver outage", self.receiver_outage),
        ]
        while self.running:
            await asyncio.sleep(self.rng.uniform(0.5, 1.5) * every_s)
            if not self.running:
                return
            label, fault = self.rng.choice(kinds)
            async with self.ledger.fault(label):
                await fault()
            self.faults[label] += 1

    async def kill_workers(self) -> None:
        extract = [p for n, p in self.handlers.items() if n.startswith("extract")]
        for pid in self.rng.choice(extract).workers():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    async def kill_handler(self) -> None:
        name = self.rng.choice(sorted(self.handlers))
        proc = self.handlers[name]
        proc.kill_all()
        await proc.wait()
        await self.spawn(name)

    async def kill_node(self) -> None:
        node = self.rng.choice(self.cluster.nodes)
        await asyncio.to_thread(node.kill)
        await asyncio.to_thread(node.start)
        await asyncio.to_thread(self.cluster.await_members, self.svc.ctx.topology.extract)

    async def s3_outage(self) -> None:
        await self.s3.cut()
        await asyncio.sleep(self.rng.uniform(1, 4))
        await self.s3.restore()

    async def receiver_outage(self) -> None:
        assert self.receiver.proxy is not None
        await self.receiver.proxy.cut()
        await asyncio.sleep(self.rng.uniform(1, 4))
        await self.receiver.proxy.restore()

    # --- the end -----------------------------------------------------------------------------

    async def door_outcomes(self, within: float) -> tuple[int, int, int, list[str]]:
        """(ended, lost, duplicated) of the broker and object-drop jobs, after `within` s."""

        def ended() -> bool:
            return all(ref in self.ledger.by_ref for ref in self.door_refs)

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within), self.ledger.changed:
                await self.ledger.changed.wait_for(ended)
        done = sum(1 for ref in self.door_refs if ref in self.ledger.by_ref)
        dup, detail = 0, []
        for ref in self.door_refs:
            jobs = self.ledger.by_ref.get(ref, set())
            ends = {
                (job_id, key, mid)
                for job_id in jobs
                for key, mid, _ in self.ledger.events.get(job_id, [])
            }
            # Copies of one event id are allowed; two jobs, or two distinct ends, are not.
            if len(jobs) > 1 or len({(j, mid) for j, _, mid in ends}) > len(jobs):
                dup += 1
                detail.append(f"{ref}: {sorted(map(str, ends))}")
        return done, len(self.door_refs) - done, dup, detail


def _rss(pid: int) -> int:
    from tests.reliability.harness import rss_kb

    try:
        return rss_kb(pid)
    except (OSError, AssertionError):
        return 0


def p99(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 3)


async def run(minutes: float, fault_every_s: float, seed: int, work: Path) -> dict[str, Any]:
    with local_cluster() as cluster, s3_server(work / "moto.log") as s3_endpoint:
        s3 = FaultProxy(int(s3_endpoint.rsplit(":", 1)[1]))
        await s3.start()
        name = uuid.uuid4().hex[:8]
        settings = Settings(
            amqp_url=cluster.amqp_urls,
            quorum_group_size=len(cluster.nodes),
            namespace=f"soak{name}",
            s3_endpoint=s3.url,
            s3_bucket=f"soak-{name}",
            source_buckets={"*": (f"soak-{name}",)},
            extract_workers=1,
            webhook_secret=generate_secret(),
            webhook_retry_schedule="200ms,400ms,800ms,1s,2s,3s,5s,10s",
            webhook_allowed_networks="127.0.0.0/8",
            webhook_timeout_s=5.0,
            transient_backoff_s=0.5,
            extract_delivery_limit=10,
            metrics_port=0,
            retention_days=0,
            progress_after_s=0,
            object_drop_poll_s=1.0,
            spool_dir=str(work),
        )
        try:
            return await _soak(cluster, s3, settings, minutes, fault_every_s, seed, work)
        finally:
            await s3.close()


async def _soak(
    cluster: Cluster,
    s3: FaultProxy,
    settings: Settings,
    minutes: float,
    fault_every_s: float,
    seed: int,
    work: Path,
) -> dict[str, Any]:
    async with open_service(settings, work / "logs") as svc:
        ledger = SoakLedger(
            "14-soak",
            f"Soak: {minutes} min of mixed load, a random fault every ~{fault_every_s:.0f} s",
            settings,
            svc.http,
            "",
        )
        async with ledger:
            rec = await ledger.receiver("hook", proxied=True)
            soak = Soak(
                svc, cluster, ledger, rec, s3, settings, [_free_port(), _free_port()],
                rng=random.Random(seed),
            )  # fmt: skip
            ledger.base_url = f"http://127.0.0.1:{soak.ingress_ports[0]}"
            for name in ("ingress-1", "ingress-2", "extract-1", "extract-2"):
                await soak.spawn(name)
            for name in ("webhooks-1", "object-drop-1"):
                await soak.spawn(name)
            started = time.monotonic()
            load = [asyncio.create_task(soak.http_client(k)) for k in range(3)]
            load.append(asyncio.create_task(soak.door_client()))
            # RSS at start: once the first jobs went through every process.
            await asyncio.sleep(min(20.0, minutes * 60 / 4))
            soak.rss_start = soak.rss()
            faults = asyncio.create_task(soak.fault_loop(fault_every_s))
            beat = asyncio.create_task(soak.heartbeat())
            try:
                await asyncio.sleep(max(0.0, minutes * 60 - (time.monotonic() - started)))
            finally:
                soak.running = False
                await asyncio.gather(*load, faults, return_exceptions=True)
            # Drain: all nodes up, every proxy open.
            await s3.restore()
            if rec.proxy is not None:
                await rec.proxy.restore()
            for node in cluster.nodes:
                if not node.alive():
                    await asyncio.to_thread(node.start)
            beat.cancel()
            door_done, door_lost, door_dup, detail = await soak.door_outcomes(DRAIN_S)
            problems: list[str] = detail
            ledger.figures.update(
                faults_injected=sum(soak.faults.values()),
                faults=", ".join(f"{n} x {k}" for k, n in sorted(soak.faults.items())),
                door_jobs_ended=f"{door_done}/{len(soak.door_refs)}",
            )
            try:
                await ledger.check(within=DRAIN_S)
            except AssertionError as exc:
                problems.append(str(exc)[:2000])
            soak.rss_end = soak.rss()
            codes = await failed_codes(ledger)
            return _summary(soak, minutes, (door_done, door_lost, door_dup), problems, codes)


async def failed_codes(ledger: Ledger) -> Counter[str]:
    """The error code of every HTTP job that failed (from its record)."""
    codes: Counter[str] = Counter()
    for exp in ledger.expected.values():
        events = ledger.events.get(exp.job_id) or []
        if events and events[0][0] == "job.failed":
            _, job = await ledger._get(f"/v1/jobs/{exp.job_id}", exp.headers)
            codes[str((job.get("error") or {}).get("code"))] += 1
    return codes


def _summary(
    soak: Soak,
    minutes: float,
    door: tuple[int, int, int],
    problems: list[str],
    codes: Counter[str],
) -> dict[str, Any]:
    ledger = soak.ledger
    c = ledger.counts
    to_end = [
        min(t for _, _, t in ledger.events[e.job_id]) - e.accepted_at
        for e in ledger.expected.values()
        if ledger.events.get(e.job_id)
    ]
    grown = {
        name: (soak.rss_start[name], soak.rss_end[name])
        for name in soak.rss_start
        if name in soak.rss_end and soak.rss_end[name] - soak.rss_start[name] > RSS_BOUND_MIB * 1024
    }
    return {
        "minutes": minutes,
        "faults": dict(soak.faults),
        "faults_total": sum(soak.faults.values()),
        "http": {
            "submitted": c.submitted,
            "acknowledged": c.acknowledged,
            "refused": c.refused,
            "completed": c.completed,
            "failed": c.failed,
            "failed_by_code": dict(codes),
            "cancelled": c.cancelled,
            "cancel_requests_accepted": soak.cancels,
            "lost": c.lost,
            "duplicated": 0 if not problems else "see problems",
            "event_copies_same_id": c.duplicated_events,
            "webhooks_expected": c.webhooks_expected,
            "webhooks_delivered": c.webhooks_delivered,
            "webhook_repeats_same_id": c.duplicated_webhooks,
        },
        "doors": {
            "submitted": len(soak.door_refs),
            "by_door": dict(Counter(soak.door_refs.values())),
            "ended": door[0],
            "lost": door[1],
            "duplicated": door[2],
        },
        "p99_time_to_202_s": p99(soak.accept_s),
        "p99_time_to_end_s": p99(to_end),
        "rss_kib_start": soak.rss_start,
        "rss_kib_end": soak.rss_end,
        "rss_bound_mib": RSS_BOUND_MIB,
        "rss_grown_beyond_bound": grown,
        "problems": problems,
        "ok": not problems and c.lost == 0 and door[1] == 0 and door[2] == 0 and not grown,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.soak")
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--fault-every", type=float, default=6.0, help="seconds, on average")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--out", type=Path, help="also write the ledger here (JSON)")
    parser.add_argument("--cluster-name", default="rs", help="node names rs1@localhost …")
    parser.add_argument("--cluster-port", type=int, default=5791)
    args = parser.parse_args(argv)
    os.environ.setdefault(NAME_ENV, args.cluster_name)
    os.environ.setdefault(PORT_ENV, str(args.cluster_port))
    os.environ.setdefault(DIST_PORT_ENV, str(args.cluster_port + 20000))
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    with tempfile.TemporaryDirectory(prefix="pdfrelay-soak-") as tmp:
        summary = asyncio.run(run(args.minutes, args.fault_every, seed, Path(tmp)))
    summary["seed"] = seed
    text = json.dumps(summary, indent=2)
    print(text, flush=True)
    if args.out:
        args.out.write_text(text)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
