"""Handler registration in one place, and running one or several handlers in a process."""

from __future__ import annotations

import asyncio
import importlib
import logging
import signal
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, cast

from handlers import ops
from shared.doors.table import DOORS
from shared.obs.logs import protect, settings_secrets
from shared.runtime.context import Context, open_context
from shared.settings import Settings

log = logging.getLogger(__name__)

Serve = Callable[[Context, asyncio.Event], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class HandlerSpec:
    module: str
    """Imported only when the handler runs: a process imports only its own handlers (the
    extract handler's engine, MuPDF, is ~140 MiB of memory the others have no use for)."""
    attr: str = "serve"
    needs_pool: bool = False

    @property
    def serve(self) -> Serve:
        return cast(Serve, getattr(importlib.import_module(self.module), self.attr))


async def front_doors(ctx: Context, stop: asyncio.Event) -> None:
    """The ingress process answers both front doors (HTTP and broker requests) and decides
    batches' completion (handlers/batches.py)."""
    from handlers import batches, ingress, requests

    await asyncio.gather(
        ingress.serve(ctx, stop), requests.serve(ctx, stop), batches.serve(ctx, stop)
    )


async def outbound(ctx: Context, stop: asyncio.Event) -> None:
    """The webhooks process sends what goes out: webhooks, and jobs' outputs to their result
    destinations (handlers/targets.py)."""
    from handlers import targets, webhooks

    await asyncio.gather(webhooks.serve(ctx, stop), targets.serve(ctx, stop))


HANDLERS: dict[str, HandlerSpec] = {
    "ingress": HandlerSpec("infra.app", "front_doors"),
    "extract": HandlerSpec("handlers.extract", needs_pool=True),
    "webhooks": HandlerSpec("infra.app", "outbound"),
    "object-drop": HandlerSpec("handlers.object_drop"),
    "llm": HandlerSpec("handlers.llm"),
}


async def run_handlers(
    names: list[str], settings: Settings, s3_endpoint: str, stop: asyncio.Event
) -> None:
    """Open one context and run the named handlers in it until `stop` is set or one fails."""
    specs = [HANDLERS[n] for n in names]
    protect(settings_secrets(settings))
    label = "+".join(names) if len(names) < len(HANDLERS) else "dev"
    async with open_context(
        settings,
        s3_endpoint,
        name=label,
        doors=DOORS,
        with_pool=any(s.needs_pool for s in specs),
    ) as ctx:
        tasks = [
            asyncio.create_task(s.serve(ctx, stop), name=n)
            for n, s in zip(names, specs, strict=True)
        ]
        if "ingress" not in names:
            # No HTTP of their own: /metrics and the probes on PDFRELAY_METRICS_PORT.
            tasks.append(asyncio.create_task(ops.serve(ctx, stop, names[0]), name="ops"))
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            if not task.cancelled() and (exc := task.exception()) is not None:
                raise exc


def install_signal_handlers(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT stop consuming and let in-flight work finish."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
