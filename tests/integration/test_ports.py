"""Handlers side by side on one host: each its own metrics port; a taken port is one line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from shared.settings import METRICS_PORTS, Settings

pytestmark = pytest.mark.integration

PDFRELAY = str(Path(sys.executable).with_name("pdfrelay"))


def test_each_handler_has_its_own_default_metrics_port() -> None:
    settings = Settings(metrics_port=None)
    ports = [settings.metrics_port_for(name) for name in ("extract", "webhooks", "object-drop")]
    assert len(set(ports)) == 3
    assert ports == [METRICS_PORTS[n] for n in ("extract", "webhooks", "object-drop")]
    assert Settings(metrics_port=0).metrics_port_for("webhooks") == 0  # explicit wins


def test_a_taken_metrics_port_is_one_line_and_exit_code_2(amqp_url: str, s3_endpoint: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PDFRELAY_")} | {
            "PDFRELAY_AMQP_URL": amqp_url,
            "PDFRELAY_S3_ENDPOINT": s3_endpoint,
            "PDFRELAY_S3_BUCKET": f"t-{uuid.uuid4().hex[:10]}",
            "PDFRELAY_NAMESPACE": f"port{uuid.uuid4().hex[:8]}",
            "PDFRELAY_METRICS_PORT": str(port),
        }
        done = subprocess.run(
            [PDFRELAY, "run", "object-drop"], env=env, capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    [line] = done.stderr.strip().splitlines()
    assert f"127.0.0.1:{port}" in line
    assert "PDFRELAY_METRICS_PORT" in line
