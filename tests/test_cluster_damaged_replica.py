"""Damage in one replica's files (the case where Jepsen saw one flipped bit on one NATS
node lose acknowledged writes): stop a node, flip a byte in its Raft log or cut its
partition log short, restart it. The replica must not vote on a log it cannot vouch
for: it moves its files aside, rebuilds from its peers while granting no vote, and
only then votes again. Then the leader is killed, so that the rebuilt replica is part
of every possible majority: nothing acknowledged is lost anywhere."""

from __future__ import annotations

import time
from pathlib import Path

from cluster import acked
from conftest import wait_until
from history import History


def used_length(path: Path) -> int:
    """Bytes of a segment file up to its last non-zero byte (segments are extended with
    zeros ahead of the writes)."""
    return len(path.read_bytes().rstrip(b"\0"))


def segment(node, group: int, part: str) -> Path:
    base = node.data_dir / "cluster" / "groups" / str(group) / part
    files = sorted(base.glob("*/*.log"))
    assert files, f"no segment under {base}"
    return files[-1]


def flip_byte(path: Path) -> None:
    n = used_length(path)
    data = bytearray(path.read_bytes())
    data[n * 2 // 5] ^= 0xFF
    path.write_bytes(bytes(data))


def cut_short(path: Path) -> None:
    n = used_length(path)
    with open(path, "r+b") as f:
        f.truncate(n // 2)


def test_a_damaged_replica_rebuilds_without_voting_and_nothing_is_lost(make_cluster):
    c = make_cluster(3)
    c.new_log("dmg")
    group = next(p["group"] for p in c.status(1)["partitions"] if p["log"] == "dmg")
    h = History()
    # A flipped byte anywhere, or a Raft log shorter than what was committed, is found
    # at start and the replica is rebuilt. A partition log cut short above its last
    # checkpoint is mended by applying the Raft log's entries again (its records keep
    # their offsets): no rebuild needed, nothing lost either.
    rounds = (
        (flip_byte, "raft", True),
        (flip_byte, "sm", True),
        (cut_short, "raft", True),
        (cut_short, "sm", False),
    )
    with c.producers(h, "dmg", 3):
        for damage, part, rebuilt in rounds:
            wait_until(lambda: acked(h) > 200 * (h.fault_rounds + 1), timeout=30, what="acknowledged writes")
            leader = c.leader_of("dmg", 0)
            victim = next(i for i in c.ids() if i != leader)
            gdir = c[victim].data_dir / "cluster" / "groups" / str(group)
            set_aside = len(list(gdir.glob("damaged-*")))
            c[victim].stop_clean()
            damage(segment(c[victim], group, part))
            h.fault_rounds += 1
            c[victim].start()
            if rebuilt:
                now = len(list(gdir.glob("damaged-*")))
                assert now == set_aside + 1, f"node {victim} did not set its damaged files aside"

            # Rebuilt from its peers, it votes again...
            def voting() -> bool:
                st = c.status(victim)
                p = next(p for p in st["partitions"] if p["group"] == group)
                local = p.get("local") or {}
                return "rebuilding" not in local and local.get("last_applied") is not None

            wait_until(voting, timeout=30, what=f"node {victim} to rebuild its replica")
            # ...and is needed for every majority once the leader is gone.
            c.kill(leader)
            c.leader_of("dmg", 0, among=[i for i in c.ids() if i != leader])
            time.sleep(0.5)
            c[leader].start()
        time.sleep(0.5)
    report = c.check(h, "dmg")
    assert report.ok, report.summary()
