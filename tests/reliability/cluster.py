"""A local three-node RabbitMQ cluster for the cluster scenarios, beside the machine's own node.

The nodes `rc1@localhost` … `rc3@localhost` are started from the machine's RabbitMQ installation
(`rabbitmq-server -detached`), each with its own name, ports, data, log, pid, feature-flags,
plugins and config files, in folders of the `rabbitmq` user (the server runs as it, and shares
its Erlang cookie with the machine's node through the same HOME). They are joined with
`stop_app` / `join_cluster` / `start_app`, and killed and removed at the end. The machine's own
node (`rabbit@localhost`, port 5672) is never addressed: every `rabbitmqctl` call here names an
`rcN@localhost` node (`Node.ctl` refuses anything else).

Each node's outgoing distribution connections leave from an address of its own
(127.0.P.N, `inet_dist_connect_options`), so that `iptables` on loopback can cut one node off
from the others (`Cluster.isolate`) while `rabbitmqctl` (from 127.0.0.1) still reaches it.

    PDFRELAY_CLUSTER_PORT=5781       AMQP port of rc1 (rc2, rc3: the next ones)
    PDFRELAY_CLUSTER_DIST_PORT=25781 Erlang distribution port of rc1 (rc2, rc3: the next ones)
    PDFRELAY_CLUSTER_NAME=rc         node names rc1@localhost …: another prefix and other ports
                                     let a second cluster (the soak's) run beside the tests'
    PDFRELAY_CLUSTER_KEEP=1          keep the nodes' folders (logs, data) after the teardown

Whether the cluster is whole is asked of every node (`Cluster.problems`): a node that came back
on its own side of a partition lists all three as running while the others do not list it.
`Cluster.restore` mends what a scenario left behind before the next one starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

RABBIT_BIN = Path(os.environ.get("PDFRELAY_RABBITMQ_BIN", "/usr/lib/rabbitmq/bin"))
RABBIT_USER = "rabbitmq"
PORT_ENV = "PDFRELAY_CLUSTER_PORT"
DIST_PORT_ENV = "PDFRELAY_CLUSTER_DIST_PORT"
NAME_ENV = "PDFRELAY_CLUSTER_NAME"
KEEP_ENV = "PDFRELAY_CLUSTER_KEEP"
NODE_NAME = re.compile(r"^(?!rabbit\d*@)[a-z]+\d+@localhost$")
STARTUP_TIMEOUT_S = 120
CTL_TIMEOUT_S = 180
RESTORE_GRACE_S = 60
"""How long a node paused or cut off may take to come back by itself before it is restarted."""


class ClusterUnavailable(Exception):
    """Why a local cluster cannot be started on this machine (the tests skip with it)."""


def unavailable_reason() -> str | None:
    """None when a local cluster can be started here; else why not."""
    if not (RABBIT_BIN / "rabbitmq-server").exists() or shutil.which("rabbitmqctl") is None:
        return f"RabbitMQ is not installed ({RABBIT_BIN}/rabbitmq-server missing)"
    try:
        pwd.getpwnam(RABBIT_USER)
    except KeyError:
        return f"no {RABBIT_USER!r} user (the server runs as it)"
    if os.geteuid() not in (0, pwd.getpwnam(RABBIT_USER).pw_uid):
        return f"starting RabbitMQ nodes needs root or the {RABBIT_USER!r} user"
    return None


def _as_rabbit(argv: list[str], env: dict[str, str]) -> list[str]:
    """The command line that runs `argv` as the rabbitmq user with exactly `env` added."""
    home = pwd.getpwnam(RABBIT_USER).pw_dir
    assignments = [f"{k}={v}" for k, v in {"HOME": home, **env}.items()]
    prefix = ["runuser", "-u", RABBIT_USER, "--"] if os.geteuid() == 0 else []
    return [*prefix, "env", *assignments, *argv]


@dataclass(frozen=True)
class View:
    """One node's `cluster_status`: the nodes it sees running and the partitions it knows of."""

    node: str
    running: list[str]
    partitions: dict[str, list[str]]
    error: str


