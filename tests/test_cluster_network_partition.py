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

import threading
import time

from conftest import wait_until
from history import History


def test_isolated_leader_and_follower_lose_nothing_and_converge(netns3, make_cluster):
    c = make_cluster(3, netns=netns3)
    assert c[1].http.post("/logs", {"name": "np", "partitions": 1}).status == 201
    c.wait_listed("np")
    h = History()
    stop = threading.Event()

    def producer(k: int) -> None:
        seq = 0
        while not stop.is_set():
            node = c.ids()[(k + seq) % 3]
            c.publish(h, node, "np", 0, f"p{k}-{seq}".encode(), timeout=3.0)
            seq += 1

    def acked() -> int:
        return sum(1 for p in h.publishes.values() if p.outcome == "ok")

    threads = [threading.Thread(target=producer, args=(k,), daemon=True) for k in range(3)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        leader = c.leader_of("np", 0)
        netns3.isolate(leader)
        h.fault_rounds += 1
        majority = [i for i in c.ids() if i != leader]
        new_leader = c.leader_of("np", 0, among=majority)
        assert new_leader != leader
        before = acked()
        wait_until(lambda: acked() > before + 20, timeout=30, what="writes on the majority side")
        time.sleep(1.0)
        netns3.heal(leader)

        time.sleep(1.0)
        follower = next(i for i in c.ids() if i != c.leader_of("np", 0))
        netns3.isolate(follower)
        h.fault_rounds += 1
        before = acked()
        wait_until(lambda: acked() > before + 20, timeout=30, what="writes without the follower")
        netns3.heal(follower)
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        for i in c.ids():
            netns3.heal(i)
    for i, records in c.converged("np", 0, timeout=60).items():
        h.replica(f"node{i}", records)
    report = h.check()
    print(report.summary())
    assert report.ok, report.summary()
