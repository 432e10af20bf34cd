"""Membership change under load: a 4th node joins (``--join``), node 1 is removed with
``chariot cluster remove`` while producers write through nodes 2 and 3, its replicas move
to node 4 (added as a learner, caught up, then a voter), leadership is moved onto node 4
with ``chariot cluster transfer-leader``, and at the end the history checker finds every
acknowledged record exactly once on every remaining replica."""

from __future__ import annotations

import json
import subprocess
import time

from cluster import acked
from conftest import BINARY, wait_until
from history import History

PRODUCERS = 3


def cli(node, *args: str) -> dict:
    """``chariot --json ARGS`` against node's HTTP API; its JSON answer."""
    out = subprocess.run(
        [str(BINARY), "--json", "--http", f"127.0.0.1:{node.http_port}", *args],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_add_a_node_remove_another_under_load(make_cluster):
    c = make_cluster(3)
    c.new_log("stream")
    c.new_log("pair", partitions=2)
    h = History()
    with c.producers(h, "stream", PRODUCERS, nodes=lambda: [i for i in (2, 3) if c[i].alive()], timeout=40.0):
        time.sleep(1.0)
        c.join(4)
        wait_until(lambda: any(m["id"] == 4 for m in c.status(2)["members"]), 30, "node 4 is a member")
        # Holding no replica, node 4 does not serve the logs yet.
        assert [p for p in c.status(4)["partitions"] if "local" in p] == []
        time.sleep(1.0)
        removed = cli(c[2], "cluster", "remove", "1")
        assert removed["removed"] == 1 and removed["moves"] == 3, removed
        h.fault_rounds += 1

        def moved() -> bool:
            for i in (2, 3, 4):
                for log, parts in (("stream", 1), ("pair", 2)):
                    for p in range(parts):
                        pl = c.placement(i, log, p)
                        if sorted(pl["replicas"]) != [2, 3, 4] or pl["moving_to"] is not None:
                            return False
            return True

        wait_until(moved, 90, "every replica moved off node 1")
        wait_until(lambda: all(m["id"] != 1 for m in c.status(2)["members"]), 30, "node 1 left the metadata group")
        wait_until(lambda: "stream" in [l["name"] for l in c[4].http.get("/logs").json()], 30, "node 4 serves stream")
        h.fault_rounds += 1
        time.sleep(1.0)
        moved_leader = cli(c[3], "cluster", "transfer-leader", "stream", "--to", "4")
        assert moved_leader["to"] == 4, moved_leader
        wait_until(lambda: c.leader_of("stream", 0, among=[2, 3, 4]) == 4, 30, "node 4 leads stream")
        h.fault_rounds += 1
        time.sleep(1.0)
    # The removed node is stopped by the operator; its id is never taken again.
    c[1].stop_clean()
    c[1].expect_dead = True
    refused = subprocess.run(
        [str(BINARY), "--http", f"127.0.0.1:{c[2].http_port}", "cluster", "add", f"1={c.addrs[1]}"],
        capture_output=True, text=True, timeout=60,
    )
    assert refused.returncode == 1 and "never taken again" in refused.stderr, refused.stderr
    balanced = cli(c[3], "cluster", "rebalance")
    assert balanced["moves"] == [], balanced
    status = cli(c[4], "cluster", "status")
    assert sorted(m["id"] for m in status["members"]) == [2, 3, 4]
    assert status["removed_nodes"] == [1]
    report = c.check(h, "stream")
    assert acked(h) > 0
    assert report.ok, report.summary()
    for p in range(2):
        got = c.converged("pair", p)
        assert set(got) == {2, 3, 4}
