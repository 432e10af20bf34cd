"""Idle partition groups at rest (no heartbeats, no ticks), and faults that hit them
there:

* every group of an idle log comes to rest on every node (``local.resting`` in
  ``GET /cluster``), and writes still work: a write wakes its group;
* kill -9 of the node that leads most of them while they rest: the survivors elect new
  leaders and take a write to every partition; the killed node restarts, catches up,
  and every group rests again;
* the resting leader of a partition cut off by the network (each node in a namespace
  of its own): the majority elects a leader and takes writes, the isolated node
  acknowledges nothing it could lose; healed, every replica converges.

Every publish goes into a history per partition, which the history checker reads
against every replica's final records."""

from __future__ import annotations

from cluster import acked
from conftest import wait_until
from history import History

PARTITIONS = 6


def resting_everywhere(c, log: str, among=None) -> bool:
    for i in among or c.alive():
        try:
            parts = [p for p in c.status(i)["partitions"] if p["log"] == log]
        except OSError:
            return False
        if len(parts) != PARTITIONS or not all((p.get("local") or {}).get("resting") for p in parts):
            return False
    return True


def leaders(c, log: str, among=None) -> dict[int, int]:
    """Partition -> leading node, by the nodes' own accounts."""
    return {p: c.leader_of(log, p, among=among) for p in range(PARTITIONS)}


def publish_everywhere(c, histories, log: str, through: list[int], tag: str) -> None:
    """One acknowledged publish per partition through the nodes ``through``, retried
    (with a new value) until one is acknowledged."""
    for p in range(PARTITIONS):
        attempt = 0

        def one() -> bool:
            nonlocal attempt
            attempt += 1
            node = through[attempt % len(through)]
            before = acked(histories[p])
            c.publish(histories[p], node, log, p, f"{tag}-{p}-{attempt}".encode(), timeout=10.0)
            return acked(histories[p]) > before

        wait_until(one, timeout=30, what=f"an acknowledged publish to {log}/{p}")


def check_all(c, histories, log: str, among=None) -> None:
    for p in range(PARTITIONS):
        for i, records in c.converged(log, p, among=among).items():
            histories[p].replica(f"node{i}", records)
        report = histories[p].check()
        print(f"{log}/{p}: {report.summary()}")
        assert report.ok, report.summary()


def test_resting_groups_fail_over_after_kill_and_rest_again(make_cluster):
    c = make_cluster(3)
    c.new_log("quiet", partitions=PARTITIONS)
    hs = [History() for _ in range(PARTITIONS)]
    publish_everywhere(c, hs, "quiet", [1, 2, 3], "first")
    wait_until(lambda: resting_everywhere(c, "quiet"), timeout=30, what="every group at rest")

    # A write to a resting group wakes it and is acknowledged; the group rests again.
    publish_everywhere(c, hs, "quiet", [2], "woken")
    wait_until(lambda: resting_everywhere(c, "quiet"), timeout=30, what="rest after a write")

    by_leader: dict[int, int] = {}
    for node in leaders(c, "quiet").values():
        by_leader[node] = by_leader.get(node, 0) + 1
    victim = max(by_leader, key=by_leader.get)
    c.kill(victim)
    for h in hs:
        h.fault_rounds += 1
    survivors = [i for i in c.ids() if i != victim]
    assert all(n != victim for n in leaders(c, "quiet", among=survivors).values())
    publish_everywhere(c, hs, "quiet", survivors, "after-kill")
    check_all(c, hs, "quiet", among=survivors)

    c[victim].start()
    check_all(c, hs, "quiet")
    wait_until(lambda: resting_everywhere(c, "quiet"), timeout=30, what="rest after the restart")


def test_isolated_resting_leader_acknowledges_nothing_it_could_lose(netns3, make_cluster):
    c = make_cluster(3, netns=netns3)
    c.new_log("cut", partitions=PARTITIONS)
    hs = [History() for _ in range(PARTITIONS)]
    try:
        publish_everywhere(c, hs, "cut", [1, 2, 3], "first")
        wait_until(lambda: resting_everywhere(c, "cut"), timeout=30, what="every group at rest")
        isolated = c.leader_of("cut", 0)
        netns3.isolate(isolated)
        for h in hs:
            h.fault_rounds += 1
        majority = [i for i in c.ids() if i != isolated]
        # Writes through the isolated node to partitions it led: never acknowledged
        # while it is cut off (they fail or stay indeterminate).
        led = [
            p["partition"]
            for p in c.status(isolated)["partitions"]
            if p["log"] == "cut" and (p.get("local") or {}).get("state") == "leader"
        ]
        assert 0 in led
        for p in led:
            before = acked(hs[p])
            c.publish(hs[p], isolated, "cut", p, f"minority-{p}".encode(), timeout=3.0)
            assert acked(hs[p]) == before, f"the isolated node acknowledged a write to cut/{p}"
        assert all(n != isolated for n in leaders(c, "cut", among=majority).values())
        publish_everywhere(c, hs, "cut", majority, "majority")
        netns3.heal(isolated)
        check_all(c, hs, "cut")
        wait_until(lambda: resting_everywhere(c, "cut"), timeout=30, what="rest after healing")
    finally:
        for i in c.ids():
            netns3.heal(i)
