"""Concurrent clients: no loss, no duplicates, per-producer order kept, and consumer-group
offsets that never skip or pass the end under racing acks."""

import threading
from collections import Counter

import pytest

import chariot_client as cc
from chariot_client import RogError


def run_threads(n, target):
    errors = []
    barrier = threading.Barrier(n)

    def wrap(i):
        try:
            barrier.wait()
            target(i)
        except BaseException as e:  # reported below, in the main thread
            errors.append((i, repr(e)))

    threads = [threading.Thread(target=wrap, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
        assert not t.is_alive(), "a client thread hung"
    assert not errors, errors


def check_interleaving(values, producers, per_producer):
    assert len(values) == producers * per_producer, f"{len(values)} records, expected {producers * per_producer}"
    dup = [v for v, n in Counter(values).items() if n > 1]
    assert not dup, f"duplicates: {dup[:5]}"
    for i in range(producers):
        mine = [v for v in values if v.startswith(f"producer-{i}:".encode())]
        assert mine == [f"producer-{i}:{s}".encode() for s in range(per_producer)], f"producer {i} out of order"


def test_concurrent_producers_same_partition_persistent_connections(server, log_name):
    producers, per = 8, 60
    with server.connect() as c:
        c.create_log(log_name, 2)

    def produce(i):
        with server.connect() as c:
            for s in range(per):
                c.publish(log_name, 1, f"producer-{i}:{s}".encode())

    run_threads(producers, produce)
    with server.connect() as c:
        check_interleaving(c.values(log_name, 1), producers, per)
        assert c.values(log_name, 0) == []
        # Rog's fetch/ack walk sees the same sequence
        walked = []
        for _ in range(producers * per):
            walked.append(c.fetch(log_name, 1, "walker"))
            c.ack(log_name, 1, "walker")
        assert walked == c.values(log_name, 1)


def test_concurrent_producers_one_connection_per_request(server, log_name):
    producers, per = 6, 25
    with server.connect() as c:
        c.create_log(log_name, 1)

    def produce(i):
        for s in range(per):
            cc.one_shot(*server.addr, cc.encode_publish(log_name, 0, f"producer-{i}:{s}".encode()), cc.read_rog_status)

    run_threads(producers, produce)
    with server.connect() as c:
        check_interleaving(c.values(log_name, 0), producers, per)


def test_concurrent_mixed_publish_kinds(server, log_name):
    """Rog publish, publish-records and HTTP posts racing on one partition: each request's
    records stay contiguous where the API promises it (publish-records is atomic)."""
    with server.connect() as c:
        c.create_log(log_name, 1)
    bases = {}

    def produce(i):
        if i % 3 == 0:
            with server.connect() as c:
                for s in range(30):
                    c.publish(log_name, 0, f"producer-{i}:{s}".encode())
        elif i % 3 == 1:
            with server.connect() as c:
                for k in range(6):
                    vals = [f"producer-{i}:{k * 5 + j}".encode() for j in range(5)]
                    bases[(i, k)] = c.publish_records(log_name, 0, vals)
        else:
            for k in range(6):
                body = [{"value": f"producer-{i}:{k * 5 + j}"} for j in range(5)]
                r = server.http.post(server.http.records_path(log_name, 0), body)
                assert r.status == 200, r
                bases[(i, k)] = r.json()["base_offset"]
                assert r.json()["offsets"] == list(range(bases[(i, k)], bases[(i, k)] + 5))

    run_threads(6, produce)
    with server.connect() as c:
        vals = c.values(log_name, 0)
    check_interleaving(vals, 6, 30)
    for (i, k), base in bases.items():
        assert vals[base : base + 5] == [f"producer-{i}:{k * 5 + j}".encode() for j in range(5)]


def test_racing_acks_never_skip_or_pass_the_end(server, log_name):
    n = 40
    with server.connect() as c:
        c.create_log(log_name, 1)
        c.publish_records(log_name, 0, [b"%d" % i for i in range(n)])
    ok = Counter()
    nodata = Counter()

    def acker(i):
        with server.connect() as c:
            for _ in range(10):
                try:
                    c.ack(log_name, 0, "shared")
                    ok[i] += 1
                except RogError as e:
                    assert e.message == cc.MSG_NO_DATA
                    nodata[i] += 1

    run_threads(8, acker)
    assert sum(ok.values()) == n
    assert sum(nodata.values()) == 80 - n
    with server.connect() as c:
        with pytest.raises(RogError, match=cc.MSG_NO_DATA):
            c.fetch(log_name, 0, "shared")
        [p] = c.describe_log(log_name)
        assert p.group_offsets()["shared"] == n


def test_concurrent_create_same_log_one_wins(server, log_name):
    results = []

    def create(i):
        try:
            cc.one_shot(*server.addr, cc.encode_create_log(log_name, 1 + i % 3), cc.read_rog_status)
            results.append(("ok", i))
        except RogError as e:
            results.append((e.message, i))

    run_threads(8, create)
    winners = [i for r, i in results if r == "ok"]
    assert len(winners) == 1, results
    assert all(r == cc.msg_exists(log_name) for r, i in results if r != "ok")
    with server.connect() as c:
        assert c.list_logs()[log_name] == 1 + winners[0] % 3


def test_concurrent_consumers_in_different_groups(server, log_name):
    n = 60
    with server.connect() as c:
        c.create_log(log_name, 1)
        for i in range(n):
            c.publish(log_name, 0, b"%d" % i)
    seen = {}

    def consume(i):
        got = []
        with server.connect() as c:
            while True:
                try:
                    got.append(c.fetch(log_name, 0, f"group-{i}"))
                except RogError as e:
                    assert e.message == cc.MSG_NO_DATA
                    break
                c.ack(log_name, 0, f"group-{i}")
        seen[i] = got

    run_threads(5, consume)
    for i in range(5):
        assert seen[i] == [b"%d" % k for k in range(n)]


def test_consumers_while_producing(server, log_name):
    """A consumer group racing a producer reads every record once, in order."""
    n = 150
    with server.connect() as c:
        c.create_log(log_name, 1)
    got = []
    done = threading.Event()

    def work(i):
        if i == 0:
            try:
                with server.connect() as c:
                    for k in range(n):
                        c.publish(log_name, 0, b"%d" % k)
            finally:
                done.set()
        else:
            misses_after_done = 0
            with server.connect() as c:
                while len(got) < n:
                    try:
                        v = c.fetch(log_name, 0, "live")
                    except RogError as e:
                        assert e.message == cc.MSG_NO_DATA
                        if done.is_set():
                            misses_after_done += 1
                            if misses_after_done > 3:
                                break  # the producer is done and nothing is left: loss
                        continue
                    c.ack(log_name, 0, "live")
                    got.append(v)

    run_threads(2, work)
    assert got == [b"%d" % k for k in range(n)]


def test_many_simultaneous_connections(server, log_name):
    with server.connect() as c:
        c.create_log(log_name, 4)

    def one(i):
        cc.one_shot(*server.addr, cc.encode_publish(log_name, i % 4, b"conn %d" % i), cc.read_rog_status)

    run_threads(64, one)
    with server.connect() as c:
        got = sorted(v for p in range(4) for v in c.values(log_name, p))
        assert got == sorted(b"conn %d" % i for i in range(64))
        for p in range(4):
            assert all(int(v.split()[1]) % 4 == p for v in c.values(log_name, p))


def test_concurrent_http_inserts(server):
    """/insert from several threads: /get-all has every message once, per-thread order kept."""
    def insert(i):
        for s in range(15):
            r = server.http.post("/insert", {"message": f"producer-{i}:{s}"})
            assert r.status == 200, r

    run_threads(4, insert)
    msgs = [m.encode() for m in server.http.get("/get-all").json()]
    check_interleaving(msgs, 4, 15)
