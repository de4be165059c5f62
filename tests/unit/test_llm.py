"""The llm methods' pure parts: Retry-After, the request bodies, templates, redaction."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from shared.adapters.llm import KEYLIKE, Pause, request_body, retry_after_s, text_request_body
from shared.jobs.llm import cache_key
from shared.jobs.llm_templates import fill
from shared.jobs.llm_transform import document_text
from shared.models import ExtractionResult, ExtractOptions, PageText


def test_retry_after_takes_seconds_and_http_dates() -> None:
    assert retry_after_s("7") == 7.0
    assert retry_after_s("0.5") == 0.5
    assert retry_after_s(None, 3.0) == 3.0
    assert retry_after_s("soon", 3.0) == 3.0
    assert retry_after_s("-4") == 0.0
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    found = retry_after_s(later)
    assert found is not None
    assert 25 <= found <= 31


def test_the_page_request_is_a_chat_completion_with_a_png_data_url() -> None:
    body = json.loads(request_body("m", "Transcribe.", b"\x89PNG-bytes"))
    assert body["model"] == "m"
    content = body["messages"][0]["content"]
    assert content[0] == {"type": "text", "text": "Transcribe."}
    url = content[1]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == b"\x89PNG-bytes"
    text = json.loads(text_request_body("m", "Be brief.", "the text"))
    assert text["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "the text"},
    ]


async def test_a_pause_holds_every_call_until_it_is_over() -> None:
    pause = Pause()
    await asyncio.wait_for(pause.wait(), 1)  # open
    started = time.monotonic()
    pause.hold_off(0.2)
    pause.hold_off(0.05)  # a shorter one does not shorten it
    assert pause.paused
    await asyncio.wait_for(pause.wait(), 2)
    assert time.monotonic() - started >= 0.19
    assert not pause.paused
    assert pause.pauses == 1


def test_templates_fill_placeholders_and_place_the_text() -> None:
    system, user = fill("Notes for {{ who }} on {{day}}, {{unknown}}.", {"who": "Anna"}, "TEXT")
    assert (system, user) == ("Notes for Anna on {{day}}, {{unknown}}.", "TEXT")
    system, user = fill("Sum up {{n}} points:\n{{text}}", {"n": 3}, "body {{n}}")
    assert system is None
    assert user == "Sum up 3 points:\nbody {{n}}"


def test_template_names_are_plain() -> None:
    assert ExtractOptions(template="Besprechung_v2.de").template == "Besprechung_v2.de"
    for bad in ("../x", "a/b", "", ".hidden", "a..b"):
        with pytest.raises(ValueError, match="template"):
            ExtractOptions(template=bad)


def test_document_text_prefers_the_models_markdown_and_is_bounded() -> None:
    result = ExtractionResult(
        page_count=2,
        pages=[PageText(number=1, text="native", llm="# One"), PageText(number=2, text="two")],
    )
    assert document_text(result) == ("\n--- Seite 1 ---\n# One\n--- Seite 2 ---\ntwo", False)
    big = ExtractionResult(
        page_count=3, pages=[PageText(number=n, text="x" * 250_000) for n in (1, 2, 3)]
    )
    text, cut = document_text(big)
    assert cut
    assert text.count("--- Seite") == 1


def test_keylike_strings_are_masked_and_cache_keys_separate_tenants() -> None:
    masked = KEYLIKE.sub("***", "Incorrect API key provided: sk-proj-ab12****wxyz. See docs.")
    assert masked == "Incorrect API key provided: ***. See docs."
    one = cache_key("a", "ab" * 32, "model", "prompt")
    assert one == cache_key("a", "AB" * 32, "model", "prompt")
    assert one != cache_key("b", "ab" * 32, "model", "prompt")
    assert one != cache_key("a", "ab" * 32, "model", "other prompt")
