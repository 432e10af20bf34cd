"""kill -9 of a partition's leader during a stream of acknowledged publishes, in rounds:
a new leader is elected, the producers (who go through every node, as Rog's clients
would) carry on, the killed node restarts and catches up, and at the end the history
checker finds every acknowledged record exactly once, at its offset, on every node."""

from __future__ import annotations

import threading
import time

from history import History

ROUNDS = 3
PRODUCERS = 4


def test_leader_kill_loses_nothing_acknowledged(make_cluster):
    c = make_cluster(3)
    assert c[1].http.post("/logs", {"name": "stream", "partitions": 1}).status == 201
    c.wait_listed("stream")
    h = History()
    stop = threading.Event()

    def producer(k: int) -> None:
        seq = 0
        while not stop.is_set():
            alive = c.alive()
            if not alive:
                time.sleep(0.05)
                continue
            node = alive[(k + seq) % len(alive)]
            c.publish(h, node, "stream", 0, f"p{k}-{seq}".encode())
            seq += 1

    threads = [threading.Thread(target=producer, args=(k,), daemon=True) for k in range(PRODUCERS)]
    for t in threads:
        t.start()
    try:
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
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    final = c.converged("stream", 0, timeout=60)
    for i, records in final.items():
        h.replica(f"node{i}", records)
    report = h.check()
    print(report.summary())
    acked = sum(1 for p in h.publishes.values() if p.outcome == "ok")
    assert acked > 0
    assert report.ok, report.summary()
