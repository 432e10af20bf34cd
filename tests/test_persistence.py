"""Restarts on the same data directory: a clean stop (SIGTERM) and a crash (SIGKILL).
Records, logs and consumer-group offsets survive; after SIGKILL every acknowledged
publish is present, in order, exactly once."""

import signal
import threading
import time

import pytest

import chariot_client as cc
from chariot_client import RogError


def populate(server, name):
    with server.connect() as c:
        c.create_log(name, 3)
        c.create_log(name + "-b", 1)
        for i in range(20):
            c.publish(name, i % 3, f"rec {i}".encode())
        c.publish_records(name + "-b", 0, [b"x%d" % i for i in range(10)])
        for _ in range(4):
            c.ack(name, 0, "g1")
        c.ack(name, 1, "g1")
        c.ack(name, 1, "g2")
        for _ in range(7):
            c.ack(name + "-b", 0, "g1")
        # a fetch without ack must not move the committed offset across a restart either
        assert c.fetch(name, 2, "g3") == b"rec 2"


def check_populated(server, name):
    with server.connect() as c:
        logs = c.list_logs()
        assert logs[name] == 3 and logs[name + "-b"] == 1
        for p in range(3):
            assert c.values(name, p) == [f"rec {i}".encode() for i in range(p, 20, 3)]
        assert c.values(name + "-b", 0) == [b"x%d" % i for i in range(10)]
        assert c.fetch(name, 0, "g1") == b"rec 12"  # 4 acks: offset 4 of p0 = rec 12
        assert c.fetch(name, 1, "g1") == b"rec 4"
        assert c.fetch(name, 1, "g2") == b"rec 4"
        assert c.fetch(name, 2, "g3") == b"rec 2"
        assert c.fetch(name, 2, "g1") == b"rec 2"
        assert c.fetch(name + "-b", 0, "g1") == b"x7"
        desc = c.describe_log(name)
        assert [p.next_offset for p in desc] == [7, 7, 6]
        assert desc[0].group_offsets().get("g1") == 4
        assert desc[1].group_offsets().get("g1") == 1
        assert desc[1].group_offsets().get("g2") == 1
        # new writes continue at the next offset: no reuse, no gap
        assert c.publish_records(name, 0, [b"after restart"]) == 7
        assert c.values(name, 0)[-1] == b"after restart"
        with pytest.raises(RogError) as e:
            c.create_log(name, 1)
        assert e.value.message == cc.msg_exists(name)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_records_logs_and_groups_survive_restart(server, log_name, sig):
    populate(server, log_name)
    server.restart(sig)
    check_populated(server, log_name)
    # and a second restart after more activity
    with server.connect() as c:
        c.ack(log_name, 0, "g1")
    server.restart(sig)
    with server.connect() as c:
        assert c.fetch(log_name, 0, "g1") == b"rec 15"
        assert c.values(log_name, 0)[-1] == b"after restart"


def test_sigterm_exits_zero(server, log_name):
    with server.connect() as c:
        c.create_log(log_name, 1)
        c.publish(log_name, 0, b"x")
    server.stop_clean()
    server.start()
    with server.connect() as c:
        assert c.values(log_name, 0) == [b"x"]


def test_sigint_is_a_clean_shutdown(server, log_name):
    with server.connect() as c:
        c.create_log(log_name, 1)
        c.publish(log_name, 0, b"x")
    assert server.stop(signal.SIGINT) == 0
    server.start()
    with server.connect() as c:
        assert c.values(log_name, 0) == [b"x"]


def test_shutdown_with_idle_connections_open(server, log_name):
    """Open connections (idle and mid-frame) must not prevent a clean, prompt exit."""
    with server.connect() as c:
        c.create_log(log_name, 1)
        c.publish(log_name, 0, b"x")
    idle = server.connect()
    partial = server.connect()
    partial.send_raw(cc.encode_publish(log_name, 0, b"abc", data_len=10))
    try:
        server.stop_clean()
    finally:
        idle.close()
        partial.close()
    server.start()
    with server.connect() as c:
        assert c.values(log_name, 0) == [b"x"]


