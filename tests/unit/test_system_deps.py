"""infra/system-deps.sh: what `make run` and `make test` install, without installing anything."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "infra" / "system-deps.sh"


def _run(
    tmp_path: Path, *args: str, apt: str = "false", chromium: str | None = None
) -> subprocess.CompletedProcess[str]:
    empty = tmp_path / "tessdata-root"
    empty.mkdir(exist_ok=True)
    env = os.environ | {
        "TESSDATA_ROOT": str(empty),
        "TESSERACT": "pdfrelay-no-such-tesseract",
        "APT_GET": apt,
        "CHROMIUM": chromium or str(tmp_path / "no-chromium"),
    }
    return subprocess.run(
        [str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=30, check=False
    )


def test_a_machine_without_tesseract_would_get_ocr_eng_and_deu(tmp_path: Path) -> None:
    done = _run(tmp_path, "--ocr", "--dry-run")
    assert done.returncode == 0
    assert "would install: tesseract-ocr tesseract-ocr-eng tesseract-ocr-deu" in done.stderr
    assert "docker-compose" not in done.stderr  # the test tools are `make test`'s


def test_run_mode_never_fails_when_it_cannot_install(tmp_path: Path) -> None:
    # APT_GET=false: an installer that fails (as a non-root user's or a machine without apt).
    soft = _run(tmp_path, "--ocr", "--soft")
    assert soft.returncode == 0, soft.stderr
    assert "tesseract-ocr-eng" in soft.stderr
    hard = _run(tmp_path)  # `make test`'s mode: a missing package is an error
    assert hard.returncode == 1


def test_make_test_would_get_chromium_for_the_console_tests(tmp_path: Path) -> None:
    done = _run(tmp_path, "--dry-run")
    assert done.returncode == 0
    assert "chromium" in done.stderr
    assert "chromium" not in _run(tmp_path, "--ocr", "--dry-run").stderr  # not the service's
