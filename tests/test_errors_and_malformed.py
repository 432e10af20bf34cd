"""Error responses (Rog's texts verbatim, byte for byte) and hostile input: malformed,
truncated, oversized frames and unknown commands. After each, the server must still be
healthy and the log unchanged."""

import socket
import struct

import pytest

import chariot_client as cc
from chariot_client import ExtError, RogError


def expect_rog_error(sock: socket.socket, message: str) -> None:
    """The exact bytes of Rog's error form: 01, u64 length, message."""
    want = cc.encode_rog_error(message)
    got = cc.recv_exact(sock, 1)
    assert got == b"\x01", f"status {got!r}"
    n = struct.unpack(">Q", cc.recv_exact(sock, 8))[0]
    text = cc.recv_exact(sock, n) if n < 1 << 16 else b"<huge>"
    assert b"\x01" + struct.pack(">Q", n) + text == want, text


def assert_healthy(server) -> None:
    """A fresh connection works end to end."""
    assert server.alive(), server.stderr_tail()
    probe = "health-probe"
    with server.connect() as c:
        try:
            c.create_log(probe, 1)
        except RogError as e:
            assert e.message == cc.msg_exists(probe)
        c.publish(probe, 0, b"ping")
        assert c.list_logs()[probe] == 1


def snapshot(server, name):
    """Every partition's records of ``name`` (values, keys, offsets) plus groups."""
    with server.connect() as c:
        desc = c.describe_log(name)
        recs = {p.partition: [(r.offset, r.value) for r in c.read_all(name, p.partition)] for p in desc}
        groups = {p.partition: p.group_offsets() for p in desc}
    return recs, groups


@pytest.fixture
def seeded(server, log_name):
    """A log with 2 partitions, a few records and a group position, for "unchanged" checks."""
    with server.connect() as c:
        c.create_log(log_name, 2)
        for i in range(3):
            c.publish(log_name, 0, f"keep {i}".encode())
        c.publish(log_name, 1, b"keep p1")
        c.ack(log_name, 0, "g")
    before = snapshot(server, log_name)
    assert before[0][0] == [(0, b"keep 0"), (1, b"keep 1"), (2, b"keep 2")]
    return log_name, before


# ---------------------------------------------------------------------------- Rog error texts


def test_zero_partitions(server, log_name):
    with server.connect() as c:
        c.send_raw(cc.encode_create_log(log_name, 0))
        expect_rog_error(c.sock, "Number of partitions must be at least 1")
        # a semantic error does not end the connection, and created nothing
        assert log_name not in c.list_logs()
        c.create_log(log_name, 1)


def test_log_already_exists(server, log_name):
    with server.connect() as c:
        c.create_log(log_name, 2)
        c.send_raw(cc.encode_create_log(log_name, 2))
        expect_rog_error(c.sock, f"Log {log_name} already exists")
        c.send_raw(cc.encode_create_log(log_name, 5))
        expect_rog_error(c.sock, f"Log {log_name} already exists")
        assert c.list_logs()[log_name] == 2


@pytest.mark.parametrize("kind", ["publish", "fetch", "ack"])
def test_unknown_log(server, kind):
    name = "no-such-log"
    req = {
        "publish": cc.encode_publish(name, 0, b"x"),
        "fetch": cc.encode_fetch(name, 0, "g"),
        "ack": cc.encode_ack(name, 0, "g"),
    }[kind]
    with server.connect() as c:
        c.send_raw(req)
        expect_rog_error(c.sock, "No log registered with name no-such-log")
        assert name not in c.list_logs()
    # and in Rog's one-request-per-connection style
    with server.connect() as c:
        c.send_raw(req)
        expect_rog_error(c.sock, "No log registered with name no-such-log")


@pytest.mark.parametrize("kind", ["publish", "fetch", "ack"])
@pytest.mark.parametrize("partition", [3, 4, 255])
def test_partition_out_of_range(server, log_name, kind, partition):
    with server.connect() as c:
        c.create_log(log_name, 3)
        req = {
            "publish": cc.encode_publish(log_name, partition, b"x"),
            "fetch": cc.encode_fetch(log_name, partition, "g"),
            "ack": cc.encode_ack(log_name, partition, "g"),
        }[kind]
        c.send_raw(req)
        expect_rog_error(c.sock, f"Trying to access partition {partition} but log {log_name} has 3 partitions")
        assert [p.next_offset for p in c.describe_log(log_name)] == [0, 0, 0]


