"""The pure parts of job control: page counting, index names, estimates, SSE, CLI helpers."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pymupdf
import pytest

from infra.client import _out_stems, _since
from pdfrelay_client.sse import sse_events
from shared.api.sse import sse
from shared.jobs.pagecount import count_pages_file, count_pages_in
from shared.jobs.quota import RETRY_AFTER_UNMEASURED_S, retry_after_s
from shared.jobs.records import index_key, index_name, inflight_key, parse_index_name
from shared.jobs.throughput import QueueState, ThroughputMeter, batch_eta, estimate
from shared.models import Job, JobStatus, Progress
from tests.factories import make_pdf

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


# --- page counting -----------------------------------------------------------------------------


@pytest.mark.parametrize("pages", [1, 3, 40])
def test_page_count_of_plain_and_compressed_pdfs(pages: int) -> None:
    plain = make_pdf([f"page {i}" for i in range(pages)])
    assert count_pages_in(plain) == pages
    doc = pymupdf.open(stream=plain)
    packed = doc.tobytes(use_objstms=1, garbage=4, deflate=True)
    doc.close()
    assert b"/ObjStm" in packed
    assert count_pages_in(packed) == pages


def test_page_count_of_what_is_not_a_pdf() -> None:
    assert count_pages_in(b"%PDF-1.7\nnothing here") is None
    assert count_pages_in(b"/Type /ObjStm stream\n\x00garbage endstream") is None


def test_page_count_of_a_file(tmp_path: Path) -> None:
    path = tmp_path / "a.pdf"
    path.write_bytes(make_pdf(["a", "b"]))
    assert count_pages_file(str(path)) == 2
    empty = tmp_path / "empty.pdf"
    empty.write_bytes(b"")
    assert count_pages_file(str(empty)) is None


# --- keys --------------------------------------------------------------------------------------


def test_index_names_sort_newest_first_and_round_trip() -> None:
    ids = ["a" * 32, "b" * 32, "c" * 32]
    names = [index_name(NOW + timedelta(seconds=i), job) for i, job in enumerate(ids)]
    assert sorted(names) == list(reversed(names))
    created, job_id = parse_index_name(names[1]) or (None, None)
    assert job_id == ids[1]
    assert created == NOW + timedelta(seconds=1)
    assert parse_index_name("../../x") is None


def test_tenant_names_cannot_escape_their_prefix() -> None:
    assert index_key("a/b", NOW, "a" * 32).startswith("index/a%2Fb/")
    assert inflight_key("../x", "a" * 32, 3) == f"inflight/..%2Fx/{'a' * 32}.3"


# --- throughput and estimates ------------------------------------------------------------------


def _completed_event(pages: int, seconds: float) -> bytes:
    return json.dumps(
        {
            "status": "completed",
            "started_at": NOW.isoformat(),
            "finished_at": (NOW + timedelta(seconds=seconds)).isoformat(),
            "result": {"pages_extracted": pages},
        }
    ).encode()


def test_meter_learns_from_completed_events_only() -> None:
    meter = ThroughputMeter()
    meter.on_event("job.progress", _completed_event(10, 1))
    meter.on_event("job.completed", b"{not json")
    meter.on_event("job.completed", b'{"result": null}')
    assert meter.pages_per_s is None
    meter.on_event("job.completed", _completed_event(10, 2))
    assert meter.pages_per_s == 5
    assert meter.pages_per_job == 10
    meter.on_event("job.completed", _completed_event(20, 2))
    assert meter.pages_per_s is not None
    assert 5 < meter.pages_per_s < 10
    assert meter.samples == 2


def _job(status: JobStatus, **kw: object) -> Job:
    return Job(job_id="a" * 32, status=status, created_at=NOW, **kw)


def test_estimates_of_queued_and_running_jobs() -> None:
    meter = ThroughputMeter()
    queued = _job(JobStatus.QUEUED)
    assert estimate(queued, meter, QueueState(3, 1), 2, NOW).queue_position == 3
    assert estimate(queued, meter, QueueState(3, 1), 2, NOW).eta_s is None  # nothing measured
    assert estimate(queued, meter, None, 2, NOW).queue_position is None
    meter.observe(10, 2.0)  # 5 pages/s per worker, 10 pages per job
    # two jobs ahead on two workers: 20 pages / 10 pages/s, then its own 10 pages at 5/s
    assert estimate(queued, meter, QueueState(3, 1), 2, NOW).eta_s == 4.0
    assert estimate(queued, meter, QueueState(0, 1), 2, NOW).queue_position == 1
    assert estimate(queued, meter, QueueState(3, 0), 2, NOW).eta_s is None  # no consumer

    running = _job(
        JobStatus.PROCESSING,
        started_at=NOW - timedelta(seconds=10),
        progress=Progress(pages_done=5, pages_total=20),
    )
    est = estimate(running, meter, None, 2, NOW)
    assert est.queue_position is None
    assert est.eta_s == 30.0  # its own pace: 0.5 pages/s, 15 to go
    starting = _job(JobStatus.PROCESSING, started_at=NOW)
    assert estimate(starting, meter, None, 2, NOW).eta_s == 2.0
    assert estimate(_job(JobStatus.COMPLETED), meter, None, 2, NOW).eta_s is None


def test_retry_after_from_measured_throughput() -> None:
    assert retry_after_s(100, None, 4) == RETRY_AFTER_UNMEASURED_S
    assert retry_after_s(100, 5.0, 4) == 5
    assert retry_after_s(1, 1000.0, 4) == 1
    assert retry_after_s(10**9, 0.001, 1) == 3600


# --- Server-Sent Events ------------------------------------------------------------------------


async def test_sse_round_trip() -> None:
    reader = asyncio.StreamReader()
    payload = (
        b"retry: 3000\n\n"
        + sse("job.state", {"status": "queued", "text": "two\nlines"})
        + b": keep-alive\n\n"
        + sse("job.completed", {"status": "completed"}, "msg_1")
    )
    reader.feed_data(payload)
    reader.feed_eof()
    events = [(kind, json.loads(data)) async for kind, data in sse_events(reader)]
    assert events == [
        ("job.state", {"status": "queued", "text": "two\nlines"}),
        ("job.completed", {"status": "completed"}),
    ]
    assert b"id: msg_1\n" in sse("job.completed", {}, "msg_1")


# --- CLI helpers -------------------------------------------------------------------------------


def test_output_names_stay_distinct() -> None:
    assert _out_stems(["a.pdf", "x/a.pdf", "b.PDF", "a"]) == {
        "a.pdf": "a",
        "x/a.pdf": "a-2",
        "b.PDF": "b",
        "a": "a-3",
    }


def test_since_takes_durations_and_times() -> None:
    two_hours = datetime.fromisoformat(_since("2h"))
    assert abs((datetime.now(UTC) - two_hours) - timedelta(hours=2)) < timedelta(seconds=5)
    assert _since("2025-01-01T00:00:00+00:00") == "2025-01-01T00:00:00+00:00"
    with pytest.raises(Exception, match="--since"):
        _since("yesterday")


def test_batch_eta_from_its_own_pace_else_the_measured_speed() -> None:
    created = datetime(2026, 1, 1, tzinfo=UTC)
    now = created + timedelta(seconds=60)
    meter = ThroughputMeter()
    # Nothing ended, nothing measured: no ETA rather than a made-up one; nothing pending: none.
    assert batch_eta(created, now, 0, 10, meter, 4) is None
    assert batch_eta(created, now, 10, 0, meter, 4) is None
    # 3 items ended in 60 s: 6 more take 120 s at that pace.
    assert batch_eta(created, now, 3, 6, meter, 4) == 120.0
    # None ended yet: average-sized items (5 pages) at 10 pages/s on 4 workers.
    meter.observe(5, 0.5)
    assert batch_eta(created, now, 0, 8, meter, 4) == 1.0
    assert batch_eta(created, now, 0, 8, meter, 0) is None
