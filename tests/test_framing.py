"""Framing: requests split across many TCP writes (down to one byte per write, with pauses),
several requests in one write, and a response that must only come once a frame is
complete."""

import socket

import pytest

import chariot_client as cc


def test_every_rog_command_byte_by_byte(server, log_name):
    with server.connect() as c:
        c.send_split(cc.encode_create_log(log_name, 2))
        cc.read_rog_status(c.sock)
        c.send_split(cc.encode_publish(log_name, 1, b"split across writes"))
        cc.read_rog_status(c.sock)
        c.send_split(cc.encode_fetch(log_name, 1, "grp"))
        assert cc.read_rog_fetch(c.sock) == b"split across writes"
        c.send_split(cc.encode_ack(log_name, 1, "grp"))
        cc.read_rog_status(c.sock)
        c.send_split(cc.encode_fetch(log_name, 1, "grp"))
        with pytest.raises(cc.RogError) as e:
            cc.read_rog_fetch(c.sock)
        assert e.value.message == cc.MSG_NO_DATA
        assert c.values(log_name, 1) == [b"split across writes"]


def test_every_extension_command_byte_by_byte(server, log_name):
    with server.connect() as c:
        c.create_log(log_name, 1)
        c.send_split(cc.encode_publish_records(log_name, 0, [b"r0", b"r1"]))
        assert cc.decode_publish_records_body(cc.read_ext_response(c.sock)) == 0
        batch = cc.encode_batch([cc.Record(b"b2", key=b"k", headers=[(b"h", b"v")], timestamp=9)])
        c.send_split(cc.encode_publish_batch(log_name, 0, batch))
        assert cc.decode_publish_batch_body(cc.read_ext_response(c.sock)) == (2, 1)
        c.send_split(cc.encode_read_range(log_name, 0, 0, 1 << 16))
        rr = cc.decode_read_range_body(cc.read_ext_response(c.sock))
        assert [r.value for r in cc.records_of(rr.batches)] == [b"r0", b"r1", b"b2"]
        c.send_split(cc.encode_list_logs())
        assert cc.decode_list_logs_body(cc.read_ext_response(c.sock)) == {log_name: 1}
        c.send_split(cc.encode_describe_log(log_name))
        [p] = cc.decode_describe_log_body(cc.read_ext_response(c.sock))
        assert p.next_offset == 3


def test_no_response_before_the_frame_is_complete(server, log_name):
    """With all but the last byte sent, the server must wait: no response, and the record
    is not yet in the log. The last byte completes it."""
    with server.connect() as c:
        c.create_log(log_name, 1)
        frame = cc.encode_publish(log_name, 0, b"wait for me")
        c.send_raw(frame[:-1])
        c.sock.settimeout(0.5)
        with pytest.raises(socket.timeout):
            got = c.sock.recv(1)
            raise AssertionError(f"server answered an incomplete frame: {got!r}")
        c.sock.settimeout(15)
        with server.connect() as other:
            assert other.values(log_name, 0) == []
        c.send_raw(frame[-1:])
        cc.read_rog_status(c.sock)
        assert c.values(log_name, 0) == [b"wait for me"]


@pytest.mark.parametrize("chunk", [2, 3, 7, 13])
def test_split_at_uneven_boundaries(server, log_name, chunk):
    """A stream of many frames cut into fixed-size writes that ignore frame boundaries."""
    with server.connect() as c:
        c.create_log(log_name, 1)
        stream = b"".join(cc.encode_publish(log_name, 0, b"v%02d" % i * (i % 5 + 1)) for i in range(20))
        stream += cc.encode_publish_records(log_name, 0, [b"x", b"yy"])
        stream += cc.encode_fetch(log_name, 0, "g")
        c.send_split(stream, chunk=chunk, pause=0.0005)
        for _ in range(20):
            cc.read_rog_status(c.sock)
        assert cc.decode_publish_records_body(cc.read_ext_response(c.sock)) == 20
        assert cc.read_rog_fetch(c.sock) == b"v00"
        assert c.values(log_name, 0) == [b"v%02d" % i * (i % 5 + 1) for i in range(20)] + [b"x", b"yy"]


def test_large_publish_in_odd_pieces(server, log_name):
    data = bytes(range(256)) * 300  # 76.8 KB
    with server.connect() as c:
        c.create_log(log_name, 1)
        frame = cc.encode_publish(log_name, 0, data)
        c.send_split(frame, chunk=4093, pause=0.001)
        cc.read_rog_status(c.sock)
        assert c.fetch(log_name, 0, "g") == data


def test_header_split_from_payload(server, log_name):
    """The u64 length itself split in the middle."""
    with server.connect() as c:
        c.create_log(log_name, 1)
        frame = cc.encode_publish(log_name, 0, b"abcdef")
        head = 3 + len(log_name)
        for part in (frame[: head + 3], frame[head + 3 : head + 7], frame[head + 7 :]):
            c.send_split(part, chunk=len(part), pause=0.02)
        cc.read_rog_status(c.sock)
        assert c.values(log_name, 0) == [b"abcdef"]


def test_two_frames_in_one_write_then_partial(server, log_name):
    with server.connect() as c:
        c.create_log(log_name, 1)
        a = cc.encode_publish(log_name, 0, b"one")
        b = cc.encode_publish(log_name, 0, b"two")
        d = cc.encode_publish(log_name, 0, b"three")
        c.send_raw(a + b + d[:5])
        cc.read_rog_status(c.sock)
        cc.read_rog_status(c.sock)
        c.send_raw(d[5:])
        cc.read_rog_status(c.sock)
        assert c.values(log_name, 0) == [b"one", b"two", b"three"]