def test_no_data_on_fetch_and_ack(server, log_name):
    with server.connect() as c:
        c.create_log(log_name, 1)
        c.send_raw(cc.encode_fetch(log_name, 0, "g"))
        expect_rog_error(c.sock, "No data left in the log to be read")
        c.send_raw(cc.encode_ack(log_name, 0, "g"))
        expect_rog_error(c.sock, "No data left in the log to be read")
        c.publish(log_name, 0, b"x")
        c.ack(log_name, 0, "g")
        c.send_raw(cc.encode_ack(log_name, 0, "g"))
        expect_rog_error(c.sock, "No data left in the log to be read")
        c.send_raw(cc.encode_fetch(log_name, 0, "g"))
        expect_rog_error(c.sock, "No data left in the log to be read")


def test_error_order_unknown_log_before_partition(server):
    """A missing log is reported as such whatever the partition index."""
    with server.connect() as c:
        c.send_raw(cc.encode_fetch("ghost", 200, "g"))
        expect_rog_error(c.sock, "No log registered with name ghost")


def test_semantic_errors_keep_the_connection(server, log_name):
    with server.connect() as c:
        c.send_raw(
            cc.encode_fetch("ghost", 0, "g")
            + cc.encode_create_log(log_name, 0)
            + cc.encode_create_log(log_name, 1)
            + cc.encode_publish(log_name, 9, b"x")
            + cc.encode_publish(log_name, 0, b"ok")
        )
        expect_rog_error(c.sock, cc.msg_unknown_log("ghost"))
        expect_rog_error(c.sock, cc.MSG_BAD_PARTITIONS)
        cc.read_rog_status(c.sock)
        expect_rog_error(c.sock, cc.msg_partition(9, log_name, 1))
        cc.read_rog_status(c.sock)
        assert c.values(log_name, 0) == [b"ok"]


# ---------------------------------------------------------------------------- unknown commands


@pytest.mark.parametrize("cmd", [0x04, 0x0F, 0x19, 0x7F, 0xFF])
def test_unknown_command_byte(server, seeded, cmd):
    """One extension-form error with code 10 (unknown_command), then the server closes."""
    name, before = seeded
    with server.connect() as c:
        c.send_raw(bytes([cmd]) + b"\x00\x00\x00\x00")
        status = cc.recv_exact(c.sock, 1)
        assert status == b"\x01"
        n = struct.unpack(">Q", cc.recv_exact(c.sock, 8))[0]
        assert 2 <= n < 4096
        body = cc.recv_exact(c.sock, n)
        assert struct.unpack(">H", body[:2])[0] == cc.E_UNKNOWN_COMMAND, body
        body[2:].decode("utf-8")
        assert cc.read_until_eof(c.sock) == b"", "server must close after an undecodable request"
    assert_healthy(server)
    assert snapshot(server, name) == before


def test_unknown_command_after_valid_requests(server, seeded):
    """Valid requests before the bad byte are answered first, in order."""
    name, before = seeded
    with server.connect() as c:
        c.send_raw(cc.encode_fetch(name, 0, "g") + b"\x42")
        assert cc.read_rog_fetch(c.sock) == b"keep 1"
        with pytest.raises(ExtError) as e:
            cc.read_ext_response(c.sock)
        assert e.value.code == cc.E_UNKNOWN_COMMAND
        assert cc.read_until_eof(c.sock) == b""
    assert snapshot(server, name) == before


def test_nothing_after_an_undecodable_request_is_applied(server, seeded):
    """After an unknown command the frame boundary is lost: a complete publish that follows
    in the same write must not be answered nor applied."""
    name, before = seeded
    with server.connect() as c:
        c.send_raw(b"\x42" + cc.encode_publish(name, 0, b"smuggled") + cc.encode_create_log("smuggled", 1))
        with pytest.raises(ExtError) as e:
            cc.read_ext_response(c.sock)
        assert e.value.code == cc.E_UNKNOWN_COMMAND
        assert cc.read_until_eof(c.sock) == b""
    assert snapshot(server, name) == before
    with server.connect() as c:
        assert "smuggled" not in c.list_logs()


def test_nothing_after_a_malformed_rog_request_is_applied(server, seeded):
    name, before = seeded
    with server.connect() as c:
        c.send_raw(cc.encode_fetch(name, 0, b"\xff") + cc.encode_publish(name, 0, b"smuggled"))
        with pytest.raises(RogError):
            cc.read_rog_fetch(c.sock)
        assert cc.read_until_eof(c.sock) == b""
    assert snapshot(server, name) == before


# ---------------------------------------------------------------------------- malformed frames


