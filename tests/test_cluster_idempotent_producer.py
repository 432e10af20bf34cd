"""An idempotent producer (producer id and sequence in its batches' header, extension
0x10) retries every publish whose answer it did not get (a cut connection, a timeout,
`indeterminate`) with the same batch, through any node, while the partition's leader
is killed in rounds: every record ends up in the log exactly once. A repeat of a batch
already acknowledged is answered with the offset the first one got."""

from __future__ import annotations

import threading
import time

from chariot_client import ExtError, ProtocolError, Record, encode_batch
from cluster import DEFINITE_FAILURES

PID = 42
ROUNDS = 2


def test_retried_batches_are_stored_once_across_leader_kills(make_cluster):
    c = make_cluster(3)
    c.new_log("stream")
    stop = threading.Event()
    acked: dict[int, int] = {}  # sequence -> offset
    figures = {"retries": 0, "repeats checked": 0}

    def send(seq: int) -> int:
        """Publishes record ``seq`` until an answer says where it is."""
        batch = encode_batch([Record(value=f"k{seq}".encode())], producer_id=PID, base_sequence=seq)
        attempt = 0
        while True:
            targets = c.alive()
            node = targets[(seq + attempt) % len(targets)]
            attempt += 1
            try:
                with c[node].connect(timeout=10.0) as conn:
                    base, _count = conn.publish_batch("stream", 0, batch)
                    return base
            except ExtError as e:
                if e.code not in DEFINITE_FAILURES and e.code != 18:
                    raise
            except (OSError, ProtocolError):
                pass
            figures["retries"] += 1
            time.sleep(0.05)

    def produce() -> None:
        seq = 0
        while not stop.is_set():
            acked[seq] = send(seq)
            if seq % 10 == 0:
                # As if the answer had been lost: the same batch again.
                assert send(seq) == acked[seq], seq
                figures["repeats checked"] += 1
            seq += 1

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    for _ in range(ROUNDS):
        time.sleep(1.5)
        leader = c.leader_of("stream", 0)
        c.kill(leader)
        c.leader_of("stream", 0, among=[i for i in c.ids() if i != leader])
        time.sleep(1.0)
        c[leader].start()
    time.sleep(1.0)
    stop.set()
    t.join(120)
    assert not t.is_alive()
    got = c.converged("stream", 0)
    values = next(iter(got.values()))
    seen = [v.decode() for _, v in values]
    print(f"acked {len(acked)}, stored {len(seen)}, retries {figures['retries']}, "
          f"repeats checked {figures['repeats checked']}, fault rounds {ROUNDS}")
    assert len(acked) > 0
    assert seen == [f"k{s}" for s in range(len(seen))], "each sequence once, in order"
    assert len(seen) in (len(acked), len(acked) + 1)
    for seq, offset in acked.items():
        assert values[offset][1] == f"k{seq}".encode(), (seq, offset)
