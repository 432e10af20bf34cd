"""Rog's four commands (create log, publish, fetch, ack), byte for byte, as Rog's own
clients use them: one request per connection, or many on one connection."""

import struct

import pytest

import chariot_client as cc
from chariot_client import RogError


def test_create_publish_fetch_ack_in_order(conn, log_name):
    conn.create_log(log_name, 1)
    for i in range(5):
        conn.publish(log_name, 0, f"message {i}".encode())
    for i in range(5):
        assert conn.fetch(log_name, 0, "g") == f"message {i}".encode()
        conn.ack(log_name, 0, "g")
    with pytest.raises(RogError) as e:
        conn.fetch(log_name, 0, "g")
    assert e.value.message == cc.MSG_NO_DATA


def test_success_responses_are_exact_bytes(server, log_name):
    """create/publish/ack answer exactly one byte 0x00; fetch answers 00, u64 len, payload.
    Checked on one connection by sending the next request only after reading exactly the
    expected bytes, and finally checking nothing extra arrived."""
    with server.connect() as c:
        s = c.sock
        s.sendall(cc.encode_create_log(log_name, 2))
        assert cc.recv_exact(s, 1) == b"\x00"
        s.sendall(cc.encode_publish(log_name, 1, b"payload"))
        assert cc.recv_exact(s, 1) == b"\x00"
        s.sendall(cc.encode_fetch(log_name, 1, "grp"))
        assert cc.recv_exact(s, 16) == b"\x00" + struct.pack(">Q", 7) + b"payload"
        s.sendall(cc.encode_ack(log_name, 1, "grp"))
        assert cc.recv_exact(s, 1) == b"\x00"
        s.sendall(cc.encode_fetch(log_name, 1, "grp"))
        assert cc.recv_exact(s, 9 + 34) == cc.encode_rog_error(cc.MSG_NO_DATA)
        s.settimeout(0.3)
        with pytest.raises(TimeoutError):
            extra = s.recv(1)
            raise AssertionError(f"unexpected extra bytes {extra!r}")


def test_fetch_without_ack_repeats(conn, log_name):
    conn.create_log(log_name, 1)
    conn.publish(log_name, 0, b"first")
    conn.publish(log_name, 0, b"second")
    for _ in range(4):
        assert conn.fetch(log_name, 0, "g") == b"first"
    conn.ack(log_name, 0, "g")
    for _ in range(3):
        assert conn.fetch(log_name, 0, "g") == b"second"


def test_partitions_are_independent(conn, log_name):
    conn.create_log(log_name, 3)
    for p in range(3):
        for i in range(3):
            conn.publish(log_name, p, f"p{p}-{i}".encode())
    # interleave the reads across partitions
    for i in range(3):
        for p in (2, 0, 1):
            assert conn.fetch(log_name, p, "g") == f"p{p}-{i}".encode()
            conn.ack(log_name, p, "g")
    for p in range(3):
        with pytest.raises(RogError, match=cc.MSG_NO_DATA):
            conn.fetch(log_name, p, "g")


def test_groups_start_at_zero_and_are_independent(conn, log_name):
    conn.create_log(log_name, 1)
    for i in range(4):
        conn.publish(log_name, 0, bytes([i]))
    for _ in range(3):
        conn.ack(log_name, 0, "fast")
    assert conn.fetch(log_name, 0, "fast") == bytes([3])
    # a new group starts at offset 0 regardless of the others
    assert conn.fetch(log_name, 0, "slow") == bytes([0])
    conn.ack(log_name, 0, "slow")
    assert conn.fetch(log_name, 0, "slow") == bytes([1])
    assert conn.fetch(log_name, 0, "fast") == bytes([3])
    assert conn.fetch(log_name, 0, "late") == bytes([0])


