"""The HTTP JSON API: logs, records, consumer groups, the seed-compatible /insert and
/get-all, error statuses and codes, and that HTTP and TCP see the same data."""

import base64

import pytest

import chariot_client as cc


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def assert_error(resp, status, code=None):
    assert resp.status == status, resp
    body = resp.json()
    assert isinstance(body, dict) and set(body) >= {"error", "code"}, body
    assert isinstance(body["error"], str) and body["error"], body
    assert isinstance(body["code"], str) and body["code"], body
    if code is not None:
        assert body["code"] == code, body
    return body


def create(http, name, partitions=1):
    r = http.post("/logs", {"name": name, "partitions": partitions})
    assert r.status == 201, r
    return r


# ---------------------------------------------------------------------------- health, logs


def test_health(server):
    r = server.http.get("/health")
    assert r.status == 200
    assert r.json() == {"status": "ok"}


def test_create_list_describe_delete(server, log_name):
    http = server.http
    assert http.get("/logs").json() == []
    create(http, log_name, 3)
    create(http, log_name + "-2", 1)
    listed = http.get("/logs")
    assert listed.status == 200
    assert sorted(listed.json(), key=lambda l: l["name"]) == [
        {"name": log_name, "partitions": 3},
        {"name": log_name + "-2", "partitions": 1},
    ]
    d = http.get(http.log_path(log_name))
    assert d.status == 200
    d = d.json()
    assert d["name"] == log_name
    assert isinstance(d["created_at_ms"], int) and d["created_at_ms"] > 1_500_000_000_000
    assert [p["partition"] for p in d["partitions"]] == [0, 1, 2]
    for p in d["partitions"]:
        assert p["earliest_offset"] == 0 and p["next_offset"] == 0
        assert p["groups"] == []
        assert isinstance(p["size_bytes"], int) and isinstance(p["segments"], int)
    assert http.delete(http.log_path(log_name)).status == 204
    assert_error(http.get(http.log_path(log_name)), 404)
    assert [l["name"] for l in http.get("/logs").json()] == [log_name + "-2"]
    with server.connect() as c:
        assert log_name not in c.list_logs()
        with pytest.raises(cc.RogError) as e:
            c.publish(log_name, 0, b"x")
        assert e.value.message == cc.msg_unknown_log(log_name)


def test_describe_reflects_records_and_groups(server, log_name):
    http = server.http
    create(http, log_name, 2)
    with server.connect() as c:
        for i in range(4):
            c.publish(log_name, 1, b"x" * 100)
        c.ack(log_name, 1, "g")
        c.ack(log_name, 1, "g")
        c.ack(log_name, 1, "h")
    d = http.get(http.log_path(log_name)).json()
    p1 = d["partitions"][1]
    assert (p1["earliest_offset"], p1["next_offset"]) == (0, 4)
    assert p1["size_bytes"] >= 400
    assert p1["segments"] >= 1
    assert sorted(p1["groups"], key=lambda g: g["group"]) == [{"group": "g", "offset": 2}, {"group": "h", "offset": 1}]
    assert d["partitions"][0]["next_offset"] == 0


def test_create_errors(server, log_name):
    http = server.http
    create(http, log_name, 1)
    assert_error(http.post("/logs", {"name": log_name, "partitions": 1}), 409)
    assert_error(http.post("/logs", {"name": log_name + "x", "partitions": 0}), 400)
    assert_error(http.post("/logs", {"name": "", "partitions": 1}), 400)
    assert_error(http.post("/logs", {"name": "a\nb", "partitions": 1}), 400)
    assert_error(http.post("/logs", {"name": "x" * 256, "partitions": 1}), 400)
    assert_error(http.post("/logs", raw=b'{"name": "broken", "partitions": '), 400)
    assert_error(http.post("/logs", raw=b"not json at all"), 400)
    names = [l["name"] for l in http.get("/logs").json()]
    assert names == [log_name]


def test_delete_unknown_log(server):
    assert_error(server.http.delete("/logs/nope"), 404)


def test_names_needing_escapes(server):
    http = server.http
    name = "a b/c?d#é"
    create(http, name, 1)
    assert http.post(http.records_path(name, 0), {"value": "v"}).status == 200
    d = http.get(http.log_path(name))
    assert d.status == 200 and d.json()["name"] == name
    with server.connect() as c:
        assert c.fetch(name, 0, "g") == b"v"


# ---------------------------------------------------------------------------- records


