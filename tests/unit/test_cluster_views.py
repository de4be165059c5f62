"""The local test cluster counts a node as running only when every node agrees (no broker)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.cluster import Cluster, ClusterUnavailable, Node, View

NAMES = ["rw1@localhost", "rw2@localhost", "rw3@localhost"]


def _cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, views: dict[str, View], alive: set[str]
) -> Cluster:
    monkeypatch.setenv("PDFRELAY_CLUSTER_NAME", "rw")
    cluster = Cluster(tmp_path)
    monkeypatch.setattr(Node, "alive", lambda self: self.name in alive)
    monkeypatch.setattr(Cluster, "view", lambda self, node: views[node.name])
    monkeypatch.setattr(Cluster, "log_tails", lambda self, lines=15: "(logs)")
    return cluster


def test_a_node_back_on_its_own_side_of_a_partition_is_not_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # rw1 came back after a cut without pausing: it sees everyone, the others do not see it.
    views = {
        "rw1@localhost": View("rw1@localhost", NAMES, {}, ""),
        "rw2@localhost": View("rw2@localhost", NAMES[1:], {"rw2@localhost": [NAMES[0]]}, ""),
        "rw3@localhost": View("rw3@localhost", NAMES[1:], {}, ""),
    }
    cluster = _cluster(tmp_path, monkeypatch, views, set(NAMES))
    assert cluster.running() == NAMES[1:]
    problems = cluster.problems()
    assert len(problems) == 2
    assert problems[0].startswith("rw2@localhost sees running")
    with pytest.raises(ClusterUnavailable, match="cluster not whole"):
        cluster.await_whole(within=0)


def test_a_node_not_running_is_a_problem_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    views = {name: View(name, NAMES[:2], {}, "") for name in NAMES}
    cluster = _cluster(tmp_path, monkeypatch, views, set(NAMES[:2]))
    assert cluster.running() == NAMES[:2]
    assert "rw3@localhost: not running" in cluster.problems()
    # Not waited for: a node that is not running does not come back by itself.
    with pytest.raises(ClusterUnavailable, match="rw3@localhost: not running"):
        cluster.await_whole(within=60)


def test_a_whole_cluster_has_no_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    views = {name: View(name, NAMES, {}, "") for name in NAMES}
    cluster = _cluster(tmp_path, monkeypatch, views, set(NAMES))
    assert cluster.running() == NAMES
    assert cluster.problems() == []
    cluster.await_whole(within=0)


def test_restore_restarts_a_node_whose_boot_hangs_and_only_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # rw1 resumed after a heal and hangs in `global_sync`: its app is not running (it sees no
    # one), while the others list it as running (its Mnesia joined them).
    views = {
        "rw1@localhost": View("rw1@localhost", [], {}, ""),
        "rw2@localhost": View("rw2@localhost", NAMES, {}, ""),
        "rw3@localhost": View("rw3@localhost", NAMES, {}, ""),
    }
    cluster = _cluster(tmp_path, monkeypatch, views, set(NAMES))
    monkeypatch.setattr(Cluster, "heal", lambda self: None)
    events: list[str] = []

    def restarted(node: Node) -> None:
        events.append(f"start {node.name}")
        views[node.name] = View(node.name, NAMES, {}, "")

    monkeypatch.setattr(Node, "kill", lambda self: events.append(f"kill {self.name}"))
    monkeypatch.setattr(Node, "start", restarted)
    assert cluster.restore(grace=0) == ["rw1@localhost"]
    assert events == ["kill rw1@localhost", "start rw1@localhost"]
    assert cluster.problems() == []


def test_restore_leaves_a_whole_cluster_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    views = {name: View(name, NAMES, {}, "") for name in NAMES}
    cluster = _cluster(tmp_path, monkeypatch, views, set(NAMES))
    monkeypatch.setattr(Cluster, "heal", lambda self: None)
    monkeypatch.setattr(Node, "kill", lambda self: pytest.fail("killed a healthy node"))
    assert cluster.restore(grace=0) == []
