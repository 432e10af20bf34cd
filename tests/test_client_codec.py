"""The suite's own client, checked against byte vectors written by hand from the spec
(docs/protocol.md, docs/format.md). No server needed: if these fail, the client is wrong,
and every other result would be suspect."""

import struct

import pytest

import chariot_client as cc


class FakeSock:
    """A socket stand-in that replays fixed bytes (in small pieces, like TCP may)."""

    def __init__(self, data: bytes, piece: int = 3):
        self.data = data
        self.pos = 0
        self.piece = piece

    def recv(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + min(n, self.piece)]
        self.pos += len(out)
        return out


def test_publish_matches_spec_example():
    # docs/protocol.md: publish "hi" to partition 0 of log "a"
    assert cc.encode_publish("a", 0, b"hi") == bytes.fromhex("01 00 01 61 00 00 00 00 00 00 00 02 68 69")


def test_create_fetch_ack_layouts():
    assert cc.encode_create_log("ab", 3) == bytes([0x00, 3, 2]) + b"ab"
    assert cc.encode_fetch("ab", 7, "g1") == bytes([0x02, 7, 2]) + b"ab" + bytes([2]) + b"g1"
    assert cc.encode_ack("ab", 7, "g1") == bytes([0x03, 7, 2]) + b"ab" + bytes([2]) + b"g1"
    # names are UTF-8 with a byte length
    assert cc.encode_create_log("é", 1) == bytes([0, 1, 2, 0xC3, 0xA9])


def test_rog_error_example_decodes():
    # docs/protocol.md: 01 00 00 00 00 00 00 00 22 + "No data left in the log to be read"
    wire = bytes.fromhex("01 00 00 00 00 00 00 00 22") + b"No data left in the log to be read"
    assert cc.encode_rog_error(cc.MSG_NO_DATA) == wire
    with pytest.raises(cc.RogError) as e:
        cc.read_rog_fetch(FakeSock(wire))
    assert e.value.message == cc.MSG_NO_DATA
    with pytest.raises(cc.RogError):
        cc.read_rog_status(FakeSock(wire))


def test_fetch_success_decodes():
    wire = b"\x00" + struct.pack(">Q", 5) + b"hello"
    assert cc.read_rog_fetch(FakeSock(wire)) == b"hello"
    cc.read_rog_status(FakeSock(b"\x00"))


def test_truncated_response_is_detected():
    with pytest.raises(cc.ConnectionClosed):
        cc.read_rog_fetch(FakeSock(b"\x00" + struct.pack(">Q", 5) + b"hel"))


def test_ext_error_example_decodes():
    # docs/protocol.md: 01 00 00 00 00 00 00 00 1F 00 01 + "No log registered with name x"
    wire = bytes.fromhex("01 00 00 00 00 00 00 00 1F 00 01") + b"No log registered with name x"
    assert cc.encode_ext_error(1, cc.msg_unknown_log("x")) == wire
    with pytest.raises(cc.ExtError) as e:
        cc.read_ext_response(FakeSock(wire))
    assert (e.value.code, e.value.message) == (1, "No log registered with name x")


def test_extension_request_layouts():
    assert cc.encode_list_logs() == bytes([0x13, 0, 0, 0, 0])
    assert cc.encode_describe_log("ab") == bytes([0x14, 0, 0, 0, 3, 2]) + b"ab"
    rr = cc.encode_read_range("a", 2, 7, 100)
    assert rr == bytes([0x12]) + struct.pack(">I", 1 + 1 + 4 + 8 + 4) + b"\x01a" + struct.pack(">IQI", 2, 7, 100)
    pr = cc.encode_publish_records("a", 1, [b"x", b"yz"])
    body = b"\x01a" + struct.pack(">II", 1, 2) + struct.pack(">I", 1) + b"x" + struct.pack(">I", 2) + b"yz"
    assert pr == bytes([0x11]) + struct.pack(">I", len(body)) + body
    pb = cc.encode_publish_batch("a", 1, b"BATCH")
    body = b"\x01a" + struct.pack(">II", 1, 5) + b"BATCH"
    assert pb == bytes([0x10]) + struct.pack(">I", len(body)) + body


