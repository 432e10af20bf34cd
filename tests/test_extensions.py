"""Chariot's extension commands 0x10-0x14: publish batch (client-built record batches with
CRC32C), publish records, read range (batch decoding, paging, bounds), list and describe."""

import struct

import pytest

import chariot_client as cc
from chariot_client import ExtError, Record


def make_records(n, prefix="r", ts=1_700_000_000_000):
    return [
        Record(
            value=f"{prefix}{i}".encode(),
            key=(f"k{i}".encode() if i % 2 == 0 else None),
            headers=[(b"idx", str(i).encode()), (b"bin", bytes([i % 256, 0, 255]))][: i % 3],
            timestamp=ts + i * 7,
        )
        for i in range(n)
    ]


def same_records(got, want, base):
    assert [(r.offset, r.value, r.key, r.headers, r.timestamp) for r in got] == [
        (base + i, w.value, w.key, w.headers, w.timestamp) for i, w in enumerate(want)
    ]


# ---------------------------------------------------------------------------- publish batch


def test_publish_batch_round_trip(conn, log_name):
    conn.create_log(log_name, 2)
    recs = make_records(5)
    batch = cc.encode_batch(recs, producer_id=77, base_sequence=5)
    assert conn.publish_batch(log_name, 1, batch) == (0, 5)
    recs2 = make_records(3, prefix="s", ts=1_800_000_000_000)
    assert conn.publish_batch(log_name, 1, cc.encode_batch(recs2)) == (5, 3)
    rr = conn.read_range(log_name, 1, 0, 1 << 20)
    assert (rr.earliest_offset, rr.next_offset) == (0, 8)
    batches = cc.decode_batches(rr.batches)
    assert [b.base_offset for b in batches] == [0, 5]
    same_records(batches[0].records, recs, 0)
    same_records(batches[1].records, recs2, 5)
    assert (batches[0].producer_id, batches[0].base_sequence) == (77, 5)
    assert batches[0].leader_term == 0
    assert conn.read_range(log_name, 0, 0).next_offset == 0


def test_publish_batch_is_stored_as_sent(conn, log_name):
    """The storage layer keeps the client's layout; only the base offset is stamped."""
    conn.create_log(log_name, 1)
    conn.publish(log_name, 0, b"first")  # so the batch lands at offset 1
    batch = cc.encode_batch(make_records(4), base_offset=987654)  # client's base offset is ignored
    assert conn.publish_batch(log_name, 0, batch) == (1, 4)
    rr = conn.read_range(log_name, 0, 1)
    stored = [b for b in cc.decode_batches(rr.batches) if b.base_offset == 1]
    assert len(stored) == 1
    assert stored[0].raw == struct.pack(">Q", 1) + batch[8:]


def test_records_of_a_batch_visible_to_rog_fetch(conn, log_name):
    conn.create_log(log_name, 1)
    recs = make_records(3)
    conn.publish_batch(log_name, 0, cc.encode_batch(recs))
    for r in recs:
        assert conn.fetch(log_name, 0, "g") == r.value
        conn.ack(log_name, 0, "g")


def test_large_batch(conn, log_name):
    conn.create_log(log_name, 1)
    recs = [Record(bytes([i]) * 10_000, timestamp=1) for i in range(200)]  # ~2 MB
    assert conn.publish_batch(log_name, 0, cc.encode_batch(recs)) == (0, 200)
    got = conn.read_all(log_name, 0)
    assert [r.value for r in got] == [r.value for r in recs]


def corrupt(batch: bytes, at: int) -> bytes:
    b = bytearray(batch)
    b[at] ^= 0x40
    return bytes(b)


