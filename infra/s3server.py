"""The S3 API server for development and tests: moto's S3 application, served on loopback.

`pdfrelay dev` runs it in a thread (`embedded_s3`); the tests and benchmarks run it as a process
(`python -m infra.s3server [-p PORT]`, default 9000). It is moto's S3 app on werkzeug's threaded
server, without moto's all-services front (`python -m moto.server`), which looks up the service
of every request by listing moto's package folder under a global lock, and without a log line
per request: a third of moto's CPU per request, on the same cores as everything else (README
"Performance").
"""

from __future__ import annotations

import argparse
import json
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl


def _serving() -> tuple[Any, Any]:
    """moto's S3 app and a request handler that keeps its header fix but logs nothing."""
    try:
        from moto.moto_server.werkzeug_app import MotoRequestHandler, create_backend_app
    except ImportError as exc:
        raise SystemExit(
            "the embedded S3 server needs moto: pip install 'pdfrelay[dev]', "
            "or set PDFRELAY_S3_ENDPOINT"
        ) from exc

    class QuietHandler(MotoRequestHandler):
        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            """Not a line per request (errors are still logged)."""

    return ConditionalWrites(create_backend_app("s3")), QuietHandler


class ConditionalWrites:
    """A WSGI middleware that makes moto's conditional PutObject atomic.

    moto checks `If-Match` / `If-None-Match` and then stores, in two steps, on a threaded
    server: two writers that saw one version could both pass the check. S3 and MinIO check and
    store at once, and the job records rely on it (shared/jobs/lifecycle.py: a job ends once),
    so conditional PUTs go through one at a time here. Only they wait: every write of a record
    after its creation is conditional, and other objects are never written so.
    """

    def __init__(self, app: Any) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        conditional = environ.get("REQUEST_METHOD") == "PUT" and (
            "HTTP_IF_MATCH" in environ or "HTTP_IF_NONE_MATCH" in environ
        )
        if not conditional:
            return self._app(environ, start_response)
        with self._lock:
            # The body is read and the object stored within the call; the answer is built.
            return list(self._app(environ, start_response))


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


def request_kind(method: str, path: str, query: str) -> str:
    """`METHOD bucket|object[?query,keys]` of a path-style S3 request ("GET bucket?list-type")."""
    path = path.strip("/")
    target = "object" if "/" in path and path.split("/", 1)[1] else "bucket"
    keys = sorted({k for k, _ in parse_qsl(query, keep_blank_values=True)} - _QUALIFIERS)
    return f"{method} {target}" + (f"?{','.join(keys)}" if keys else "")


class CountingApp:
    """A WSGI middleware counting the S3 requests it passes on.

    `GET /__counts__` answers the counts so far as JSON (`total`, `by_method`, `by_kind` as
    `request_kind` names them, `requests`: "METHOD /bucket/key" lines); `DELETE /__counts__` sets
    them back to zero; neither is counted. A test and benchmark aid (tests/integration/
    test_job_io.py, tests/perf/bench_peer.py), enabled by `--count`.
    """

    def __init__(self, app: Any) -> None:
        self._app = app
        self._lock = threading.Lock()
        self._requests: list[str] = []
        self._kinds: Counter[str] = Counter()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        path = str(environ.get("PATH_INFO", ""))
        method = str(environ.get("REQUEST_METHOD", "GET"))
        query = str(environ.get("QUERY_STRING", ""))
        if path == COUNTS_PATH:
            with self._lock:
                if method == "DELETE":
                    self._requests.clear()
                    self._kinds.clear()
                body = json.dumps(
                    {
                        "total": len(self._requests),
                        "by_method": Counter(r.split(" ", 1)[0] for r in self._requests),
                        "by_kind": self._kinds,
                        "requests": self._requests,
                    }
                ).encode()
            start_response(
                "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
            )
            return [body]
        with self._lock:
            self._requests.append(f"{method} {path}{'?' + query if query else ''}")
            self._kinds[request_kind(method, path, query)] += 1
        return self._app(environ, start_response)


@contextmanager
def embedded_s3(host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run the S3 server in a thread; yields its endpoint URL."""
    from werkzeug.serving import make_server

    app, handler = _serving()
    server = make_server(host, port, app, threaded=True, request_handler=handler)
    thread = threading.Thread(target=server.serve_forever, name="s3-server", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()


DEFAULT_PORT = 9000
"""The port `python -m infra.s3server` listens on without `-p` (MinIO's)."""


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m infra.s3server [-H HOST] [-p PORT]`: the S3 server in the foreground."""
    from werkzeug.serving import run_simple

    parser = argparse.ArgumentParser(prog="python -m infra.s3server", description=__doc__)
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=DEFAULT_PORT, help="default %(default)s")
    parser.add_argument(
        "--count", action="store_true", help=f"count requests; GET {COUNTS_PATH} tells them"
    )
    args = parser.parse_args(argv)
    app, handler = _serving()
    if args.count:
        app = CountingApp(app)
    print(f"S3 at http://{args.host}:{args.port} (PDFRELAY_S3_ENDPOINT)", flush=True)
    run_simple(args.host, args.port, app, threaded=True, request_handler=handler)


if __name__ == "__main__":
    main()
