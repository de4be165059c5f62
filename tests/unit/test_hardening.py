"""Issue 14, the pure parts: the pages parser, the page counter, storage error classes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import zlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from minio.error import S3Error

from shared.adapters.storage import Storage
from shared.adapters.topology import topology_for
from shared.errors import ErrorCode, PermanentError, TransientError
from shared.intake.pages import MAX_PAGE_NUMBER, PagesSpecError, parse_spec
from shared.jobs import pagecount
from shared.jobs.pagecount import count_pages, count_pages_in
from shared.jobs.progress import ProgressReporter
from shared.models import ExtractOptions, Job
from shared.runtime.context import Context
from shared.settings import Settings
from tests.integration.test_hardening import inflating_pdf, page_tree_pdf


def test_pages_parser_accepts_ranges_and_refuses_the_rest() -> None:
    assert parse_spec(" 1 - 3 ,7, 9- ") == ((1, 3), (7, 7), (9, None))
    for bad in (
        "0",
        "5-2",
        "",
        ",",
        "1,,2",
        "-3",
        "1-2-3",
        "x",
        "\u0661",
        str(MAX_PAGE_NUMBER + 1),
    ):
        with pytest.raises(PagesSpecError):
            parse_spec(bad)
    with pytest.raises(PagesSpecError):
        parse_spec("1" * 5000)


def test_pages_parser_is_linear_on_hostile_input() -> None:
    start = time.perf_counter()
    for _ in range(100):
        with pytest.raises(ValueError, match="pages"):
            ExtractOptions(pages="1-" + " " * 1000 + "x")
    assert time.perf_counter() - start < 0.5


def test_page_counter_reads_through_escapes_and_indirect_counts() -> None:
    assert count_pages_in(page_tree_pdf(1500, escaped=True)) == 1500
    assert count_pages_in(page_tree_pdf(1500, indirect=True)) == 1500
    start = time.perf_counter()
    assert count_pages_in(inflating_pdf(8 * 1024 * 1024)) == 1
    assert time.perf_counter() - start < 1.0


def test_an_object_stream_that_cannot_be_read_makes_the_count_unknown() -> None:
    pdf = page_tree_pdf(3) + b"<< /Type /ObjStm /Filter /ASCIIHexDecode >>\nstream\nzz\nendstream"
    assert count_pages_in(pdf) is None
    packed = zlib.compress(b"/Type /Page " * 10)
    assert count_pages_in(b"/Type /ObjStm\nstream\n" + packed + b"\nendstream") == 10


async def test_page_counter_child_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "a.pdf"
    path.write_bytes(page_tree_pdf(7))
    assert await count_pages(str(path)) == 7
    assert await count_pages(str(path), timeout_s=0.001) is None  # killed: unknown


def test_page_counter_child_imports_no_asyncio(tmp_path: Path) -> None:
    """The child runs once per job the fan-out planner looks at: importing asyncio was more than
    half of its CPU (45 of 80 ms), and it needs only re, zlib and mmap."""
    path = tmp_path / "a.pdf"
    path.write_bytes(page_tree_pdf(3))
    child = subprocess.run(
        [sys.executable, "-I", "-S", "-X", "importtime", pagecount.__file__, str(path)],
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert child.stdout.strip() == b"3"
    imported = {line.rsplit("|", 1)[-1].strip() for line in child.stderr.decode().splitlines()}
    assert "re" in imported  # the listing is there
    assert not {name for name in imported if name.split(".")[0] == "asyncio"}


def test_access_denied_is_permanent(tmp_path: Path) -> None:
    storage = Storage(Settings(s3_bucket="own"), "http://127.0.0.1:9")

    def denied(bucket: str, key: str) -> None:
        raise S3Error(cast(Any, None), "AccessDenied", "no", key, "r", "h")

    async def run(bucket: str) -> None:
        await storage._run(denied, bucket, "k")

    try:
        with pytest.raises(PermanentError) as err:
            asyncio.run(run("theirs"))
        assert err.value.code is ErrorCode.SOURCE_UNREACHABLE
        with pytest.raises(PermanentError) as own:
            asyncio.run(run("own"))
        assert not isinstance(own.value, TransientError)
    finally:
        storage.close()


async def test_a_lost_progress_update_does_not_fail_the_attempt() -> None:
    async def save(job: Job) -> None:
        raise TransientError("storage is unreachable")

    ctx = cast(Context, SimpleNamespace(jobs=SimpleNamespace(save=save)))
    reporter = ProgressReporter(ctx, Job(job_id="a" * 32))
    reporter.update(1, 2)
    await reporter.flush()  # no TransientError


def test_the_states_queue_dead_letters_instead_of_dropping() -> None:
    topo = topology_for(Settings())
    queues = {q.name: q for q in topo.queues()}
    states = queues[topo.webhook_states]
    assert states.arguments["x-dead-letter-exchange"] == topo.dead_letters
    assert states.arguments["x-dead-letter-routing-key"] == topo.webhook_states_dead
    assert queues[topo.webhook_states_dead].bindings == (
        (topo.dead_letters, topo.webhook_states_dead),
    )
