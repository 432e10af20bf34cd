"""A history checker for the replicated-log tests, in the spirit of Jepsen's checks of
Kafka and NATS.

A test records, from the clients' side, every publish it attempted and how it ended:

* ``ok``: acknowledged, with the offset the server gave it;
* ``fail``: a definite failure (the server says nothing was stored: ``not_leader``
  before proposing, ``invalid_batch``, ...);
* ``info``: indeterminate (a timeout, a cut connection, ``indeterminate``): it may or
  may not be stored.

It also records what clients read while the test ran, and at the end the complete
contents of the partition on every replica. :meth:`History.check` then reports

* **lost**: acknowledged publishes missing from the final log, or not at their offset;
* **duplicated**: a value stored more than once;
* **failed but stored**: a publish reported as a definite failure that is in the log;
* **phantom**: values in the log that no client ever published;
* **divergent replicas**: replicas whose records differ from the others' at some
  offset, or whose offsets are not dense;
* **reordered**: two acknowledged publishes where the first was acknowledged before
  the second was sent, yet has the higher offset;
* **uncommitted reads**: a record a client read that is not at that offset in the final
  log (a read of something that was later lost or never committed).

Values must be unique per publish (tests put the producer and a sequence number in
them). ``Report.summary()`` prints the figures on one line, e.g. ``acked 48213, lost 0,
duplicated 0, divergent replicas 0, ...``.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Publish:
    """One attempted publish and what became of it."""

    id: int
    value: bytes
    invoked: float
    completed: float | None = None
    outcome: str | None = None  # "ok", "fail" or "info"
    offset: int | None = None


@dataclass
class Report:
    """What :meth:`History.check` found; ``ok`` when nothing is wrong."""

    acked: int = 0
    failed: int = 0
    indeterminate: int = 0
    indeterminate_stored: int = 0
    lost: list = field(default_factory=list)
    duplicated: list = field(default_factory=list)
    failed_but_stored: list = field(default_factory=list)
    phantom: list = field(default_factory=list)
    divergent_replicas: list = field(default_factory=list)
    reordered: list = field(default_factory=list)
    uncommitted_reads: list = field(default_factory=list)
    fault_rounds: int = 0

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.duplicated
            or self.failed_but_stored
            or self.phantom
            or self.divergent_replicas
            or self.reordered
            or self.uncommitted_reads
        )

    def summary(self) -> str:
        return (
            f"acked {self.acked}, lost {len(self.lost)}, duplicated {len(self.duplicated)}, "
            f"divergent replicas {len(self.divergent_replicas)}, reordered {len(self.reordered)}, "
            f"failed but stored {len(self.failed_but_stored)}, phantom {len(self.phantom)}, "
            f"uncommitted reads {len(self.uncommitted_reads)}, failed {self.failed}, "
            f"indeterminate {self.indeterminate} ({self.indeterminate_stored} stored), "
            f"fault rounds {self.fault_rounds}"
        )


class History:
    """The client-side history of one partition. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self.publishes: dict[int, Publish] = {}
        self.reads: list[tuple[int, bytes]] = []
        self.replicas: dict[str, list[tuple[int, bytes]]] = {}
        self.fault_rounds = 0

    def invoke(self, value: bytes) -> int:
        """Records a publish about to be sent; returns its id."""
        with self._lock:
            pid = next(self._ids)
            self.publishes[pid] = Publish(pid, value, time.monotonic())
            return pid

    def _complete(self, pid: int, outcome: str, offset: int | None) -> None:
        with self._lock:
            p = self.publishes[pid]
            if p.outcome is not None:
                raise ValueError(f"publish {pid} completed twice")
            p.completed, p.outcome, p.offset = time.monotonic(), outcome, offset

    def ok(self, pid: int, offset: int) -> None:
        """The publish was acknowledged at ``offset``."""
        self._complete(pid, "ok", offset)

    def fail(self, pid: int) -> None:
        """The publish definitely failed: nothing was stored."""
        self._complete(pid, "fail", None)

    def info(self, pid: int) -> None:
        """The publish's outcome is unknown."""
        self._complete(pid, "info", None)

    def read(self, records) -> None:
        """Records ``(offset, value)`` pairs a client read during the test."""
        with self._lock:
            self.reads.extend((int(o), bytes(v)) for o, v in records)

    def replica(self, name: str, records) -> None:
        """The final contents of the partition on replica ``name``, in offset order."""
        with self._lock:
            self.replicas[name] = [(int(o), bytes(v)) for o, v in records]

    def check(self) -> Report:
        r = Report(fault_rounds=self.fault_rounds)
        pubs = list(self.publishes.values())
        # An unfinished publish (its client was killed) counts as indeterminate.
        for p in pubs:
            if p.outcome is None:
                p.outcome = "info"
        r.acked = sum(p.outcome == "ok" for p in pubs)
        r.failed = sum(p.outcome == "fail" for p in pubs)
        r.indeterminate = sum(p.outcome == "info" for p in pubs)

        if not self.replicas:
            raise ValueError("no replica was read: nothing to check against")
        # Replicas agree at every offset they share, and each is dense.
        reference_name, reference = max(self.replicas.items(), key=lambda kv: len(kv[1]))
        for name, recs in self.replicas.items():
            offsets = [o for o, _ in recs]
            if offsets and offsets != list(range(offsets[0], offsets[0] + len(offsets))):
                r.divergent_replicas.append((name, "offsets are not dense"))
        ref_map = dict(reference)
        for name, recs in self.replicas.items():
            bad = [o for o, v in recs if o in ref_map and ref_map[o] != v]
            if bad and (name, "offsets are not dense") not in r.divergent_replicas:
                r.divergent_replicas.append((name, f"differs from {reference_name} at offset {bad[0]}"))

        where: dict[bytes, list[int]] = {}
        for o, v in reference:
            where.setdefault(v, []).append(o)
        by_value = {p.value: p for p in pubs}
        for v, offs in where.items():
            if len(offs) > 1:
                r.duplicated.append((v, offs))
            p = by_value.get(v)
            if p is None:
                r.phantom.append((offs[0], v))
            elif p.outcome == "fail":
                r.failed_but_stored.append((p.id, offs[0]))
            elif p.outcome == "info":
                r.indeterminate_stored += 1
        for p in pubs:
            if p.outcome != "ok":
                continue
            offs = where.get(p.value)
            if not offs:
                r.lost.append((p.id, p.offset, "missing"))
            elif p.offset not in offs:
                r.lost.append((p.id, p.offset, f"stored at {offs} instead"))

        # Real-time order: acknowledged before the other was sent => lower offset.
        acked = sorted((p for p in pubs if p.outcome == "ok"), key=lambda p: p.completed)
        invoked = sorted((p for p in pubs if p.outcome == "ok"), key=lambda p: p.invoked)
        # For each publish, the highest offset among those acknowledged before it was sent.
        i, best = 0, None
        for p in invoked:
            while i < len(acked) and acked[i].completed < p.invoked:
                if best is None or acked[i].offset > best.offset:
                    best = acked[i]
                i += 1
            if best is not None and best.offset > p.offset:
                r.reordered.append((best.id, best.offset, p.id, p.offset))

        for o, v in self.reads:
            if ref_map.get(o) != v:
                r.uncommitted_reads.append((o, v))
        return r