def test_invalid_utf8_log_name_in_rog_command(server, seeded):
    name, before = seeded
    with server.connect() as c:
        c.send_raw(cc.encode_publish(b"\xff\xfe", 0, b"x"))
        with pytest.raises(RogError):
            cc.read_rog_status(c.sock)  # Rog form: no code
        assert cc.read_until_eof(c.sock) == b""
    assert_healthy(server)
    assert snapshot(server, name) == before


def test_invalid_utf8_group_name(server, seeded):
    name, before = seeded
    with server.connect() as c:
        c.send_raw(cc.encode_ack(name, 0, b"g\xc3"))
        with pytest.raises(RogError):
            cc.read_rog_status(c.sock)
        assert cc.read_until_eof(c.sock) == b""
    assert snapshot(server, name) == before


def test_invalid_utf8_in_create(server):
    with server.connect() as c:
        c.send_raw(cc.encode_create_log(b"bad\x80name", 1))
        with pytest.raises(RogError):
            cc.read_rog_status(c.sock)
        assert cc.read_until_eof(c.sock) == b""
    with server.connect() as c:
        assert c.list_logs() == {}


@pytest.mark.parametrize(
    "label,frame",
    [
        ("list logs with a body", cc.encode_ext(cc.CMD_LIST_LOGS, b"\x00")),
        ("describe with bytes left over", cc.encode_ext(cc.CMD_DESCRIBE_LOG, b"\x01ab")),
        ("describe name past the body", cc.encode_ext(cc.CMD_DESCRIBE_LOG, b"\x05ab")),
        ("describe invalid utf8", cc.encode_ext(cc.CMD_DESCRIBE_LOG, b"\x02\xc3\x28")),
        ("read range short body", cc.encode_ext(cc.CMD_READ_RANGE, b"\x01a" + cc.u32(0) + cc.u64(0))),
        ("read range byte left over", cc.encode_ext(cc.CMD_READ_RANGE, b"\x01a" + cc.u32(0) + cc.u64(0) + cc.u32(9) + b"!")),
        ("publish records byte left over",
         cc.encode_ext(cc.CMD_PUBLISH_RECORDS, cc.body_publish_records("a", 0, [b"v"]) + b"!")),
        ("publish batch byte left over", cc.encode_ext(
            cc.CMD_PUBLISH_BATCH, cc.body_publish_batch("a", 0, cc.encode_batch([cc.Record(b"v")])) + b"!")),
        ("publish batch length past body", cc.encode_ext(
            cc.CMD_PUBLISH_BATCH, cc.body_publish_batch("a", 0, cc.encode_batch([cc.Record(b"v")]))[:-1])),
        ("empty body for describe", cc.encode_ext(cc.CMD_DESCRIBE_LOG, b"")),
    ],
)
def test_malformed_extension_frame(server, seeded, label, frame):
    """Extension error form with code 9 (malformed_frame), then the server closes."""
    name, before = seeded
    with server.connect() as c:
        c.send_raw(frame)
        with pytest.raises(ExtError) as e:
            cc.read_ext_response(c.sock)
        assert e.value.code == cc.E_MALFORMED_FRAME, label
        assert cc.read_until_eof(c.sock) == b""
    assert_healthy(server)
    assert snapshot(server, name) == before


def test_publish_records_count_lies(server, seeded):
    """A count that cannot fit in the frame is malformed, and nothing is appended."""
    name, before = seeded
    body = cc.body_publish_records(name, 0, [b"a", b"b"])
    # claim 1000 records, carry 2
    at = 1 + len(name.encode()) + 4
    lying = body[:at] + cc.u32(1000) + body[at + 4 :]
    with server.connect() as c:
        c.send_raw(cc.encode_ext(cc.CMD_PUBLISH_RECORDS, lying))
        with pytest.raises(ExtError) as e:
            cc.read_ext_response(c.sock)
        assert e.value.code == cc.E_MALFORMED_FRAME
        assert cc.read_until_eof(c.sock) == b""
    assert snapshot(server, name) == before


def test_publish_records_value_past_body(server, seeded):
    name, before = seeded
    body = cc.body_publish_records(name, 0, [b"abc"])
    # declare one byte fewer in body_len than the body holds: the value runs past it
    with server.connect() as c:
        c.send_raw(cc.encode_ext(cc.CMD_PUBLISH_RECORDS, body[:-1]))
        with pytest.raises(ExtError) as e:
            cc.read_ext_response(c.sock)
        assert e.value.code == cc.E_MALFORMED_FRAME
        assert cc.read_until_eof(c.sock) == b""
    assert snapshot(server, name) == before


