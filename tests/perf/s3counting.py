"""The S3 server with a request counter: `python -m tests.perf.s3counting -p PORT`.

The same server as `python -m infra.s3server` (moto's S3 app, quiet handler), its WSGI app
wrapped in `CountingMiddleware`: every request is counted by kind ("PUT object", "GET
bucket?list-type", …) and `GET /__counts__` answers the counts so far as JSON (that request is
not counted). Benchmark-only; the product's server stays as it is.
"""

from __future__ import annotations

import argparse
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import parse_qsl

COUNTS_PATH = "/__counts__"
# Query parameters that only qualify a listing, not what kind of request it is.
_QUALIFIERS = frozenset(
    {
        "prefix",
        "max-keys",
        "continuation-token",
        "start-after",
        "delimiter",
        "encoding-type",
        "x-id",
    }
)

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def request_kind(environ: dict[str, Any]) -> str:
    """`METHOD bucket|object[?query,keys]` of a path-style S3 request."""
    method = str(environ.get("REQUEST_METHOD", "GET"))
    path = str(environ.get("PATH_INFO", "/")).strip("/")
    target = "object" if "/" in path and path.split("/", 1)[1] else "bucket"
    keys = sorted(
        {k for k, _ in parse_qsl(str(environ.get("QUERY_STRING", "")), keep_blank_values=True)}
        - _QUALIFIERS
    )
    return f"{method} {target}" + (f"?{','.join(keys)}" if keys else "")


class CountingMiddleware:
    """Counts the requests to `app` by `request_kind`; `GET /__counts__` reads the counts."""

    def __init__(self, app: WsgiApp) -> None:
        self.app = app
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == COUNTS_PATH:
            with self._lock:
                body = json.dumps(dict(self.counts), sort_keys=True).encode()
            start_response(
                "200 OK",
                [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
            )
            return [body]
        kind = request_kind(environ)
        with self._lock:
            self.counts[kind] += 1
        return self.app(environ, start_response)


def main(argv: Sequence[str] | None = None) -> None:
    from werkzeug.serving import run_simple

    from infra.s3server import _serving

    parser = argparse.ArgumentParser(prog="python -m tests.perf.s3counting", description=__doc__)
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args(argv)
    app, handler = _serving()
    run_simple(
        args.host, args.port, CountingMiddleware(app), threaded=True, request_handler=handler
    )


if __name__ == "__main__":
    main()