@pytest.mark.parametrize("sync", ["group-commit", "every-append", "interval:50", "never"])
def test_sigkill_keeps_every_acknowledged_publish(make_server, log_name, sync):
    """Concurrent producers publish until the process is killed mid-stream. Every publish
    that was acknowledged is present after restart, in per-producer order, exactly once;
    anything else present is one of the in-flight publishes (never garbage)."""
    server = make_server("--sync", sync)
    with server.connect() as c:
        c.create_log(log_name, 2)
    acked: dict[int, list[bytes]] = {i: [] for i in range(4)}
    stop = threading.Event()
    started = threading.Barrier(5, timeout=30)

    def producer(i):
        try:
            with server.connect() as c:
                started.wait()
                seq = 0
                while not stop.is_set() and seq < 5000:
                    v = f"p{i}-{seq:05d}".encode() + b"." * (seq % 50)
                    c.publish(log_name, i % 2, v)
                    acked[i].append(v)
                    seq += 1
        except (cc.ProtocolError, OSError, RogError):
            pass  # the kill cut the connection

    threads = [threading.Thread(target=producer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    started.wait()
    # let some publishes be acknowledged, then crash
    deadline = time.monotonic() + 30
    while sum(len(v) for v in acked.values()) < 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    server.stop(signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join(30)
    assert sum(len(v) for v in acked.values()) >= 200, "producers made no progress"
    server.start()
    with server.connect() as c:
        for p in range(2):
            got = c.values(log_name, p)
            assert len(got) == len(set(got)), "duplicates after recovery"
            for i in (p, p + 2):
                mine = [v for v in got if v.startswith(f"p{i}-".encode())]
                # acknowledged ones are a prefix of what survived, in order
                assert mine[: len(acked[i])] == acked[i], f"producer {i} lost acknowledged records"
                # at most one in-flight publish per producer may also have made it
                assert len(mine) - len(acked[i]) in (0, 1)
            assert all(v.split(b"-")[0] in (f"p{p}".encode(), f"p{p + 2}".encode()) for v in got)
        # and the log accepts appends at the right offset
        n = len(c.values(log_name, 0))
        assert c.publish_records(log_name, 0, [b"post-crash"]) == n


def test_sigkill_keeps_acknowledged_group_offsets(server, log_name):
    with server.connect() as c:
        c.create_log(log_name, 1)
        for i in range(50):
            c.publish(log_name, 0, b"%d" % i)
        for _ in range(37):
            c.ack(log_name, 0, "consumer")
        assert c.fetch(log_name, 0, "consumer") == b"37"
    server.restart(signal.SIGKILL)
    with server.connect() as c:
        assert c.fetch(log_name, 0, "consumer") == b"37"
        c.ack(log_name, 0, "consumer")
        assert c.fetch(log_name, 0, "consumer") == b"38"
    server.restart(signal.SIGKILL)
    with server.connect() as c:
        assert c.fetch(log_name, 0, "consumer") == b"38"


def test_segments_roll_and_survive_restart(make_server, log_name):
    """With 1 MiB segments, ~3 MiB of records span several segments; all readable after
    both kinds of restart."""
    server = make_server("--segment-bytes", str(1 << 20))
    values = [bytes([i % 251]) * 30_000 + i.to_bytes(4, "big") for i in range(110)]
    with server.connect() as c:
        c.create_log(log_name, 1)
        for i in range(0, len(values), 10):
            assert c.publish_records(log_name, 0, values[i : i + 10]) == i
        c.publish(log_name, 0, b"tail")
        for _ in range(105):
            c.ack(log_name, 0, "g")
    expected = values + [b"tail"]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        server.restart(sig)
        with server.connect() as c:
            assert c.values(log_name, 0) == expected
            assert c.fetch(log_name, 0, "g") == values[105]
            [p] = c.describe_log(log_name)
            assert p.next_offset == 111
    resp = server.http.get(server.http.log_path(log_name))
    assert resp.status == 200
    assert resp.json()["partitions"][0]["segments"] >= 3


def test_http_inserts_survive_sigkill(server):
    msgs = [f"insert {i}" for i in range(10)]
    for m in msgs:
        assert server.http.post("/insert", {"message": m}).status == 200
    server.restart(signal.SIGKILL)
    r = server.http.get("/get-all")
    assert r.status == 200
    assert r.json() == msgs


@pytest.mark.parametrize("restart_between", [False, True], ids=["live", "after-sigkill"])
def test_deleted_log_and_its_groups_are_gone(server, log_name, restart_between):
    with server.connect() as c:
        c.create_log(log_name, 1)
        for v in (b"old-0", b"old-1", b"old-2"):
            c.publish(log_name, 0, v)
        c.ack(log_name, 0, "g")
        c.ack(log_name, 0, "g")
    assert server.http.delete(server.http.log_path(log_name)).status == 204
    if restart_between:
        server.restart(signal.SIGKILL)
    with server.connect() as c:
        assert log_name not in c.list_logs()
        # the name can be reused: the new log starts empty, with no consumer groups
        c.create_log(log_name, 2)
        assert [p.next_offset for p in c.describe_log(log_name)] == [0, 0]
        assert [p.groups for p in c.describe_log(log_name)] == [[], []]
        c.publish(log_name, 0, b"new-0")
        assert c.fetch(log_name, 0, "g") == b"new-0"
        assert c.values(log_name, 0) == [b"new-0"]
    server.restart(signal.SIGKILL)
    with server.connect() as c:
        assert c.list_logs()[log_name] == 2
        assert c.values(log_name, 0) == [b"new-0"]
        assert c.fetch(log_name, 0, "g") == b"new-0"
