"""Pure parts of the core: options, settings, topology, the upload spool."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.adapters.topology import topology_for
from shared.errors import EmptyFile, ErrorCode, FileTooLarge, NotAPdf, http_status
from shared.intake.uploads import spool
from shared.models import ExtractOptions
from shared.settings import Settings


def test_options_defaults_and_validation() -> None:
    assert ExtractOptions().outputs == ("text", "metadata")
    opts = ExtractOptions(outputs=("markdown", "text", "markdown"), pages=" 1-3, 7 ")
    assert opts.outputs == ("markdown", "text")
    assert opts.pages == "1-3,7"
    for bad in ({"outputs": ["nope"]}, {"pages": "a-b"}, {"ocr": "sometimes"}, {"image_dpi": 5000}):
        with pytest.raises(ValidationError):
            ExtractOptions.model_validate(bad)
    with pytest.raises(ValidationError):
        ExtractOptions.model_validate({"unknown": 1})


def test_seed_method_aliases_map_onto_options() -> None:
    assert ExtractOptions(method="tesseract_ocr").ocr == "always"
    both = ExtractOptions(method="preview_and_native")
    assert set(both.outputs) >= {"text", "page_images"}
    assert both.method is None
    with pytest.raises(ValidationError):
        ExtractOptions(method="magic")


def test_settings_parse_api_keys_and_networks() -> None:
    s = Settings(api_keys="acme:k1, globex:k2", webhook_allowed_networks="127.0.0.0/8,::1/128")
    assert s.tenant_keys() == {"k1": "acme", "k2": "globex"}
    assert [str(n) for n in s.webhook_allowed_networks] == ["127.0.0.0/8", "::1/128"]
    assert "k1" not in repr(s)
    with pytest.raises(ValueError, match="tenant:key"):
        Settings(api_keys="no-colon").tenant_keys()


def test_extract_queue_is_a_bounded_quorum_queue_with_dead_lettering() -> None:
    topo = topology_for(Settings(namespace="x", max_queue_length=50, extract_delivery_limit=4))
    queues = {q.name: q for q in topo.queues()}
    args = queues["x.extract"].arguments
    assert args["x-queue-type"] == "quorum"
    assert args["x-delivery-limit"] == 4
    assert args["x-overflow"] == "reject-publish"
    assert args["x-max-length"] == 49
    assert args["x-dead-letter-exchange"] == "x.dlx"
    assert args["x-dead-letter-strategy"] == "at-least-once"
    assert "x.extract.dead" in queues
    assert {e.name for e in topo.exchanges()} >= {"x.events", "x.requests", "x.s3-events"}


def test_error_codes_map_to_http_statuses() -> None:
    assert http_status(ErrorCode.NOT_A_PDF) == 415
    assert http_status(ErrorCode.FILE_TOO_LARGE) == 413
    assert http_status(ErrorCode.QUEUE_FULL) == 503
    assert http_status(ErrorCode.PDF_DAMAGED) == 500


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for p in parts:
        yield p


async def test_spool_checks_magic_size_and_emptiness(tmp_path: Path) -> None:
    ok = await spool(_chunks(b"%PDF-1.7\n", b"x" * 100), 1000, str(tmp_path))
    assert ok.size == 109
    assert Path(ok.path).read_bytes().startswith(b"%PDF-")
    with pytest.raises(FileTooLarge):
        await spool(_chunks(b"%PDF-1.7\n", b"x" * 2000), 1000, str(tmp_path))
    with pytest.raises(NotAPdf):
        await spool(_chunks(b"GIF89a" + b"x" * 2000), 10_000, str(tmp_path))
    with pytest.raises(EmptyFile):
        await spool(_chunks(), 1000, str(tmp_path))
    # Refused uploads leave no file behind.
    assert [p.name for p in tmp_path.iterdir()] == [Path(ok.path).name]
