"""The `template` option: a named template (`{PDFRELAY_LLM_TEMPLATES_DIR}/{name}.md`) filled
from the job's `context`, with which a language model transforms the document's text."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

from shared.errors import ErrorCode, PermanentError
from shared.settings import Settings

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
MAX_TEMPLATE_BYTES = 256 * 1024
MAX_TEXT_CHARS = 400_000
"""Document text sent with a template at most (cut at a page, with a warning in the result)."""


def _read(path: Path) -> str:
    with path.open("rb") as fh:
        data = fh.read(MAX_TEMPLATE_BYTES + 1)
    if len(data) > MAX_TEMPLATE_BYTES:
        raise PermanentError(f"template {path.stem!r} is too large", ErrorCode.INVALID_OPTIONS)
    return data.decode("utf-8", errors="replace")


async def load_template(settings: Settings, name: str) -> str:
    """The template's text.

    Raises:
        PermanentError: LLM_NOT_CONFIGURED without a model endpoint or templates folder;
            INVALID_OPTIONS for a name with no template.
    """
    if settings.llm_base_url is None or settings.llm_templates_dir is None:
        raise PermanentError(
            "templates need a model endpoint and a templates folder, and this service has "
            "none: the operator sets PDFRELAY_LLM_BASE_URL and PDFRELAY_LLM_TEMPLATES_DIR",
            ErrorCode.LLM_NOT_CONFIGURED,
        )
    folder = Path(settings.llm_templates_dir)
    path = folder / f"{name}.md"
    # The option's pattern allows no separator; the check keeps it so whatever the pattern.
    if path.parent != folder or not await asyncio.to_thread(path.is_file):
        raise PermanentError(f"there is no template {name!r}", ErrorCode.INVALID_OPTIONS)
    return await asyncio.to_thread(_read, path)


def fill(template: str, context: dict[str, object] | None, text: str) -> tuple[str | None, str]:
    """(system, user) messages: `{{key}}` from `context` (other values as JSON); `{{text}}` is
    the document's text, else the filled template is the instruction and the text the message."""
    values = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (context or {}).items()}
    has_text = False

    def one(match: re.Match[str]) -> str:
        nonlocal has_text
        key = match.group(1)
        if key == "text":
            has_text = True
            return match.group(0)
        return values.get(key, match.group(0))

    filled = PLACEHOLDER.sub(one, template)
    if has_text:
        return None, PLACEHOLDER.sub(lambda m: text if m.group(1) == "text" else m.group(0), filled)
    return filled, text
