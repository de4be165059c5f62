"""The web console's figures in headless Chromium: load time, the jobs list with 1,000 jobs,
and a 1,000-page result open in the read view (`python -m tests.perf console`).

Runs `pdfrelay run ingress` and `pdfrelay run extract` against their own S3 server and vhost,
and Debian's chromium through Playwright (as tests/integration/test_console_browser.py).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pymupdf

from tests.integration.test_console_browser import ARGS, CHROMIUM
from tests.perf.bench_core import settings_env
from tests.perf.harness import (
    free_port,
    http_session,
    moto_server,
    rabbit_vhost,
    run_handler,
    wait_ready,
)

READY = "html[data-ready='true']"


def long_pdf(pages: int) -> bytes:
    doc = pymupdf.open()
    for n in range(1, pages + 1):
        page = doc.new_page(width=595, height=842)
        page.insert_text((72, 72), f"Page {n} of the long document.", fontsize=11)
        page.insert_text((72, 100), "Lorem ipsum dolor sit amet. " * 3, fontsize=9)
    data: bytes = doc.tobytes()
    doc.close()
    return data


async def submit(session: aiohttp.ClientSession, base: str, data: bytes, name: str) -> str:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=name, content_type="application/pdf")
    form.add_field("options", '{"outputs": ["text", "markdown"]}')
    async with session.post(f"{base}/v1/jobs", data=form) as resp:
        assert resp.status == 202, await resp.text()
        job_id: str = (await resp.json())["job_id"]
        return job_id


async def wait_done(session: aiohttp.ClientSession, base: str, job_id: str) -> None:
    for _ in range(20):
        async with session.get(f"{base}/v1/jobs/{job_id}", params={"wait": "30"}) as resp:
            if (await resp.json())["status"] in ("completed", "failed", "cancelled"):
                return
    raise RuntimeError(f"job {job_id} did not end")


async def ms(page: Any, action: Awaitable[Any], selector: str) -> float:
    """Milliseconds from `action` (not started until awaited here) until `selector` shows."""
    start = time.perf_counter()
    await action
    await page.wait_for_selector(selector, timeout=60_000)
    return (time.perf_counter() - start) * 1000


async def list_request_ms(page: Any) -> float:
    """The browser's own timing of its last `GET /v1/jobs` (request sent to response end)."""
    value: float = await page.evaluate(
        """() => {
            const all = performance.getEntriesByType("resource")
                .filter((e) => e.name.includes("/v1/jobs?"));
            const e = all[all.length - 1];
            return e ? e.responseEnd - e.requestStart : -1;
        }"""
    )
    return value


async def measure(base: str, long_id: str, repeat: int, tmp: Path) -> dict[str, list[float]]:
    from playwright.async_api import async_playwright

    figures: dict[str, list[float]] = {
        "load (navigation to ready)": [],
        "jobs list, first page of 25": [],
        "(of which the list request in the browser)": [],
        "jobs list, next page": [],
        "read, 1,000-page result to page 1 text": [],
        "read, page turn (text)": [],
        "read, page turn (image, rendered on demand)": [],
        "read, page turn back (image, cached)": [],
    }
    async with async_playwright() as pw:
        for i in range(repeat):
            profile = tmp / f"profile-{i}"
            context = await pw.chromium.launch_persistent_context(
                str(profile), executable_path=CHROMIUM, args=ARGS, headless=True
            )
            page = await context.new_page()
            figures["load (navigation to ready)"].append(
                await ms(page, page.goto(f"{base}/"), READY)
            )
            figures["jobs list, first page of 25"].append(
                await ms(
                    page,
                    page.click("nav a[data-view='jobs']"),
                    "#jobs-table tbody tr:nth-child(25)",
                )
            )
            request_ms = await list_request_ms(page)
            figures["(of which the list request in the browser)"].append(request_ms)
            first = await page.locator("#jobs-table tbody tr").first.get_attribute("data-job-id")
            figures["jobs list, next page"].append(
                await ms(
                    page,
                    page.click("#older"),
                    f"#jobs-table tbody tr:first-child:not([data-job-id='{first}'])",
                )
            )
            figures["read, 1,000-page result to page 1 text"].append(
                await ms(page, page.goto(f"{base}/#/read/{long_id}/1"), "#page-text")
            )
            await page.wait_for_selector("#page-image[data-page='1']", timeout=60_000)
            n = 2 + i * 2
            start = time.perf_counter()
            await page.evaluate(f"location.hash = '#/read/{long_id}/{n}'")
            await page.wait_for_selector(f"#reader[data-page='{n}'] #page-text")
            figures["read, page turn (text)"].append((time.perf_counter() - start) * 1000)
            await page.wait_for_selector(f"#page-image[data-page='{n}']", timeout=60_000)
            figures["read, page turn (image, rendered on demand)"].append(
                (time.perf_counter() - start) * 1000
            )
            figures["read, page turn back (image, cached)"].append(
                await ms(
                    page,
                    page.keyboard.press("ArrowLeft"),
                    f"#page-image[data-page='{n - 1}']",
                )
            )
            await context.close()
    return figures


