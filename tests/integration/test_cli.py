"""A newcomer's path: `pdfrelay dev` with its embedded S3 server, then `pdfrelay submit --wait`."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import _free_port, wait_for_output
from tests.factories import make_pdf

pytestmark = pytest.mark.integration

PDFRELAY = str(Path(sys.executable).with_name("pdfrelay"))


@contextlib.contextmanager
def running_dev(amqp_url: str, tmp_path: Path, **settings: str) -> Iterator[str]:
    """`pdfrelay dev` as a newcomer runs it, with its own namespace; yields its base URL."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PDFRELAY_")} | {
        "PDFRELAY_AMQP_URL": amqp_url,
        "PDFRELAY_HTTP_PORT": str(port),
        "PDFRELAY_NAMESPACE": f"cli{uuid.uuid4().hex[:8]}",
        "PDFRELAY_EXTRACT_WORKERS": "2",
        **{f"PDFRELAY_{k.upper()}": v for k, v in settings.items()},
    }
    log = tmp_path / "dev.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([PDFRELAY, "dev"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        # The process logs this line once its HTTP site is bound.
        wait_for_output(log, proc, "ingress listening on")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()


@pytest.fixture
def dev_server(amqp_url: str, tmp_path: Path) -> Iterator[str]:
    with running_dev(amqp_url, tmp_path) as url:
        yield url


def test_dev_then_submit_wait_prints_the_text(dev_server: str, tmp_path: Path) -> None:
    pdf = tmp_path / "hello.pdf"
    pdf.write_bytes(make_pdf(["hello from the newcomer"]))
    out = subprocess.run(
        [PDFRELAY, "submit", str(pdf), "--wait", "--url", dev_server],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "hello from the newcomer" in out.stdout

    bad = tmp_path / "bad.pdf"
    bad.write_text("<html>no</html>" * 100)
    out = subprocess.run(
        [PDFRELAY, "submit", str(bad), "--url", dev_server],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 1
    assert "NOT_A_PDF" in out.stderr
    assert "Traceback" not in out.stderr


def test_submit_explains_an_unreachable_service(tmp_path: Path) -> None:
    pdf = tmp_path / "a.pdf"
    pdf.write_bytes(make_pdf(["a"]))
    out = subprocess.run(
        [PDFRELAY, "submit", str(pdf), "--url", f"http://127.0.0.1:{_free_port()}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert "cannot reach pdfrelay" in out.stderr
    assert "Traceback" not in out.stderr


def test_submit_several_files_and_a_folder_as_one_batch(dev_server: str, tmp_path: Path) -> None:
    folder = tmp_path / "reports"
    folder.mkdir()
    for name in ("one", "two"):
        (folder / f"{name}.pdf").write_bytes(make_pdf([f"text of {name}"]))
    (folder / "skipped.txt").write_text("not taken: not a .pdf")
    bad = tmp_path / "bad.pdf"
    bad.write_text("<html>no</html>" * 100)
    out = subprocess.run(
        [PDFRELAY, "submit", str(folder), str(bad), "--wait", "--url", dev_server],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 1, out.stderr
    assert "text of one" in out.stdout
    assert "text of two" in out.stdout
    assert f"{bad}: NOT_A_PDF" in out.stderr
    assert "2 accepted, 1 refused" in out.stderr
    assert "Traceback" not in out.stderr