def invalid_batches():
    good = cc.encode_batch(make_records(3))
    recs = make_records(3)
    yield "bad crc (record byte flipped)", corrupt(good, len(good) - 2)
    yield "bad crc (header field flipped)", corrupt(good, 27)
    yield "crc field flipped", corrupt(good, 13)
    yield "unknown magic", cc.encode_batch(recs, magic=2)
    yield "record count too high", cc.encode_batch(recs, record_count=4)
    yield "record count too low", cc.encode_batch(recs, record_count=2)
    yield "zero records", cc.encode_batch([])
    # length field says one byte less than the bytes sent
    yield "length field short", good[:8] + struct.pack(">I", len(good) - 13) + good[12:]
    yield "length field long", good[:8] + struct.pack(">I", len(good) - 11) + good[12:]
    # trailing garbage after a valid batch, with a length field covering it and a right CRC
    tail = good[16:] + b"\x00\x00"
    yield "trailing bytes", good[:8] + struct.pack(">II", 4 + len(tail), cc.crc32c(tail)) + tail
    yield "shorter than a header", good[:40]
    yield "empty blob", b""


@pytest.mark.parametrize("label,batch", list(invalid_batches()), ids=[l for l, _ in invalid_batches()])
def test_invalid_batch_rejected_and_log_unchanged(conn, log_name, label, batch):
    conn.create_log(log_name, 1)
    conn.publish(log_name, 0, b"before")
    conn.send_raw(cc.encode_publish_batch(log_name, 0, batch))
    with pytest.raises(ExtError) as e:
        cc.read_ext_response(conn.sock)
    # a frame that decodes but carries a bad batch: invalid_batch; the connection stays open
    assert e.value.code == cc.E_INVALID_BATCH, (label, e.value)
    conn.publish(log_name, 0, b"after")
    assert conn.values(log_name, 0) == [b"before", b"after"]


def test_publish_batch_errors(conn, log_name):
    batch = cc.encode_batch(make_records(1))
    with pytest.raises(ExtError) as e:
        conn.publish_batch("ghost", 0, batch)
    assert (e.value.code, e.value.message) == (cc.E_UNKNOWN_LOG, cc.msg_unknown_log("ghost"))
    conn.create_log(log_name, 2)
    with pytest.raises(ExtError) as e:
        conn.publish_batch(log_name, 2, batch)
    assert (e.value.code, e.value.message) == (cc.E_PARTITION_OUT_OF_RANGE, cc.msg_partition(2, log_name, 2))
    with pytest.raises(ExtError) as e:
        conn.publish_batch(log_name, 70000, batch)  # u32 partition index
    assert (e.value.code, e.value.message) == (cc.E_PARTITION_OUT_OF_RANGE, cc.msg_partition(70000, log_name, 2))


def test_publish_batch_record_over_record_limit(make_server, log_name):
    server = make_server("--max-record-bytes", "1000")
    with server.connect() as c:
        c.create_log(log_name, 1)
        batch = cc.encode_batch([Record(b"a" * 10, timestamp=1), Record(b"b" * 1001, timestamp=1)])
        with pytest.raises(ExtError) as e:
            c.publish_batch(log_name, 0, batch)
        assert e.value.code == cc.E_RECORD_TOO_LARGE
    with server.connect() as c:
        assert c.values(log_name, 0) == []


# ---------------------------------------------------------------------------- publish records


def test_publish_records_offsets_and_atomicity(conn, log_name):
    conn.create_log(log_name, 2)
    assert conn.publish_records(log_name, 0, [b"a", b"b", b"c"]) == 0
    assert conn.publish_records(log_name, 0, [b"d"]) == 3
    conn.publish(log_name, 0, b"e")
    assert conn.publish_records(log_name, 0, [b"", bytes(range(256))]) == 5
    assert conn.publish_records(log_name, 1, [b"x"]) == 0
    got = conn.read_all(log_name, 0)
    assert [(r.offset, r.value) for r in got] == list(
        enumerate([b"a", b"b", b"c", b"d", b"e", b"", bytes(range(256))])
    )
    # records published without key or headers read back without them
    assert all(r.key is None and r.headers == [] for r in got)


