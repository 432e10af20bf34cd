"""A small raw-socket client for Chariot's native TCP protocol, used by the black-box suite.

It speaks the wire formats of ``docs/protocol.md`` and ``docs/format.md`` directly, with
no dependency on the server's code, the way Rog's own Python integration tests did:

* **Rog commands** ``0x00``-``0x03`` (create log, publish, fetch, ack): ``encode_*``
  build the request bytes, ``read_rog_*`` decode the responses.
* **Chariot extensions** ``0x10``-``0x14`` (publish batch, publish records, read range,
  list logs, describe log): ``encode_*`` build the envelope ``cmd u8, body_len u32,
  body``; ``read_ext_response`` reads ``status u8, body_len u64, body`` and the
  ``decode_*`` functions parse success bodies.
* **Record batches** (``docs/format.md``): ``encode_batch`` builds one with its CRC32C
  (pure Python, below), ``decode_batches`` walks concatenated batches and checks them.
* ``Connection`` wraps one TCP connection with a method per command; errors come back as
  ``RogError`` (Rog's uncoded form) or ``ExtError`` (code + message).
* ``Http`` is a tiny JSON-over-HTTP helper for the HTTP API.
* **Chariots** (the causal log): ``fnv1a64``/``tag_hash`` compute dependency hashes as
  gochariots clients do; ``encode_chariots_frame`` and ``read_chariots_ack`` speak the
  record port's framing (``u32`` length counting the type byte, type ``r``/``s``/``a``,
  JSON payload).

All integers on the wire are big-endian. Every read has a timeout so that a server that
hangs makes a test fail instead of blocking the suite.
"""

from __future__ import annotations

import http.client
import json
import socket
import struct
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Iterable, Optional

# --------------------------------------------------------------------------------------
# Constants

CMD_CREATE_LOG = 0x00
CMD_PUBLISH = 0x01
CMD_FETCH = 0x02
CMD_ACK = 0x03
CMD_PUBLISH_BATCH = 0x10
CMD_PUBLISH_RECORDS = 0x11
CMD_READ_RANGE = 0x12
CMD_LIST_LOGS = 0x13
CMD_DESCRIBE_LOG = 0x14
CMD_PUBLISH_RECORDS_ACKS = 0x16
CMD_ACK_TO = 0x17
CMD_PUBLISH_BATCH_ACKS = 0x18
ACKS_QUORUM, ACKS_ALL = 0, 1

STATUS_OK = 0x00
STATUS_ERROR = 0x01

# Wire error codes of the extension error body (docs/protocol.md, "Error codes").
E_UNKNOWN_LOG = 1
E_LOG_ALREADY_EXISTS = 2
E_INVALID_PARTITION_COUNT = 3
E_PARTITION_OUT_OF_RANGE = 4
E_NO_DATA = 5
E_OFFSET_OUT_OF_RANGE = 6
E_RECORD_TOO_LARGE = 7
E_INVALID_BATCH = 8
E_MALFORMED_FRAME = 9
E_UNKNOWN_COMMAND = 10
E_STORAGE_ERROR = 11
E_NOT_LEADER = 12
E_SHUTTING_DOWN = 13
E_BUSY = 14
E_FRAME_TOO_LARGE = 15

DEFAULT_MAX_RECORD = 1 << 20
DEFAULT_MAX_BATCH = 8 << 20
DEFAULT_MAX_FRAME = (8 << 20) + (64 << 10)

# Rog's error texts, verbatim (docs/protocol.md, "Rog error messages").
MSG_BAD_PARTITIONS = "Number of partitions must be at least 1"
MSG_NO_DATA = "No data left in the log to be read"


def msg_exists(name: str) -> str:
    return f"Log {name} already exists"


def msg_unknown_log(name: str) -> str:
    return f"No log registered with name {name}"


def msg_partition(p: int, name: str, n: int) -> str:
    return f"Trying to access partition {p} but log {name} has {n} partitions"


# --------------------------------------------------------------------------------------
# Errors


class ProtocolError(Exception):
    """The server's bytes did not follow the protocol (or the connection ended early)."""


