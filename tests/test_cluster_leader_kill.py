"""kill -9 of a partition's leader during a stream of acknowledged publishes, in rounds:
a new leader is elected, the producers (who go through every node, as Rog's clients
would) carry on, the killed node restarts and catches up, and at the end the history
checker finds every acknowledged record exactly once, at its offset, on every node."""

from __future__ import annotations

import time

from cluster import acked
from history import History

ROUNDS = 3
PRODUCERS = 4


def test_leader_kill_loses_nothing_acknowledged(make_cluster):
    c = make_cluster(3)
    c.new_log("stream")
    h = History()
    with c.producers(h, "stream", PRODUCERS, timeout=40.0):
        for _ in range(ROUNDS):
            time.sleep(1.0)
            leader = c.leader_of("stream", 0)
            c.kill(leader)
            h.fault_rounds += 1
            # The others elect a leader and take writes without the killed node.
            c.leader_of("stream", 0, among=[i for i in c.ids() if i != leader])
            time.sleep(1.0)
            c[leader].start()
        time.sleep(1.0)
    report = c.check(h, "stream")
    assert acked(h) > 0
    assert report.ok, report.summary()