def test_post_single_and_array_and_get(server, log_name):
    http = server.http
    create(http, log_name, 2)
    r = http.post(http.records_path(log_name, 1), {"value": "one"})
    assert r.status == 200 and r.json() == {"base_offset": 0, "count": 1, "offsets": [0]}
    r = http.post(http.records_path(log_name, 1), [{"value": "two"}, {"value": "three"}, {"value": "four"}])
    assert r.status == 200 and r.json() == {"base_offset": 1, "count": 3, "offsets": [1, 2, 3]}
    g = http.get(http.records_path(log_name, 1) + "?offset=0&limit=10")
    assert g.status == 200
    body = g.json()
    assert body["next_offset"] == 4
    assert [(x["offset"], x["value"], x["encoding"]) for x in body["records"]] == [
        (0, "one", "utf8"), (1, "two", "utf8"), (2, "three", "utf8"), (3, "four", "utf8"),
    ]
    for x in body["records"]:
        assert isinstance(x["timestamp"], int) and x["timestamp"] > 1_500_000_000_000
        assert x["key"] is None
        assert x["headers"] in ({}, None)
    # limit and offset page
    g = http.get(http.records_path(log_name, 1) + "?offset=1&limit=2").json()
    assert [x["offset"] for x in g["records"]] == [1, 2]
    assert g["next_offset"] == 3
    # reading at the end is empty, not an error
    g = http.get(http.records_path(log_name, 1) + "?offset=4&limit=2")
    assert g.status == 200 and g.json()["records"] == [] and g.json()["next_offset"] == 4
    # the other partition is untouched
    assert http.get(http.records_path(log_name, 0) + "?offset=0&limit=10").json()["records"] == []


def test_keys_headers_and_base64(server, log_name):
    http = server.http
    create(http, log_name, 1)
    binary = bytes(range(256))
    recs = [
        {"value": "plain", "key": "k1", "headers": {"trace": "abc", "n": "1"}},
        {"value": b64(binary), "encoding": "base64", "key": b64(b"\xff\x00"), "headers": {"h": "v"}},
        {"value": b64("text via b64 ✓".encode()), "encoding": "base64"},
    ]
    r = http.post(http.records_path(log_name, 0), recs)
    assert r.status == 200 and r.json()["offsets"] == [0, 1, 2]
    got = http.get(http.records_path(log_name, 0) + "?offset=0&limit=3").json()["records"]
    assert got[0]["value"] == "plain" and got[0]["encoding"] == "utf8"
    assert got[0]["key"] == "k1"
    assert got[0]["headers"] == {"trace": "abc", "n": "1"}
    assert got[1]["encoding"] == "base64"
    assert base64.b64decode(got[1]["value"]) == binary
    assert base64.b64decode(got[1]["key"]) == b"\xff\x00"
    assert got[1]["headers"] == {"h": "v"}
    # valid UTF-8 sent as base64 comes back as text
    assert got[2]["encoding"] == "utf8" and got[2]["value"] == "text via b64 ✓"
    # forcing base64
    forced = http.get(http.records_path(log_name, 0) + "?offset=0&limit=3&encoding=base64").json()["records"]
    assert [f["encoding"] for f in forced] == ["base64"] * 3
    assert base64.b64decode(forced[0]["value"]) == b"plain"
    assert base64.b64decode(forced[1]["value"]) == binary
    assert base64.b64decode(forced[0]["key"]) == b"k1"
    # and over TCP the bytes, key and headers are the same
    with server.connect() as c:
        tcp = c.read_all(log_name, 0)
    assert [r.value for r in tcp] == [b"plain", binary, "text via b64 ✓".encode()]
    assert [r.key for r in tcp] == [b"k1", b"\xff\x00", None]
    assert sorted(tcp[0].headers) == [(b"n", b"1"), (b"trace", b"abc")]


def test_record_errors(server, log_name):
    http = server.http
    create(http, log_name, 2)
    path = http.records_path(log_name, 0)
    assert_error(http.post(path, raw=b"{oops"), 400)
    assert_error(http.post(path, {"value": "!!!not base64!!!", "encoding": "base64"}), 400)
    assert_error(http.post(path, [{"value": "ok"}, {"value": "%%%", "encoding": "base64"}]), 400)
    assert_error(http.post(path, {"key": "no value"}), 400)
    assert_error(http.post(path, {"value": "x", "encoding": "rot13"}), 400)
    assert_error(http.post(path, {"value": "eA==", "key": "!!", "encoding": "base64"}), 400)
    assert_error(http.post(http.records_path("ghost", 0), {"value": "x"}), 404)
    assert_error(http.post(http.records_path(log_name, 2), {"value": "x"}), 404)
    assert_error(http.get(http.records_path("ghost", 0) + "?offset=0&limit=1"), 404)
    assert_error(http.get(http.records_path(log_name, 7) + "?offset=0&limit=1"), 404)
    # nothing was appended by any failed request (the mixed array is all-or-nothing)
    g = http.get(path + "?offset=0&limit=10").json()
    assert g["records"] == [] and g["next_offset"] == 0
    http.post(path, {"value": "a"})
    assert_error(http.get(path + "?offset=2&limit=1"), 416)
    assert_error(http.get(path + "?offset=999999&limit=1"), 416)


def test_record_too_large(make_server, log_name):
    server = make_server("--max-record-bytes", "1024")
    http = server.http
    create(http, log_name, 1)
    path = http.records_path(log_name, 0)
    assert http.post(path, {"value": "a" * 1024}).status == 200
    assert_error(http.post(path, {"value": "b" * 1025}), 413)
    assert_error(http.post(path, [{"value": "c"}, {"value": "d" * 2000}]), 413)
    g = http.get(path + "?offset=0&limit=10").json()
    assert [r["value"] for r in g["records"]] == ["a" * 1024]


