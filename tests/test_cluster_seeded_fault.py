"""The history checker catches what it exists to catch, on real processes: the
scenario that lost acknowledged writes on NATS (one replica's log damaged), run once
as Chariot runs it and once with the seeded fault `CHARIOT_SEEDED_FAULT=
trust-damaged-replicas`, which makes a damaged replica keep its files and vote as if
nothing happened.

The scenario: follower T is paused while the leader L and follower V acknowledge 100
publishes (a quorum without T); V is stopped and its Raft log cut back to where it was
before them; L is killed; T and V restart. With the fault, V and T elect a leader that
lacks the 100 and the checker reports them lost (V's partition log is removed with the
cut, as if the whole tail of its storage were gone). As Chariot runs, V finds that it
holds less than it saw committed, grants no vote, and no leader is elected until L is
back with the records: the checker reports nothing lost."""

from __future__ import annotations

import os
import shutil
import signal
import time

import pytest

from cluster import Cluster
from conftest import wait_until
from history import History
from test_cluster_damaged_replica import segment, used_length


def run_scenario(c: Cluster) -> "History":
    c.new_log("sf")
    group = next(p["group"] for p in c.status(1)["partitions"] if p["log"] == "sf")
    h = History()
    for k in range(20):
        c.publish(h, c.ids()[k % 3], "sf", 0, f"before-{k}".encode())
    c.converged("sf", 0)
    leader = c.leader_of("sf", 0)
    victim, third = [i for i in c.ids() if i != leader]
    os.kill(c[third].proc.pid, signal.SIGSTOP)
    seg = segment(c[victim], group, "raft")
    cut = used_length(seg)
    for k in range(100):
        c.publish(h, leader, "sf", 0, f"quorum-of-two-{k}".encode())
    assert sum(1 for p in h.publishes.values() if p.outcome == "ok") == 120
    c[victim].stop_clean()
    with open(seg, "r+b") as f:
        f.truncate(cut)
    # Its partition log goes too (it is rebuilt from the Raft log at start): the replica
    # holds what it held before the 100, and nothing says otherwise but what it saw
    # committed.
    shutil.rmtree(c[victim].data_dir / "cluster" / "groups" / str(group) / "sm")
    h.fault_rounds += 1
    c.kill(leader)
    os.kill(c[third].proc.pid, signal.SIGCONT)
    c[victim].start()
    # Whoever can be elected without the old leader is; then it takes a write.
    time.sleep(3.0)
    for k in range(5):
        c.publish(h, third, "sf", 0, f"after-{k}".encode(), timeout=2.0)
    c[leader].start()
    wait_until(lambda: c.leader_of("sf", 0) is not None, timeout=30, what="a leader")
    try:
        final = c.converged("sf", 0, timeout=20)
    except AssertionError:
        # Replicas that never agree are for the checker to report, not to wait for.
        final = {}
        for i in c.alive():
            with c[i].connect() as conn:
                final[i] = [(r.offset, r.value) for r in conn.read_all("sf", 0)]
    for i, records in final.items():
        h.replica(f"node{i}", records)
    return h


def test_the_checker_finds_nothing_lost_as_chariot_runs(make_cluster):
    h = run_scenario(make_cluster(3))
    report = h.check()
    print(report.summary())
    assert report.ok, report.summary()


def test_the_checker_catches_the_seeded_fault(make_cluster):
    h = run_scenario(make_cluster(3, env={"CHARIOT_SEEDED_FAULT": "trust-damaged-replicas"}))
    report = h.check()
    print(report.summary())
    assert report.lost, "the seeded fault lost nothing: the scenario does not test what it should"
    assert not report.ok