class ConnectionClosed(ProtocolError):
    """The server closed the connection before a complete response arrived."""

    def __init__(self, got: bytes, wanted: int):
        super().__init__(f"connection closed after {len(got)} of {wanted} bytes: {got!r}")
        self.got = got


class RogError(Exception):
    """A Rog-form error response: ``01``, ``u64`` length, UTF-8 message (no code)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class ExtError(Exception):
    """An extension error response: ``01``, ``u64`` length, ``u16`` code, message."""

    def __init__(self, code: int, message: str):
        super().__init__(f"[{code}] {message}")
        self.code = code
        self.message = message


# --------------------------------------------------------------------------------------
# CRC32C (Castagnoli), pure Python, table driven (reflected polynomial 0x82F63B78).


def _make_crc_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _make_crc_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC32C of ``data`` (optionally continuing from a previous ``crc``)."""
    c = crc ^ 0xFFFFFFFF
    t = _CRC_TABLE
    for b in data:
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


# --------------------------------------------------------------------------------------
# Small encoding helpers


def _name(name: str | bytes) -> bytes:
    """A ``u8`` length followed by the UTF-8 bytes (bytes are sent as given, unchecked)."""
    b = name.encode("utf-8") if isinstance(name, str) else bytes(name)
    if len(b) > 255:
        raise ValueError("names are at most 255 bytes")
    return bytes([len(b)]) + b


def u8(v: int) -> bytes:
    return struct.pack(">B", v)


def u16(v: int) -> bytes:
    return struct.pack(">H", v)


def u32(v: int) -> bytes:
    return struct.pack(">I", v)


def u64(v: int) -> bytes:
    return struct.pack(">Q", v)


