"""A Server-Sent Events reader, as much of the format as the service's event streams use."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator


async def sse_events(content: AsyncIterable[bytes]) -> AsyncIterator[tuple[str, str]]:
    """(event type, data) of each event of a stream of lines (comments skipped)."""
    kind, data = "message", list[str]()
    async for raw in content:
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if not line:
            if data:
                yield kind, "\n".join(data)
            kind, data = "message", []
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                kind = value
            elif name == "data":
                data.append(value)
