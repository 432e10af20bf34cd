"""Consumer groups on a 3-node cluster: an ack is an entry of the partition's Raft
group, so a group's offset is the same on every node, a fetch on the node that took
the ack sees it at once, and acknowledged acks survive the loss of the leader."""

from __future__ import annotations

from chariot_client import RogError
from conftest import wait_until


def fetched(node, group="workers"):
    """What a fetch through ``node`` returns now (``None`` when it has no data yet)."""
    with node.connect() as conn:
        try:
            return conn.fetch("jobs", 0, group)
        except RogError:
            return None


def test_acks_are_replicated_and_survive_the_leader(make_cluster):
    c = make_cluster(3)
    c.new_log("jobs")
    values = [f"job{k}".encode() for k in range(12)]
    with c[1].connect() as conn:
        conn.publish_records("jobs", 0, values)

    # Rog's consumer loop, moving from node to node: another node applies an ack a
    # moment later (polled), the node that took it at once.
    for k in range(6):
        node = c.ids()[k % 3]
        wait_until(lambda: fetched(c[node]) == values[k], what=f"node {node} at {k}")
        with c[node].connect() as conn:
            conn.ack("jobs", 0, "workers")
            assert conn.fetch("jobs", 0, "workers") == values[k + 1], (k, node)
    for i in c.ids():
        wait_until(lambda: fetched(c[i]) == values[6], what=f"node {i}")

    leader = c.leader_of("jobs", 0)
    c.kill(leader)
    others = [i for i in c.ids() if i != leader]
    c.leader_of("jobs", 0, among=others)
    with c[others[0]].connect() as conn:
        assert conn.fetch("jobs", 0, "workers") == values[6]
        for k in range(6, 12):
            conn.ack("jobs", 0, "workers")
        # At the end an ack is refused with Rog's message, and nothing moves.
        try:
            conn.ack("jobs", 0, "workers")
            raise AssertionError("an ack past the end was accepted")
        except RogError:
            pass
    c[leader].start()
    c.leader_of("jobs", 0)

    def groups():
        desc = c[leader].http.get("/logs/jobs").json()
        return {g["group"]: g["offset"] for g in desc["partitions"][0]["groups"]}

    # The restarted node catches up on the acks it missed.
    wait_until(lambda: groups() == {"workers": 12}, timeout=20, what="the acks on the restarted node")


def test_ack_to_through_any_node_is_idempotent_and_survives_the_leader(make_cluster):
    c = make_cluster(3)
    c.new_log("jobs")
    with c[1].connect() as conn:
        conn.publish_records("jobs", 0, [f"job{k}".encode() for k in range(20)])
    leader = c.leader_of("jobs", 0)
    follower = next(i for i in c.ids() if i != leader)
    with c[follower].connect() as conn:
        assert conn.ack_to("jobs", 0, "readers", 8) == 8
        assert conn.ack_to("jobs", 0, "readers", 8) == 8, "a retry changes nothing"
        assert conn.ack_to("jobs", 0, "readers", 3) == 8, "never back"
    c.kill(leader)
    others = [i for i in c.ids() if i != leader]
    c.leader_of("jobs", 0, among=others)
    with c[others[-1]].connect() as conn:
        wait_until(lambda: conn.describe_log("jobs")[0].group_offsets().get("readers") == 8,
                   what="the ack on another node")
        assert conn.ack_to("jobs", 0, "readers", 20) == 20
    c[leader].start()
    with c[leader].connect() as conn:
        wait_until(lambda: conn.describe_log("jobs")[0].group_offsets().get("readers") == 20,
                   timeout=20, what="the restarted node catching up on the ack")