def test_groups_are_scoped_to_log_and_partition(conn, log_name):
    other = log_name + "-other"
    conn.create_log(log_name, 2)
    conn.create_log(other, 1)
    for name, p in ((log_name, 0), (log_name, 1), (other, 0)):
        conn.publish(name, p, f"{name}/{p}/a".encode())
        conn.publish(name, p, f"{name}/{p}/b".encode())
    conn.ack(log_name, 0, "g")
    assert conn.fetch(log_name, 0, "g") == f"{log_name}/0/b".encode()
    assert conn.fetch(log_name, 1, "g") == f"{log_name}/1/a".encode()
    assert conn.fetch(other, 0, "g") == f"{other}/0/a".encode()


def test_ack_without_fetch_advances(conn, log_name):
    conn.create_log(log_name, 1)
    for i in range(3):
        conn.publish(log_name, 0, bytes([65 + i]))
    conn.ack(log_name, 0, "g")
    conn.ack(log_name, 0, "g")
    assert conn.fetch(log_name, 0, "g") == b"C"


def test_ack_never_passes_the_end(conn, log_name):
    conn.create_log(log_name, 1)
    with pytest.raises(RogError) as e:
        conn.ack(log_name, 0, "g")
    assert e.value.message == cc.MSG_NO_DATA
    conn.publish(log_name, 0, b"one")
    conn.ack(log_name, 0, "g")
    for _ in range(3):
        with pytest.raises(RogError) as e:
            conn.ack(log_name, 0, "g")
        assert e.value.message == cc.MSG_NO_DATA
    # the failed acks did not move the group: the next record is the next one published
    conn.publish(log_name, 0, b"two")
    assert conn.fetch(log_name, 0, "g") == b"two"
    conn.ack(log_name, 0, "g")
    with pytest.raises(RogError, match=cc.MSG_NO_DATA):
        conn.fetch(log_name, 0, "g")


def test_consumer_waiting_at_end_sees_new_records(conn, log_name):
    conn.create_log(log_name, 1)
    with pytest.raises(RogError, match=cc.MSG_NO_DATA):
        conn.fetch(log_name, 0, "g")
    conn.publish(log_name, 0, b"late")
    assert conn.fetch(log_name, 0, "g") == b"late"


def test_one_request_per_connection(server, log_name):
    """Rog's clients open a connection per command and close it after the response."""
    a = server.addr
    cc.one_shot(*a, cc.encode_create_log(log_name, 2), cc.read_rog_status)
    for i in range(10):
        cc.one_shot(*a, cc.encode_publish(log_name, i % 2, f"m{i}".encode()), cc.read_rog_status)
    for p in range(2):
        got = []
        for _ in range(5):
            got.append(cc.one_shot(*a, cc.encode_fetch(log_name, p, "g"), cc.read_rog_fetch))
            cc.one_shot(*a, cc.encode_ack(log_name, p, "g"), cc.read_rog_status)
        assert got == [f"m{i}".encode() for i in range(p, 10, 2)]
    with pytest.raises(RogError, match=cc.MSG_NO_DATA):
        cc.one_shot(*a, cc.encode_fetch(log_name, 0, "g"), cc.read_rog_fetch)


def test_connection_closed_right_after_request_still_applies(server, log_name):
    """A Rog client may close without reading the answer; an acknowledged-or-not publish must
    not break the server, and a publish whose frame was complete is applied at most once."""
    with server.connect() as c:
        c.create_log(log_name, 1)
    for i in range(5):
        with server.connect() as c:
            c.send_raw(cc.encode_publish(log_name, 0, f"fire-and-forget {i}".encode()))
    with server.connect() as c:
        c.publish(log_name, 0, b"marker")
        vals = c.values(log_name, 0)
    # the abandoned publishes run concurrently with the marker, so their order is free
    assert vals.count(b"marker") == 1
    assert len(vals) <= 6
    assert len(set(vals)) == len(vals)
    for v in vals:
        assert v == b"marker" or v.startswith(b"fire-and-forget ")


