"""The console's server side on the real broker and S3 server: its page and assets with their
security headers, page previews rendered by the extract side, and the operations view."""

from __future__ import annotations

from typing import Any

import pymupdf
import pytest

from handlers.console.messages import preview_key
from shared.adapters.broker import publish
from shared.models import WebhookDelivery
from tests.conftest import running_stack
from tests.factories import make_pdf
from tests.helpers import upload, wait_done

pytestmark = pytest.mark.integration


async def test_console_page_and_assets_carry_a_strict_policy(make_settings: Any) -> None:
    async with running_stack(make_settings(), extract_running=False) as stack:
        resp = await stack.client.get("/")
        assert resp.status == 200
        assert resp.content_type == "text/html"
        csp = resp.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        html = await resp.text()
        assert "<script>" not in html
        assert " style=" not in html

        resp = await stack.client.get("/console/app.js")
        assert resp.status == 200
        assert resp.content_type == "text/javascript"
        again = await stack.client.get(
            "/console/app.js", headers={"If-None-Match": resp.headers["ETag"]}
        )
        assert again.status == 304
        missing = await stack.client.get("/console/../shared/settings.py")
        assert missing.status == 404
        # The API's answers are never content-sniffed either.
        api = await stack.client.get("/v1/jobs")
        assert api.headers["X-Content-Type-Options"] == "nosniff"


async def test_page_preview_is_rendered_by_the_extract_side_and_cached(make_settings: Any) -> None:
    async with running_stack(make_settings()) as stack:
        job = await upload(stack, make_pdf(["first page", "second page", "third page"]))
        assert (await wait_done(stack, job["job_id"]))["status"] == "completed"
        url = f"/v1/jobs/{job['job_id']}/pages/2/preview"

        resp = await stack.client.get(url, params={"width": "400"})
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "image/png"
        png = await resp.read()
        pix = pymupdf.Pixmap(png)
        assert pix.width == 400
        assert pix.height > pix.width  # A4 portrait
        info = await stack.ctx.storage.stat(preview_key(job["job_id"], 2, 400))
        assert info.size == len(png)

        # Served from the cache the second time: the same bytes.
        again = await stack.client.get(url, params={"width": "400"})
        assert await again.read() == png

        resp = await stack.client.get(f"/v1/jobs/{job['job_id']}/pages/4/preview")
        assert resp.status == 404
        assert "out of range: the document has 3 pages" in (await resp.json())["error"]["message"]
        for bad in ("0", "99999", "wide"):
            resp = await stack.client.get(url, params={"width": bad})
            assert resp.status == 400, bad
            assert (await resp.json())["error"]["code"] == "INVALID_REQUEST"
        resp = await stack.client.get(f"/v1/jobs/{job['job_id']}/pages/x/preview")
        assert resp.status == 400


async def test_preview_without_a_worker_answers_503_with_retry_after(make_settings: Any) -> None:
    settings = make_settings(preview_timeout_s=0.5)
    async with running_stack(settings, extract_running=False) as stack:
        job = await upload(stack, make_pdf(["only page"]))
        resp = await stack.client.get(f"/v1/jobs/{job['job_id']}/pages/1/preview")
        assert resp.status == 409  # still queued: nothing to preview yet
        assert (await resp.json())["error"]["code"] == "CONFLICT"

        stack.start_extract()
        assert (await wait_done(stack, job["job_id"]))["status"] == "completed"
        stack.stop.set()  # the extract side goes away: nobody renders
        await stack.tasks.pop()
        resp = await stack.client.get(f"/v1/jobs/{job['job_id']}/pages/1/preview")
        assert resp.status == 503
        assert resp.headers["Retry-After"]
        assert (await resp.json())["error"]["code"] == "SERVICE_UNAVAILABLE"


