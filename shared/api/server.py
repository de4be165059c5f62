"""The ingress's HTTP server: aiohttp's, with the errors aiohttp answers itself in our JSON shape.

aiohttp answers a request it cannot parse (a request line or header over its 8 KiB limit, a
malformed line) before any middleware runs, in plain text that quotes the offending line. The
runner here gives those answers the documented JSON error shape, without echoing the request, and
logs them at info (a hostile or broken client is not a server error). aiohttp has no public hook
for this: `RequestHandler.handle_error` and `AppRunner._make_server` are overridden, and
tests/integration/test_hardening.py fails when an aiohttp upgrade changes either.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web, web_protocol
from aiohttp.http_exceptions import LineTooLong

log = logging.getLogger(__name__)

ErrorAnswer = Callable[[int, str], web.Response]
"""Build the answer for an HTTP status and a message that quotes nothing of the request."""


class _Handler(web_protocol.RequestHandler):
    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # as aiohttp's: too late for an answer of our own
            raise ConnectionError("the response is sent already; cannot send an error answer")
        if isinstance(exc, LineTooLong):
            text = "the request line or a header is longer than the server accepts (8190 bytes)"
        elif status >= 500:
            text = "internal error"
        else:
            text = "the request is not valid HTTP"
        log.info("refused a request from %s: %s (%s)", request.remote, text, type(exc).__name__)
        manager = self._manager
        assert isinstance(manager, _Server)
        resp = manager.error_answer(status, text)
        resp.force_close()
        return resp


class _Server(web.Server):
    error_answer: ErrorAnswer

    def __call__(self) -> web_protocol.RequestHandler:
        return _Handler(self, loop=self._loop, **self._kwargs)


class IngressRunner(web.AppRunner):
    """An `AppRunner` whose protocol errors are answered by `error_answer`."""

    def __init__(self, app: web.Application, error_answer: ErrorAnswer, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._error_answer = error_answer

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _Server  # same state, our protocol factory
        assert isinstance(server, _Server)
        server.error_answer = self._error_answer
        return server