class Reader:
    """Cursor over a response body; ``done()`` checks that the body was filled exactly."""

    def __init__(self, buf: bytes):
        self.buf = buf
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            raise ProtocolError(f"body too short: need {n} at {self.pos}, have {len(self.buf)}")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack(">H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack(">I", self.take(4))[0]

    def i32(self) -> int:
        return struct.unpack(">i", self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack(">Q", self.take(8))[0]

    def i64(self) -> int:
        return struct.unpack(">q", self.take(8))[0]

    def name(self) -> str:
        return self.take(self.u8()).decode("utf-8")

    def remaining(self) -> int:
        return len(self.buf) - self.pos

    def done(self) -> None:
        if self.pos != len(self.buf):
            raise ProtocolError(f"{len(self.buf) - self.pos} bytes left over in body")


# --------------------------------------------------------------------------------------
# Rog requests (commands 0x00-0x03)


def encode_create_log(name: str | bytes, partitions: int) -> bytes:
    """``00, partitions u8, name_len u8, name``."""
    return u8(CMD_CREATE_LOG) + u8(partitions) + _name(name)


def encode_publish(name: str | bytes, partition: int, data: bytes, data_len: Optional[int] = None) -> bytes:
    """``01, partition u8, name_len u8, name, data_len u64, data``.

    ``data_len`` overrides the declared length (to build lying frames)."""
    n = len(data) if data_len is None else data_len
    return u8(CMD_PUBLISH) + u8(partition) + _name(name) + u64(n) + data


def encode_fetch(name: str | bytes, partition: int, group: str | bytes) -> bytes:
    """``02, partition u8, name_len u8, name, group_len u8, group``."""
    return u8(CMD_FETCH) + u8(partition) + _name(name) + _name(group)


def encode_ack(name: str | bytes, partition: int, group: str | bytes) -> bytes:
    """``03, partition u8, name_len u8, name, group_len u8, group``."""
    return u8(CMD_ACK) + u8(partition) + _name(name) + _name(group)


def encode_rog_error(message: str) -> bytes:
    """The Rog error response, as the server should send it (for byte comparisons)."""
    m = message.encode("utf-8")
    return u8(STATUS_ERROR) + u64(len(m)) + m


# --------------------------------------------------------------------------------------
# Extension requests (commands 0x10-0x14): cmd u8, body_len u32, body


def encode_ext(cmd: int, body: bytes, body_len: Optional[int] = None) -> bytes:
    n = len(body) if body_len is None else body_len
    return u8(cmd) + u32(n) + body


def body_publish_batch(name: str | bytes, partition: int, batch: bytes) -> bytes:
    return _name(name) + u32(partition) + u32(len(batch)) + batch


def encode_publish_batch(name: str | bytes, partition: int, batch: bytes) -> bytes:
    return encode_ext(CMD_PUBLISH_BATCH, body_publish_batch(name, partition, batch))


def body_publish_records(name: str | bytes, partition: int, values: Iterable[bytes]) -> bytes:
    values = list(values)
    out = [_name(name), u32(partition), u32(len(values))]
    for v in values:
        out.append(u32(len(v)))
        out.append(v)
    return b"".join(out)


def encode_publish_records(name: str | bytes, partition: int, values: Iterable[bytes]) -> bytes:
    return encode_ext(CMD_PUBLISH_RECORDS, body_publish_records(name, partition, values))


def encode_publish_records_acks(name: str | bytes, partition: int, values: Iterable[bytes], acks: int) -> bytes:
    return encode_ext(CMD_PUBLISH_RECORDS_ACKS, u8(acks) + body_publish_records(name, partition, values))


def encode_publish_batch_acks(name: str | bytes, partition: int, batch: bytes, acks: int) -> bytes:
    return encode_ext(CMD_PUBLISH_BATCH_ACKS, u8(acks) + body_publish_batch(name, partition, batch))


def encode_read_range(name: str | bytes, partition: int, offset: int, max_bytes: int) -> bytes:
    return encode_ext(CMD_READ_RANGE, _name(name) + u32(partition) + u64(offset) + u32(max_bytes))


def encode_list_logs() -> bytes:
    return encode_ext(CMD_LIST_LOGS, b"")


def encode_describe_log(name: str | bytes) -> bytes:
    return encode_ext(CMD_DESCRIBE_LOG, _name(name))


def encode_ack_to(name: str | bytes, partition: int, group: str | bytes, offset: int) -> bytes:
    return encode_ext(CMD_ACK_TO, _name(name) + u32(partition) + _name(group) + u64(offset))


def encode_ext_error(code: int, message: str) -> bytes:
    """The extension error response, as the server should send it."""
    m = message.encode("utf-8")
    return u8(STATUS_ERROR) + u64(2 + len(m)) + u16(code) + m


# --------------------------------------------------------------------------------------
# Extension success bodies


@dataclass
class ReadRange:
    earliest_offset: int
    next_offset: int
    batches: bytes


@dataclass
class GroupPosition:
    group: str
    committed_offset: int


@dataclass
class PartitionDescription:
    partition: int
    earliest_offset: int
    next_offset: int
    groups: list[GroupPosition]

    def group_offsets(self) -> dict[str, int]:
        return {g.group: g.committed_offset for g in self.groups}


def decode_publish_batch_body(body: bytes) -> tuple[int, int]:
    r = Reader(body)
    base, count = r.u64(), r.u32()
    r.done()
    return base, count


def decode_publish_records_body(body: bytes) -> int:
    r = Reader(body)
    base = r.u64()
    r.done()
    return base


def decode_read_range_body(body: bytes) -> ReadRange:
    r = Reader(body)
    earliest, nxt = r.u64(), r.u64()
    blob = r.take(r.u32())
    r.done()
    return ReadRange(earliest, nxt, blob)


def decode_list_logs_body(body: bytes) -> dict[str, int]:
    """``{name: partitions}``; raises on a duplicate name."""
    r = Reader(body)
    out: dict[str, int] = {}
    for _ in range(r.u32()):
        name = r.name()
        if name in out:
            raise ProtocolError(f"log {name!r} listed twice")
        out[name] = r.u32()
    r.done()
    return out


def decode_describe_log_body(body: bytes) -> list[PartitionDescription]:
    r = Reader(body)
    parts = []
    for p in range(r.u32()):
        earliest, nxt = r.u64(), r.u64()
        groups = []
        for _ in range(r.u32()):
            groups.append(GroupPosition(r.name(), r.u64()))
        parts.append(PartitionDescription(p, earliest, nxt, groups))
    r.done()
    return parts


def decode_ext_error_body(body: bytes) -> ExtError:
    r = Reader(body)
    code = r.u16()
    return ExtError(code, r.take(r.remaining()).decode("utf-8"))


# --------------------------------------------------------------------------------------
# Record batches (docs/format.md)

BATCH_HEADER_LEN = 58
BATCH_MAGIC = 1


@dataclass
class Record:
    """A record as a producer builds it, or as decoded from a batch (``offset`` set)."""

    value: bytes
    key: Optional[bytes] = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    timestamp: int = 0
    offset: Optional[int] = None


@dataclass
class Batch:
    base_offset: int
    crc: int
    magic: int
    flags: int
    leader_term: int
    first_timestamp: int
    max_timestamp: int
    producer_id: int
    base_sequence: int
    records: list[Record]
    raw: bytes


def encode_record(r: Record, first_timestamp: int) -> bytes:
    body = [u32(r.timestamp - first_timestamp)]
    if r.key is None:
        body.append(struct.pack(">i", -1))
    else:
        body.append(struct.pack(">i", len(r.key)) + r.key)
    body.append(u32(len(r.value)) + r.value)
    body.append(u16(len(r.headers)))
    for k, v in r.headers:
        body.append(u16(len(k)) + k + u32(len(v)) + v)
    b = b"".join(body)
    return u32(len(b)) + b


def encode_batch(
    records: list[Record],
    base_offset: int = 0,
    leader_term: int = 0,
    producer_id: int = -1,
    base_sequence: int = -1,
    flags: int = 0,
    magic: int = BATCH_MAGIC,
    record_count: Optional[int] = None,
) -> bytes:
    """One record batch with a correct length and CRC32C.

    ``record_count`` and ``magic`` can be overridden to build invalid batches whose CRC
    is still right (so the structural check, not the checksum, must catch them)."""
    first = records[0].timestamp if records else 0
    max_ts = max((r.timestamp for r in records), default=0)
    recs = b"".join(encode_record(r, first) for r in records)
    count = len(records) if record_count is None else record_count
    after_crc = (
        u8(magic)
        + u8(flags)
        + u64(leader_term)
        + u32(count)
        + struct.pack(">q", first)
        + struct.pack(">q", max_ts)
        + struct.pack(">q", producer_id)
        + struct.pack(">i", base_sequence)
        + recs
    )
    crc = crc32c(after_crc)
    return u64(base_offset) + u32(4 + len(after_crc)) + u32(crc) + after_crc


def decode_batches(blob: bytes, verify_crc: bool = True) -> list[Batch]:
    """Splits concatenated batches and decodes every record; raises ``ProtocolError`` on any
    structural problem (length, magic, CRC, record walk)."""
    out = []
    pos = 0
    while pos < len(blob):
        if len(blob) - pos < 12:
            raise ProtocolError(f"truncated batch prefix at {pos}")
        base, blen = struct.unpack(">QI", blob[pos : pos + 12])
        end = pos + 12 + blen
        if end > len(blob) or 12 + blen < BATCH_HEADER_LEN:
            raise ProtocolError(f"bad batch length {blen} at {pos}")
        raw = blob[pos:end]
        r = Reader(raw)
        r.take(12)
        crc = r.u32()
        if verify_crc and crc32c(raw[16:]) != crc:
            raise ProtocolError(f"bad CRC in batch at {pos}")
        magic, flags = r.u8(), r.u8()
        if magic != BATCH_MAGIC:
            raise ProtocolError(f"unknown magic {magic}")
        term, count = r.u64(), r.u32()
        first, max_ts, pid = r.i64(), r.i64(), r.i64()
        seq = r.i32()
        records = []
        for i in range(count):
            rl = r.u32()
            rr = Reader(r.take(rl))
            delta = rr.u32()
            kl = rr.i32()
            key = None if kl == -1 else rr.take(kl)
            value = rr.take(rr.u32())
            headers = []
            for _ in range(rr.u16()):
                hk = rr.take(rr.u16())
                hv = rr.take(rr.u32())
                headers.append((hk, hv))
            rr.done()
            records.append(Record(value, key, headers, first + delta, base + i))
        r.done()
        out.append(Batch(base, crc, magic, flags, term, first, max_ts, pid, seq, records, raw))
        pos = end
    return out


def records_of(blob: bytes) -> list[Record]:
    return [rec for b in decode_batches(blob) for rec in b.records]


# --------------------------------------------------------------------------------------
# Reading responses from a socket


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise ConnectionClosed(bytes(buf), n)
        buf += chunk
    return bytes(buf)


def read_rog_status(sock: socket.socket) -> None:
    """Response of create log / publish / ack: ``00``, or raises ``RogError``."""
    status = recv_exact(sock, 1)[0]
    if status == STATUS_OK:
        return
    if status == STATUS_ERROR:
        n = struct.unpack(">Q", recv_exact(sock, 8))[0]
        if n > DEFAULT_MAX_FRAME:
            raise ProtocolError(f"error message length {n} above the frame limit")
        raise RogError(recv_exact(sock, n).decode("utf-8"))
    raise ProtocolError(f"unexpected status byte {status:#04x}")


def read_rog_fetch(sock: socket.socket, max_len: int = DEFAULT_MAX_FRAME) -> bytes:
    """Response of fetch: ``00, u64 len, payload`` or raises ``RogError``."""
    status = recv_exact(sock, 1)[0]
    if status not in (STATUS_OK, STATUS_ERROR):
        raise ProtocolError(f"unexpected status byte {status:#04x}")
    n = struct.unpack(">Q", recv_exact(sock, 8))[0]
    if n > max_len:
        raise ProtocolError(f"length {n} above limit")
    payload = recv_exact(sock, n)
    if status == STATUS_ERROR:
        raise RogError(payload.decode("utf-8"))
    return payload


def read_ext_response(sock: socket.socket) -> bytes:
    """Extension response: returns the success body or raises ``ExtError``."""
    status = recv_exact(sock, 1)[0]
    if status not in (STATUS_OK, STATUS_ERROR):
        raise ProtocolError(f"unexpected status byte {status:#04x}")
    n = struct.unpack(">Q", recv_exact(sock, 8))[0]
    if n > DEFAULT_MAX_FRAME:
        raise ProtocolError(f"body length {n} above the frame limit")
    body = recv_exact(sock, n)
    if status == STATUS_ERROR:
        raise decode_ext_error_body(body)
    return body


def read_until_eof(sock: socket.socket, limit: int = 1 << 16) -> bytes:
    """Everything the server sends until it closes (raises ``socket.timeout`` if it
    never does)."""
    buf = bytearray()
    while len(buf) <= limit:
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            break
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


# --------------------------------------------------------------------------------------
# A connection


class Connection:
    """One TCP connection to the native port. Methods send one request and wait for its
    response; ``send_raw`` / ``sock`` give access to the bytes for frame-level tests."""

    def __init__(self, host: str, port: int, timeout: float = 15.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_split(self, data: bytes, chunk: int = 1, pause: float = 0.002) -> None:
        """Sends ``data`` in ``chunk``-byte writes with a pause between them, so that the
        server sees the frame arrive in pieces."""
        for i in range(0, len(data), chunk):
            self.sock.sendall(data[i : i + chunk])
            time.sleep(pause)

    # Rog commands
    def create_log(self, name: str | bytes, partitions: int) -> None:
        self.send_raw(encode_create_log(name, partitions))
        read_rog_status(self.sock)

    def publish(self, name: str | bytes, partition: int, data: bytes) -> None:
        self.send_raw(encode_publish(name, partition, data))
        read_rog_status(self.sock)

    def fetch(self, name: str | bytes, partition: int, group: str | bytes) -> bytes:
        self.send_raw(encode_fetch(name, partition, group))
        return read_rog_fetch(self.sock)

    def ack(self, name: str | bytes, partition: int, group: str | bytes) -> None:
        self.send_raw(encode_ack(name, partition, group))
        read_rog_status(self.sock)

    # Extensions
    def publish_batch(self, name: str | bytes, partition: int, batch: bytes) -> tuple[int, int]:
        self.send_raw(encode_publish_batch(name, partition, batch))
        return decode_publish_batch_body(read_ext_response(self.sock))

    def publish_batch_acks(self, name: str | bytes, partition: int, batch: bytes,
                           acks: int = ACKS_ALL) -> tuple[int, int]:
        self.send_raw(encode_publish_batch_acks(name, partition, batch, acks))
        return decode_publish_batch_body(read_ext_response(self.sock))

    def publish_records(self, name: str | bytes, partition: int, values: Iterable[bytes]) -> int:
        self.send_raw(encode_publish_records(name, partition, values))
        return decode_publish_records_body(read_ext_response(self.sock))

    def publish_records_acks(self, name: str | bytes, partition: int, values: Iterable[bytes],
                             acks: int = ACKS_ALL) -> int:
        self.send_raw(encode_publish_records_acks(name, partition, values, acks))
        return decode_publish_records_body(read_ext_response(self.sock))

    def read_range(self, name: str | bytes, partition: int, offset: int, max_bytes: int = 1 << 20) -> ReadRange:
        self.send_raw(encode_read_range(name, partition, offset, max_bytes))
        return decode_read_range_body(read_ext_response(self.sock))

    def list_logs(self) -> dict[str, int]:
        self.send_raw(encode_list_logs())
        return decode_list_logs_body(read_ext_response(self.sock))

    def ack_to(self, name: str | bytes, partition: int, group: str | bytes, offset: int) -> int:
        """The group has consumed every record below ``offset``; its committed offset now."""
        self.send_raw(encode_ack_to(name, partition, group, offset))
        return decode_publish_records_body(read_ext_response(self.sock))

    def describe_log(self, name: str | bytes) -> list[PartitionDescription]:
        self.send_raw(encode_describe_log(name))
        return decode_describe_log_body(read_ext_response(self.sock))

    # Conveniences built on the extensions
    def read_all(self, name: str | bytes, partition: int, max_bytes: int = 1 << 20,
                 start: int = 0) -> list[Record]:
        """Every record of a partition from ``start`` (no retention in these tests, so 0 is
        the earliest offset), paging with read range. Checks that offsets are dense, that
        each page makes progress, and every batch's structure and CRC."""
        offset = start
        out: list[Record] = []
        page = self.read_range(name, partition, offset, max_bytes)
        while True:
            for rec in records_of(page.batches):
                if rec.offset < offset:
                    continue  # the first batch may start before the requested offset
                if rec.offset != offset:
                    raise ProtocolError(f"expected offset {offset}, got {rec.offset}")
                out.append(rec)
                offset += 1
            if offset >= page.next_offset:
                return out
            if not page.batches:
                raise ProtocolError(f"empty page at {offset} before next offset {page.next_offset}")
            page = self.read_range(name, partition, offset, max_bytes)

    def values(self, name: str | bytes, partition: int) -> list[bytes]:
        return [r.value for r in self.read_all(name, partition)]


def one_shot(host: str, port: int, request: bytes, reader) -> object:
    """Rog's client style: a fresh connection for one request, closed afterwards."""
    with Connection(host, port) as c:
        c.send_raw(request)
        return reader(c.sock)


# --------------------------------------------------------------------------------------
# Chariots: tag hashes and the record port (docs/protocol.md, "Protocol 3")

FRAME_RECORD = ord("r")
FRAME_RECORDS = ord("s")
FRAME_ACK = ord("a")

FNV64_OFFSET = 0xCBF29CE484222325
FNV64_PRIME = 0x100000001B3


def fnv1a64(data: bytes) -> int:
    """FNV-1a, 64 bits: the hash a dependency (``prehash``) names a tag by."""
    h = FNV64_OFFSET
    for b in data:
        h ^= b
        h = (h * FNV64_PRIME) & 0xFFFFFFFFFFFFFFFF
    return h


def tag_hash(key: str, value: str) -> int:
    """The hash of the tag ``key: value``: FNV-1a 64 of the UTF-8 bytes of ``key:value``."""
    return fnv1a64(f"{key}:{value}".encode("utf-8"))


def encode_chariots_frame(kind: int, payload: bytes, length: Optional[int] = None) -> bytes:
    """``u32`` length (counting the type byte), the type byte, the payload. ``length``
    overrides the declared length for malformed-frame tests."""
    return u32(len(payload) + 1 if length is None else length) + u8(kind) + payload


def gochariots_record(tags: dict, seed: int = 0, prehash=0, **extra) -> dict:
    """A record in the batcher's JSON form, as gochariots' scripts build it."""
    return {"Host": 0, "Tags": tags, "Pre": {"Hash": prehash}, "Seed": seed, **extra}


def encode_record_frame(record) -> bytes:
    """An ``'r'`` frame carrying ``record`` (a dict, or JSON text/bytes sent as given)."""
    if isinstance(record, dict):
        record = json.dumps(record)
    if isinstance(record, str):
        record = record.encode()
    return encode_chariots_frame(FRAME_RECORD, record)


def encode_records_frame(records: list) -> bytes:
    """An ``'s'`` frame carrying a JSON array of records."""
    return encode_chariots_frame(FRAME_RECORDS, json.dumps(records).encode())


def read_chariots_frame(sock: socket.socket) -> tuple[int, bytes]:
    """One frame: ``(type byte, payload)``."""
    n = struct.unpack(">I", recv_exact(sock, 4))[0]
    if n == 0 or n > DEFAULT_MAX_FRAME:
        raise ProtocolError(f"Chariots frame length {n} out of bounds")
    kind = recv_exact(sock, 1)[0]
    return kind, recv_exact(sock, n - 1)


def read_chariots_ack(sock: socket.socket):
    """The next ``'a'`` frame's JSON payload (an outcome, an array of them, or an error)."""
    kind, payload = read_chariots_frame(sock)
    if kind != FRAME_ACK:
        raise ProtocolError(f"expected an 'a' frame, got type {kind:#04x}")
    return json.loads(payload)


# --------------------------------------------------------------------------------------
# HTTP


class HttpResponse:
    def __init__(self, status: int, headers: dict[str, str], body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<HTTP {self.status} {self.body[:300]!r}>"


class Http:
    """Minimal JSON HTTP client (one connection per request)."""

    def __init__(self, host: str, port: int, timeout: float = 15.0):
        self.host, self.port, self.timeout = host, port, timeout

    @staticmethod
    def q(segment: str) -> str:
        """Percent-encodes one path segment (log names may contain ``/`` and spaces)."""
        return urllib.parse.quote(segment, safe="")

    def request(self, method: str, path: str, body=None, raw: Optional[bytes] = None,
                headers: Optional[dict[str, str]] = None) -> HttpResponse:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            hdrs = dict(headers or {})
            data = raw
            if body is not None:
                data = json.dumps(body).encode()
            if data is not None:
                hdrs.setdefault("Content-Type", "application/json")
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            return HttpResponse(resp.status, dict(resp.getheaders()), resp.read())
        finally:
            conn.close()

    def get(self, path: str) -> HttpResponse:
        return self.request("GET", path)

    def post(self, path: str, body=None, raw: Optional[bytes] = None) -> HttpResponse:
        return self.request("POST", path, body=body, raw=raw)

    def delete(self, path: str) -> HttpResponse:
        return self.request("DELETE", path)

    # paths
    def log_path(self, name: str) -> str:
        return f"/logs/{self.q(name)}"

    def records_path(self, name: str, p: int) -> str:
        return f"/logs/{self.q(name)}/partitions/{p}/records"

    def group_path(self, name: str, p: int, group: str, action: str) -> str:
        return f"/logs/{self.q(name)}/partitions/{p}/groups/{self.q(group)}/{action}"