async def test_previews_and_operations_view_are_the_tenants_own(make_settings: Any) -> None:
    async with running_stack(make_settings(api_keys="a:key-a,b:key-b")) as stack:
        a = {"Authorization": "Bearer key-a"}
        b = {"Authorization": "Bearer key-b"}
        job = await upload(stack, make_pdf(["a's page"]), headers=a)
        assert (await wait_done(stack, job["job_id"], headers=a))["status"] == "completed"
        url = f"/v1/jobs/{job['job_id']}/pages/1/preview"
        assert (await stack.client.get(url)).status == 401
        assert (await stack.client.get(url, headers=b)).status == 404
        assert (await stack.client.get(url, headers=a)).status == 200

        assert (await stack.client.get("/v1/console/ops")).status == 401
        resp = await stack.client.get("/v1/console/ops", headers=a)
        assert resp.status == 200
        ops = await resp.json()
        names = {q["name"]: q for q in ops["queues"]}
        assert names["extract"]["consumers"] >= 1
        assert ops["workers"]["size"] == 2
        assert ops["failed_last_hour"] == 0
        assert ops["dead_webhooks"] == []
        replay = f"/v1/console/dead-webhooks/{job['job_id']}/replay"
        assert (await stack.client.post(replay)).status == 401
        assert (await stack.client.post(replay, headers=b)).status == 404
        resp = await stack.client.post(replay, headers=a)
        assert resp.status == 200
        assert (await resp.json())["replayed"] == 0


async def test_operations_view_shows_the_depth_of_every_queue_of_the_service(
    make_settings: Any,
) -> None:
    async with running_stack(make_settings(), extract_running=False) as stack:
        for i in range(3):
            await upload(stack, make_pdf([f"waiting {i}"]))
        ops = await (await stack.client.get("/v1/console/ops")).json()
        topo = stack.ctx.topology
        shown = {q["name"]: q for q in ops["queues"]}
        assert set(shown) == {q.name.removeprefix(f"{topo.ns}.") for q in topo.queues()}
        # As the broker has them: three tasks wait, nothing consumes them; the retry ladder,
        # the doors' and the llm queues are there, empty.
        assert (shown["extract"]["ready"], shown["extract"]["consumers"]) == (3, 0)
        assert shown["llm"]["ready"] == 0
        assert shown["object-drop"]["ready"] == 0
        assert sum(n.startswith("webhooks.retry.") for n in shown) == len(topo.retry_delays_ms)


async def test_operations_view_lists_and_replays_only_the_tenants_dead_webhooks(
    make_settings: Any,
) -> None:
    async with running_stack(
        make_settings(api_keys="a:key-a,b:key-b"), extract_running=False
    ) as stack:
        a = {"Authorization": "Bearer key-a"}
        b = {"Authorization": "Bearer key-b"}
        mine = await upload(stack, make_pdf(["a"]), headers=a)
        theirs = await upload(stack, make_pdf(["b"]), headers=b)
        topo = stack.ctx.topology
        for job in (mine, theirs):
            delivery = WebhookDelivery(
                event_id=f"evt-{job['job_id']}",
                job_id=job["job_id"],
                event_type="job.completed",
                url="https://hooks.example/in",
                token="secret-token",
                body="{}",
            )
            await publish(stack.ctx.channel, topo.dead_letters, topo.webhooks_dead, delivery)

        ops = await (await stack.client.get("/v1/console/ops", headers=a)).json()
        assert [d["job_id"] for d in ops["dead_webhooks"]] == [mine["job_id"]]
        assert "secret-token" not in str(ops)
        resp = await stack.client.post(
            f"/v1/console/dead-webhooks/{mine['job_id']}/replay", headers=a
        )
        assert (await resp.json())["replayed"] == 1
        ops = await (await stack.client.get("/v1/console/ops", headers=b)).json()
        assert [d["job_id"] for d in ops["dead_webhooks"]] == [theirs["job_id"]]
        ops = await (await stack.client.get("/v1/console/ops", headers=a)).json()
        assert ops["dead_webhooks"] == []
