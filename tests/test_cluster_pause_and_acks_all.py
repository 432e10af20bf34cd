"""A paused node (SIGSTOP) and `acks=all` on a 3-node cluster of real processes.

* SIGSTOP of a partition's leader: the other two elect a leader and take writes; the
  paused node, continued, steps down and catches up; nothing acknowledged is lost.
* `acks=all` (`POST /insert`, `?acks=all`) with a replica stopped: the publish is
  refused with `not_all_replicas` (stored on a quorum, never reported as on all), and
  once the replica is back it succeeds again; a quorum publish never waits for it.
"""

from __future__ import annotations

import os
import signal
import time

from chariot_client import ACKS_ALL, ACKS_QUORUM, ExtError, Record, encode_batch
from cluster import acked
from conftest import wait_until
from history import History


def test_a_paused_leader_is_replaced_and_catches_up(make_cluster):
    c = make_cluster(3)
    c.new_log("paused")
    h = History()
    paused: set[int] = set()
    try:
        with c.producers(h, "paused", 3, nodes=lambda: [i for i in c.ids() if i not in paused]):
            for _ in range(2):
                time.sleep(0.7)
                leader = c.leader_of("paused", 0)
                paused.add(leader)
                os.kill(c[leader].proc.pid, signal.SIGSTOP)
                h.fault_rounds += 1
                others = [i for i in c.ids() if i != leader]
                c.leader_of("paused", 0, among=others)
                before = acked(h)
                # Writes go on without the paused node.
                wait_until(lambda: acked(h) > before + 20, timeout=20,
                           what="acknowledged writes while a node is paused")
                os.kill(c[leader].proc.pid, signal.SIGCONT)
                paused.discard(leader)
            time.sleep(0.5)
    finally:
        for i in c.ids():
            os.kill(c[i].proc.pid, signal.SIGCONT)
    report = c.check(h, "paused")
    assert report.ok, report.summary()


def test_acks_all_with_a_replica_down_is_refused_never_acknowledged_falsely(make_cluster):
    c = make_cluster(3)
    assert c[1].http.post("/insert", {"message": "first"}).status == 200
    leader = c.leader_of("default", 0)
    down = next(i for i in c.ids() if i != leader)
    c.kill(down)
    c[down].expect_dead = True
    up = [i for i in c.ids() if i != down]
    # Quorum publishes go on at once.
    path = c[leader].http.records_path("default", 0)
    r = c[up[0]].http.post(path, [{"value": "quorum"}])
    assert r.status == 200, r
    # acks=all: refused, naming what happened; the record is stored on the quorum.
    r = c[up[1]].http.post("/insert", {"message": "needs-all"})
    assert r.status == 503, r
    assert r.json()["code"] == "not_all_replicas", r.json()
    r = c[up[0]].http.post(path + "?acks=all", [{"value": "needs-all-2"}])
    assert r.status == 503 and r.json()["code"] == "not_all_replicas", r
    # The native protocol's publish with acks (0x16): wire code 19.
    with c[up[1]].connect(timeout=30) as conn:
        try:
            conn.publish_records_acks("default", 0, [b"needs-all-3"], ACKS_ALL)
            raise AssertionError("acks=all acknowledged with a replica down")
        except ExtError as e:
            assert e.code == 19, e
        # acks=quorum through the same command is acknowledged.
        conn.publish_records_acks("default", 0, [b"quorum-2"], ACKS_QUORUM)
        # A client-built batch with acks (0x18): the same answers.
        try:
            conn.publish_batch_acks("default", 0, encode_batch([Record(value=b"needs-all-4")]), ACKS_ALL)
            raise AssertionError("acks=all acknowledged a batch with a replica down")
        except ExtError as e:
            assert e.code == 19, e
        conn.publish_batch_acks("default", 0, encode_batch([Record(value=b"quorum-3")]), ACKS_QUORUM)
    c[down].expect_dead = False
    c[down].start()
    # Back: acks=all works again, and the node has everything, the refused ones too
    # (they were stored on a quorum: refused as "not on all", never as "not stored").
    def inserted():
        r = c[down].http.post("/insert", {"message": "all-again"})
        return r.status == 200

    wait_until(inserted, timeout=30, what="acks=all with every replica up")
    with c[up[0]].connect(timeout=30) as conn:
        conn.publish_records_acks("default", 0, [b"all-native"], ACKS_ALL)
        conn.publish_batch_acks("default", 0, encode_batch([Record(value=b"all-batch")]), ACKS_ALL)
    want = ["first", "quorum", "needs-all", "needs-all-2", "needs-all-3", "quorum-2", "needs-all-4",
            "quorum-3", "all-native", "all-batch"]
    for i in c.ids():
        # A retried insert may have stored all-again more than once while refused; a
        # follower serves what it has applied, a moment after the leader.
        def served() -> bool:
            got = c[i].http.get("/get-all").json()
            return [v for v in got if v != "all-again"] == want and "all-again" in got

        wait_until(served, what=f"node {i} to serve every acknowledged record")
