"""The front door never loads MuPDF: only the extraction workers need it (issue 20)."""

from __future__ import annotations

import subprocess
import sys

FRONT = ["handlers.ingress", "handlers.webhooks", "handlers.jobs_api", "shared.jobs.cancel"]


def test_ingress_and_webhooks_do_not_import_mupdf() -> None:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in FRONT)
        + "print(sorted(m for m in ('pymupdf', 'fitz', 'shared.extraction.pool')"
        + " if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