def test_many_requests_on_one_connection(conn, log_name):
    conn.create_log(log_name, 1)
    n = 300
    for i in range(n):
        conn.publish(log_name, 0, i.to_bytes(4, "big"))
    for i in range(n):
        assert conn.fetch(log_name, 0, "g") == i.to_bytes(4, "big")
        conn.ack(log_name, 0, "g")
    with pytest.raises(RogError, match=cc.MSG_NO_DATA):
        conn.fetch(log_name, 0, "g")


def test_pipelined_requests_answered_in_order(server, log_name):
    """Many requests in one write, before reading anything: one response each, in order."""
    with server.connect() as c:
        c.create_log(log_name, 1)
        reqs = [cc.encode_publish(log_name, 0, f"pipe {i}".encode()) for i in range(50)]
        reqs += [cc.encode_fetch(log_name, 0, "g"), cc.encode_ack(log_name, 0, "g")] * 50
        reqs += [cc.encode_fetch(log_name, 0, "g"), cc.encode_create_log(log_name, 1)]
        c.send_raw(b"".join(reqs))
        for _ in range(50):
            cc.read_rog_status(c.sock)
        for i in range(50):
            assert cc.read_rog_fetch(c.sock) == f"pipe {i}".encode()
            cc.read_rog_status(c.sock)
        with pytest.raises(RogError, match=cc.MSG_NO_DATA):
            cc.read_rog_fetch(c.sock)
        with pytest.raises(RogError) as e:
            cc.read_rog_status(c.sock)
        assert e.value.message == cc.msg_exists(log_name)
        # and the connection is still usable
        c.publish(log_name, 0, b"after")
        assert c.values(log_name, 0)[-1] == b"after"


def test_rog_and_extension_commands_interleave(server, log_name):
    with server.connect() as c:
        c.send_raw(
            cc.encode_create_log(log_name, 1)
            + cc.encode_list_logs()
            + cc.encode_publish(log_name, 0, b"rog")
            + cc.encode_publish_records(log_name, 0, [b"ext1", b"ext2"])
            + cc.encode_fetch(log_name, 0, "g")
            + cc.encode_describe_log(log_name)
            + cc.encode_ack(log_name, 0, "g")
            + cc.encode_fetch(log_name, 0, "g")
        )
        cc.read_rog_status(c.sock)
        assert cc.decode_list_logs_body(cc.read_ext_response(c.sock)).get(log_name) == 1
        cc.read_rog_status(c.sock)
        assert cc.decode_publish_records_body(cc.read_ext_response(c.sock)) == 1
        assert cc.read_rog_fetch(c.sock) == b"rog"
        [p0] = cc.decode_describe_log_body(cc.read_ext_response(c.sock))
        assert (p0.earliest_offset, p0.next_offset) == (0, 3)
        cc.read_rog_status(c.sock)
        assert cc.read_rog_fetch(c.sock) == b"ext1"


def test_empty_record(conn, log_name):
    conn.create_log(log_name, 1)
    conn.publish(log_name, 0, b"")
    conn.publish(log_name, 0, b"x")
    assert conn.fetch(log_name, 0, "g") == b""
    conn.ack(log_name, 0, "g")
    assert conn.fetch(log_name, 0, "g") == b"x"


@pytest.mark.parametrize("name", ["café-ü", "a b/c:d", "x" * 255, "日志"])
def test_unusual_log_and_group_names(conn, name):
    conn.create_log(name, 1)
    conn.publish(name, 0, b"v")
    group = "группа " + name[:100]
    assert conn.fetch(name, 0, group) == b"v"
    conn.ack(name, 0, group)
    assert conn.list_logs()[name] == 1
    with pytest.raises(RogError) as e:
        conn.create_log(name, 1)
    assert e.value.message == cc.msg_exists(name)


def test_max_partition_index(conn, log_name):
    conn.create_log(log_name, 255)
    conn.publish(log_name, 254, b"last")
    assert conn.fetch(log_name, 254, "g") == b"last"
    with pytest.raises(RogError, match=cc.MSG_NO_DATA):
        conn.fetch(log_name, 0, "g")
