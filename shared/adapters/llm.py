"""The vision model: one page image in, its Markdown out, through any OpenAI-compatible
chat-completions endpoint (OpenAI, vLLM, Ollama, LiteLLM…).

Provider failures are translated here: a 429/503 with `Retry-After` pauses every call of this
process (`Pause`) and is tried again once the pause is over, up to `llm_max_pause_s` per page;
timeouts, connection errors, 5xx and the like raise TransientError (the caller retries on its
ladder, within `llm_retry_budget`); a refusal (other 4xx, a content filter, an empty answer)
raises PermanentError LLM_REFUSED. The key is sent as a bearer token and never appears in a
message, log line or record.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any

import aiohttp

from shared.errors import ErrorCode, PermanentError, TransientError
from shared.settings import Settings

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 409, 425, 500, 502, 503, 504})
"""Answers worth another try on the ladder (429 and a 503 with Retry-After pause instead)."""
MAX_DETAIL = 200
KEYLIKE = re.compile(r"\b(?:sk|pk|key|token)[-_][A-Za-z0-9_*.-]{3,}[A-Za-z0-9_*]", re.IGNORECASE)
"""What looks like a (partly masked) key in a provider's message is not passed on."""


@dataclass(frozen=True)
class Transcription:
    text: str
    tokens_in: int = 0
    tokens_out: int = 0


class RateLimited(TransientError):
    """The provider asked to wait `retry_after` seconds (429, or 503 with Retry-After)."""

    code = ErrorCode.LLM_UNAVAILABLE

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Pause:
    """Holds every model call of the process while the provider asked to wait."""

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self._until = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.pauses = 0

    def hold_off(self, seconds: float) -> None:
        """No call starts for `seconds` from now (a longer pause already running stands)."""
        until = time.monotonic() + seconds
        if until <= self._until:
            return
        self._until = until
        self.pauses += 1
        self._open.clear()
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(seconds, self._open.set)

    @property
    def paused(self) -> bool:
        return not self._open.is_set()

    async def wait(self) -> None:
        await self._open.wait()


def retry_after_s(value: str | None, default: float | None = None) -> float | None:
    """`Retry-After` in seconds (delta-seconds or an HTTP date); `default` when absent/invalid."""
    if value is None or not value.strip():
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return default


def request_body(model: str, prompt: str, png: bytes) -> bytes:
    """The chat-completions request for one page (CPU: base64 and JSON of megabytes; run it in
    a thread)."""
    url = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    body = {
        "model": model,
        "temperature": 0,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": prompt},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            }
        ],
    }
    return json.dumps(body).encode()


def text_request_body(model: str, system: str | None, user: str) -> bytes:
    """The chat-completions request of a text transformation (a template)."""
    messages: list[dict[str, str]] = []
    if system is not None:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": user})
    return json.dumps({"model": model, "temperature": 0, "messages": messages}).encode()


class ModelClient:
    """One HTTP session to the model endpoint, opened and closed with the handler."""

    def __init__(self, settings: Settings) -> None:
        if settings.llm_base_url is None:
            raise ValueError("ModelClient needs PDFRELAY_LLM_BASE_URL")
        self._url = settings.llm_base_url.rstrip("/") + "/chat/completions"
        self._settings = settings
        self._key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
        self.pause = Pause()
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ModelClient:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._settings.llm_timeout_s)
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def model(self) -> str:
        return self._settings.llm_model

    @property
    def prompt(self) -> str:
        return self._settings.llm_prompt

    async def transcribe(self, png: bytes) -> Transcription:
        """The model's Markdown of one page image, waiting out the provider's pauses.

        Raises:
            TransientError: LLM_UNAVAILABLE (the call failed, or the pauses went on too long).
            PermanentError: LLM_REFUSED.
        """
        body = await asyncio.to_thread(request_body, self.model, self.prompt, png)
        return await self._complete(body)

    async def transform(self, system: str | None, user: str) -> Transcription:
        """The model's answer to a text request (a template over the document's text); raises
        as `transcribe` does."""
        body = await asyncio.to_thread(text_request_body, self.model, system, user)
        return await self._complete(body)

    async def _complete(self, body: bytes) -> Transcription:
        """One chat completion, waiting out the provider's pauses."""
        waited = 0.0
        while True:
            started = time.monotonic()
            await self.pause.wait()
            waited += time.monotonic() - started
            if waited > self._settings.llm_max_pause_s:
                raise TransientError(
                    f"the model endpoint asked to wait for more than "
                    f"{self._settings.llm_max_pause_s:g} s",
                    ErrorCode.LLM_UNAVAILABLE,
                )
            try:
                return await self._call(body)
            except RateLimited as exc:
                log.warning("model endpoint: %s; pausing every call %.1f s", exc, exc.retry_after)
                self.pause.hold_off(min(exc.retry_after, self._settings.llm_max_pause_s))

    async def _call(self, body: bytes) -> Transcription:
        assert self._session is not None, "use ModelClient as an async context manager"
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        try:
            async with self._session.post(self._url, data=body, headers=headers) as resp:
                raw = await resp.read()
                status, retry_after = resp.status, resp.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as exc:
            name = type(exc).__name__
            raise TransientError(
                f"the model endpoint could not be reached ({name})", ErrorCode.LLM_UNAVAILABLE
            ) from exc
        if status == 429 or (status == 503 and retry_after is not None):
            wait = retry_after_s(retry_after, self._settings.transient_backoff_s)
            assert wait is not None
            raise RateLimited(f"the model endpoint answered {status}", wait)
        if status in RETRYABLE_STATUS:
            raise TransientError(
                f"the model endpoint answered {status}{self._detail(raw)}",
                ErrorCode.LLM_UNAVAILABLE,
            )
        if status in (401, 403):
            # The provider's message may quote part of the key: none of it is passed on.
            raise PermanentError(
                f"the model endpoint did not accept the key ({status}): the operator checks "
                "PDFRELAY_LLM_API_KEY",
                ErrorCode.LLM_UNAVAILABLE,
            )
        if status >= 400:
            raise PermanentError(
                f"the model endpoint refused the request ({status}){self._detail(raw)}",
                ErrorCode.LLM_REFUSED,
            )
        return self._parse(raw)

    def _parse(self, raw: bytes) -> Transcription:
        try:
            answer: Any = json.loads(raw)
            choice = answer["choices"][0]
            content = choice["message"].get("content")
            finish = choice.get("finish_reason")
            usage = answer.get("usage") or {}
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise TransientError(
                "the model endpoint's answer is not a chat completion", ErrorCode.LLM_UNAVAILABLE
            ) from exc
        if finish == "content_filter":
            raise PermanentError("the model refused (content filter)", ErrorCode.LLM_REFUSED)
        if not isinstance(content, str) or not content.strip():
            raise PermanentError("the model gave no text", ErrorCode.LLM_REFUSED)
        return Transcription(
            text=content,
            tokens_in=_count(usage, "prompt_tokens"),
            tokens_out=_count(usage, "completion_tokens"),
        )

    def _detail(self, raw: bytes) -> str:
        """The provider's error message, short, and never with the key in it."""
        try:
            message = json.loads(raw)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            return ""
        if not isinstance(message, str):
            return ""
        if self._key:
            message = message.replace(self._key, "***")
        return f": {KEYLIKE.sub('***', message)[:MAX_DETAIL]}"


def _count(usage: Any, name: str) -> int:
    value = usage.get(name) if isinstance(usage, dict) else None
    return value if isinstance(value, int) and value >= 0 else 0
