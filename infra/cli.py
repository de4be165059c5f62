"""The `pdfrelay` command: dev, run <handler>, submit, jobs, cancel, sweep, dlq, schema."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from urllib.parse import urlsplit

from pydantic import BaseModel, SecretStr

from infra import client, dlq, sweep
from infra.app import HANDLERS, install_signal_handlers, run_handlers
from infra.s3server import embedded_s3
from shared.adapters.tessdata import ocr_languages
from shared.errors import StartupError
from shared.models import ExtractRequest
from shared.obs.logs import configure_logging, resolve_format
from shared.settings import Settings
from shared.webhooks.dispatch import dispatcher_secrets
from shared.webhooks.signing import generate_secret


def _settings() -> Settings:
    return Settings()


def ocr_banner(settings: Settings) -> str:
    """Whether this machine's workers can OCR, and which languages (the start banner's line)."""
    languages = ocr_languages(settings.tessdata_dir)
    if languages:
        return f"OCR available, languages: {', '.join(languages)}"
    return (
        "OCR NOT available (no Tesseract language data): `ocr: auto` jobs keep the text layer "
        "with a warning, `ocr: always` fails; install tesseract-ocr tesseract-ocr-eng "
        "tesseract-ocr-deu (`make system-deps`) or set PDFRELAY_TESSDATA_DIR"
    )


def llm_banner(settings: Settings) -> str:
    """The llm methods' endpoint and model, or that they are off (never the key)."""
    if settings.llm_base_url is None:
        return "llm methods off (set PDFRELAY_LLM_BASE_URL to an OpenAI-compatible endpoint)"
    url = urlsplit(settings.llm_base_url)
    host = url.hostname or "?"
    where = f"{url.scheme}://{host}{f':{url.port}' if url.port else ''}{url.path}"
    return (
        f"llm methods via {where}, model {settings.llm_model}, "
        f"{settings.llm_concurrency} calls at once"
    )


async def _run(names: list[str], settings: Settings, endpoint: str) -> None:
    stop = asyncio.Event()
    install_signal_handlers(stop)
    await run_handlers(names, settings, endpoint, stop)


def cmd_dev(args: argparse.Namespace) -> int:
    settings = _settings()
    if not settings.webhook_secrets():
        # A throwaway secret for this run, shown once so a developer can verify signatures.
        secret = generate_secret()
        settings = settings.model_copy(update={"webhook_secret": SecretStr(secret)})
        print(
            "pdfrelay dev: generated the webhook signing secret of this run "
            f"(set PDFRELAY_WEBHOOK_SECRET to keep one): {secret}",
            flush=True,
        )
    if settings.s3_endpoint:
        endpoint_cm = None
        endpoint = settings.s3_endpoint
    else:
        endpoint_cm = embedded_s3()
        endpoint = endpoint_cm.__enter__()
    try:
        print(f"pdfrelay dev: HTTP on http://{settings.http_host}:{settings.http_port}", flush=True)
        print(f"pdfrelay dev: S3 at {endpoint} (bucket {settings.s3_bucket})", flush=True)
        print(f"pdfrelay dev: {settings.extract_workers} extraction workers", flush=True)
        print(f"pdfrelay dev: {ocr_banner(settings)}", flush=True)
        print(f"pdfrelay dev: {llm_banner(settings)}", flush=True)
        asyncio.run(_run(list(HANDLERS), settings, endpoint))
    except StartupError as exc:
        print(exc.message, file=sys.stderr)
        return 2
    finally:
        if endpoint_cm is not None:
            endpoint_cm.__exit__(None, None, None)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    settings = _settings()
    if args.poll:
        settings = settings.model_copy(update={"object_drop_poll_s": args.poll})
    if args.handler == "webhooks":
        try:
            dispatcher_secrets(settings.webhook_secrets())
        except ValueError as exc:
            print(
                f"`pdfrelay run webhooks` needs PDFRELAY_WEBHOOK_SECRET: {exc} (a Standard "
                "Webhooks secret, whsec_ followed by base64; several, space-separated, "
                "while rotating)",
                file=sys.stderr,
            )
            return 2
    if not settings.s3_endpoint:
        print("PDFRELAY_S3_ENDPOINT is required for `pdfrelay run`", file=sys.stderr)
        return 2
    if args.handler == "extract":
        logging.getLogger("pdfrelay").info("%s", ocr_banner(settings))
    try:
        asyncio.run(_run([args.handler], settings, settings.s3_endpoint))
    except StartupError as exc:
        print(exc.message, file=sys.stderr)
        return 2
    return 0


SCHEMAS = ("extract-request", "document", "chunk")


def _schema_model(name: str) -> type[BaseModel]:
    # The document models live beside the engine: imported only for this command.
    from shared.extraction.document import ChunkModel, DocumentModel

    models: dict[str, type[BaseModel]] = {
        "extract-request": ExtractRequest,
        "document": DocumentModel,
        "chunk": ChunkModel,
    }
    return models[name]


def cmd_schema(args: argparse.Namespace) -> int:
    print(json.dumps(_schema_model(args.name).model_json_schema(by_alias=True), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pdfrelay", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="every handler in one process, embedded S3 when unset")
    dev.set_defaults(func=cmd_dev)

    run = sub.add_parser("run", help="one handler per process")
    run.add_argument("handler", choices=sorted(HANDLERS))
    run.add_argument(
        "--poll",
        type=float,
        metavar="SECONDS",
        help="object-drop: also list inbox/ this often (S3 servers without notifications)",
    )
    run.set_defaults(func=cmd_run)

    client.add_parsers(sub)  # submit, jobs, cancel
    sweep.add_parser(sub)

    schema = sub.add_parser("schema", help="print the JSON schema of a public message")
    schema.add_argument("name", choices=sorted(SCHEMAS))
    schema.set_defaults(func=cmd_schema)

    dlq.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # JSON lines for deployed handlers (`run`), text for people; PDFRELAY_LOG_FORMAT decides.
    try:
        fmt = resolve_format(
            os.environ.get("PDFRELAY_LOG_FORMAT"), "json" if args.command == "run" else "text"
        )
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    configure_logging(fmt, logging.INFO)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
