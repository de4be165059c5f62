"""Batches against the real broker and S3 server: refusals item by item, counts, paging, cancel,
limits, and exactly one `batch.completed` however often the arbiter hears an item end."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from handlers import batches as batch_handler
from pdfrelay_client.sse import sse_events
from shared.intake import batch as batch_intake
from shared.intake.submit import Submission, Submitter
from shared.jobs import batches
from shared.jobs.batches import BatchSignal
from shared.models import ExtractOptions, Job, S3Source, Source, WebhookDelivery, new_job_id
from shared.runtime.context import Context
from shared.webhooks import dispatch
from tests.conftest import Stack, running_stack
from tests.factories import make_pdf
from tests.helpers import wait_done
from tests.integration.test_webhooks import hook_stack, receiver, status, verify

pytestmark = pytest.mark.integration

TIMEOUT_S = 90
BAD = [("page.html", b"<html>not a pdf</html>" * 100), ("empty.pdf", b""), ("x.txt", b"hello")]


def batch_form(files: list[tuple[str, bytes]], **fields: str) -> aiohttp.FormData:
    form = aiohttp.FormData(default_to_multipart=True)
    for name, data in files:
        form.add_field("file", data, filename=name, content_type="application/pdf")
    for key, value in fields.items():
        form.add_field(key, value)
    return form


class Arbiter:
    """Counts the signals the batch arbiter has handled and the batch webhooks it queued."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.handled = 0
        self.batches: list[str] = []
        self.queued: list[WebhookDelivery] = []
        self.changed = asyncio.Condition()
        on_signal = batches.on_signal

        async def counted(ctx: Context, signal: BatchSignal) -> None:
            await on_signal(ctx, signal)
            self.handled += 1
            self.batches.append(signal.batch_id)
            async with self.changed:
                self.changed.notify_all()

        async def queued(ctx: Context, delivery: WebhookDelivery) -> None:
            self.queued.append(delivery)
            await dispatch.enqueue(ctx, delivery)

        monkeypatch.setattr(batch_handler, "on_signal", counted)
        monkeypatch.setattr(batches, "enqueue", queued)

    async def wait_handled(self, n: int) -> None:
        async with asyncio.timeout(TIMEOUT_S), self.changed:
            await self.changed.wait_for(lambda: self.handled >= n)

    async def drained(self, ctx: Context) -> None:
        """Wait until every signal sent so far is handled: a sentinel goes behind them (one
        consumer, one message at a time, in order)."""
        sentinel = new_job_id()
        await batches.signal(ctx, sentinel)
        async with asyncio.timeout(TIMEOUT_S), self.changed:
            await self.changed.wait_for(lambda: sentinel in self.batches)