# ---------------------------------------------------------------------------- truncated frames


def truncation_cases(name):
    ext_pub = cc.encode_publish_records(name, 0, [b"partial-a", b"partial-b"])
    batch = cc.encode_publish_batch(name, 0, cc.encode_batch([cc.Record(b"partial-batch", timestamp=1)]))
    return {
        "create": cc.encode_create_log(name + "-new", 1),
        "publish": cc.encode_publish(name, 0, b"partial-publish" * 10),
        "fetch": cc.encode_fetch(name, 0, "trunc-group"),
        "ack": cc.encode_ack(name, 0, "trunc-group"),
        "publish-records": ext_pub,
        "publish-batch": batch,
        "read-range": cc.encode_read_range(name, 0, 0, 1000),
        "describe": cc.encode_describe_log(name),
    }


@pytest.mark.parametrize("kind", ["create", "publish", "fetch", "ack", "publish-records", "publish-batch", "read-range", "describe"])
def test_client_closes_mid_frame(server, seeded, kind):
    """For every cut point of the frame: the client sends a prefix and closes. No response
    may claim success, the server stays up, and the log is unchanged."""
    name, before = seeded
    frame = truncation_cases(name)[kind]
    cuts = sorted(set(range(1, min(len(frame), 24))) | {len(frame) // 2, len(frame) - 1})
    for cut in cuts:
        with server.connect() as c:
            c.send_raw(frame[:cut])
            c.sock.shutdown(socket.SHUT_WR)
            got = cc.read_until_eof(c.sock)
            # nothing, or an error response; never a success
            assert got == b"" or got[:1] == b"\x01", (cut, got)
    assert_healthy(server)
    after = snapshot(server, name)
    assert after == before
    with server.connect() as c:
        assert name + "-new" not in c.list_logs()


def test_truncated_publish_abandoned_without_close(server, seeded):
    """A client that stalls mid-frame on one connection does not block others, and its
    half record never appears."""
    name, before = seeded
    stalled = server.connect()
    try:
        stalled.send_raw(cc.encode_publish(name, 0, b"x" * 50, data_len=100))
        with server.connect() as c:
            c.publish(name, 0, b"other client")
            assert c.fetch(name, 0, "g") == b"keep 1"
            vals = c.values(name, 0)
        assert vals == [b"keep 0", b"keep 1", b"keep 2", b"other client"]
    finally:
        stalled.close()
    with server.connect() as c:
        c.publish(name, 0, b"after close")
        assert c.values(name, 0) == [b"keep 0", b"keep 1", b"keep 2", b"other client", b"after close"]


# ---------------------------------------------------------------------------- size limits


def test_oversized_record_rejected_before_its_bytes_arrive(make_server, log_name):
    """The declared length is checked as soon as it is read: the error comes back although
    the client never sends the data, then the server closes the connection."""
    server = make_server("--max-record-bytes", "1024")
    with server.connect() as c:
        c.create_log(log_name, 1)
        c.publish(log_name, 0, b"a" * 1024)  # exactly at the limit: accepted
    with server.connect() as c:
        c.send_raw(cc.encode_publish(log_name, 0, b"", data_len=1025))
        with pytest.raises(RogError) as e:
            cc.read_rog_status(c.sock)
        assert e.value.message
        assert cc.read_until_eof(c.sock) == b""
    with server.connect() as c:
        assert c.values(log_name, 0) == [b"a" * 1024]


def test_oversized_record_with_its_bytes(make_server, log_name):
    server = make_server("--max-record-bytes", "1024")
    with server.connect() as c:
        c.create_log(log_name, 1)
    with server.connect() as c:
        try:
            c.send_raw(cc.encode_publish(log_name, 0, b"b" * 5000))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may close before all the bytes are written
        try:
            cc.read_rog_status(c.sock)
            raise AssertionError("oversized publish was acknowledged")
        except RogError:
            pass
        except (cc.ConnectionClosed, ConnectionResetError):
            pytest.fail("no error response for an oversized record")
    assert server.alive()
    with server.connect() as c:
        assert c.values(log_name, 0) == []
        c.publish(log_name, 0, b"fine")
        assert c.values(log_name, 0) == [b"fine"]


def test_default_record_limit_is_one_mib(server, log_name):
    with server.connect() as c:
        c.create_log(log_name, 1)
        c.publish(log_name, 0, b"\x07" * (1 << 20))
        c.send_raw(cc.encode_publish(log_name, 0, b"", data_len=(1 << 20) + 1))
        with pytest.raises(RogError):
            cc.read_rog_status(c.sock)
        assert cc.read_until_eof(c.sock) == b""
    with server.connect() as c:
        [p] = c.describe_log(log_name)
        assert p.next_offset == 1
        assert c.fetch(log_name, 0, "g") == b"\x07" * (1 << 20)


@pytest.mark.parametrize("declared", [1 << 32, (1 << 63) + 5, (1 << 64) - 1])
def test_absurd_data_length(server, seeded, declared):
    name, before = seeded
    with server.connect() as c:
        c.send_raw(cc.encode_publish(name, 0, b"", data_len=declared))
        with pytest.raises(RogError):
            cc.read_rog_status(c.sock)
        assert cc.read_until_eof(c.sock) == b""
    assert_healthy(server)
    assert snapshot(server, name) == before


def test_publish_records_value_too_large(make_server, log_name):
    server = make_server("--max-record-bytes", "1024")
    with server.connect() as c:
        c.create_log(log_name, 1)
        c.send_raw(cc.encode_publish_records(log_name, 0, [b"ok", b"z" * 1025]))
        with pytest.raises(ExtError) as e:
            cc.read_ext_response(c.sock)
        assert e.value.code == cc.E_RECORD_TOO_LARGE
    with server.connect() as c:
        assert c.values(log_name, 0) == []


def test_extension_frame_too_large(server, seeded):
    """body_len above max_frame_size: code 15, answered without waiting for the body."""
    name, before = seeded
    with server.connect() as c:
        c.send_raw(bytes([cc.CMD_PUBLISH_RECORDS]) + cc.u32(cc.DEFAULT_MAX_FRAME + 1))
        with pytest.raises(ExtError) as e:
            cc.read_ext_response(c.sock)
        assert e.value.code == cc.E_FRAME_TOO_LARGE
        assert cc.read_until_eof(c.sock) == b""
    assert snapshot(server, name) == before


def test_publish_batch_too_large(server, seeded):
    """batch_len above max_batch_size (8 MiB) inside an allowed frame: code 15."""
    name, before = seeded
    head = cc._name(name) + cc.u32(0) + cc.u32(cc.DEFAULT_MAX_BATCH + 1)
    with server.connect() as c:
        c.send_raw(bytes([cc.CMD_PUBLISH_BATCH]) + cc.u32(len(head) + cc.DEFAULT_MAX_BATCH + 1) + head)
        with pytest.raises(ExtError) as e:
            cc.read_ext_response(c.sock)
        assert e.value.code in (cc.E_FRAME_TOO_LARGE,)
        assert cc.read_until_eof(c.sock) == b""
    assert snapshot(server, name) == before


def test_publish_records_total_above_batch_limit(server, seeded):
    """Each value within max_record_size, the sum above max_batch_size (8 MiB), the frame
    within max_frame_size: frame too large (15), nothing appended."""
    name, before = seeded
    values = [bytes([i]) * (1 << 20) for i in range(8)] + [b"z" * 1000]
    frame = cc.encode_publish_records(name, 0, values)
    assert len(frame) - 5 <= cc.DEFAULT_MAX_FRAME
    with server.connect() as c:
        try:
            c.send_raw(frame)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered (and closed) before the whole body was sent
        with pytest.raises(ExtError) as e:
            cc.read_ext_response(c.sock)
        assert e.value.code == cc.E_FRAME_TOO_LARGE
    assert snapshot(server, name) == before


@pytest.mark.parametrize("bad", ["", "tab\there", "nul\x00", "new\nline"])
def test_invalid_log_names_refused(server, bad):
    """Which names are allowed is the server's choice; a refused one gets an error answer,
    creates nothing, and leaves the connection usable."""
    bad = bad.encode().decode("unicode_escape")
    with server.connect() as c:
        c.send_raw(cc.encode_create_log(bad, 1))
        with pytest.raises(RogError):
            cc.read_rog_status(c.sock)
        assert c.list_logs() == {}
        c.create_log("fine", 1)


# ---------------------------------------------------------------------------- slowloris-ish


def test_idle_connection_does_not_block_others(server, log_name):
    idle = [server.connect() for _ in range(5)]
    try:
        for i, c in enumerate(idle):
            c.send_raw(b"\x01"[: i % 2])  # some send a lone command byte, some nothing
        with server.connect() as c:
            c.create_log(log_name, 1)
            c.publish(log_name, 0, b"x")
            assert c.fetch(log_name, 0, "g") == b"x"
    finally:
        for c in idle:
            c.close()
