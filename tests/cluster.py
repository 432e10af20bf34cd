"""A cluster of real `chariot serve` processes on 127.0.0.1 for the replication tests.

Each node is a :class:`conftest.ChariotServer` with ``--node-id``, ``--cluster-addr``
and the same ``--peers`` list; the inter-node ports are chosen free before the start
(the other ports are picked by the servers). With a :class:`netns.Netns`, each node runs
in a network namespace of its own, so that its links can really be cut. ``status(i)`` is the ``raft`` part of node
``i``'s ``GET /cluster``; ``leader_of(log, p)`` the node that leads a partition's group
by its own account, with the term no other node exceeds.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time

from chariot_client import ExtError, ProtocolError

# Wire codes (docs/protocol.md) of a publish that definitely stored nothing, and of one
# whose outcome is unknown.
DEFINITE_FAILURES = {12, 13}  # not_leader (before proposing), shutting_down
INDETERMINATE = {18}


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Cluster:
    def __init__(self, pool, n: int, extra: list[str], netns=None, env=None, together=False):
        """``netns``: a :class:`netns.Netns` to run each node in a namespace of its own;
        ``together``: start the nodes at the same time (else one after another)."""
        if netns is None:
            addrs = [f"127.0.0.1:{p}" for p in free_ports(n)]
        else:
            addrs = [f"{netns.addr(i)}:7979" for i in range(1, n + 1)]
        peers = ",".join(f"{i}={a}" for i, a in enumerate(addrs, start=1))
        self.pool, self.extra, self.env = pool, extra, env
        self.addrs = dict(enumerate(addrs, start=1))
        self.nodes = {}
        for i, addr in enumerate(addrs, start=1):
            placement = {"env": env}
            if netns is not None:
                placement |= {"prefix": netns.prefix(i), "bind_host": netns.addr(i)}
            self.nodes[i] = pool.prepare(
                "--node-id", str(i), "--cluster-addr", addr, "--peers", peers, *extra, **placement
            )
            if not together:
                self.nodes[i].start()
        if together:
            errors = []

            def start(node):
                try:
                    node.start()
                except BaseException as e:  # reported below, with the others
                    errors.append(e)

            threads = [threading.Thread(target=start, args=(node,)) for node in self.nodes.values()]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if errors:
                raise errors[0]

    def join(self, i: int, through: int = 1):
        """Starts node ``i`` on a new data directory, joining through node ``through``
        (``--join``, on 127.0.0.1)."""
        addr = f"127.0.0.1:{free_ports(1)[0]}"
        self.addrs[i] = addr
        self.nodes[i] = self.pool.new(
            "--node-id", str(i), "--cluster-addr", addr, "--join", self.addrs[through], *self.extra, env=self.env
        )
        return self.nodes[i]

    def placement(self, i: int, log: str, partition: int = 0) -> dict:
        """The partition's entry in node ``i``'s status."""
        for p in self.status(i)["partitions"]:
            if p["log"] == log and p["partition"] == partition:
                return p
        raise AssertionError(f"node {i} has no {log}/{partition}")

    def __getitem__(self, i: int):
        return self.nodes[i]

    def ids(self) -> list[int]:
        return sorted(self.nodes)

    def alive(self) -> list[int]:
        return [i for i in self.ids() if self.nodes[i].alive()]

    def status(self, i: int) -> dict:
        return self.nodes[i].http.get("/cluster").json()["raft"]

    def leader_of(self, log: str, partition: int, among=None, timeout: float = 20.0) -> int:
        """The node leading the partition's group (polled: an election may be under way)."""
        deadline = time.monotonic() + timeout
        while True:
            best = None
            for i in among or self.alive():
                try:
                    st = self.status(i)
                except OSError:
                    continue
                for p in st["partitions"]:
                    local = p.get("local")
                    if p["log"] == log and p["partition"] == partition and local:
                        if local["state"] == "leader" and (best is None or local["term"] > best[1]):
                            best = (i, local["term"])
            if best is not None:
                return best[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"no leader for {log}/{partition} within {timeout}s")
            time.sleep(0.05)

    def wait_listed(self, log: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        for i in self.alive():
            while log not in [l["name"] for l in self.nodes[i].http.get("/logs").json()]:
                if time.monotonic() > deadline:
                    raise AssertionError(f"node {i} does not list {log} within {timeout}s")
                time.sleep(0.05)

    def converged(self, log: str, partition: int, timeout: float = 30.0, among=None) -> dict[int, list]:
        """Waits until every live node (or those of ``among``) holds the same records of
        the partition (followers apply what is committed a moment after the leader);
        returns each node's."""
        deadline = time.monotonic() + timeout
        while True:
            got = {}
            for i in among or self.alive():
                with self.nodes[i].connect() as c:
                    got[i] = [(r.offset, r.value) for r in c.read_all(log, partition)]
            if len({tuple(v) for v in got.values()}) == 1:
                return got
            if time.monotonic() > deadline:
                sizes = {i: len(v) for i, v in got.items()}
                raise AssertionError(f"replicas of {log}/{partition} differ after {timeout}s: {sizes}")
            time.sleep(0.1)

    def kill(self, i: int) -> None:
        self.nodes[i].stop(signal.SIGKILL)

    def publish(self, history, i: int, log: str, partition: int, value: bytes, timeout: float = 5.0) -> None:
        """One publish through node ``i``'s native port, recorded in ``history``; a
        publish unanswered within ``timeout`` (a paused node) is indeterminate."""
        pid = history.invoke(value)
        try:
            with self.nodes[i].connect(timeout=timeout) as c:
                base = c.publish_records(log, partition, [value])
        except ExtError as e:
            if e.code in DEFINITE_FAILURES:
                history.fail(pid)
            else:
                history.info(pid)
            return
        except (OSError, ProtocolError):  # a cut connection, a timeout: unknown
            history.info(pid)
            return
        history.ok(pid, base)

    def new_log(self, name: str, partitions: int = 1) -> None:
        """Creates a log through node 1 and waits until every live node lists it."""
        r = self.nodes[1].http.post("/logs", {"name": name, "partitions": partitions})
        assert r.status == 201, r
        self.wait_listed(name)

    @contextlib.contextmanager
    def producers(self, history, log: str, n: int, nodes=None, timeout: float = 5.0):
        """Runs ``n`` producer threads for the ``with`` block, each publishing unique
        values to partition 0 of ``log`` through the nodes ``nodes()`` names (by default
        the live ones) in turn, recorded in ``history``; stops and joins them on exit."""
        stop = threading.Event()

        def produce(k: int) -> None:
            seq = 0
            while not stop.is_set():
                targets = nodes() if nodes else self.alive()
                if not targets:
                    time.sleep(0.05)
                    continue
                node = targets[(k + seq) % len(targets)]
                self.publish(history, node, log, 0, f"p{k}-{seq}".encode(), timeout=timeout)
                seq += 1

        threads = [threading.Thread(target=produce, args=(k,), daemon=True) for k in range(n)]
        for t in threads:
            t.start()
        try:
            yield
        finally:
            stop.set()
            for t in threads:
                t.join(60)

    def check(self, history, log: str, timeout: float = 60.0):
        """Waits for the replicas of partition 0 to agree, gives each to the history
        checker, prints its figures and returns its report."""
        for i, records in self.converged(log, 0, timeout=timeout).items():
            history.replica(f"node{i}", records)
        report = history.check()
        print(report.summary())
        return report


def acked(history) -> int:
    """Acknowledged publishes in ``history`` so far."""
    return sum(1 for p in list(history.publishes.values()) if p.outcome == "ok")