async def get_batch(stack: Stack, batch_id: str, **params: str) -> Any:
    resp = await stack.client.get(f"/v1/batches/{batch_id}", params=params)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_thirty_pdfs_and_three_bad_files_one_batch_completed(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    arbiter = Arbiter(monkeypatch)
    good = [(f"doc-{i:02}.pdf", make_pdf([f"document {i}"])) for i in range(30)]
    files = good[:10] + BAD[:1] + good[10:20] + BAD[1:] + good[20:]
    refs = [name for name, _ in files]
    async with (
        hook_stack(make_settings, monkeypatch) as (stack, _),
        receiver(status(204)) as rec,
    ):
        stack.start(batch_handler.serve)
        resp = await stack.client.post(
            "/v1/batches",
            data=batch_form(
                files, client_refs=json.dumps(refs), webhook_url=rec.url, webhook_token="tok-b"
            ),
        )
        assert resp.status == 202, await resp.text()
        accepted = await resp.json()
        assert resp.headers["Location"] == f"/v1/batches/{accepted['batch_id']}"
        assert accepted["counts"] == {
            "total": 33, "refused": 3, "accepted": 30, "pending": 30,
            "completed": 0, "failed": 0, "cancelled": 0,
        }  # fmt: skip
        assert accepted["progress"] == {"pages_done": 0, "pages_total": 0, "items_counted": 0}
        refused = {i["filename"]: i for i in accepted["items"] if i["status"] == "refused"}
        assert {n: i["error"]["code"] for n, i in refused.items()} == {
            "page.html": "NOT_A_PDF",
            "empty.pdf": "EMPTY_FILE",
            "x.txt": "NOT_A_PDF",
        }
        assert all(i["job_id"] is None for i in refused.values())
        assert [i["client_ref"] for i in accepted["items"]] == refs

        (call,) = await rec.wait_calls(1, within=TIMEOUT_S)
        event = verify(call)
        assert event["type"] == "batch.completed"
        assert call.headers["Authorization"] == "Bearer tok-b"
        assert call.headers["webhook-id"] == f"msg_{accepted['batch_id']}_batch_completed"
        assert event["data"]["counts"]["completed"] == 30
        assert event["data"]["counts"]["refused"] == 3
        # One page each, every item ended: all of its pages are done.
        pages = {"pages_done": 30, "pages_total": 30, "items_counted": 30}
        assert event["data"]["progress"] == pages

        batch_id = accepted["batch_id"]
        view = await get_batch(stack, batch_id, limit="10")
        assert view["status"] == "completed"
        assert view["completed_at"] is not None
        assert view["counts"]["pending"] == 0
        assert view["progress"] == pages
        assert view["next_cursor"] == "10"
        assert len(view["items"]) == 10
        last = await get_batch(stack, batch_id, cursor="30", limit="10")
        assert [i["index"] for i in last["items"]] == [30, 31, 32]
        assert last["next_cursor"] is None
        assert view["webhook"]["state"] in ("pending", "delivered")
        assert view["eta_s"] is None  # nothing pending
        assert "tok-b" not in json.dumps(view)
        token_key = batches.token_key(batch_id)
        assert await stack.ctx.storage.list_keys(token_key) == []  # gone once it was sent
        job = await (await stack.client.get(f"/v1/jobs/{view['items'][0]['job_id']}")).json()
        assert job["batch_id"] == batch_id

        # Every item's end heard again (redeliveries, a re-announcing task) and the batch's
        # own signal again: the arbiter handles them all and queues no second webhook.
        handled = arbiter.handled
        for item in view["items"] + last["items"]:
            if item["job_id"] is not None:
                await batches.signal(
                    stack.ctx, batch_id, await stack.ctx.jobs.get(item["job_id"], "default")
                )
        await batches.signal(stack.ctx, batch_id)
        await arbiter.wait_handled(handled + 14)
        assert [d.event_type for d in arbiter.queued] == ["batch.completed"]
        assert len(rec.calls) == 1


async def test_cancel_a_batch_then_it_completes_cancelled(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    arbiter = Arbiter(monkeypatch)
    async with running_stack(make_settings(), extract_running=False) as stack:
        stack.start(batch_handler.serve)
        files = [(f"{i}.pdf", make_pdf([str(i)])) for i in range(3)]
        resp = await stack.client.post("/v1/batches", data=batch_form(files))
        assert resp.status == 202, await resp.text()
        batch_id = (await resp.json())["batch_id"]
        cancelled = await stack.client.delete(f"/v1/batches/{batch_id}")
        assert cancelled.status == 200
        view = await cancelled.json()
        assert {i["status"] for i in view["items"]} == {"cancelled"}
        await arbiter.wait_handled(4)  # the batch's own signal and its three items' ends
        view = await get_batch(stack, batch_id)
        assert view["status"] == "completed"
        assert view["counts"]["cancelled"] == 3
        assert view["counts"]["pending"] == 0


async def test_the_batch_event_stream_follows_every_item_to_batch_completed(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Subscribed while the batch is queued: `batch.state`, every item's events as it runs and
    ends, `batch.completed` last, then the server closes the stream."""
    Arbiter(monkeypatch)
    async with running_stack(make_settings(progress_after_s=0), extract_running=False) as stack:
        stack.start(batch_handler.serve)
        files = [
            (f"{i}.pdf", make_pdf([f"doc {i} page {p}" for p in range(i + 1)])) for i in range(3)
        ]
        resp = await stack.client.post("/v1/batches", data=batch_form([*files, BAD[0]]))
        assert resp.status == 202, await resp.text()
        accepted = await resp.json()
        batch_id = accepted["batch_id"]
        jobs = {i["job_id"] for i in accepted["items"] if i["job_id"] is not None}
        assert len(jobs) == 3

        stream = await stack.client.get(f"/v1/batches/{batch_id}/events")
        assert stream.status == 200
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        seen: list[tuple[str, dict[str, Any]]] = []
        async with asyncio.timeout(TIMEOUT_S):
            async for kind, data in sse_events(stream.content):
                seen.append((kind, json.loads(data)))
                if kind == "batch.state":
                    state = seen[-1][1]
                    assert state["status"] == "processing"
                    assert state["counts"]["pending"] == 3
                    assert "items" not in state
                    stack.start_extract()  # only now: the stream sees the items run
        # The server closed the stream after batch.completed.
        kinds = [kind for kind, _ in seen]
        assert kinds[0] == "batch.state"
        assert kinds[-1] == "batch.completed"
        assert kinds.count("batch.completed") == 1
        ended = {d["job_id"] for k, d in seen if k == "job.completed"}
        assert ended == jobs  # every item's end, all before batch.completed
        assert all(d["batch_id"] == batch_id for k, d in seen if k.startswith("job."))
        assert "job.progress" in kinds
        final = seen[-1][1]
        assert final["batch_id"] == batch_id
        assert final["counts"]["completed"] == 3
        assert final["counts"]["refused"] == 1
        assert final["progress"] == {"pages_done": 6, "pages_total": 6, "items_counted": 3}

        # A completed batch: its batch.completed alone, with the same event id.
        again = await stack.client.get(f"/v1/batches/{batch_id}/events")
        async with asyncio.timeout(TIMEOUT_S):
            raw = (await again.read()).decode()
        assert raw.count("event: ") == 1
        assert f"event: batch.completed\nid: msg_{batch_id}_batch_completed\n" in raw
        missing = await stack.client.get(f"/v1/batches/{'0' * 32}/events")
        assert missing.status == 404


@asynccontextmanager
async def small_stack(make_settings: Any, **settings: Any) -> AsyncIterator[Stack]:
    async with running_stack(make_settings(**settings), extract_running=False) as stack:
        yield stack


async def test_limits_and_whole_refusals(make_settings: Any) -> None:
    pdf = make_pdf(["x"])
    async with small_stack(make_settings, max_batch_items=2, max_batch_bytes=3 * len(pdf)) as stack:
        post = stack.client.post
        too_many = await post("/v1/batches", data=batch_form([("a.pdf", pdf)] * 3))
        assert too_many.status == 413
        assert (await too_many.json())["error"]["code"] == "BATCH_TOO_LARGE"
        too_big = await post(
            "/v1/batches", data=batch_form([("a.pdf", pdf), ("b.pdf", pdf + b" " * 3 * len(pdf))])
        )
        assert too_big.status == 413
        assert "together" in (await too_big.json())["error"]["message"]
        all_bad = await post("/v1/batches", data=batch_form(BAD[:2]))
        assert all_bad.status == 422
        error = (await all_bad.json())["error"]
        assert error["code"] == "BATCH_REFUSED"
        assert [i["error"]["code"] for i in error["items"]] == ["NOT_A_PDF", "EMPTY_FILE"]
        refs = await post("/v1/batches", data=batch_form([("a.pdf", pdf)], client_refs='["a","b"]'))
        assert refs.status == 400
        assert (await refs.json())["error"]["code"] == "INVALID_REQUEST"
        none = await post("/v1/batches", data=batch_form([], options="{}"))
        assert none.status == 400
        as_json = await post("/v1/batches", json={"files": []})
        assert as_json.status == 400
        assert "exactly one of 'items'" in (await as_json.json())["error"]["message"]
        as_text = await post("/v1/batches", data=b"x", headers={"Content-Type": "text/plain"})
        assert as_text.status == 415
        too_many = await post("/v1/batches", json={"items": [{"source": {"url": "x"}}] * 3})
        assert too_many.status == 413
        missing = await stack.client.get(f"/v1/batches/{'0' * 32}")
        assert missing.status == 404
        assert (await missing.json())["error"]["code"] == "NOT_FOUND"


async def test_another_tenant_sees_no_batch(make_settings: Any) -> None:
    async with small_stack(make_settings, api_keys="a:key-a,b:key-b") as stack:
        resp = await stack.client.post(
            "/v1/batches",
            data=batch_form([("a.pdf", make_pdf(["a"]))]),
            headers={"Authorization": "Bearer key-a"},
        )
        assert resp.status == 202
        batch_id = (await resp.json())["batch_id"]
        for method, path in (("GET", ""), ("DELETE", ""), ("GET", "/events")):
            other = await stack.client.request(
                method, f"/v1/batches/{batch_id}{path}", headers={"Authorization": "Bearer key-b"}
            )
            assert other.status == 404, (method, path)
            assert (await other.json())["error"]["code"] == "NOT_FOUND"


async def test_items_over_the_page_quota_are_refused_and_said_so(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One item at a time: which items fit is then certain (racing admissions may both lose).
    monkeypatch.setattr(batch_intake, "SUBMIT_CONCURRENCY", 1)
    async with small_stack(make_settings, tenant_page_quota=3) as stack:
        files = [(f"{i}.pdf", make_pdf([f"page {i}"])) for i in range(5)]
        resp = await stack.client.post("/v1/batches", data=batch_form(files))
        assert resp.status == 202, await resp.text()
        view = await resp.json()
        assert [i["status"] for i in view["items"]] == ["queued"] * 3 + ["refused"] * 2
        assert {i["error"]["code"] for i in view["items"][3:]} == {"QUOTA_EXCEEDED"}
        assert view["counts"]["accepted"] == 3

        # Nothing fits now: the whole batch is answered 429, and nothing of it stays.
        again = await stack.client.post("/v1/batches", data=batch_form(files[:1]))
        assert again.status == 429
        assert (await again.json())["error"]["code"] == "QUOTA_EXCEEDED"
        kept = await stack.ctx.storage.list_keys("batches/")
        assert {k.split("/")[1] for k in kept} == {view["batch_id"]}


async def test_a_json_list_of_sources_with_overrides_and_refusals(make_settings: Any) -> None:
    async with running_stack(make_settings()) as stack:
        bucket = stack.ctx.settings.s3_bucket
        for name in ("a", "b"):
            await stack.ctx.storage.put_bytes(
                f"src/{name}.pdf", make_pdf([name]), "application/pdf"
            )
        items = [
            {"source": {"s3": {"key": "src/a.pdf"}}, "client_ref": "a",
             "options": {"outputs": ["text", "markdown"]}},
            {"source": {"s3": {"bucket": bucket, "key": "src/b.pdf"}}, "client_ref": 7},
            {"source": {"s3": {"key": "src/missing.pdf"}}},
            {"source": {"s3": {"bucket": "not-allowed-here", "key": "a.pdf"}}},
            {"source": {"s3": {"key": "uploads/x.pdf"}}},
            {"source": {"url": "http://127.0.0.1:9/x.pdf"}},
            {"source": {"s3": {"key": "src/a.pdf"}}, "options": {"outputs": ["nope"]}},
            {"source": {}},
            "not an object",
        ]  # fmt: skip
        body = {"items": items, "options": {"outputs": ["text"], "pages": "1"}}
        resp = await stack.client.post("/v1/batches", json=body)
        assert resp.status == 202, await resp.text()
        view = await resp.json()
        codes = [(i["status"], (i["error"] or {}).get("code")) for i in view["items"]]
        assert codes == [
            ("queued", None),
            ("queued", None),
            ("refused", "SOURCE_UNREACHABLE"),
            ("refused", "SOURCE_NOT_ALLOWED"),
            ("refused", "SOURCE_NOT_ALLOWED"),
            ("refused", "SOURCE_UNREACHABLE"),
            ("refused", "INVALID_OPTIONS"),
            ("refused", "INVALID_REQUEST"),
            ("refused", "INVALID_REQUEST"),
        ]
        assert [i["client_ref"] for i in view["items"][:2]] == ["a", "7"]
        assert [i["filename"] for i in view["items"][:2]] == ["a.pdf", "b.pdf"]
        first = await wait_done(stack, view["items"][0]["job_id"])
        second = await wait_done(stack, view["items"][1]["job_id"])
        assert first["status"] == second["status"] == "completed"
        # The item's override replaces the shared `outputs`; the shared `pages` stays.
        assert first["options"]["outputs"] == ["text", "markdown"]
        assert first["options"]["pages"] == second["options"]["pages"] == "1"
        assert second["options"]["outputs"] == ["text"]

        all_bad = await stack.client.post("/v1/batches", json={"items": items[2:4]})
        assert all_bad.status == 422
        assert (await all_bad.json())["error"]["code"] == "BATCH_REFUSED"


async def test_an_s3_prefix_batch_picks_up_every_pdf_and_nothing_else(make_settings: Any) -> None:
    async with running_stack(make_settings()) as stack:
        put = stack.ctx.storage.put_bytes
        pdfs = ["drop/a.pdf", "drop/b.PDF", "drop/sub/c.pdf"]
        for key in pdfs:
            await put(key, make_pdf([key]), "application/pdf")
        for key in ("drop/notes.txt", "drop/image.png", "drop.pdf", "dropped/d.pdf", "other/e.pdf"):
            await put(key, make_pdf([key]), "application/pdf")
        resp = await stack.client.post(
            "/v1/batches",
            json={"prefix": {"prefix": "drop/"}, "options": {"outputs": ["text"]}},
        )
        assert resp.status == 202, await resp.text()
        view = await resp.json()
        assert [i["client_ref"] for i in view["items"]] == pdfs
        assert [i["filename"] for i in view["items"]] == ["a.pdf", "b.PDF", "c.pdf"]
        assert view["counts"]["accepted"] == 3
        for item in view["items"]:
            job = await wait_done(stack, item["job_id"])
            assert job["status"] == "completed"
            result = await (await stack.client.get(f"/v1/jobs/{item['job_id']}/result")).json()
            assert item["client_ref"] in result["pages"][0]["text"]

        async def refused(prefix: dict[str, str]) -> tuple[int, str]:
            resp = await stack.client.post("/v1/batches", json={"prefix": prefix})
            return resp.status, (await resp.json())["error"]["code"]

        assert await refused({"bucket": "not-allowed-here", "prefix": "drop/"}) == (
            403, "SOURCE_NOT_ALLOWED",
        )  # fmt: skip
        assert await refused({"prefix": "uploads/"}) == (403, "SOURCE_NOT_ALLOWED")
        assert await refused({"prefix": "../drop/"}) == (403, "SOURCE_NOT_ALLOWED")
        assert await refused({"prefix": "nothing-here/"}) == (422, "BATCH_REFUSED")
        assert await refused({"prefix": "drop/", "extra": "x"}) == (400, "INVALID_REQUEST")


async def test_a_batch_whose_ingress_died_while_queuing_it_is_opened_at_its_deadline(
    make_settings: Any,
) -> None:
    """The ingress queues the first item and dies before the second (nothing more of the
    batch is written; the client had no answer). At the batch's deadline the arbiter opens it
    as it stands: the queued item runs to its end, the other is refused, `batch.completed`
    comes once."""
    settings = make_settings(batch_accept_deadline_s=1.0)
    async with running_stack(settings) as stack:
        stack.start(batch_handler.serve)
        for i in range(2):
            await stack.ctx.storage.put_bytes(f"in/{i}.pdf", make_pdf([f"item {i}"]))
        first_queued, never = asyncio.Event(), asyncio.Event()

        class DiesOnTheSecond(Submitter):
            async def submit(self, ctx: Context, sub: Submission) -> tuple[Job, bool]:
                if sub.s3_key == "in/1.pdf":
                    await first_queued.wait()
                    await never.wait()  # the process dies here
                created = await super().submit(ctx, sub)
                first_queued.set()
                return created

        files = [
            batch_intake.BatchFile(
                filename=f"{i}.pdf", client_ref=f"ref-{i}", source=Source(s3=S3Source(key=k))
            )
            for i, k in enumerate(("in/0.pdf", "in/1.pdf"))
        ]
        events = await stack.ctx.connection.channel()
        completed = await events.declare_queue(exclusive=True)
        await completed.bind(stack.ctx.topology.events, batches.COMPLETED_EVENT)
        accepting = asyncio.create_task(
            batch_intake.submit_batch(
                stack.ctx,
                DiesOnTheSecond(),
                tenant="default",
                options=ExtractOptions(),
                files=files,
                webhook_url=None,
            )
        )
        await asyncio.wait_for(first_queued.wait(), TIMEOUT_S)
        accepting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await accepting

        async with completed.iterator(timeout=TIMEOUT_S) as it:
            message = await anext(aiter(it))
            await message.ack()
        view = json.loads(message.body)
        assert view["counts"]["completed"] == 1
        assert view["counts"]["refused"] == 1
        batch_id = view["batch_id"]
        items = (await get_batch(stack, batch_id))["items"]
        refused = [i for i in items if i["status"] == "refused"]
        assert [(i["client_ref"], i["job_id"]) for i in refused] == [("ref-1", None)]
        assert refused[0]["error"]["code"] == "INTERNAL"
        await events.close()
