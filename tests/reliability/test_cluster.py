"""Scenarios 10-13: a three-node RabbitMQ cluster, two ingress and two extract processes.

Every handler is a `pdfrelay run …` subprocess given the three nodes' addresses
(`PDFRELAY_AMQP_URL`, comma-separated). The cluster (tests/reliability/cluster.py) is started
once per session; each scenario leaves it with its three nodes running.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from shared.settings import Settings
from tests.conftest import _free_port
from tests.reliability.cluster import Cluster, Node
from tests.reliability.harness import LONG, HandlerProcess, Service, document, open_service
from tests.reliability.ledger import Ledger, Receiver

pytestmark = pytest.mark.integration

CLIENT_PAUSE_S = 0.2
"""A refused client's pause before it retries (the service asks for `Retry-After`)."""
CLUSTER_LEADER_KILL = (
    "10-cluster-leader-kill",
    "Cluster: the node leading the extract queue SIGKILLed mid-batch, then started again",
)
CLUSTER_ROLLING_RESTART = (
    "11-cluster-rolling-restart",
    "Cluster: each node stopped and started in turn while two clients upload",
)
CLUSTER_SHARED_WORK = (
    "12-cluster-shared-work",
    "Cluster: two ingress and two extract processes share a batch, no fault",
)
CLUSTER_PARTITION = (
    "13-cluster-partition",
    "Cluster: the extract queue's leader cut off from the others (iptables on loopback), "
    "then healed",
)
PACE_S = 0.25
"""A client's pause between two uploads: a steady load, not as many jobs as the machine takes."""


@dataclass
class ClusterService:
    """Two ingress, two extract and one webhooks process on the cluster, and the ledger."""

    svc: Service
    cluster: Cluster
    ledger: Ledger
    receiver: Receiver
    ingress: list[HandlerProcess]
    extract: list[HandlerProcess]
    uploading: bool = True
    numbers: itertools.count[int] = field(default_factory=itertools.count)

    async def upload(self, i: int, pages: int = 2) -> int:
        pdf, words = document(i, pages)
        base = self.svc_urls[i % len(self.svc_urls)]
        up = await self.ledger.upload(pdf, words, receiver=self.receiver, base_url=base)
        return up.status

    svc_urls: list[str] = field(default_factory=list)

    async def client(self) -> None:
        """Uploads, small and long documents, until `uploading` is cleared."""
        while self.uploading:
            i = next(self.numbers)
            status = await self.upload(i, LONG if i % 5 == 0 else 2)
            await asyncio.sleep(PACE_S if status == 202 else CLIENT_PAUSE_S)

    async def acknowledged(self, n: int, within: float = 120) -> None:
        async with asyncio.timeout(within), self.ledger.changed:
            await self.ledger.changed.wait_for(lambda: self.ledger.counts.acknowledged >= n)

    async def finish(self) -> None:
        """Check the ledger, and that both ingress and both extract processes did work."""
        await self.ledger.settle(180)
        accepted = [p.text.count(" accepted (door") for p in self.ingress]
        completed = [p.text.count(" completed") for p in self.extract]
        self.ledger.figures.update(
            jobs_accepted_per_ingress=" / ".join(map(str, accepted)),
            jobs_completed_per_extract=" / ".join(map(str, completed)),
        )
        await self.ledger.check(within=180)
        assert all(accepted), f"an ingress took no upload: {accepted}"
        assert all(completed), f"an extract process completed no job: {completed}"
        for proc in (*self.ingress, *self.extract):
            assert proc.proc.returncode is None, proc.text[-3000:]
        # Every node's own view, not one node's: the scenario leaves the cluster whole.
        await _in_thread(self.cluster.await_whole)


@asynccontextmanager
async def cluster_service(
    cluster: Cluster, fault_settings: Any, tmp_path: Path, scenario: str, title: str
) -> AsyncIterator[ClusterService]:
    # Whatever an earlier scenario left (a node it stopped and then failed before starting
    # again, a cut it did not heal) is this scenario's starting point no more.
    await _in_thread(cluster.restore)
    settings: Settings = fault_settings(
        amqp_url=cluster.amqp_urls, extract_workers=1, quorum_group_size=len(cluster.nodes)
    )
    async with open_service(settings, tmp_path / "logs") as svc:
        ports = [_free_port() for _ in range(2)]
        ingress = [
            await svc.spawn("ingress", settings.model_copy(update={"http_port": port}))
            for port in ports
        ]
        extract = [await svc.spawn("extract") for _ in range(2)]
        await svc.spawn("webhooks")
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        async with Ledger(scenario, title, settings, svc.http, urls[0]) as ledger:
            rec = await ledger.receiver("hook")
            yield ClusterService(svc, cluster, ledger, rec, ingress, extract, svc_urls=urls)


async def _in_thread(fn: Any, *args: Any) -> Any:
    """`rabbitmqctl` and friends block: off the event loop."""
    return await asyncio.to_thread(fn, *args)


