"""The result-cache key: options that cannot change the result do not change the key."""

from __future__ import annotations

import pytest

from shared.jobs.cache import cache_key, normalise_pages
from shared.models import ExtractOptions

SHA = "a" * 64


def key(tenant: str = "default", sha: str = SHA, **options: object) -> str:
    return cache_key(sha, ExtractOptions.model_validate(options), tenant)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, None),
        ("1-", None),
        ("1-3,7", "1-3,7"),
        ("7,1-3", "1-3,7"),
        ("1,2,3", "1-3"),
        ("2-4,1-3,9-", "1-4,9-"),
        ("3-3", "3"),
        ("5-,1-2,3-4", None),
        ("4-,6", "4-"),
        ("0-2", "0-2"),  # refused by the engine: kept as given
        ("5-3", "5-3"),
    ],
)
def test_pages_are_normalised(spec: str | None, expected: str | None) -> None:
    assert normalise_pages(spec) == expected


def test_equivalent_options_share_a_key() -> None:
    base = key(outputs=["text", "markdown"], pages="1-3,7")
    assert key(outputs=["markdown", "text"], pages="7,1,2-3") == base
    assert key(outputs=["text", "markdown", "text"], pages="1-3, 7") == base
    assert key(outputs=["text", "markdown"], pages="1-3,7", force_refresh=True) == base
    # No page is OCRed without text or Markdown, and only page images are rendered at image_dpi.
    assert key(outputs=["metadata"], ocr="always", ocr_language="deu") == key(
        outputs=["metadata"], ocr="never"
    )
    assert key(outputs=["text"], image_dpi=300) == key(outputs=["text"], image_dpi=72)
    assert key(outputs=["text"], ocr="never", ocr_language="deu") == key(
        outputs=["text"], ocr="never"
    )
    assert key(pages="1-") == key()
    # Seed method aliases resolve to the same options.
    assert key(method="native") == key(outputs=["text", "metadata"], ocr="never")


def test_anything_that_changes_the_result_changes_the_key() -> None:
    base = key(outputs=["text", "page_images"])
    variants = [
        key(outputs=["text"]),
        key(outputs=["text", "page_images"], pages="1"),
        key(outputs=["text", "page_images"], ocr="always"),
        key(outputs=["text", "page_images"], ocr_language="deu"),
        key(outputs=["text", "page_images"], image_dpi=300),
        key(outputs=["text", "page_images"], sha="b" * 64),
        key(outputs=["text", "page_images"], tenant="acme"),
    ]
    assert base not in variants
    assert len(set(variants)) == len(variants)


def test_the_extractor_version_is_part_of_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    before = key()
    monkeypatch.setattr("shared.jobs.cache.EXTRACTOR_VERSION", "next")
    assert key() != before
    assert key(sha=SHA.upper()) == key()


def test_chunking_is_part_of_the_key_only_for_chunks() -> None:
    chunks = key(outputs=["chunks"])
    assert key(outputs=["chunks"], chunking={"max_chars": 500}) != chunks
    assert key(outputs=["chunks"], chunking={"max_tokens": 500}) != chunks
    assert key(outputs=["blocks"], chunking={"max_chars": 500}) == key(outputs=["blocks"])
    # blocks and chunks read the text layer: OCR changes them
    assert key(outputs=["blocks"], ocr="always") != key(outputs=["blocks"], ocr="never")
