"""The ingress's side of the page-preview RPC: ask the extract side, wait for its reply."""

from __future__ import annotations

import asyncio
import uuid

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from pydantic import ValidationError

from handlers.console.messages import PreviewReply, PreviewRequest
from shared.errors import TransientError
from shared.runtime.context import Context


class PreviewClient:
    """Asks the extract side to render previews; replies come to this process's own exclusive
    queue (named by the broker). Concurrent asks for one preview share one render."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._waiting: dict[str, asyncio.Future[PreviewReply]] = {}
        self._renders: dict[str, asyncio.Task[PreviewReply]] = {}

    async def start(self) -> None:
        self._channel = await self._ctx.connection.channel()
        self._queue = await self._channel.declare_queue(exclusive=True, auto_delete=True)
        await self._queue.consume(self._on_reply, no_ack=True)

    async def stop(self) -> None:
        for task in list(self._renders.values()):
            task.cancel()
        if self._channel is not None:
            await self._channel.close()

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        future = self._waiting.get(message.correlation_id or "")
        if future is None or future.done():
            return  # an answer after its asker gave up
        try:
            future.set_result(PreviewReply.model_validate_json(message.body))
        except ValidationError:
            future.set_result(PreviewReply(ok=False, code="INTERNAL", message="a bad reply"))

    async def render(self, key: str, req: PreviewRequest) -> PreviewReply:
        """The reply to `req` (one render per `key` at a time).

        Raises:
            TransientError: no reply within `preview_timeout_s`, or the broker is away.
        """
        task = self._renders.get(key)
        if task is None:
            task = asyncio.create_task(self._ask(req))
            self._renders[key] = task
            task.add_done_callback(lambda _t: self._renders.pop(key, None))
        return await asyncio.shield(task)

    async def _ask(self, req: PreviewRequest) -> PreviewReply:
        assert self._queue is not None
        timeout = self._ctx.settings.preview_timeout_s
        corr = uuid.uuid4().hex
        future: asyncio.Future[PreviewReply] = asyncio.get_running_loop().create_future()
        self._waiting[corr] = future
        try:
            await self._ctx.broker.publish(
                self._ctx.topology.tasks,
                self._ctx.topology.PREVIEW_KEY,
                req,
                correlation_id=corr,
                reply_to=self._queue.name,
                expiration=timeout,
            )
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError as exc:
            raise TransientError(
                f"no worker rendered the preview within {timeout:g} s; try again shortly"
            ) from exc
        finally:
            self._waiting.pop(corr, None)
