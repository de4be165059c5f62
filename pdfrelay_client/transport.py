"""One HTTP session to the service: bearer key, timeouts, bounded retries of 429/503, and every
failure turned into this client's errors (`pdfrelay_client.errors`)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp

from pdfrelay_client.errors import ApiError, ConnectionFailed, ServerError, error_for

RETRY_STATUSES = frozenset({429, 503})
CHUNK = 256 * 1024


async def file_chunks(path: str) -> AsyncIterator[bytes]:
    """A local file's bytes, read in a thread chunk by chunk (not on the event loop)."""
    fh = await asyncio.to_thread(open, path, "rb")
    try:
        while chunk := await asyncio.to_thread(fh.read, CHUNK):
            yield chunk
    finally:
        fh.close()


def _reason(error: OSError) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, socket.gaierror):
        return "unknown host"
    if isinstance(error, TimeoutError):
        return "timed out"
    return error.strerror or str(error)


def _retry_after(resp: aiohttp.ClientResponse) -> float | None:
    try:
        return max(float(resp.headers.get("Retry-After", "")), 0.0)
    except ValueError:
        return None  # absent, or an HTTP date (the service sends seconds)


async def read_json(resp: aiohttp.ClientResponse) -> Any:
    """The body as JSON (None when it is not JSON)."""
    try:
        return await resp.json(content_type=None)
    except ValueError:
        return None


async def error_of(resp: aiohttp.ClientResponse) -> ApiError:
    """The error an error answer stands for."""
    body = await read_json(resp)
    err = body.get("error") if isinstance(body, dict) else None
    code = str(err.get("code", "")) if isinstance(err, dict) else ""
    message = str(err.get("message", "")) if isinstance(err, dict) else ""
    if not message:
        message = f"the service answered HTTP {resp.status} {resp.reason or ''}".strip()
    return error_for(
        resp.status, code, message, _retry_after(resp), err if isinstance(err, dict) else None
    )


class Transport:
    """The session (created in the running loop on first use) and the retry policy."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        timeout: float,
        connect_timeout: float,
        max_retries: int,
        max_retry_wait: float,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=timeout
        )
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait
        self.on_retry: Callable[[ApiError, float], None] | None = None
        """Called before each wait for a retry (the refusal and the seconds to wait)."""
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _wait_s(self, err: ApiError, attempt: int) -> float:
        # Without a Retry-After: 1, 2, 4, … seconds.
        told = err.retry_after if err.retry_after is not None else float(2**attempt)
        return min(told, self.max_retry_wait)

    @contextlib.asynccontextmanager
    async def request(
        self,
        method: str,
        path: str,
        *,
        ok: tuple[int, ...] = (200,),
        body: Callable[[], dict[str, Any]] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """The response when its status is in `ok` (its body streams), else an `ApiError`.

        429 and 503 are tried again, waiting as `Retry-After` says (capped at `max_retry_wait`),
        at most `max_retries` times; `body()` gives fresh request arguments for each attempt
        (an upload's stream is used up by the first).
        """
        session = self._open()
        url = f"{self.base_url}{path}"
        for attempt in range(self.max_retries + 1):
            args = {**kwargs, **(body() if body is not None else {})}
            try:
                async with session.request(method, url, **args) as resp:
                    if resp.status in ok:
                        yield resp
                        return
                    err = await error_of(resp)
            except aiohttp.InvalidURL as exc:
                raise ConnectionFailed(f"not a valid service URL: {self.base_url}") from exc
            except aiohttp.ClientConnectorError as exc:
                raise ConnectionFailed(
                    f"cannot reach pdfrelay at {self.base_url} ({_reason(exc.os_error)})"
                ) from exc
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
                raise ConnectionFailed(
                    f"pdfrelay at {self.base_url} closed the connection ({exc})"
                ) from exc
            except aiohttp.ClientError as exc:
                raise ConnectionFailed(
                    f"talking to pdfrelay at {self.base_url} failed: {exc}"
                ) from exc
            except TimeoutError as exc:
                raise ConnectionFailed(
                    f"pdfrelay at {self.base_url} did not answer in time"
                ) from exc
            if err.status not in RETRY_STATUSES or attempt == self.max_retries:
                raise err
            wait = self._wait_s(err, attempt)
            if self.on_retry is not None:
                self.on_retry(err, wait)
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    async def json(self, method: str, path: str, ok: tuple[int, ...] = (200,), **kw: Any) -> Any:
        """The JSON body of a successful answer."""
        async with self.request(method, path, ok=ok, **kw) as resp:
            data = await read_json(resp)
        if data is None:
            raise ServerError(resp.status, "", "the service's answer is not JSON")
        return data
