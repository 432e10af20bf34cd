"""A node whose disk was lost comes back with its old id on an empty data directory: it
must not vote under that id again (it could help elect two leaders in one term, or a
leader that lacks what it had acknowledged). It refuses to start, naming the way out;
the operator removes the id and starts the node under a new one with ``--join``; its
replicas are rebuilt on it from the others, and nothing acknowledged is lost."""

from __future__ import annotations

import shutil
import time

import pytest

from cluster import acked
from conftest import wait_until
from history import History


def test_a_wiped_node_cannot_come_back_under_its_old_id(make_cluster):
    c = make_cluster(3)
    c.new_log("stream")
    h = History()
    with c.producers(h, "stream", 2, nodes=lambda: [1, 2], timeout=40.0):
        time.sleep(1.5)
        # Every node records itself in the metadata once up.
        wait_until(lambda: all(m["registered"] for m in c.status(1)["members"]), 30, "nodes registered")
        c[3].stop_clean()
        shutil.rmtree(c[3].data_dir)
        c[3].data_dir.mkdir()
        with pytest.raises(AssertionError, match="lost its disk"):
            c[3].start()
        c[3].expect_dead = True
        h.fault_rounds += 1
        r = c[1].http.delete("/cluster/nodes/3")
        assert r.status == 200, r
        c.join(5, through=2)

        def rebuilt() -> bool:
            p = c.placement(1, "stream")
            return sorted(p["replicas"]) == [1, 2, 5] and p["moving_to"] is None

        wait_until(rebuilt, 90, "node 3's replica rebuilt on node 5")
        time.sleep(1.0)
    report = c.check(h, "stream")
    assert acked(h) > 0
    assert report.ok, report.summary()
    assert set(c.converged("stream", 0)) == {1, 2, 5}