async def _run_with_load(cs: ClusterService, fault: Any, clients: int = 2) -> None:
    """`clients` upload loops around `fault()`: some jobs before, during and after it."""
    tasks = [asyncio.create_task(cs.client()) for _ in range(clients)]
    try:
        await cs.acknowledged(6)
        await fault()
        await cs.acknowledged(cs.ledger.counts.acknowledged + 6)
    finally:
        cs.uploading = False
        await asyncio.gather(*tasks)


@pytest.mark.timeout(420)
async def test_extract_queue_leader_killed_mid_batch(
    cluster: Cluster, fault_settings: Any, tmp_path: Path
) -> None:
    async with cluster_service(cluster, fault_settings, tmp_path, *CLUSTER_LEADER_KILL) as cs:
        queue = cs.svc.ctx.topology.extract

        async def fault() -> None:
            seen = await cs.ledger.next_progress(0, min_pages=LONG, within=120)
            assert seen >= 0
            leader = await _in_thread(cluster.leader, queue)
            async with cs.ledger.fault(f"{leader.name} (extract queue leader) SIGKILL → started"):
                await _in_thread(leader.kill)
                await cs.acknowledged(cs.ledger.counts.acknowledged + 4)
                new_leader = await _in_thread(cluster.leader, queue)
                assert new_leader is not leader
                await _in_thread(leader.start)
            cs.ledger.figures.update(killed=leader.name, new_leader=new_leader.name)

        await _run_with_load(cs, fault)
        await cs.finish()


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_rolling_restart_while_uploading(
    cluster: Cluster, fault_settings: Any, tmp_path: Path
) -> None:
    async with cluster_service(cluster, fault_settings, tmp_path, *CLUSTER_ROLLING_RESTART) as cs:

        async def fault() -> None:
            for node in cluster.nodes:
                async with cs.ledger.fault(f"{node.name} stopped → started"):
                    await _in_thread(node.stop)
                    await cs.acknowledged(cs.ledger.counts.acknowledged + 2)
                    await _in_thread(node.start)
                await _in_thread(cluster.await_members, cs.svc.ctx.topology.extract)

        await _run_with_load(cs, fault)
        await cs.finish()


@pytest.mark.timeout(420)
async def test_two_ingress_two_extract_share_the_work(
    cluster: Cluster, fault_settings: Any, tmp_path: Path
) -> None:
    async with cluster_service(cluster, fault_settings, tmp_path, *CLUSTER_SHARED_WORK) as cs:
        docs = [document(i, LONG if i % 4 == 0 else 2) for i in range(24)]
        await asyncio.gather(
            *(
                cs.ledger.upload(
                    pdf, w, receiver=cs.receiver, base_url=cs.svc_urls[i % len(cs.svc_urls)]
                )
                for i, (pdf, w) in enumerate(docs)
            )
        )
        assert cs.ledger.counts.acknowledged == len(docs)
        await cs.finish()
        assert cs.ledger.counts.completed == len(docs)


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_node_cut_off_and_healed(
    cluster: Cluster, fault_settings: Any, tmp_path: Path
) -> None:
    if reason := Cluster.partition_reason():
        pytest.skip(f"no partition on this machine: {reason}")
    async with cluster_service(cluster, fault_settings, tmp_path, *CLUSTER_PARTITION) as cs:
        queue = cs.svc.ctx.topology.extract

        async def fault() -> None:
            leader: Node = await _in_thread(cluster.leader, queue)
            others = [n for n in cluster.nodes if n is not leader]
            async with cs.ledger.fault(f"{leader.name} cut off (iptables) → healed"):
                cluster.isolate(leader)
                try:
                    # The majority sees it gone (net_ticktime 10 s) and elects a new leader.
                    await _in_thread(_wait_until_gone, others[0], leader.name)
                    await cs.acknowledged(cs.ledger.counts.acknowledged + 4)
                    # Healed only once every node has seen the cut and the node cut off has
                    # paused, so that every run heals the same state: healed sooner, what
                    # follows depends on whose tick ran out first (the node cut off notices
                    # seconds after the others, or not at all before the heal).
                    await _in_thread(_wait_until_cut, cluster, leader)
                finally:
                    cluster.heal()
                # Back by itself, or (RabbitMQ 3.10's boot hang after a heal, see
                # `Cluster.restore`) SIGKILLed and started: which one is in the figures.
                restarted = await _in_thread(cluster.restore)
                await _in_thread(cluster.await_members, queue)
            cs.ledger.figures.update(
                cut_off=leader.name, restarted_after_heal=", ".join(restarted) or "none"
            )

        await _run_with_load(cs, fault)
        await cs.finish()


def _wait_until_gone(observer: Node, name: str) -> None:
    """Until `observer` has lost its connection to `name` (an Erlang `nodedown`, at most 90 s)."""
    wait = (
        f"erlang:monitor_node('{name}', true), "
        f"receive {{nodedown, '{name}'}} -> ok after 90000 -> timeout end."
    )
    assert observer.ctl("eval", wait, timeout=120).strip() == "ok"


def _wait_until_cut(cluster: Cluster, node: Node) -> None:
    """Until `node` and every other node have seen each other go, and `node` has paused."""
    for other in cluster.nodes:
        if other is not node:
            _wait_until_gone(other, node.name)
            _wait_until_gone(node, other.name)
    node.await_paused()