def test_publish_records_errors(conn, log_name):
    with pytest.raises(ExtError) as e:
        conn.publish_records("ghost", 0, [b"x"])
    assert (e.value.code, e.value.message) == (cc.E_UNKNOWN_LOG, "No log registered with name ghost")
    conn.create_log(log_name, 1)
    with pytest.raises(ExtError) as e:
        conn.publish_records(log_name, 1, [b"x"])
    assert (e.value.code, e.value.message) == (cc.E_PARTITION_OUT_OF_RANGE, cc.msg_partition(1, log_name, 1))
    # zero records: refused, nothing appended, connection still usable
    conn.send_raw(cc.encode_publish_records(log_name, 0, []))
    with pytest.raises(ExtError):
        cc.read_ext_response(conn.sock)
    assert conn.values(log_name, 0) == []


def test_publish_records_with_acks_on_a_single_node(server, log_name):
    """0x16: the node is every copy there is, so both acks values are answered as 0x11 is;
    an acks value that is neither is a malformed frame, and nothing is appended."""
    with server.connect() as conn:
        conn.create_log(log_name, 1)
        assert conn.publish_records_acks(log_name, 0, [b"a", b"b"], cc.ACKS_ALL) == 0
        assert conn.publish_records_acks(log_name, 0, [b"c"], cc.ACKS_QUORUM) == 2
        conn.send_raw(cc.encode_publish_records_acks(log_name, 0, [b"x"], 7))
        with pytest.raises(ExtError) as e:
            cc.read_ext_response(conn.sock)
        assert e.value.code == cc.E_MALFORMED_FRAME
    with server.connect() as conn:
        assert conn.values(log_name, 0) == [b"a", b"b", b"c"]


def test_publish_batch_with_acks_on_a_single_node(server, log_name):
    """0x18: 0x10 with an acks byte; both values are answered as 0x10 is, any other is a
    malformed frame with nothing appended."""
    with server.connect() as conn:
        conn.create_log(log_name, 1)
        batch = cc.encode_batch([Record(value=b"a"), Record(value=b"b")])
        assert conn.publish_batch_acks(log_name, 0, batch, cc.ACKS_ALL) == (0, 2)
        assert conn.publish_batch_acks(log_name, 0, batch, cc.ACKS_QUORUM) == (2, 2)
        conn.send_raw(cc.encode_publish_batch_acks(log_name, 0, batch, 2))
        with pytest.raises(ExtError) as e:
            cc.read_ext_response(conn.sock)
        assert e.value.code == cc.E_MALFORMED_FRAME
    with server.connect() as conn:
        assert conn.values(log_name, 0) == [b"a", b"b", b"a", b"b"]


# ---------------------------------------------------------------------------- read range


def test_read_range_starts_with_the_batch_containing_offset(conn, log_name):
    conn.create_log(log_name, 1)
    conn.publish_records(log_name, 0, [b"a0", b"a1", b"a2", b"a3"])  # offsets 0-3
    conn.publish_records(log_name, 0, [b"b4", b"b5"])  # 4-5
    rr = conn.read_range(log_name, 0, 2, 1 << 20)
    batches = cc.decode_batches(rr.batches)
    assert batches[0].base_offset == 0  # the batch holding offset 2 starts at 0
    assert [r.offset for b in batches for r in b.records] == [0, 1, 2, 3, 4, 5]
    assert (rr.earliest_offset, rr.next_offset) == (0, 6)
    rr = conn.read_range(log_name, 0, 5, 1 << 20)
    assert [b.base_offset for b in cc.decode_batches(rr.batches)] == [4]


def test_read_range_max_bytes_is_a_soft_cap(conn, log_name):
    conn.create_log(log_name, 1)
    for i in range(5):
        conn.publish_records(log_name, 0, [bytes([65 + i]) * 1000])
    one = len(cc.decode_batches(conn.read_range(log_name, 0, 0, 1 << 20).batches)[0].raw)
    # max_bytes smaller than one batch: still exactly one batch (progress guaranteed)
    rr = conn.read_range(log_name, 0, 0, 1)
    assert [b.base_offset for b in cc.decode_batches(rr.batches)] == [0]
    rr = conn.read_range(log_name, 0, 0, 0)
    assert [b.base_offset for b in cc.decode_batches(rr.batches)] == [0]
    # room for exactly two batches
    rr = conn.read_range(log_name, 0, 1, 2 * one)
    assert [b.base_offset for b in cc.decode_batches(rr.batches)] == [1, 2]
    # just under two: one
    rr = conn.read_range(log_name, 0, 1, 2 * one - 1)
    assert [b.base_offset for b in cc.decode_batches(rr.batches)] == [1]
    # all of them
    rr = conn.read_range(log_name, 0, 0, 1 << 20)
    assert [b.base_offset for b in cc.decode_batches(rr.batches)] == [0, 1, 2, 3, 4]
    assert len(rr.batches) == 5 * one


