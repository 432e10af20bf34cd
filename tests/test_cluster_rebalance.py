"""``chariot cluster rebalance`` after a node joins: replicas move onto the new node until
every node holds about as many, the moved partitions' records are the same on every
replica (the new one rebuilt from the others), and the new node serves the logs it now
holds in full."""

from __future__ import annotations

import json
import subprocess

from conftest import BINARY, wait_until


def test_rebalance_moves_replicas_onto_a_new_node(make_cluster):
    c = make_cluster(3)
    for name in ("a", "b"):
        c.new_log(name)
        with c[1].connect() as conn:
            for k in range(50):
                conn.publish_records(name, 0, [f"{name}-{k}".encode()])
    c.join(4)
    wait_until(lambda: any(m["id"] == 4 for m in c.status(1)["members"]), 30, "node 4 is a member")
    out = subprocess.run(
        [str(BINARY), "--json", "--http", f"127.0.0.1:{c[2].http_port}", "cluster", "rebalance"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    moves = json.loads(out.stdout)["moves"]
    # Six replicas on three nodes, none on node 4: one moves to it.
    assert len(moves) == 1 and 4 in moves[0]["to"], moves

    def done() -> bool:
        return all(c.placement(1, n)["moving_to"] is None for n in ("a", "b"))

    wait_until(done, 90, "the move is done")
    load = {i: 0 for i in c.ids()}
    for name in ("a", "b"):
        replicas = c.placement(1, name)["replicas"]
        for r in replicas:
            load[r] += 1
        got = c.converged(name, 0, among=replicas)
        assert all(len(v) == 50 for v in got.values()), {i: len(v) for i, v in got.items()}
    assert max(load.values()) - min(load.values()) <= 1, load
    held = [n for n in ("a", "b") if 4 in c.placement(1, n)["replicas"]]
    wait_until(lambda: held[0] in [l["name"] for l in c[4].http.get("/logs").json()], 30, "node 4 serves it")

    # A log node 4 holds no replica of, deleted through node 4: its partition is sealed
    # through its replicas, then it is gone everywhere, files included.
    other = next(n for n in ("a", "b") if 4 not in c.placement(1, n)["replicas"])
    group = c.placement(1, other)["group"]
    r = c[4].http.delete(f"/logs/{other}")
    assert r.status in (200, 204), r
    for i in c.ids():
        wait_until(lambda: other not in [l["name"] for l in c[i].http.get("/logs").json()],
                   what=f"node {i} to drop {other}")
        d = c[i].data_dir / "cluster" / "groups" / str(group)
        wait_until(lambda: not d.exists(), what=f"{d} to be removed")


def test_rebalance_raises_the_replication_factor_a_smaller_cluster_gave(make_cluster):
    c = make_cluster(2)
    c.new_log("small")
    with c[1].connect() as conn:
        conn.publish_records("small", 0, [f"s{k}".encode() for k in range(20)])
    assert sorted(c.placement(1, "small")["replicas"]) == [1, 2]
    c.join(3)
    wait_until(lambda: any(m["id"] == 3 for m in c.status(1)["members"]), 30, "node 3 is a member")
    r = c[3].http.post("/cluster/rebalance", {})
    assert r.status == 200 and len(r.json()["moves"]) == 1, r
    wait_until(lambda: sorted(c.placement(1, "small")["replicas"]) == [1, 2, 3]
               and c.placement(1, "small")["moving_to"] is None, 90, "a third replica")
    got = c.converged("small", 0, among=[1, 2, 3])
    assert all(len(v) == 20 for v in got.values())
    # Three voters now: with one node down the partition still takes writes.
    c[1].stop_clean()
    c[1].expect_dead = True
    c.leader_of("small", 0, among=[2, 3])
    with c[2].connect(timeout=30) as conn:
        conn.publish_records("small", 0, [b"after"])
