"""Network partitions between real processes, each node in a network namespace of its
own, links cut with iptables inside the namespace:

* the partition's leader isolated from the other two (clients still reach it, as a
  client on the minority side would): the majority elects a leader and takes writes;
  the old leader acknowledges nothing it could lose; healed, it steps down and every
  replica converges on one order;
* a follower isolated, then healed: it catches up.

Checked by the history checker over every publish of three producers that go through
every node, the isolated one included."""

from __future__ import annotations

import time

from cluster import acked
from conftest import wait_until
from history import History


def test_isolated_leader_and_follower_lose_nothing_and_converge(netns3, make_cluster):
    c = make_cluster(3, netns=netns3)
    c.new_log("np")
    h = History()
    try:
        with c.producers(h, "np", 3, nodes=c.ids, timeout=3.0):
            time.sleep(1.0)
            leader = c.leader_of("np", 0)
            netns3.isolate(leader)
            h.fault_rounds += 1
            majority = [i for i in c.ids() if i != leader]
            assert c.leader_of("np", 0, among=majority) != leader
            before = acked(h)
            wait_until(lambda: acked(h) > before + 20, timeout=30, what="writes on the majority side")
            time.sleep(1.0)
            netns3.heal(leader)

            time.sleep(1.0)
            follower = next(i for i in c.ids() if i != c.leader_of("np", 0))
            netns3.isolate(follower)
            h.fault_rounds += 1
            before = acked(h)
            wait_until(lambda: acked(h) > before + 20, timeout=30, what="writes without the follower")
            netns3.heal(follower)
            time.sleep(1.0)
    finally:
        for i in c.ids():
            netns3.heal(i)
    report = c.check(h, "np")
    assert report.ok, report.summary()
