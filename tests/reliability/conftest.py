"""Fixtures of the fault-injection suite: settings for short faults, and the `slow` switch."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from shared.webhooks.signing import generate_secret
from tests.conftest import _free_port
from tests.reliability.cluster import Cluster, ClusterUnavailable, local_cluster, unavailable_reason

SLOW_ENV = "PDFRELAY_SLOW"
"""Set to 1 to run the long variants marked `slow` as well."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get(SLOW_ENV) == "1":
        return
    skip = pytest.mark.skip(reason=f"long variant: set {SLOW_ENV}=1 to run it")
    for item in items:
        if "slow" in item.keywords and "reliability" in str(item.path):
            item.add_marker(skip)


@pytest.fixture
def fault_settings(make_settings: Any) -> Any:
    """Settings with short waits, so that a fault of a few seconds exercises every retry path."""

    def build(**overrides: Any) -> Any:
        values: dict[str, Any] = {
            "webhook_secret": generate_secret(),
            "webhook_retry_schedule": "200ms,400ms,800ms,1s,2s,3s",
            "webhook_allowed_networks": "127.0.0.0/8",
            "webhook_timeout_s": 5.0,
            "transient_backoff_s": 0.5,
            "extract_delivery_limit": 10,
            "http_port": _free_port(),
            "metrics_port": 0,
            "retention_days": 0,
            # Faults are injected mid-extraction, found by the job's progress events: from the
            # start (by default they begin after PDFRELAY_PROGRESS_AFTER_S).
            "progress_after_s": 0,
        }
        values.update(overrides)
        return make_settings(**values)

    return build


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """A three-node RabbitMQ cluster beside the machine's broker, once per session."""
    if reason := unavailable_reason():
        pytest.skip(f"no local RabbitMQ cluster: {reason}")
    try:
        # Under /tmp, not pytest's folder: the rabbitmq user cannot enter that one.
        with local_cluster() as started:
            yield started
    except ClusterUnavailable as exc:
        pytest.skip(f"the local RabbitMQ cluster did not start: {exc}")