def test_read_range_at_end_and_out_of_range(conn, log_name):
    conn.create_log(log_name, 1)
    rr = conn.read_range(log_name, 0, 0)
    assert (rr.earliest_offset, rr.next_offset, rr.batches) == (0, 0, b"")
    conn.publish_records(log_name, 0, [b"x", b"y"])
    rr = conn.read_range(log_name, 0, 2)
    assert (rr.earliest_offset, rr.next_offset, rr.batches) == (0, 2, b"")
    for bad in (3, 1000, (1 << 64) - 1):
        with pytest.raises(ExtError) as e:
            conn.read_range(log_name, 0, bad)
        assert e.value.code == cc.E_OFFSET_OUT_OF_RANGE, bad
    # still fine on the same connection
    assert conn.read_range(log_name, 0, 1).next_offset == 2


def test_read_range_errors(conn, log_name):
    with pytest.raises(ExtError) as e:
        conn.read_range("ghost", 0, 0)
    assert (e.value.code, e.value.message) == (cc.E_UNKNOWN_LOG, cc.msg_unknown_log("ghost"))
    conn.create_log(log_name, 4)
    with pytest.raises(ExtError) as e:
        conn.read_range(log_name, 4, 0)
    assert (e.value.code, e.value.message) == (cc.E_PARTITION_OUT_OF_RANGE, cc.msg_partition(4, log_name, 4))


def test_read_range_paging(conn, log_name):
    conn.create_log(log_name, 1)
    values = [f"value-{i}".encode() * (1 + i % 7) for i in range(300)]
    for i in range(0, 300, 3):
        conn.publish_records(log_name, 0, values[i : i + 3])
    got = conn.read_all(log_name, 0, max_bytes=500)
    assert [r.value for r in got] == values
    got = conn.read_all(log_name, 0, max_bytes=1, start=151)
    assert [r.value for r in got] == values[151:]


def test_rog_publishes_readable_by_range(conn, log_name):
    conn.create_log(log_name, 1)
    for i in range(10):
        conn.publish(log_name, 0, b"rog %d" % i)
    got = conn.read_all(log_name, 0)
    assert [(r.offset, r.value) for r in got] == [(i, b"rog %d" % i) for i in range(10)]
    assert all(r.timestamp > 1_500_000_000_000 for r in got), "server stamps a wall-clock timestamp (ms)"


# ---------------------------------------------------------------------------- list and describe


def test_list_logs(conn):
    assert conn.list_logs() == {}
    conn.create_log("alpha", 1)
    conn.create_log("beta", 4)
    conn.create_log("gamma é", 255)
    assert conn.list_logs() == {"alpha": 1, "beta": 4, "gamma é": 255}


def test_list_logs_exact_body(server):
    """One log: count=1, name_len, name, partitions; nothing else."""
    with server.connect() as c:
        c.create_log("zz", 3)
        c.send_raw(cc.encode_list_logs())
        assert cc.recv_exact(c.sock, 1) == b"\x00"
        n = struct.unpack(">Q", cc.recv_exact(c.sock, 8))[0]
        body = cc.recv_exact(c.sock, n)
        assert body == struct.pack(">I", 1) + b"\x02zz" + struct.pack(">I", 3)


