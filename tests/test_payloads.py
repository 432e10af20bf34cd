"""Payload fidelity: 5 KiB and 1 MiB values, every byte value, UTF-8 text, bytes that
look like protocol frames, and protobuf messages (Rog's addressbook example) that must
round-trip through every path: Rog publish/fetch, publish records/read range, HTTP."""

import base64

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

import chariot_client as cc


# ---------------------------------------------------------------------------- protobuf


def _addressbook_classes():
    """Rog's tests/proto/addressbook.proto, built at run time from a FileDescriptorProto so
    that no protoc is needed:

        syntax = "proto2";
        package tutorial;
        message Person {
          optional string name = 1;
          optional int32 id = 2;
          optional string email = 3;
          enum PhoneType { MOBILE = 0; HOME = 1; WORK = 2; }
          message PhoneNumber {
            optional string number = 1;
            optional PhoneType type = 2 [default = HOME];
          }
          repeated PhoneNumber phones = 4;
        }
        message AddressBook { repeated Person people = 1; }
    """
    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="chariot_test_addressbook.proto", package="chariot_test", syntax="proto2")
    person = fdp.message_type.add(name="Person")
    person.field.add(name="name", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    person.field.add(name="id", number=2, type=F.TYPE_INT32, label=F.LABEL_OPTIONAL)
    person.field.add(name="email", number=3, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    enum = person.enum_type.add(name="PhoneType")
    for i, n in enumerate(["MOBILE", "HOME", "WORK"]):
        enum.value.add(name=n, number=i)
    phone = person.nested_type.add(name="PhoneNumber")
    phone.field.add(name="number", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    phone.field.add(
        name="type", number=2, type=F.TYPE_ENUM, label=F.LABEL_OPTIONAL,
        type_name=".chariot_test.Person.PhoneType", default_value="HOME",
    )
    person.field.add(
        name="phones", number=4, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
        type_name=".chariot_test.Person.PhoneNumber",
    )
    book = fdp.message_type.add(name="AddressBook")
    book.field.add(
        name="people", number=1, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
        type_name=".chariot_test.Person",
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    get = message_factory.GetMessageClass
    return get(pool.FindMessageTypeByName("chariot_test.Person")), get(pool.FindMessageTypeByName("chariot_test.AddressBook"))


Person, AddressBook = _addressbook_classes()


def make_person(i: int):
    p = Person(name=f"Person {i} Ünïcødé", id=i * 1000 - 7, email=f"p{i}@example.com")
    for k in range(i % 4):
        ph = p.phones.add(number=f"+1-555-{i:04d}-{k}")
        ph.type = k % 3
    return p


def make_book(n: int):
    b = AddressBook()
    for i in range(n):
        b.people.append(make_person(i))
    return b


def test_protobuf_sanity():
    b = make_book(3)
    data = b.SerializeToString()
    assert AddressBook.FromString(data) == b
    assert b.people[2].phones[1].type == 1


def test_protobuf_via_rog_publish_fetch(conn, log_name):
    conn.create_log(log_name, 2)
    people = [make_person(i) for i in range(10)]
    for p in people:
        conn.publish(log_name, 1, p.SerializeToString())
    for p in people:
        got = Person.FromString(conn.fetch(log_name, 1, "pb"))
        assert got == p
        conn.ack(log_name, 1, "pb")


def test_protobuf_addressbook_large(conn, log_name):
    conn.create_log(log_name, 1)
    book = make_book(400)
    data = book.SerializeToString()
    assert len(data) > 5 * 1024
    conn.publish(log_name, 0, data)
    got = conn.fetch(log_name, 0, "g")
    assert got == data
    assert AddressBook.FromString(got) == book


def test_protobuf_via_extensions_and_http(server, log_name):
    people = [make_person(i) for i in range(20)]
    with server.connect() as c:
        c.create_log(log_name, 1)
        assert c.publish_records(log_name, 0, [p.SerializeToString() for p in people[:10]]) == 0
        batch = cc.encode_batch([cc.Record(p.SerializeToString(), key=b"%d" % p.id, timestamp=5) for p in people[10:]])
        assert c.publish_batch(log_name, 0, batch) == (10, 10)
        assert [Person.FromString(r.value) for r in c.read_all(log_name, 0)] == people
    got = server.http.get(server.http.records_path(log_name, 0) + "?offset=0&limit=100&encoding=base64").json()
    assert [Person.FromString(base64.b64decode(r["value"])) for r in got["records"]] == people


# ---------------------------------------------------------------------------- raw payloads


PAYLOADS = {
    "5KiB": bytes((i * 31 + 7) % 256 for i in range(5 * 1024)),
    "all-256-bytes": bytes(range(256)),
    "all-256-bytes-reversed-x4": bytes(range(255, -1, -1)) * 4,
    "nul-bytes": b"\x00" * 1000,
    "looks-like-frames": cc.encode_rog_error("fake") + cc.encode_publish("x", 0, b"y") + b"\x00" * 9,
    "utf8": "Grüße, 世界, 🚀 — ✓".encode(),
    "invalid-utf8": b"\xc3\x28\xa0\xa1\xe2\x28\xa1\xf0\x28\x8c\xbc",
    "crlf": b"line1\r\nline2\n\r\n",
}


@pytest.mark.parametrize("label", list(PAYLOADS))
def test_payload_round_trip_tcp(conn, log_name, label):
    data = PAYLOADS[label]
    conn.create_log(log_name, 1)
    conn.publish(log_name, 0, data)
    conn.publish(log_name, 0, b"sentinel")
    assert conn.fetch(log_name, 0, "g") == data
    conn.ack(log_name, 0, "g")
    assert conn.fetch(log_name, 0, "g") == b"sentinel"
    assert conn.values(log_name, 0) == [data, b"sentinel"]


@pytest.mark.parametrize("label", list(PAYLOADS))
def test_payload_round_trip_http(server, log_name, label):
    data = PAYLOADS[label]
    http = server.http
    assert http.post("/logs", {"name": log_name, "partitions": 1}).status == 201
    r = http.post(http.records_path(log_name, 0), {"value": base64.b64encode(data).decode(), "encoding": "base64"})
    assert r.status == 200, r
    rec = http.get(http.records_path(log_name, 0) + "?offset=0&limit=1").json()["records"][0]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None:
        assert rec["encoding"] == "base64"
        assert base64.b64decode(rec["value"]) == data
    else:
        assert rec["encoding"] == "utf8"
        assert rec["value"] == text
    with server.connect() as c:
        assert c.fetch(log_name, 0, "g") == data


def test_payload_binary_split_in_many_records(conn, log_name):
    """Every single byte value as its own record."""
    conn.create_log(log_name, 1)
    conn.publish_records(log_name, 0, [bytes([b]) for b in range(256)])
    assert conn.values(log_name, 0) == [bytes([b]) for b in range(256)]
    for b in range(3):
        assert conn.fetch(log_name, 0, "g") == bytes([b])
        conn.ack(log_name, 0, "g")


def test_one_mib_payload(conn, log_name):
    data = bytes(range(256)) * 4096  # exactly 1 MiB: the default limit
    conn.create_log(log_name, 1)
    conn.publish(log_name, 0, data)
    assert conn.fetch(log_name, 0, "g") == data
    assert conn.values(log_name, 0) == [data]
