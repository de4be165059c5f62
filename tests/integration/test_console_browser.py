"""The web console end to end in headless Chromium (Debian's `chromium`, driven by Playwright):
drop a PDF and watch its card, read page 2 beside its image, cancel from a card, tenants apart,
hostile text stays text, and keyboard-only use. Screenshots of each view go to the test's
output folder (`tmp_path / "screenshots"`)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Stack, running_stack
from tests.factories import make_pdf
from tests.helpers import upload, wait_done
from tests.unit.pdfgen import image_pdf

pytestmark = pytest.mark.integration

playwright_api = pytest.importorskip(
    "playwright.async_api", reason="playwright is not installed (the test extra installs it)"
)

CHROMIUM = os.environ.get("PDFRELAY_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 30_000


@dataclass
class Observed:
    """What a page did that it must not: dialogs, console errors, uncaught errors, requests."""

    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


@dataclass
class Console:
    page: Any
    stack: Stack
    shots: Path
    seen: Observed

    async def open(self, fragment: str = "") -> None:
        await self.page.goto(str(self.stack.client.make_url("/")) + fragment)
        await self.page.wait_for_selector("html[data-ready='true']", timeout=TIMEOUT_MS)

    async def shot(self, name: str) -> Path:
        path = self.shots / f"console-{name}.png"
        await self.page.screenshot(path=str(path), full_page=True)
        return path

    async def drop(self, data: bytes, name: str) -> None:
        """Drop one file on the drop zone, as a person dragging it from their desktop would."""
        transfer = await self.page.evaluate_handle(
            """([b64, name]) => {
                const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                const dt = new DataTransfer();
                dt.items.add(new File([bytes], name, { type: "application/pdf" }));
                return dt;
            }""",
            [base64.b64encode(data).decode(), name],
        )
        await self.page.dispatch_event("#drop-zone", "drop", {"dataTransfer": transfer})


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is missing: infra/system-deps.sh installs Debian's chromium")
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    async with playwright_api.async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            args=ARGS,
            headless=True,
            viewport={"width": 1280, "height": 900},
        )
        try:
            yield context
        finally:
            await context.close()


@contextlib.asynccontextmanager
async def console(browser: Any, stack: Stack, tmp_path: Path) -> AsyncIterator[Console]:
    page = await browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    seen = Observed()

    async def on_dialog(dialog: Any) -> None:
        seen.dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("console", lambda m: seen.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: seen.errors.append(str(e)))
    page.on("request", lambda r: seen.requests.append(r.url))
    shots = tmp_path / "screenshots"
    shots.mkdir(exist_ok=True)
    try:
        yield Console(page=page, stack=stack, shots=shots, seen=seen)
    finally:
        await page.close()


async def test_a_dropped_pdf_becomes_a_card_that_reaches_completed(
    make_settings: Any, browser: Any, tmp_path: Path
) -> None:
    async with running_stack(make_settings()) as stack, console(browser, stack, tmp_path) as c:
        await c.open()
        await c.drop(make_pdf(["one", "two", "three"]), "three-pages.pdf")
        card = c.page.locator("job-card[data-status='completed']")
        await card.wait_for()
        assert await card.locator(".name").inner_text() == "three-pages.pdf"
        assert await card.locator(".pages").inner_text() == "3 pages"
        job_id = await card.get_attribute("data-job-id")
        await c.shot("submit")

        # The jobs list shows it; its detail shows the timeline and the artifacts.
        await c.page.click("nav a[data-view='jobs']")
        await c.page.locator(f"#jobs-table tr[data-job-id='{job_id}']").wait_for()
        await c.shot("jobs")
        await c.page.click(f"#jobs-table tr[data-job-id='{job_id}'] a")
        await c.page.locator("#timeline").wait_for()
        assert "completed" in await c.page.locator("#timeline").inner_text()
        await c.shot("job")
        assert c.seen.errors == []
        assert c.seen.dialogs == []


async def test_read_shows_the_text_of_page_2_beside_the_image_of_page_2(
    make_settings: Any, browser: Any, tmp_path: Path
) -> None:
    pages = ["alpha is page one", "bravo is page two", "charlie is page three"]
    async with running_stack(make_settings()) as stack, console(browser, stack, tmp_path) as c:
        job = await upload(stack, make_pdf(pages), options='{"outputs": ["text", "markdown"]}')
        assert (await wait_done(stack, job["job_id"]))["status"] == "completed"
        await c.open(f"#/read/{job['job_id']}/2")
        image = c.page.locator("#page-image[data-page='2']")
        await image.wait_for()
        assert (await c.page.locator("#page-text").inner_text()).strip() == "bravo is page two"
        width = await image.evaluate("(img) => img.complete && img.naturalWidth")
        assert width >= 400
        # Side by side: the image's box is left of the text's.
        img_box = await c.page.locator("#page-image-box").bounding_box()
        text_box = await c.page.locator("#page-text").bounding_box()
        assert img_box is not None
        assert text_box is not None
        assert img_box["x"] + img_box["width"] <= text_box["x"]
        await c.shot("read")
        # The Markdown beside the page is that page's, page by page.
        await c.page.click("#tab-markdown")
        markdown = c.page.locator("#markdown[data-page='2']")
        assert (await markdown.inner_text()).strip() == "bravo is page two"
        await c.page.keyboard.press("ArrowRight")
        await c.page.locator("#page-image[data-page='3']").wait_for()
        markdown = c.page.locator("#markdown[data-page='3']")
        assert (await markdown.inner_text()).strip() == "charlie is page three"
        await c.shot("read-markdown")
        assert c.seen.errors == []


async def test_read_shows_the_embedded_images_of_the_page(
    make_settings: Any, browser: Any, tmp_path: Path
) -> None:
    pdf = image_pdf(tmp_path / "images.pdf").read_bytes()
    async with running_stack(make_settings()) as stack, console(browser, stack, tmp_path) as c:
        job = await upload(stack, pdf, options='{"outputs": ["text", "images"]}')
        assert (await wait_done(stack, job["job_id"]))["status"] == "completed"
        await c.open(f"#/read/{job['job_id']}/2")
        await c.page.locator("#page-image[data-page='2']").wait_for()
        await c.page.click("#tab-images")
        shown = c.page.locator("#page-side img.embedded")
        await shown.wait_for()
        assert await shown.count() == 1  # page 2: the photograph
        assert ".jpg" in await c.page.locator("#page-side figcaption").inner_text()
        assert await shown.evaluate("(img) => img.decode().then(() => img.naturalWidth)") > 0
        await c.page.keyboard.press("ArrowRight")  # page 3: the first image again, a PNG
        await c.page.locator("#page-side figcaption:has-text('.png')").wait_for()
        await c.shot("images")
        assert c.seen.errors == []


async def test_cancel_a_long_job_from_its_card(
    make_settings: Any, browser: Any, tmp_path: Path
) -> None:
    async with (
        running_stack(make_settings(progress_after_s=0)) as stack,
        console(browser, stack, tmp_path) as c,
    ):
        assert stack.ctx.pool is not None
        stopped: asyncio.Queue[int] = asyncio.Queue()

        def freeze(pid: int) -> None:  # the job's worker stalls: a long job
            os.kill(pid, signal.SIGSTOP)
            stopped.put_nowait(pid)

        stack.ctx.pool.on_start.append(freeze)
        await c.open()
        await c.drop(make_pdf(["a long one"]), "long.pdf")
        pid = await asyncio.wait_for(stopped.get(), 30)
        card = c.page.locator("job-card[data-status='processing']")
        await card.wait_for()
        await card.locator("button.cancel").click()
        await c.page.locator("job-card[data-status='cancelled']").wait_for()
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # its worker was stopped
        await c.shot("cancelled")


async def test_many_cards_follow_their_jobs_over_one_event_stream(
    make_settings: Any, browser: Any, tmp_path: Path
) -> None:
    # Six jobs stay queued (nothing extracts): a stream per card would hold the browser's
    # connections with cards whose jobs do not move, and the others would never hear of theirs.
    async with (
        running_stack(make_settings(), extract_running=False) as stack,
        console(browser, stack, tmp_path) as c,
    ):
        await c.open()
        for i in range(6):
            await c.drop(make_pdf([f"card {i}"]), f"card-{i}.pdf")
        queued = c.page.locator("job-card[data-status='queued']")
        await playwright_api.expect(queued).to_have_count(6, timeout=TIMEOUT_MS)
        ids = await queued.evaluate_all("(cards) => cards.map((c) => c.dataset.jobId)")
        assert len(set(ids)) == 6
        # Cancelled elsewhere (by the API): the cards hear it over the page's one stream.
        for job_id in ids[:2]:
            resp = await stack.client.delete(f"/v1/jobs/{job_id}")
            assert resp.status == 200, await resp.text()
        for job_id in ids[:2]:
            await c.page.locator(
                f"job-card[data-job-id='{job_id}'][data-status='cancelled']"
            ).wait_for()
        await playwright_api.expect(queued).to_have_count(4)
        await c.shot("many-cards")
        streams = [u for u in c.seen.requests if "/events" in u]
        assert len(streams) == 1, streams
        assert "/v1/events?jobs=" in streams[0]
        assert c.seen.errors == []


async def test_a_tenants_console_shows_only_its_own_jobs(
    make_settings: Any, browser: Any, tmp_path: Path
) -> None:
    settings = make_settings(api_keys="acme:key-acme,globex:key-globex")
    async with (
        running_stack(settings, extract_running=False) as stack,
        console(browser, stack, tmp_path) as c,
    ):
        mine = await upload(
            stack, make_pdf(["x"]), headers={"Authorization": "Bearer key-acme"}, client_ref="ours"
        )
        theirs = await upload(
            stack, make_pdf(["y"]), headers={"Authorization": "Bearer key-globex"}, client_ref="x"
        )
        await c.open("#/jobs")
        # No key yet: the list is refused, and the console asks for one.
        await c.page.locator("#key-dialog[open]").wait_for()
        await c.page.fill("#key-input", "key-acme")
        await c.page.keyboard.press("Enter")
        await c.page.locator(f"#jobs-table tr[data-job-id='{mine['job_id']}']").wait_for()
        rows = await c.page.locator("#jobs-table tbody tr").evaluate_all(
            "(rows) => rows.map((r) => r.dataset.jobId)"
        )
        assert rows == [mine["job_id"]]
        assert theirs["job_id"] not in await c.page.content()
        # Another tenant's job is not found, even by its id.
        await c.open(f"#/jobs/{theirs['job_id']}")
        await c.page.locator("section .error").wait_for()
        assert "NOT_FOUND" in await c.page.locator("section .error").inner_text()
        # The key is this tab's: a request without it changes nothing.
        status = await c.page.evaluate(
            "async (id) => (await fetch(`/v1/jobs/${id}`, { method: 'DELETE' })).status",
            mine["job_id"],
        )
        assert status == 401
        await c.open("#/ops")
        await c.page.locator("#stat-workers").wait_for()
        await c.shot("operate")


HOSTILE = [
    "<img src=x onerror=alert(1)> <script>alert(2)</script>",
    "[click me](javascript:alert(3)) <iframe src=javascript:alert(4)>",
    "<img src={injected}/injected.png onerror=alert(5)>",
]


async def test_script_like_text_of_a_pdf_is_shown_as_text_and_runs_nothing(
    make_settings: Any, browser: Any, tmp_path: Path
) -> None:
    async with running_stack(make_settings()) as stack, console(browser, stack, tmp_path) as c:
        base = str(stack.client.make_url("")).rstrip("/")
        lines = [line.format(injected=base) for line in HOSTILE]
        pdf = make_pdf(["\n".join(lines)], title="<img src=x onerror=alert(6)>")
        await c.open()
        await c.drop(pdf, "<img src=x onerror=alert(7)>.pdf")
        card = c.page.locator("job-card[data-status='completed']")
        await card.wait_for()
        assert await card.locator(".name").inner_text() == "<img src=x onerror=alert(7)>.pdf"
        job_id = await card.get_attribute("data-job-id")
        await c.open(f"#/read/{job_id}/1")
        await c.page.locator("#page-image[data-page='1']").wait_for()
        text = await c.page.locator("#page-text").inner_text()
        assert "<script>alert(2)</script>" in text
        side = c.page.locator("#page-side")
        assert await side.locator("img, script, iframe").count() == 0
        await c.page.click("#tab-markdown")
        await c.page.locator("#markdown").wait_for()
        markdown = c.page.locator("#markdown")
        assert "onerror" in await markdown.inner_text()
        assert await markdown.locator("img, script, iframe").count() == 0
        hrefs = await markdown.locator("a").evaluate_all("(links) => links.map((a) => a.href)")
        assert all(h.startswith(("http://", "https://")) for h in hrefs), hrefs
        await c.shot("hostile")
        # The renderer itself, given Markdown with live links and markup (the extractor already
        # escapes what a PDF's text holds, so this is what a future extractor bug would send).
        rendered = await c.page.evaluate(
            """async (injected) => {
                const { renderMarkdown } = await import("/console/markdown.js");
                const target = document.createElement("div");
                renderMarkdown(target, [
                    "# <img src=x onerror=alert(8)>",
                    "[js](javascript:alert(9)) [data](data:text/html,<script>alert(10)</script>)",
                    "[ok](https://example.org/a) ![pic](" + injected + "/injected.png)",
                    "| <b>h</b> | [x](vbscript:msgbox) |", "| --- | --- |", "| <i>c</i> | d |",
                ].join("\\n"));
                return {
                    html: target.innerHTML,
                    hrefs: [...target.querySelectorAll("a")].map((a) => a.href),
                    elements: [...target.querySelectorAll("*")].map((e) => e.localName),
                };
            }""",
            base,
        )
        assert rendered["hrefs"] == ["https://example.org/a"], rendered
        assert not {"img", "script", "b", "i", "iframe"} & set(rendered["elements"]), rendered
        assert "&lt;img src=x onerror=alert(8)&gt;" in rendered["html"]
        assert c.seen.dialogs == []
        assert c.seen.errors == []
        assert not [u for u in c.seen.requests if "injected" in u], c.seen.requests


async def test_keyboard_only_submit_and_read(
    make_settings: Any, browser: Any, tmp_path: Path
) -> None:
    source = tmp_path / "keys.pdf"
    source.write_bytes(make_pdf(["first by keys", "second by keys", "third by keys"]))
    async with running_stack(make_settings()) as stack, console(browser, stack, tmp_path) as c:
        page = c.page
        # Listening before the page loads: Playwright intercepts file choosers only once a
        # listener is there, and turning that on is a round trip of its own, which a key
        # pressed at once could overtake (then Chromium's own dialog opens, and no event).
        chosen: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        page.once("filechooser", lambda chooser: chosen.set_result(chooser))
        await c.open()
        # The submit view focuses its file picker button; Enter opens the file chooser.
        assert await page.evaluate("document.activeElement.id") == "choose-files"
        await page.keyboard.press("Enter")
        await (await asyncio.wait_for(chosen, TIMEOUT_MS / 1000)).set_files(str(source))
        await page.locator("job-card[data-status='completed'] a.read").wait_for()
        await tab_to(page, "a.read")
        await page.keyboard.press("Enter")
        await page.locator("#page-image[data-page='1']").wait_for()
        await page.keyboard.press("ArrowRight")
        await page.locator("#page-image[data-page='2']").wait_for()
        assert (await page.locator("#page-text").inner_text()).strip() == "second by keys"
        await tab_to(page, "#page-input")
        await page.keyboard.press("Control+A")
        await page.keyboard.type("3")
        await page.keyboard.press("Enter")
        await page.locator("#page-image[data-page='3']").wait_for()
        assert (await page.locator("#page-text").inner_text()).strip() == "third by keys"
        await c.shot("keyboard")
        assert c.seen.errors == []


async def tab_to(page: Any, selector: str, most: int = 60) -> None:
    """Press Tab until `selector` has the focus (a keyboard user's way there)."""
    for _ in range(most):
        if await page.evaluate("(s) => document.activeElement?.matches(s) ?? false", selector):
            return
        await page.keyboard.press("Tab")
    raise AssertionError(f"Tab never reached {selector}")