@dataclass
class Node:
    prefix: str
    index: int
    port: int
    dist_port: int
    base: Path

    @property
    def name(self) -> str:
        return f"{self.prefix}{self.index}@localhost"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def source_ip(self) -> str:
        """Where this node's outgoing distribution connections come from."""
        return f"127.0.{1 + self.port % 250}.{self.index}"

    @property
    def pid_file(self) -> Path:
        return self.base / "rabbit.pid"

    def env(self) -> dict[str, str]:
        return {
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_PID_FILE": str(self.pid_file),
            "RABBITMQ_FEATURE_FLAGS_FILE": str(self.base / "feature_flags"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.base / "advanced.config"),
        }

    def prepare(self) -> None:
        """The node's folders and files, owned by the rabbitmq user."""
        for sub in ("mnesia", "log"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        (self.base / "enabled_plugins").write_text("[].\n")
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\n"
            # A node cut off from the majority stops serving (and its clients move on); it
            # rejoins by itself once it sees the others again.
            "cluster_partition_handling = pause_minority\n"
            "net_ticktime = 10\n"
            "loopback_users.guest = true\n"
        )
        ip = ",".join(self.source_ip.split("."))
        (self.base / "advanced.config").write_text(
            f"[{{kernel, [{{inet_dist_connect_options, [{{ip, {{{ip}}}}}]}}]}}].\n"
        )
        user = pwd.getpwnam(RABBIT_USER)
        for path in [self.base, *self.base.rglob("*")]:
            os.chown(path, user.pw_uid, user.pw_gid)

    def ctl(self, *args: str, timeout: float = CTL_TIMEOUT_S, check: bool = True) -> str:
        """`rabbitmqctl -n rcN@localhost …` (never the machine's own node); its output."""
        assert NODE_NAME.match(self.name), self.name
        cmd = _as_rabbit([str(RABBIT_BIN / "rabbitmqctl"), "-n", self.name, *args], {})
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise ClusterUnavailable(
                f"rabbitmqctl -n {self.name} {' '.join(args)}: {proc.stdout}{proc.stderr}"
            )
        return proc.stdout

    def launch(self) -> None:
        """`rabbitmq-server -detached` (returns before the node is up)."""
        cmd = _as_rabbit([str(RABBIT_BIN / "rabbitmq-server"), "-detached"], self.env())
        subprocess.run(cmd, capture_output=True, cwd=self.base, timeout=60, check=True)

    def start(self) -> None:
        """`rabbitmq-server -detached`, then `await_startup` (bounded)."""
        self.launch()
        self.await_startup()

    def await_startup(self) -> None:
        """Until the node has written its pid file (it may still be booting) and runs its apps."""
        timeout = str(STARTUP_TIMEOUT_S)
        self.ctl("wait", str(self.pid_file), "--timeout", timeout, timeout=STARTUP_TIMEOUT_S)
        self.ctl("await_startup", "--timeout", timeout, timeout=STARTUP_TIMEOUT_S)

    def pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def alive(self) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        # A killed node may linger as a zombie of whoever reaps it (not us): not alive.
        stat = _state(Path(f"/proc/{pid}"))
        return bool(stat) and stat.rpartition(")")[2].split()[0] != "Z"

    def await_paused(self, within: float = 90) -> None:
        """Until this node has stopped serving on its own (`pause_minority`), bounded."""
        deadline = time.monotonic() + within
        # One `rabbitmqctl eval` per round (about a second): the loop paces itself.
        while self.ctl("eval", "rabbit:is_running().", check=False).strip() != "false":
            if time.monotonic() > deadline:
                raise ClusterUnavailable(f"{self.name} still serving {within:.0f} s after a cut")

    def kill(self) -> None:
        """SIGKILL to the node's Erlang VM (and its port programs), then wait until it is gone."""
        pid = self.pid()
        if pid is None:
            return
        for child in _children(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait_gone(pid)
        self.pid_file.unlink(missing_ok=True)

    def stop(self) -> None:
        """A clean stop of this node (`rabbitmqctl -n rcN@localhost stop`), pid file waited on."""
        self.ctl("stop", "--idempotent", str(self.pid_file))

    def rss_kb(self) -> int:
        pid = self.pid()
        if pid is None:
            return 0
        from tests.reliability.harness import rss_kb

        return rss_kb(pid)


def _children(pid: int) -> list[int]:
    from tests.reliability.harness import children

    return children(pid)


def _wait_gone(pid: int, within: float = 30) -> None:
    """Until `pid` (not our child) has exited: its pidfd becomes readable."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        ready, _, _ = select.select([fd], [], [], within)
    finally:
        os.close(fd)
    if not ready:
        raise ClusterUnavailable(f"process {pid} did not exit after SIGKILL")


class Cluster:
    """Three joined nodes; `urls` is what pdfrelay gets as its broker list."""

    def __init__(self, base: Path, size: int = 3) -> None:
        port = int(os.environ.get(PORT_ENV, "5781"))
        dist = int(os.environ.get(DIST_PORT_ENV, "25781"))
        self.base = base
        prefix = os.environ.get(NAME_ENV, "rc")
        self.nodes = [
            Node(prefix, i + 1, port + i, dist + i, base / f"{prefix}{i + 1}") for i in range(size)
        ]
        self._rules: list[list[str]] = []

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    @property
    def amqp_urls(self) -> str:
        """The nodes' addresses, comma-separated (PDFRELAY_AMQP_URL)."""
        return ",".join(self.urls)

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def start(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        user = pwd.getpwnam(RABBIT_USER)
        os.chown(self.base, user.pw_uid, user.pw_gid)
        for node in self.nodes:
            if node.alive():
                raise ClusterUnavailable(f"{node.name} is already running")
            node.prepare()
        for node in self.nodes:  # side by side: each boot takes a while
            node.launch()
        for node in self.nodes:
            node.await_startup()
        first = self.nodes[0]
        for node in self.nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", first.name)
            node.ctl("start_app")
            node.await_startup()
        self.await_whole()

    def teardown(self) -> None:
        self.heal()
        for node in self.nodes:
            node.kill()
        if os.environ.get(KEEP_ENV) != "1":
            shutil.rmtree(self.base, ignore_errors=True)

    def running(self) -> list[str]:
        """The nodes that every live node reports as running (one node's view can be wrong).

        A node that came back on its own side of a partition still lists every node as
        running; the others do not list it. Only what all of them agree on counts.
        """
        views = [self.view(node) for node in self.nodes if node.alive()]
        if not views:
            return []
        agreed = set.intersection(*(set(v.running) for v in views))
        return [n.name for n in self.nodes if n.name in agreed]

    def view(self, node: Node) -> View:
        """`node`'s own `cluster_status`: whom it sees running, and the partitions it knows of."""
        out = node.ctl("cluster_status", "--formatter", "json", check=False)
        try:
            status = json.loads(out)
        except ValueError:
            return View(node.name, [], {}, out.strip()[-300:])
        return View(
            node.name, status.get("running_nodes", []), status.get("partitions", {}) or {}, ""
        )

    def problems(self) -> list[str]:
        """Why the cluster is not whole now: a node not running, not seen, or partitioned."""
        found = []
        for node in self.nodes:
            if not node.alive():
                found.append(f"{node.name}: not running")
                continue
            view = self.view(node)
            missing = [n.name for n in self.nodes if n.name not in view.running]
            if view.error or missing or view.partitions:
                found.append(
                    f"{node.name} sees running {view.running}, partitions {view.partitions}"
                    + (f" ({view.error})" if view.error else "")
                )
        return found

    def await_whole(self, within: float = STARTUP_TIMEOUT_S) -> None:
        """Until every node runs and sees all the others running with no partition (bounded).

        Raises `ClusterUnavailable` with each node's view and the tail of its log otherwise.
        """
        deadline = time.monotonic() + within
        # Each round asks every node through `rabbitmqctl` (about a second a call): it paces
        # itself. A node that is not running does not come back by itself: no point waiting.
        while problems := self.problems():
            if time.monotonic() > deadline or not all(n.alive() for n in self.nodes):
                raise ClusterUnavailable(
                    f"cluster not whole ({within:.0f} s): {'; '.join(problems)}\n"
                    + self.log_tails()
                )

    def restore(self, grace: float = RESTORE_GRACE_S) -> list[str]:
        """Make the cluster whole again; the names of the nodes that had to be restarted.

        Heals any cut and starts a node that is not running, then gives the nodes `grace`
        seconds to find each other. A node still not whole after that is SIGKILLed and started
        again, the recovery RabbitMQ documents for a partition (restart the nodes of the side
        that lost), and the one that works for a node whose boot hangs: after a cut is healed,
        a paused node's restart can block for good in `rabbit_node_monitor:global_sync/0`
        (Erlang's `global` waiting on a peer that abandoned a connection attempt made during
        the cut), still running its VM, listed as running by the others, serving nothing.
        """
        self.heal()
        for node in self.nodes:
            if not node.alive():
                node.pid_file.unlink(missing_ok=True)
                node.start()
        try:
            self.await_whole(within=grace)
            return []
        except ClusterUnavailable:
            pass
        counts = {n.name: 0 for n in self.nodes}
        serving = {}
        for node in self.nodes:
            view = self.view(node)
            # A node whose own app is not running sees no node running, itself included.
            serving[node.name] = node.name in view.running
            for name in view.running:
                if name in counts:
                    counts[name] += 1
        majority = len(self.nodes) // 2 + 1
        restarted = []
        for node in self.nodes:
            if not serving[node.name] or counts[node.name] < majority:
                node.kill()
                node.start()
                restarted.append(node.name)
        self.await_whole()
        return restarted

    def log_tails(self, lines: int = 15) -> str:
        """The last lines of every node's log (why a node did not come back)."""
        parts = []
        for node in self.nodes:
            log = node.base / "log" / f"{node.name}.log"
            try:
                tail = log.read_text(errors="replace").splitlines()[-lines:]
            except OSError as exc:
                tail = [f"(no log: {exc})"]
            parts.append(f"--- {log}\n" + "\n".join(tail))
        return "\n".join(parts)

    def leader(self, queue: str, vhost: str = "/") -> Node:
        """The node that leads quorum queue `queue`."""
        for node in self.nodes:
            if not node.alive():
                continue
            out = node.ctl(
                "list_queues", "-p", vhost, "name", "leader", "--no-table-headers", check=False
            )
            for line in out.splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[0] == queue:
                    return self.node(parts[1])
        raise ClusterUnavailable(f"no leader found for {queue}")

    def await_members(self, queue: str, vhost: str = "/") -> None:
        """Until every node is back in `queue`'s raft group with a leader elected."""
        for node in self.nodes:
            node.await_startup()
        self.leader(queue, vhost)

    # --- partitions --------------------------------------------------------------------------

    @staticmethod
    def partition_reason() -> str | None:
        """None when `iptables` on loopback works here; else why a partition cannot be made."""
        if shutil.which("iptables") is None:
            return "iptables is not installed (apt-get install iptables)"
        probe = subprocess.run(["iptables", "-L", "INPUT", "-n"], capture_output=True, text=True)
        if probe.returncode != 0:
            return f"iptables does not work here: {probe.stderr.strip()}"
        return None

    def isolate(self, node: Node) -> None:
        """Drop every distribution packet between `node` and the other nodes (loopback)."""
        others = [n for n in self.nodes if n is not node]
        ports = ",".join(str(n.dist_port) for n in others)
        sources = ",".join(n.source_ip for n in others)
        rules = [
            ["-s", node.source_ip, "-p", "tcp", "-m", "multiport", "--dports", ports],
            ["-s", sources, "-p", "tcp", "--dport", str(node.dist_port)],
            ["-d", sources, "-p", "tcp", "--sport", str(node.dist_port)],
            ["-d", node.source_ip, "-p", "tcp", "-m", "multiport", "--sports", ports],
        ]
        for rule in rules:
            spec = ["INPUT", "-i", "lo", *rule, "-j", "DROP"]
            subprocess.run(["iptables", "-I", *spec], check=True, capture_output=True)
            self._rules.append(spec)

    def heal(self) -> None:
        while self._rules:
            spec = self._rules.pop()
            subprocess.run(["iptables", "-D", *spec], check=False, capture_output=True)


@contextlib.contextmanager
def local_cluster(base: Path | None = None) -> Iterator[Cluster]:
    """A started three-node cluster, torn down (killed, folders removed) afterwards."""
    if reason := unavailable_reason():
        raise ClusterUnavailable(reason)
    base = base or Path(tempfile.mkdtemp(prefix="pdfrelay-cluster-"))
    cluster = Cluster(base)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.teardown()


def _state(proc: Path) -> str:
    try:
        return (proc / "stat").read_text()
    except OSError:
        return ""