async def list_under_burst(
    session: aiohttp.ClientSession, base: str, burst: int, pages: int
) -> list[float]:
    """Milliseconds of `GET /v1/jobs?limit=25`, one after another, while `burst` PDFs of `pages`
    pages are uploaded at once and extracted (distinct bytes: no result-cache hit)."""
    docs = [long_pdf(pages) + f"%burst {i}\n".encode() for i in range(burst)]
    ids = await asyncio.gather(
        *(submit(session, base, d, f"burst-{i}.pdf") for i, d in enumerate(docs))
    )
    times: list[float] = []
    done = asyncio.Event()

    async def lister() -> None:
        while not done.is_set():
            times.extend(await list_times(session, base, 1))

    task = asyncio.create_task(lister())
    await asyncio.gather(*(wait_done(session, base, i) for i in ids))
    done.set()
    await task
    return times


async def list_times(session: aiohttp.ClientSession, base: str, n: int) -> list[float]:
    """Milliseconds of `GET /v1/jobs?limit=25`, `n` times one after another."""
    times: list[float] = []
    for _ in range(n):
        start = time.perf_counter()
        async with session.get(f"{base}/v1/jobs", params={"limit": "25"}) as resp:
            assert len((await resp.json())["jobs"]) == 25
        times.append((time.perf_counter() - start) * 1000)
    return times


def report(label: str, times: list[float]) -> None:
    q = statistics.quantiles(times, n=10, method="inclusive")
    print(
        f"GET /v1/jobs?limit=25, {label}: {len(times)} calls, median "
        f"{statistics.median(times):.0f} ms, p90 {q[-1]:.0f} ms, max {max(times):.0f} ms",
        flush=True,
    )


async def run(repeat: int, jobs: int, pages: int, burst: int = 0) -> None:
    with tempfile.TemporaryDirectory(prefix="pdfrelay-bench-console-") as raw:
        work = Path(raw)
        with moto_server(work) as s3, rabbit_vhost() as amqp_url:
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            settings = settings_env(amqp_url, s3.endpoint, work / "spool", port)
            with (
                run_handler("ingress", settings, work) as ingress,
                run_handler("extract", settings, work),
            ):
                await wait_ready(base, ingress)
                async with http_session(20) as session:
                    t0 = time.perf_counter()
                    long_id = await submit(session, base, long_pdf(pages), "long.pdf")
                    await wait_done(session, base, long_id)
                    print(f"{pages}-page document extracted in {time.perf_counter() - t0:.1f} s")
                    small = long_pdf(1)  # the same bytes: result-cache hits after the first
                    sem = asyncio.Semaphore(8)

                    async def one(i: int) -> str:
                        async with sem:
                            return await submit(session, base, small, f"small-{i:04d}.pdf")

                    ids = await asyncio.gather(*(one(i) for i in range(jobs - 1)))
                    await wait_done(session, base, ids[-1])
                    api_ms: list[float] = []
                    for _ in range(repeat):
                        start = time.perf_counter()
                        async with session.get(f"{base}/v1/jobs", params={"limit": "25"}) as resp:
                            assert len((await resp.json())["jobs"]) == 25
                        api_ms.append((time.perf_counter() - start) * 1000)
                    if burst:
                        quiet = await list_times(session, base, 10)
                        report(f"{jobs} jobs, nothing running", quiet)
                        during = await list_under_burst(session, base, burst, 20)
                        report(f"during a burst of {burst} 20-page PDFs", during)
                if repeat == 0:
                    return
                figures = await measure(base, long_id, repeat, work)
                figures["(the API alone: GET /v1/jobs?limit=25)"] = api_ms
    print(f"\nconsole, {jobs} jobs of one tenant, a {pages}-page result; median of {repeat} (ms)")
    for name, values in figures.items():
        print(f"  {name:<48} {statistics.median(values):8.0f}   (max {max(values):.0f})")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--pages", type=int, default=1000)
    parser.add_argument(
        "--burst",
        type=int,
        default=0,
        help="also time the list API while this many 20-page PDFs are uploaded and extracted",
    )
    args = parser.parse_args(argv)
    asyncio.run(run(args.repeat, args.jobs, args.pages, args.burst))


if __name__ == "__main__":
    main()
