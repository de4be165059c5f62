"""Only the extract handler's process loads the engine (MuPDF, the layout model): the others
import their own handlers and nothing of it (issue 20: memory)."""

from __future__ import annotations

import subprocess
import sys

ENGINE = ("pymupdf", "fitz", "onnxruntime")


def test_ingress_webhooks_object_drop_and_llm_do_not_load_the_engine() -> None:
    code = (
        "import sys\n"
        "import infra.cli\n"
        "from infra.app import HANDLERS\n"
        "for name in ('ingress', 'webhooks', 'object-drop', 'llm'):\n"
        "    HANDLERS[name].serve\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {ENGINE!r}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_the_extract_handler_resolves_its_serve() -> None:
    from infra.app import HANDLERS

    assert callable(HANDLERS["extract"].serve)
    assert HANDLERS["extract"].needs_pool