# ---------------------------------------------------------------------------- groups


def test_group_fetch_and_ack(server, log_name):
    http = server.http
    create(http, log_name, 1)
    http.post(http.records_path(log_name, 0), [{"value": "m0", "key": "k"}, {"value": "m1"}])
    fetch = http.group_path(log_name, 0, "workers", "fetch")
    ack = http.group_path(log_name, 0, "workers", "ack")
    for _ in range(3):
        f = http.post(fetch)
        assert f.status == 200, f
        rec = f.json()
        assert (rec["offset"], rec["value"], rec["encoding"], rec["key"]) == (0, "m0", "utf8", "k")
        assert isinstance(rec["timestamp"], int)
    a = http.post(ack)
    assert a.status == 200 and a.json() == {"offset": 1}
    assert http.post(fetch).json()["value"] == "m1"
    assert http.post(ack).json() == {"offset": 2}
    assert_error(http.post(fetch), 404, "no_data")
    assert_error(http.post(ack), 404, "no_data")
    # still 2 after the refused ack
    d = http.get(http.log_path(log_name)).json()
    assert d["partitions"][0]["groups"] == [{"group": "workers", "offset": 2}]
    assert_error(http.post(http.group_path("ghost", 0, "g", "fetch")), 404)
    assert_error(http.post(http.group_path(log_name, 1, "g", "ack")), 404)


def test_group_fetch_binary_record_is_base64(server, log_name):
    http = server.http
    create(http, log_name, 1)
    with server.connect() as c:
        c.publish(log_name, 0, b"\x80\x81\xfe")
    rec = http.post(http.group_path(log_name, 0, "g", "fetch")).json()
    assert rec["encoding"] == "base64" and base64.b64decode(rec["value"]) == b"\x80\x81\xfe"


def test_groups_shared_between_http_and_tcp(server, log_name):
    http = server.http
    with server.connect() as c:
        c.create_log(log_name, 1)
        for i in range(5):
            c.publish(log_name, 0, b"r%d" % i)
        c.ack(log_name, 0, "shared")
    assert http.post(http.group_path(log_name, 0, "shared", "fetch")).json()["value"] == "r1"
    assert http.post(http.group_path(log_name, 0, "shared", "ack")).json() == {"offset": 2}
    with server.connect() as c:
        assert c.fetch(log_name, 0, "shared") == b"r2"
        c.ack(log_name, 0, "shared")
        assert c.describe_log(log_name)[0].group_offsets()["shared"] == 3
    assert http.post(http.group_path(log_name, 0, "shared", "fetch")).json()["value"] == "r3"


# ---------------------------------------------------------------------------- seed compat


def test_insert_and_get_all_order(server):
    http = server.http
    assert http.get("/get-all").json() == []
    msgs = ["first", "second", "", "unicode ✓ é", "x" * 5000, '{"json": "in a string"}']
    for m in msgs:
        r = http.post("/insert", {"message": m})
        assert r.status == 200, r
    r = http.get("/get-all")
    assert r.status == 200
    assert r.json() == msgs


def test_insert_bad_input(server):
    http = server.http
    assert_error(http.post("/insert", raw=b"{not json"), 400)
    assert_error(http.post("/insert", {"msg": "wrong field"}), 400)
    assert http.get("/get-all").json() == []


# ---------------------------------------------------------------------------- HTTP and TCP agree


def test_http_and_tcp_see_the_same_data(server, log_name):
    http = server.http
    with server.connect() as c:
        c.create_log(log_name, 2)
        c.publish(log_name, 0, b"tcp-0")
        c.publish_records(log_name, 0, [b"tcp-1", b"\x00\xff"])
    r = http.post(http.records_path(log_name, 0), [{"value": "http-3"}, {"value": b64(b"\x01\x02"), "encoding": "base64"}])
    assert r.json()["base_offset"] == 3
    with server.connect() as c:
        c.publish(log_name, 0, b"tcp-5")
        tcp = [(rec.offset, rec.value) for rec in c.read_all(log_name, 0)]
        walked = []
        for _ in range(6):
            walked.append(c.fetch(log_name, 0, "w"))
            c.ack(log_name, 0, "w")
    got = http.get(http.records_path(log_name, 0) + "?offset=0&limit=100").json()
    via_http = [
        (x["offset"], base64.b64decode(x["value"]) if x["encoding"] == "base64" else x["value"].encode())
        for x in got["records"]
    ]
    want = [(0, b"tcp-0"), (1, b"tcp-1"), (2, b"\x00\xff"), (3, b"http-3"), (4, b"\x01\x02"), (5, b"tcp-5")]
    assert tcp == want
    assert via_http == want
    assert walked == [v for _, v in want]
    assert got["next_offset"] == 6
    # logs created over HTTP are visible over TCP, and the other way round
    create(http, log_name + "-h", 4)
    with server.connect() as c:
        assert c.list_logs() == {log_name: 2, log_name + "-h": 4}
    assert sorted((l["name"], l["partitions"]) for l in http.get("/logs").json()) == [(log_name, 2), (log_name + "-h", 4)]