def test_extension_success_bodies_decode():
    assert cc.decode_publish_batch_body(struct.pack(">QI", 10, 3)) == (10, 3)
    assert cc.decode_publish_records_body(struct.pack(">Q", 42)) == 42
    rr = cc.decode_read_range_body(struct.pack(">QQI", 1, 9, 3) + b"abc")
    assert (rr.earliest_offset, rr.next_offset, rr.batches) == (1, 9, b"abc")
    logs = cc.decode_list_logs_body(struct.pack(">I", 2) + b"\x01a" + struct.pack(">I", 3) + b"\x02bc" + struct.pack(">I", 1))
    assert logs == {"a": 3, "bc": 1}
    desc = cc.decode_describe_log_body(
        struct.pack(">I", 2)
        + struct.pack(">QQI", 0, 5, 1) + b"\x01g" + struct.pack(">Q", 2)
        + struct.pack(">QQI", 0, 0, 0)
    )
    assert [(p.partition, p.earliest_offset, p.next_offset, p.group_offsets()) for p in desc] == [
        (0, 0, 5, {"g": 2}),
        (1, 0, 0, {}),
    ]
    with pytest.raises(cc.ProtocolError):
        cc.decode_publish_records_body(struct.pack(">Q", 42) + b"x")  # leftover byte


def test_crc32c_known_vectors():
    # RFC 3720 / iSCSI check value and test patterns
    assert cc.crc32c(b"123456789") == 0xE3069283
    assert cc.crc32c(b"") == 0
    assert cc.crc32c(bytes(32)) == 0x8A9136AA
    assert cc.crc32c(b"\xff" * 32) == 0x62A8AB43
    assert cc.crc32c(bytes(range(32))) == 0x46DD794E
    # incremental use
    assert cc.crc32c(b"6789", cc.crc32c(b"12345")) == 0xE3069283


def test_batch_layout_by_hand():
    rec = cc.Record(b"v", key=None, headers=[], timestamp=1000)
    b = cc.encode_batch([rec], base_offset=7)
    # record: len u32, delta u32, key_len i32 (-1), value_len u32, value, header_count u16
    rec_bytes = struct.pack(">IIiI", 4 + 4 + 4 + 1 + 2, 0, -1, 1) + b"v" + struct.pack(">H", 0)
    after_crc = (
        bytes([1, 0])  # magic, flags
        + struct.pack(">QIqqqi", 0, 1, 1000, 1000, -1, -1)
        + rec_bytes
    )
    assert len(after_crc) == 58 - 16 + len(rec_bytes)
    expected = struct.pack(">QII", 7, 4 + len(after_crc), cc.crc32c(after_crc)) + after_crc
    assert b == expected
    assert len(b) == 58 + len(rec_bytes)
    assert b[16] == 1 and b[26:30] == struct.pack(">I", 1)


def test_batch_round_trip_with_keys_headers_timestamps():
    recs = [
        cc.Record(b"one", key=b"k1", headers=[(b"h", b"v"), (b"empty", b"")], timestamp=5_000),
        cc.Record(b"", key=b"", headers=[], timestamp=5_010),
        cc.Record(bytes(range(256)), key=None, headers=[(b"x", bytes([0, 255]))], timestamp=5_020),
    ]
    blob = cc.encode_batch(recs, base_offset=100, producer_id=9, base_sequence=3)
    [batch] = cc.decode_batches(blob + b"")
    assert batch.base_offset == 100 and batch.producer_id == 9 and batch.base_sequence == 3
    assert batch.first_timestamp == 5_000 and batch.max_timestamp == 5_020
    got = [(r.offset, r.key, r.value, r.headers, r.timestamp) for r in batch.records]
    assert got == [
        (100, b"k1", b"one", [(b"h", b"v"), (b"empty", b"")], 5_000),
        (101, b"", b"", [], 5_010),
        (102, None, bytes(range(256)), [(b"x", bytes([0, 255]))], 5_020),
    ]


def test_decode_batches_rejects_damage():
    blob = cc.encode_batch([cc.Record(b"abc", timestamp=1)])
    two = blob + cc.encode_batch([cc.Record(b"d", timestamp=2)], base_offset=1)
    assert [r.value for r in cc.records_of(two)] == [b"abc", b"d"]
    flipped = bytearray(blob)
    flipped[-3] ^= 1
    with pytest.raises(cc.ProtocolError):
        cc.decode_batches(bytes(flipped))
    with pytest.raises(cc.ProtocolError):
        cc.decode_batches(blob[:-1])
    # base offset is outside the CRC: changing it keeps the batch valid
    moved = struct.pack(">Q", 55) + blob[8:]
    assert cc.decode_batches(moved)[0].records[0].offset == 55
