"""The history checker finds each kind of fault it reports, on histories built by hand
(the cluster tests feed it real ones), and passes a clean history."""

from __future__ import annotations

from history import History


def clean(n: int = 6) -> History:
    h = History()
    log = []
    for i in range(n):
        v = f"p0-{i}".encode()
        pid = h.invoke(v)
        h.ok(pid, i)
        log.append((i, v))
    for name in ("n1", "n2", "n3"):
        h.replica(name, log)
    return h


def test_a_clean_history_passes():
    r = clean().check()
    assert r.ok, r.summary()
    assert r.acked == 6
    assert r.summary().startswith("acked 6, lost 0, duplicated 0, divergent replicas 0")


def test_a_lost_acknowledged_publish_is_reported():
    h = clean()
    h.replica("n1", h.replicas["n1"][:4])
    h.replica("n2", h.replicas["n1"])
    h.replica("n3", h.replicas["n1"])
    r = h.check()
    assert [x[1] for x in r.lost] == [4, 5]


def test_a_publish_at_another_offset_than_acknowledged_is_lost():
    h = History()
    a, b = h.invoke(b"a"), h.invoke(b"b")
    h.ok(a, 0)
    h.ok(b, 0)
    h.replica("n1", [(0, b"b"), (1, b"a")])
    r = h.check()
    assert r.lost == [(a, 0, "stored at [1] instead")]


def test_duplicates_phantoms_and_stored_failures_are_reported():
    h = History()
    a, f = h.invoke(b"a"), h.invoke(b"f")
    h.ok(a, 0)
    h.fail(f)
    h.replica("n1", [(0, b"a"), (1, b"a"), (2, b"f"), (3, b"never-sent")])
    r = h.check()
    assert r.duplicated == [(b"a", [0, 1])]
    assert r.failed_but_stored == [(f, 2)]
    assert r.phantom == [(3, b"never-sent")]


def test_an_indeterminate_publish_may_be_stored_or_not():
    h = History()
    a, i1, i2 = h.invoke(b"a"), h.invoke(b"i1"), h.invoke(b"i2")
    h.ok(a, 0)
    h.info(i1)
    # i2 never completed: its client was killed.
    h.replica("n1", [(0, b"a"), (1, b"i1")])
    r = h.check()
    assert r.ok, r.summary()
    assert (r.indeterminate, r.indeterminate_stored) == (2, 1)


def test_divergent_replicas_are_reported():
    h = clean()
    bad = list(h.replicas["n2"])
    bad[3] = (3, b"other")
    h.replica("n2", bad)
    h.replica("n3", [(0, b"p0-0"), (2, b"p0-2")])
    r = h.check()
    names = sorted(n for n, _ in r.divergent_replicas)
    assert names == ["n2", "n3"], r.divergent_replicas


def test_a_lagging_replica_with_a_matching_prefix_is_not_divergent():
    h = clean()
    h.replica("n3", h.replicas["n1"][:2])
    assert h.check().ok


def test_real_time_reordering_is_reported():
    h = History()
    first = h.invoke(b"first")
    h.ok(first, 1)
    second = h.invoke(b"second")  # sent after `first` was acknowledged
    h.ok(second, 0)
    h.replica("n1", [(0, b"second"), (1, b"first")])
    r = h.check()
    assert r.reordered == [(first, 1, second, 0)]


def test_concurrent_publishes_may_land_in_either_order():
    h = History()
    a, b = h.invoke(b"a"), h.invoke(b"b")
    h.ok(b, 0)
    h.ok(a, 1)
    h.replica("n1", [(0, b"b"), (1, b"a")])
    assert h.check().ok


def test_reads_of_records_not_in_the_final_log_are_reported():
    h = clean()
    h.read([(2, b"p0-2"), (6, b"gone")])
    r = h.check()
    assert r.uncommitted_reads == [(6, b"gone")]