def test_describe_log(conn, log_name):
    conn.create_log(log_name, 3)
    for i in range(5):
        conn.publish(log_name, 0, b"x")
    conn.publish_records(log_name, 2, [b"a", b"b"])
    for _ in range(3):
        conn.ack(log_name, 0, "g1")
    conn.ack(log_name, 0, "g2")
    conn.ack(log_name, 2, "g1")
    desc = conn.describe_log(log_name)
    assert [(p.partition, p.earliest_offset, p.next_offset) for p in desc] == [(0, 0, 5), (1, 0, 0), (2, 0, 2)]
    assert desc[0].group_offsets() == {"g1": 3, "g2": 1}
    assert desc[1].group_offsets() == {}
    assert desc[2].group_offsets() == {"g1": 1}


def test_describe_exact_body(server):
    with server.connect() as c:
        c.create_log("d", 2)
        c.publish("d", 1, b"v")
        c.ack("d", 1, "grp")
        c.send_raw(cc.encode_describe_log("d"))
        assert cc.recv_exact(c.sock, 1) == b"\x00"
        n = struct.unpack(">Q", cc.recv_exact(c.sock, 8))[0]
        body = cc.recv_exact(c.sock, n)
        want = (
            struct.pack(">I", 2)
            + struct.pack(">QQI", 0, 0, 0)
            + struct.pack(">QQI", 0, 1, 1) + b"\x03grp" + struct.pack(">Q", 1)
        )
        assert body == want


def test_describe_unknown_log(conn):
    conn.send_raw(cc.encode_describe_log("nope"))
    status = cc.recv_exact(conn.sock, 1)
    n = struct.unpack(">Q", cc.recv_exact(conn.sock, 8))[0]
    body = cc.recv_exact(conn.sock, n)
    assert status + struct.pack(">Q", n) + body == cc.encode_ext_error(cc.E_UNKNOWN_LOG, "No log registered with name nope")


def test_extension_errors_keep_the_connection(conn, log_name):
    conn.send_raw(
        cc.encode_describe_log("ghost")
        + cc.encode_read_range("ghost", 0, 0, 10)
        + cc.encode_create_log(log_name, 1)
        + cc.encode_publish_records(log_name, 0, [b"ok"])
    )
    for _ in range(2):
        with pytest.raises(ExtError) as e:
            cc.read_ext_response(conn.sock)
        assert e.value.code == cc.E_UNKNOWN_LOG
    cc.read_rog_status(conn.sock)
    assert cc.decode_publish_records_body(cc.read_ext_response(conn.sock)) == 0


def test_ack_to_is_idempotent_never_moves_back_and_survives_a_restart(server, log_name):
    with server.connect() as conn:
        conn.create_log(log_name, 1)
        conn.publish_records(log_name, 0, [f"r{k}".encode() for k in range(10)])
        assert conn.ack_to(log_name, 0, "g", 4) == 4
        assert conn.ack_to(log_name, 0, "g", 4) == 4, "a retry changes nothing"
        assert conn.ack_to(log_name, 0, "g", 2) == 4, "a late, older ack does not move it back"
        assert conn.fetch(log_name, 0, "g") == b"r4"
        with pytest.raises(ExtError) as e:
            conn.ack_to(log_name, 0, "g", 11)
        assert e.value.code == 6, e.value
        assert conn.ack_to(log_name, 0, "g", 10) == 10, "the end is a valid offset"
        with pytest.raises(ExtError) as e:
            conn.ack_to("no-such-log", 0, "g", 0)
        assert e.value.code == 1, e.value  # unknown_log
    # Over HTTP: ?offset= on the ack endpoint.
    r = server.http.post(f"/logs/{log_name}/partitions/0/groups/h/ack?offset=7")
    assert r.status == 200 and r.json() == {"offset": 7}, r
    r = server.http.post(f"/logs/{log_name}/partitions/0/groups/h/ack?offset=99")
    assert r.status == 416 and r.json()["code"] == "offset_out_of_range", r
    r = server.http.post(f"/logs/{log_name}/partitions/0/groups/h/ack?offset=x")
    assert r.status == 400, r
    server.restart()
    with server.connect() as conn:
        groups = conn.describe_log(log_name)[0].group_offsets()
    assert groups == {"g": 10, "h": 7}
