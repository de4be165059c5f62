"""A vhost of our own on the local RabbitMQ for one test or benchmark run, deleted afterwards."""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from collections.abc import Iterator
from urllib.parse import quote

# A `rabbitmqctl` that hangs (a busy machine, a broker still starting) is killed rather than left
# behind: orphaned CLI processes block every later one ("Distribution failed ... nodistribution").
CLI_TIMEOUT_S = 120


def _rabbitmqctl(*args: str, check: bool = True) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=check, timeout=CLI_TIMEOUT_S)


@contextlib.contextmanager
def local_vhost(prefix: str) -> Iterator[str]:
    """Yield the AMQP URL of a fresh vhost `{prefix}-{random}` (guest has every permission)."""
    vhost = f"{prefix}-{uuid.uuid4().hex[:8]}"
    _rabbitmqctl("add_vhost", vhost)
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@127.0.0.1:5672/{quote(vhost, safe='')}"
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            _rabbitmqctl("delete_vhost", vhost, check=False)
