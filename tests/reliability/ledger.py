"""The ledger of a fault-injection scenario: what the ingress acknowledged, and what became of it.

Every scenario records each upload here (a `202` with its job id and the words the document
holds, or the refusal), while the ledger listens to the events exchange (`job.#`, on a quorum
queue of its own, so that a broker restart loses nothing it was sent) and to the scenario's
webhook receivers. `check()` then waits for every acknowledged job to end and asserts the
invariants: one distinct terminal event per job (redelivered copies with the same message id
are allowed and counted), the right outcome and text, and exactly one distinct `webhook-id`
for the terminal event at the job's receiver (copies of it allowed and counted). The counts go
to `$PDFRELAY_LEDGER_DIR/<scenario>.json` for `tests/reliability/report.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import aio_pika
import aiohttp
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection, AbstractRobustQueue
from aiohttp import web
from standardwebhooks import Webhook

from shared.adapters.brokers import connect_robust
from shared.adapters.topology import topology_for
from shared.jobs.outcome import event_id
from shared.settings import Settings
from tests.conftest import _free_port
from tests.reliability.harness import FaultProxy

LEDGER_DIR_ENV = "PDFRELAY_LEDGER_DIR"
TERMINAL = ("job.completed", "job.failed", "job.cancelled")
Outcome = Literal["completed", "failed", "cancelled", "any"]
"""What a job must end as; "any": any one terminal state (a job someone else submitted)."""


@dataclass(frozen=True)
class Call:
    """One request a webhook receiver got."""

    webhook_id: str
    event_type: str
    job_id: str
    at: float
    signed: bool


class Receiver:
    """A webhook receiver: verifies signatures, records calls, can hang, can sit behind a proxy."""

    def __init__(self, name: str, secret: str | None, notify: Callable[[], Awaitable[None]]):
        self.name = name
        self.calls: list[Call] = []
        self._verifier = Webhook(secret) if secret else None
        self._notify = notify
        self._released = asyncio.Event()
        self._released.set()
        self._runner: web.AppRunner | None = None
        self.proxy: FaultProxy | None = None
        self.port = 0
        self.held = 0

    @property
    def url(self) -> str:
        port = self.proxy.port if self.proxy is not None else self.port
        return f"http://127.0.0.1:{port}/hook/{self.name}"

    async def start(self, proxied: bool) -> None:
        app = web.Application()
        app.router.add_post("/hook/{name}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = _free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        if proxied:
            self.proxy = FaultProxy(self.port)
            await self.proxy.start()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        signed = True
        if self._verifier is not None:
            try:
                self._verifier.verify(body, dict(request.headers))
            except Exception:
                signed = False
        payload = json.loads(body)
        data = payload.get("data") or {}
        call = Call(
            webhook_id=request.headers.get("webhook-id", ""),
            event_type=str(payload.get("type") or payload.get("status")),
            job_id=str(data.get("job_id") or payload.get("jobId") or ""),
            at=time.monotonic(),
            signed=signed,
        )
        if not self._released.is_set():
            self.held += 1
            await self._released.wait()
        self.calls.append(call)
        await self._notify()
        return web.Response(status=204 if signed else 401)

    def hold(self) -> None:
        """Hang every request until `release()`."""
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    async def close(self) -> None:
        self.release()
        if self.proxy is not None:
            await self.proxy.close()
        if self._runner is not None:
            await self._runner.cleanup()


@dataclass
class Expected:
    job_id: str
    words: tuple[str, ...]
    outcome: Outcome
    error_code: str | None
    receiver: Receiver | None
    headers: dict[str, str]
    accepted_at: float


@dataclass(frozen=True)
class Upload:
    status: int
    job_id: str | None
    body: Any
    retry_after: str | None


@dataclass(frozen=True)
class Progress:
    job_id: str
    pages_done: int
    pages_total: int
    at: float


@dataclass
class Fault:
    label: str
    start: float
    end: float | None = None


@dataclass
class Counts:
    submitted: int = 0
    acknowledged: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    lost: int = 0
    duplicated_events: int = 0
    duplicated_webhooks: int = 0
    webhooks_expected: int = 0
    webhooks_delivered: int = 0


class Ledger:
    """Records one scenario's uploads and outcomes; `check()` asserts nothing was lost."""

    def __init__(
        self,
        scenario: str,
        title: str,
        settings: Settings,
        http: aiohttp.ClientSession,
        base_url: str,
    ) -> None:
        self.scenario = scenario
        self.title = title
        self.settings = settings
        self.http = http
        self.base_url = base_url
        self.expected: dict[str, Expected] = {}
        self.counts = Counts()
        self.refusals: list[Upload] = []
        self.events: dict[str, list[tuple[str, str | None, float]]] = {}
        self.ledger_redeliveries = 0
        self.faults: list[Fault] = []
        self.figures: dict[str, Any] = {}
        """Scenario-specific figures for the report (kills, memory, …)."""
        self.receivers: list[Receiver] = []
        self.progress: list[Progress] = []
        self.accepts: list[float] = []
        self.changed = asyncio.Condition()
        self._connection: AbstractRobustConnection | None = None
        self._queue: AbstractRobustQueue | None = None
        self._started = time.monotonic()

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe to every job event of the scenario's namespace (a durable quorum queue)."""
        topology = topology_for(self.settings)
        self._connection = await connect_robust(
            self.settings.amqp_url.get_secret_value(),
            client_properties={"connection_name": f"ledger-{self.scenario}"},
        )
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=256)
        exchange = await channel.declare_exchange(
            topology.events, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(
            f"{topology.ns}.ledger", durable=True, arguments={"x-queue-type": "quorum"}
        )
        await queue.bind(exchange, "job.#")
        assert isinstance(queue, AbstractRobustQueue)
        self._queue = queue
        await queue.consume(self._on_event)

    async def close(self) -> None:
        for rec in self.receivers:
            await rec.close()
        if self._connection is not None:
            with contextlib.suppress(Exception):
                if self._queue is not None:
                    await self._queue.delete(if_unused=False, if_empty=False)
            await self._connection.close()

    async def __aenter__(self) -> Ledger:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def _on_event(self, message: AbstractIncomingMessage) -> None:
        await message.ack()
        job_id = (message.headers or {}).get("job_id")
        key = message.routing_key or ""
        if not isinstance(job_id, str):
            return
        if message.redelivered:
            # The ledger's own connection dropped before its ack: not a second publish. Seen
            # already, or never (the first delivery was lost on the way with the connection).
            self.ledger_redeliveries += 1
            seen = {(k, mid) for k, mid, _ in self._terminal(job_id)}
            if key not in TERMINAL or (key, message.message_id) in seen:
                return
        if key in TERMINAL:
            self.events.setdefault(job_id, []).append((key, message.message_id, time.monotonic()))
            await self._notify()
        elif key == "job.progress":
            progress = json.loads(message.body).get("progress") or {}
            # A job just started announces `processing` before its page count is known (null).
            done, total = progress.get("pages_done") or 0, progress.get("pages_total") or 0
            self.progress.append(Progress(job_id, done, total, time.monotonic()))
            await self._notify()

    async def next_progress(self, after: int, min_pages: int = 1, within: float = 60) -> int:
        """Wait for a `job.progress` event (past index `after`) of a job still extracting, of a
        document of at least `min_pages` pages; returns its index."""

        def find() -> int | None:
            for i in range(after, len(self.progress)):
                p = self.progress[i]
                if (
                    min_pages <= p.pages_total
                    and p.pages_done < p.pages_total
                    and not self._terminal(p.job_id)
                ):
                    return i
            return None

        async with asyncio.timeout(within), self.changed:
            await self.changed.wait_for(lambda: find() is not None)
        index = find()
        assert index is not None
        return index

    async def next_end(self, within: float = 60) -> None:
        """Wait for the next terminal event of any job."""
        ended = sum(len(e) for e in self.events.values())
        async with asyncio.timeout(within), self.changed:
            await self.changed.wait_for(lambda: sum(len(e) for e in self.events.values()) > ended)

    async def receiver(self, name: str, *, proxied: bool = False) -> Receiver:
        """A webhook receiver of this scenario (behind a FaultProxy when `proxied`)."""
        secret = self.settings.webhook_secrets()
        rec = Receiver(name, secret[0] if secret else None, self._notify)
        await rec.start(proxied)
        self.receivers.append(rec)
        return rec

    # --- what the client did -----------------------------------------------------------------

    async def upload(
        self,
        pdf: bytes,
        words: tuple[str, ...] | list[str],
        *,
        receiver: Receiver | None = None,
        outcome: Outcome = "completed",
        error_code: str | None = None,
        headers: dict[str, str] | None = None,
        filename: str = "doc.pdf",
        base_url: str | None = None,
        **fields: str,
    ) -> Upload:
        """POST /v1/jobs (multipart) to `base_url` (default: the ledger's ingress); a 202 is
        recorded as acknowledged, anything else refused."""
        form = aiohttp.FormData()
        form.add_field("file", pdf, filename=filename, content_type="application/pdf")
        if receiver is not None:
            form.add_field("webhook_url", receiver.url)
        for key, value in fields.items():
            form.add_field(key, value)
        self.counts.submitted += 1
        try:
            async with self.http.post(
                f"{base_url or self.base_url}/v1/jobs", data=form, headers=headers
            ) as resp:
                body = await resp.json(content_type=None)
                result = Upload(
                    resp.status,
                    body.get("job_id") if resp.status == 202 else None,
                    body,
                    resp.headers.get("Retry-After"),
                )
        except aiohttp.ClientError as exc:
            result = Upload(0, None, {"error": {"code": type(exc).__name__}}, None)
        if result.job_id is not None:
            assert result.job_id not in self.expected, f"202 twice for {result.job_id}"
            self.expected[result.job_id] = Expected(
                result.job_id,
                tuple(words),
                outcome,
                error_code,
                receiver,
                dict(headers or {}),
                time.monotonic(),
            )
            self.accepts.append(time.monotonic())
            self.counts.acknowledged += 1
        else:
            code = (result.body.get("error") or {}).get("code", "?")
            key = f"{result.status} {code}"
            self.counts.refused[key] = self.counts.refused.get(key, 0) + 1
            self.refusals.append(result)
        await self._notify()
        return result

    def adopt(self, job_id: str, headers: dict[str, str] | None = None) -> None:
        """A job acknowledged to someone else (a fuzzer): it must end, either way."""
        if job_id not in self.expected:
            self.expected[job_id] = Expected(
                job_id, (), "any", None, None, dict(headers or {}), time.monotonic()
            )
            self.counts.acknowledged += 1

    @contextlib.asynccontextmanager
    async def fault(self, label: str) -> AsyncIterator[Fault]:
        """Marks the time the fault lasted (its end starts the recovery clock)."""
        fault = Fault(label, time.monotonic())
        self.faults.append(fault)
        try:
            yield fault
        finally:
            fault.end = time.monotonic()

    # --- the check ---------------------------------------------------------------------------

    def _terminal(self, job_id: str) -> list[tuple[str, str | None, float]]:
        return self.events.get(job_id, [])

    def _hook_calls(self, exp: Expected) -> list[Call]:
        if exp.receiver is None:
            return []
        return [
            c
            for c in exp.receiver.calls
            if c.job_id == exp.job_id and c.event_type not in ("job.progress",)
        ]

    def _settled(self) -> bool:
        for exp in self.expected.values():
            if not self._terminal(exp.job_id):
                return False
            if exp.receiver is not None and not self._hook_calls(exp):
                return False
        return True

    async def settle(self, within: float) -> bool:
        """Wait until every acknowledged job has its terminal event (and webhook, if it has one)."""
        try:
            async with asyncio.timeout(within), self.changed:
                await self.changed.wait_for(self._settled)
        except TimeoutError:
            return False
        return True

    async def _get(self, path: str, headers: dict[str, str]) -> tuple[int, Any]:
        async with self.http.get(f"{self.base_url}{path}", headers=headers) as resp:
            return resp.status, await resp.json(content_type=None)

    async def check(self, within: float = 90, *, refused_ok: bool = True) -> dict[str, Any]:
        """Wait for the jobs to end, verify every one, write the counts, assert the invariants.

        Args:
            within: How long the jobs may take to end after this call.
            refused_ok: Whether refusals (503) were expected at all in this scenario.
        """
        settled = await self.settle(within)
        problems: list[str] = []
        counts = self.counts
        end_times: list[float] = []
        for exp in self.expected.values():
            events = self._terminal(exp.job_id)
            ids = {mid for _, mid, _ in events}
            if not events:
                counts.lost += 1
                problems.append(f"{exp.job_id}: acknowledged, no terminal event")
            else:
                end_times.append(min(t for _, _, t in events))
                counts.duplicated_events += len(events) - 1
                kind = events[0][0]
                if kind == "job.completed":
                    counts.completed += 1
                elif kind == "job.failed":
                    counts.failed += 1
                else:
                    counts.cancelled += 1
                outcome = kind.removeprefix("job.") if exp.outcome == "any" else exp.outcome
                if ids != {event_id(exp.job_id, f"job.{outcome}")}:
                    problems.append(f"{exp.job_id}: terminal events {sorted(map(str, ids))}")
            status, job = await self._get(f"/v1/jobs/{exp.job_id}", exp.headers)
            ended = events[0][0] if events else None
            if exp.outcome == "any" and f"job.{job.get('status')}" == ended:
                pass
            elif status != 200 or job.get("status") != exp.outcome:
                if events:
                    problems.append(f"{exp.job_id}: record {status} {job.get('status')}")
                if status == 200 and job.get("status") in ("queued", "processing") and events:
                    counts.lost += 1
            elif (
                exp.outcome == "failed"
                and exp.error_code is not None
                and (job.get("error") or {}).get("code") != exp.error_code
            ):
                problems.append(f"{exp.job_id}: error {job.get('error')}")
            if exp.outcome == "completed" and status == 200 and job.get("status") == "completed":
                rstatus, result = await self._get(f"/v1/jobs/{exp.job_id}/result", exp.headers)
                text = " ".join(p.get("text", "") for p in result.get("pages", []))
                missing = [w for w in exp.words if w not in text]
                if rstatus != 200 or missing:
                    problems.append(f"{exp.job_id}: result {rstatus}, missing words {missing}")
            if exp.receiver is not None:
                counts.webhooks_expected += 1
                calls = self._hook_calls(exp)
                hook_ids = {c.webhook_id for c in calls}
                ended = ended or "job.?"
                want_hook = event_id(
                    exp.job_id, ended if exp.outcome == "any" else f"job.{exp.outcome}"
                )
                if calls:
                    counts.webhooks_delivered += 1
                    counts.duplicated_webhooks += len(calls) - 1
                    end_times.append(min(c.at for c in calls))
                if hook_ids != {want_hook}:
                    problems.append(f"{exp.job_id}: webhook ids {sorted(hook_ids)}")
                if not all(c.signed for c in calls):
                    problems.append(f"{exp.job_id}: a webhook without a valid signature")
        for refusal in self.refusals:
            if refusal.status == 503 and not refusal.retry_after:
                problems.append("a 503 without Retry-After")
            if refusal.status >= 500 and refusal.status != 503:
                problems.append(f"a {refusal.status} refusal: {refusal.body}")
        if not refused_ok and self.refusals:
            problems.append(f"refusals where none were expected: {counts.refused}")
        report = self._write(problems, settled, end_times)
        assert not problems, f"ledger of {self.scenario}: {problems[:20]}"
        return report

    def _recovery(self, end_times: list[float]) -> tuple[float | None, float | None]:
        """(first progress after the last fault, all jobs ended after the last fault), in s."""
        ended = [f.end for f in self.faults if f.end is not None]
        if not ended:
            return None, None
        last = max(ended)
        signals = [t for t in (*end_times, *self._progress_times()) if t >= last]
        after = [t for t in end_times if t >= last]
        first = min(signals) - last if signals else None
        drain = max(after) - last if after else 0.0
        return first, drain

    def _progress_times(self) -> list[float]:
        times = [t for evs in self.events.values() for _, _, t in evs]
        times += [c.at for r in self.receivers for c in r.calls]
        times += self.accepts
        return times

    def _write(self, problems: list[str], settled: bool, end_times: list[float]) -> dict[str, Any]:
        recovery, drain = self._recovery(end_times)
        report: dict[str, Any] = {
            "scenario": self.scenario,
            "title": self.title,
            "test": os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0],
            "ok": not problems,
            "settled": settled,
            "counts": asdict(self.counts),
            "faults": [
                {
                    "label": f.label,
                    "duration_s": round(f.end - f.start, 3) if f.end is not None else None,
                }
                for f in self.faults
            ],
            "recovery_s": round(recovery, 3) if recovery is not None else None,
            "drain_s": round(drain, 3) if drain is not None else None,
            "elapsed_s": round(time.monotonic() - self._started, 3),
            "webhook_calls": {r.name: len(r.calls) for r in self.receivers},
            "ledger_redeliveries": self.ledger_redeliveries,
            "figures": self.figures,
            "problems": problems[:50],
            "refusal_codes": dict(Counter(f"{u.status}" for u in self.refusals)),
        }
        if out := os.environ.get(LEDGER_DIR_ENV):
            path = Path(out)
            path.mkdir(parents=True, exist_ok=True)
            (path / f"{self.scenario}.json").write_text(json.dumps(report, indent=2))
        return report
