"""The Chariots causal log, black box: ``POST /record`` in every JSON form gochariots
clients send, its outcomes (appended / waiting / rejected), lookups by LId and by tag,
the dependency queue, the filter (dedup by id), errors, and the record port (``'r'`` and
``'s'`` frames, ``'a'`` acknowledgments) including clients that never read."""

import json
import signal
import socket
import struct
import threading
import time

import pytest

import chariot_client as cc
from chariot_client import gochariots_record, tag_hash
from conftest import wait_until

K1_V1 = 9489172654252433228
RECORD_FIELDS = {"lid", "tags", "seed", "prehash", "origin_dc", "toid", "timestamp"}


def post(server, body, query=""):
    return server.http.post("/record" + query, body)


def appended(server, body, query=""):
    r = post(server, body, query)
    assert r.status == 200, r
    out = r.json()
    assert out["status"] == "appended", out
    return out["lid"]


def waiting(server, body):
    r = post(server, body)
    assert r.status == 200, r
    out = r.json()
    assert out["status"] == "waiting", out
    return out["id"]


def get_record(server, lid):
    r = server.http.get(f"/record/{lid}")
    assert r.status == 200, r
    return r.json()


def find(server, query):
    r = server.http.get("/records?" + query)
    assert r.status == 200, r
    return r.json()


def queue_status(server, qid):
    r = server.http.get(f"/records/waiting/{qid}")
    assert r.status == 200, r
    return r.json()


def assert_error(resp, status, code):
    assert resp.status == status, resp
    body = resp.json()
    assert isinstance(body, dict) and set(body) >= {"error", "code"}, body
    assert isinstance(body["error"], str) and body["error"], body
    assert body["code"] == code, body
    return body


def record_port(server, timeout=15.0) -> socket.socket:
    s = socket.create_connection((server.host, server.chariots_port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def assert_healthy(server):
    assert server.alive(), server.stderr_tail()
    assert server.http.get("/health").json() == {"status": "ok"}
    with record_port(server) as s:
        s.sendall(cc.encode_record_frame(gochariots_record({"health": "probe"})))
        assert cc.read_chariots_ack(s)["status"] == "appended"


# ---------------------------------------------------------------------------- hashes


def test_fnv_check_value_from_the_gochariots_docs():
    assert cc.fnv1a64(b"k1:v1") == K1_V1
    assert tag_hash("k1", "v1") == K1_V1
    assert cc.fnv1a64(b"") == 0xCBF29CE484222325


# ---------------------------------------------------------------------------- POST /record


def test_outcome_objects(server):
    r = post(server, {"tags": {"key": "value"}, "prehash": 0, "seed": 0})
    assert r.status == 200
    assert r.json() == {"status": "appended", "lid": 0}
    r = post(server, {"tags": {"k2": "v2"}, "prehash": K1_V1, "seed": 1})
    assert r.status == 200
    body = r.json()
    assert set(body) == {"status", "id"} and body["status"] == "waiting", body
    assert isinstance(body["id"], int)


@pytest.mark.parametrize(
    "form",
    [
        {"prehash": K1_V1, "seed": 5},
        {"prehash": [K1_V1], "seed": 5},
        {"strhash": [str(K1_V1)], "strseed": "5"},
        {"strhash": str(K1_V1), "seed": 5},
        {"prehash": [0, K1_V1], "strseed": "5"},
    ],
    ids=["prehash-number", "prehash-list", "strhash-list-strseed", "strhash-string", "zero-is-no-dependency"],
)
def test_every_dependency_form_means_the_same(server, form):
    parent = appended(server, {"tags": {"k1": "v1"}, "seed": 5, "prehash": 0})
    child = appended(server, {"tags": {"k2": "v2"}, **form})
    assert child > parent
    rec = get_record(server, child)
    assert (rec["seed"], rec["prehash"], rec["tags"]) == (5, [K1_V1], {"k2": "v2"})


def test_several_dependencies_and_64_bit_seeds(server):
    big = 2**64 - 1
    a = appended(server, {"tags": {"a": "1"}, "strseed": str(big)})
    qid = waiting(server, {"tags": {"c": "3"}, "strseed": str(big),
                           "prehash": tag_hash("a", "1"), "strhash": [str(tag_hash("b", "2"))]})
    st = queue_status(server, qid)
    assert st == {"status": "waiting", "id": qid}
    b = appended(server, {"tags": {"b": "2"}, "seed": big})
    st = queue_status(server, qid)
    assert st["status"] == "appended" and st["lid"] > b > a, st
    rec = get_record(server, st["lid"])
    assert rec["seed"] == big
    assert sorted(rec["prehash"]) == sorted([tag_hash("a", "1"), tag_hash("b", "2")])


def test_tag_values_may_be_numbers_or_booleans(server):
    lid = appended(server, {"tags": {"n": 7, "b": True, "s": "x"}, "seed": 0})
    assert get_record(server, lid)["tags"] == {"n": "7", "b": "true", "s": "x"}
    # The dependency is on the text form.
    appended(server, {"tags": {"after": "n"}, "prehash": tag_hash("n", "7")})


def test_wait_true_answers_with_the_final_outcome(server):
    # Satisfied at once: the same answer as without wait.
    assert post(server, {"tags": {"x": "1"}}, "?wait=true").json()["status"] == "appended"
    box = {}

    def child():
        box["resp"] = post(server, {"tags": {"child": "1"}, "seed": 3,
                                    "prehash": tag_hash("parent", "1")}, "?wait=true")

    t = threading.Thread(target=child, daemon=True)
    t.start()
    wait_until(lambda: server.http.get("/records/waiting").json(), what="the child to be queued")
    assert t.is_alive(), "?wait=true answered before the dependency arrived"
    parent = appended(server, {"tags": {"parent": "1"}, "seed": 3})
    t.join(15)
    assert not t.is_alive()
    resp = box["resp"]
    assert resp.status == 200, resp
    out = resp.json()
    assert out["status"] == "appended" and out["lid"] > parent, out


@pytest.mark.parametrize("query", ["?wait=maybe", "?wate=true", "?wait=true&x=1"])
def test_unknown_query_on_post_is_a_bad_request(server, query):
    assert_error(post(server, {"tags": {}}, query), 400, "bad_request")


# ---------------------------------------------------------------------------- GET /record/{lid}


def test_get_record_fields(server):
    lid0 = appended(server, {"tags": {"k1": "v1", "other": "x"}, "seed": 11})
    lid1 = appended(server, {"tags": {"k2": "v2"}, "seed": 11, "prehash": K1_V1, "id": "client-7"})
    before = time.time() * 1000
    r0, r1 = get_record(server, lid0), get_record(server, lid1)
    assert set(r0) == RECORD_FIELDS, r0
    assert set(r1) == RECORD_FIELDS | {"id"}, r1
    assert r0["lid"] == lid0 and r1["lid"] == lid1
    assert r0["tags"] == {"k1": "v1", "other": "x"}
    assert (r0["seed"], r0["prehash"]) == (11, [])
    assert (r1["prehash"], r1["id"]) == ([K1_V1], "client-7")
    assert r0["origin_dc"] == r1["origin_dc"] == 0
    assert r1["toid"] > r0["toid"] >= 0
    assert 1_500_000_000_000 < r0["timestamp"] <= r1["timestamp"] <= before + 60_000


def test_get_record_errors(server):
    # Before the first record the shared log does not exist at all.
    assert_error(server.http.get("/record/0"), 404, "unknown_log")
    appended(server, {"tags": {"a": "1"}})
    assert_error(server.http.get("/record/5"), 416, "offset_out_of_range")
    assert_error(server.http.get("/record/abc"), 400, "bad_request")
    assert_error(server.http.get("/record/-1"), 400, "bad_request")


# ---------------------------------------------------------------------------- GET /records


def test_find_by_tags_intersects_and_by_hash(server):
    a = appended(server, {"tags": {"a": "1", "x": "1"}, "seed": 1})
    b = appended(server, {"tags": {"b": "2", "x": "1"}, "seed": 1})
    c = appended(server, {"tags": {"c": "3", "x": "1", "b": "2"}, "seed": 2})
    lids = lambda q: [r["lid"] for r in find(server, q)]
    assert lids("tag=x:1") == [a, b, c]
    assert lids("tag=x:1&tag=b:2") == [b, c]
    assert lids("tag=b:2&tag=c:3&tag=x:1") == [c]
    assert lids("tag=a:1&tag=b:2") == []
    assert lids("tag=nobody:home") == []
    assert lids(f"hash={tag_hash('c', '3')}") == [c]
    assert lids(f"hash={tag_hash('b', '2')}&tag=a:1") == []
    records = find(server, "tag=a:1")
    assert len(records) == 1 and set(records[0]) == RECORD_FIELDS
    assert records[0]["tags"] == {"a": "1", "x": "1"}


def test_find_decodes_the_query(server):
    lid = appended(server, {"tags": {"note": "two words & a: colon", "k:ey": "v"}})
    q = "tag=" + cc.Http.q("note:two words & a: colon")
    assert [r["lid"] for r in find(server, q)] == [lid]
    assert [r["lid"] for r in find(server, "tag=note:two+words+%26+a%3A+colon")] == [lid]
    # The hash is of "key:value", so a key containing ':' is found either way.
    assert [r["lid"] for r in find(server, "tag=k:ey:v")] == [lid]


@pytest.mark.parametrize("query", ["", "?", "?tag=novalue", "?hash=x", "?hash=-1", "?lid=1"])
def test_find_errors(server, query):
    assert_error(server.http.get("/records" + query), 400, "bad_request")


# ---------------------------------------------------------------------------- the dependency queue


def test_waiting_list_and_entry_status(server):
    assert server.http.get("/records/waiting").json() == []
    qid = waiting(server, {"tags": {"k2": "v2"}, "seed": 7, "prehash": K1_V1, "id": "w-1"})
    listed = server.http.get("/records/waiting").json()
    assert len(listed) == 1, listed
    e = listed[0]
    assert (e["id"], e["status"], e["missing"]) == (qid, "waiting", [K1_V1])
    assert e["record"] == {"tags": {"k2": "v2"}, "seed": 7, "prehash": [K1_V1], "id": "w-1"}
    assert isinstance(e["accepted_at_ms"], int) and e["accepted_at_ms"] > 1_500_000_000_000
    assert "reason" not in e
    assert server.http.get("/cluster").json()["waiting"] == 1
    # The right tag in another seed does not satisfy it.
    appended(server, {"tags": {"k1": "v1"}, "seed": 8})
    assert queue_status(server, qid) == {"status": "waiting", "id": qid}
    parent = appended(server, {"tags": {"k1": "v1"}, "seed": 7})
    st = queue_status(server, qid)
    assert st["status"] == "appended" and st["lid"] > parent, st
    assert server.http.get("/records/waiting").json() == []
    assert server.http.get("/cluster").json()["waiting"] == 0
    assert_error(server.http.get("/records/waiting/999"), 404, "unknown_id")
    assert_error(server.http.get("/records/waiting/x"), 400, "bad_request")


def test_cluster_describes_this_datacenter(server):
    c = server.http.get("/cluster")
    assert c.status == 200, c
    c = c.json()
    assert c["datacenter"] == 0 and c["shared_log"] == "chariots" and c["waiting"] == 0, c


def test_child_before_parent_over_the_record_port_like_gochariots_event_chain(server):
    """gochariots' event_chain.py / event2.py: for each chain, the child (tag ``n: 2``,
    ``Pre.Hash`` = hash of ``n:1``, ``Seed`` = n) is sent to one batcher before its parent
    (tag ``n: 1``) is sent to another, by clients that never read; the log must still
    hold the parent first."""
    chains = [str(i) for i in range(1, 6)]
    child_conn, parent_conn = record_port(server), record_port(server)
    try:
        for n in chains:
            child = gochariots_record({n: "2"}, seed=int(n), prehash=tag_hash(n, "1"))
            child_conn.sendall(cc.encode_record_frame(json.dumps(child, separators=(",", ":"))))
            wait_until(lambda: any(e["record"]["tags"] == {n: "2"}
                                   for e in server.http.get("/records/waiting").json()),
                       what=f"chain {n}'s child to wait")
            parent = gochariots_record({n: "1"}, seed=int(n))
            parent_conn.sendall(cc.encode_record_frame(parent))
    finally:
        child_conn.close()
        parent_conn.close()
    for n in chains:
        wait_until(lambda: find(server, f"tag={n}:2"), what=f"chain {n}'s child to be appended")
        (p,), (c,) = find(server, f"tag={n}:1"), find(server, f"tag={n}:2")
        assert p["lid"] < c["lid"], (p, c)
        assert c["prehash"] == [tag_hash(n, "1")] and c["seed"] == p["seed"] == int(n)
    assert server.http.get("/records/waiting").json() == []


def test_a_dependency_that_never_comes_is_rejected_with_a_reason(make_server):
    server = make_server("--dependency-timeout-ms", "300")
    r = post(server, {"tags": {"k": "v"}, "seed": 2, "prehash": 12345}, "?wait=true")
    body = assert_error(r, 408, "rejected")
    assert body["status"] == "rejected" and isinstance(body["id"], int), body
    assert "12345" in body["error"] and "did not arrive" in body["error"], body
    # Without wait: waiting first, rejected later, and the queue says why.
    qid = waiting(server, {"tags": {"k": "w"}, "seed": 2, "prehash": 777})
    st = wait_until(lambda: (s := queue_status(server, qid))["status"] == "rejected" and s,
                    what="the rejection")
    assert st["id"] == qid and "777" in st["reason"], st
    listed = {e["id"]: e for e in server.http.get("/records/waiting").json()}
    assert listed[qid]["status"] == "rejected" and listed[qid]["reason"] == st["reason"]
    assert listed[qid]["missing"] == [777]
    assert listed[body["id"]]["status"] == "rejected"
    # The dependency arriving later does not resurrect it.
    appended(server, {"tags": {"p": "q"}, "seed": 2})
    assert queue_status(server, qid)["status"] == "rejected"
    assert find(server, "tag=k:w") == []


def test_the_queue_is_bounded(make_server):
    server = make_server("--max-waiting", "2")
    for i in range(2):
        waiting(server, {"tags": {"i": str(i)}, "seed": 1, "prehash": 99})
    assert_error(post(server, {"tags": {"i": "2"}, "seed": 1, "prehash": 99}), 503, "busy")
    # Records that need not wait still go in.
    appended(server, {"tags": {"free": "1"}, "seed": 1})


# ---------------------------------------------------------------------------- the filter


def test_a_repeated_id_gets_the_first_outcome(server):
    first = post(server, {"id": "req-1", "tags": {"a": "1"}}).json()
    assert first["status"] == "appended"
    again = post(server, {"id": "req-1", "tags": {"a": "different"}, "seed": 9}).json()
    assert again == first
    assert len(find(server, "tag=a:1")) == 1 and find(server, "tag=a:different") == []
    # A waiting record: the repeat gets the same queue id, and only one copy is appended.
    w = post(server, {"id": "req-2", "tags": {"c": "1"}, "seed": 4, "prehash": tag_hash("p", "1")}).json()
    assert w["status"] == "waiting"
    assert post(server, {"id": "req-2", "tags": {"c": "1"}, "seed": 4}).json() == w
    appended(server, {"tags": {"p": "1"}, "seed": 4})
    assert len(find(server, "tag=c:1")) == 1
    # The filter survives a restart.
    server.restart()
    assert post(server, {"id": "req-1", "tags": {"a": "1"}}).json() == first
    assert len(find(server, "tag=a:1")) == 1


def test_the_record_port_filters_by_id_too(server):
    with record_port(server) as s:
        rec = gochariots_record({"t": "1"}, Id="tcp-1")
        s.sendall(cc.encode_record_frame(rec) + cc.encode_record_frame(rec))
        first, second = cc.read_chariots_ack(s), cc.read_chariots_ack(s)
    assert first["status"] == "appended" and second == first
    assert len(find(server, "tag=t:1")) == 1
    assert get_record(server, first["lid"])["id"] == "tcp-1"


# ---------------------------------------------------------------------------- HTTP errors


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"", b'{"tags": {"a": "1"}', b"\xff\xfe", b"null", b"[1, 2]", b'"text"'],
    ids=["garbage", "empty", "truncated", "not-utf8", "null", "array", "string"],
)
def test_malformed_bodies(server, raw):
    assert_error(server.http.post("/record", raw=raw), 400, "bad_request")
    assert_healthy(server)


@pytest.mark.parametrize(
    "body",
    [
        {"tags": "k:v"},
        {"tags": ["k", "v"]},
        {"tags": {"k": {"nested": 1}}},
        {"tags": {"k": ["v"]}},
        {"tags": {"k": None}},
        {"tags": {}, "seed": -1},
        {"tags": {}, "seed": 1.5},
        {"tags": {}, "seed": 2**64},
        {"tags": {}, "strseed": "x"},
        {"tags": {}, "prehash": [1, "two"]},
        {"tags": {}, "prehash": {"Hash": 1}},
        {"tags": {}, "strhash": ["-5"]},
        {"tags": {}, "id": ""},
        {"tags": {}, "id": 5},
        {"tagz": {}},
    ],
)
def test_invalid_records(server, body):
    assert_error(post(server, body), 400, "bad_request")


def test_oversized_records_and_bodies(make_server):
    server = make_server("--max-record-bytes", "1000")
    assert_error(post(server, {"tags": {"big": "x" * 5000}, "seed": 1}), 413, "too_large")
    # Many dependencies count too.
    assert_error(post(server, {"tags": {}, "prehash": list(range(1, 200))}), 413, "too_large")
    appended(server, {"tags": {"small": "x" * 100}})
    # A body far above any limit is refused before it is parsed.
    huge = b'{"tags": {"k": "' + b"x" * (3 << 20) + b'"}}'
    assert_error(server.http.post("/record", raw=huge), 413, "too_large")
    assert_healthy(server)


# ---------------------------------------------------------------------------- the record port


def test_rawpost_sends_one_frame_and_closes_without_reading(server):
    """gochariots' rawpost.py, byte for byte: no ``Pre``, then close."""
    payload = '{"Host":0,"Tags":{"' + "raw" + '":"' + "post" + '"},"Seed":' + str(0) + "}"
    s = socket.create_connection((server.host, server.chariots_port))
    s.send(len(payload).__add__(1).to_bytes(4, byteorder="big") + b"r" + payload.encode())
    s.close()
    wait_until(lambda: find(server, "tag=raw:post"), what="the raw post")
    (rec,) = find(server, "tag=raw:post")
    assert (rec["seed"], rec["prehash"]) == (0, [])
    assert_healthy(server)


def test_many_non_reading_clients_with_several_frames_each(server):
    for c in range(10):
        s = record_port(server)
        frames = b"".join(cc.encode_record_frame(gochariots_record({"c": str(c), "i": str(i)}))
                          for i in range(20))
        s.sendall(frames)
        s.close()
    wait_until(lambda: all(len(find(server, f"tag=c:{c}")) == 20 for c in range(10)),
               what="every frame of every client")
    assert_healthy(server)


def test_r_frame_is_acknowledged_with_the_outcome(server):
    with record_port(server) as s:
        s.sendall(cc.encode_record_frame(gochariots_record({"k1": "v1"}, seed=3)))
        ack = cc.read_chariots_ack(s)
        assert ack == {"status": "appended", "lid": ack["lid"]}
        s.sendall(cc.encode_record_frame(gochariots_record({"k3": "v3"}, seed=3, prehash=[K1_V1, tag_hash("k2", "v2")])))
        w = cc.read_chariots_ack(s)
        assert w["status"] == "waiting", w
        s.sendall(cc.encode_record_frame(gochariots_record({"k2": "v2"}, seed=3)))
        assert cc.read_chariots_ack(s)["status"] == "appended"
    st = queue_status(server, w["id"])
    assert st["status"] == "appended", st
    rec = get_record(server, st["lid"])
    assert rec["tags"] == {"k3": "v3"} and sorted(rec["prehash"]) == sorted([K1_V1, tag_hash("k2", "v2")])


def test_s_frame_is_acknowledged_with_an_array_of_outcomes(server):
    batch = [
        gochariots_record({"s": "1"}, seed=4),
        gochariots_record({"s": "2"}, seed=4, prehash=tag_hash("s", "1")),
        gochariots_record({"s": "3"}, seed=4, prehash=tag_hash("never", "1")),
        {"Host": 0, "Tags": "not an object"},
    ]
    with record_port(server) as s:
        s.sendall(cc.encode_records_frame(batch))
        acks = cc.read_chariots_ack(s)
        assert isinstance(acks, list) and len(acks) == 4, acks
        assert acks[0]["status"] == acks[1]["status"] == "appended"
        assert acks[1]["lid"] > acks[0]["lid"]
        assert acks[2]["status"] == "waiting"
        assert acks[3]["code"] == "bad_request" and acks[3]["error"], acks[3]
        # An empty batch is acknowledged with an empty array.
        s.sendall(cc.encode_records_frame([]))
        assert cc.read_chariots_ack(s) == []


def test_pipelined_and_split_frames_get_one_ack_each_in_order(server):
    frames = [cc.encode_record_frame(gochariots_record({"p": str(i)})) for i in range(5)]
    with record_port(server) as s:
        s.sendall(b"".join(frames))
        lids = [cc.read_chariots_ack(s)["lid"] for _ in frames]
        assert lids == sorted(lids) and len(set(lids)) == 5
        whole = cc.encode_records_frame([gochariots_record({"split": "1"})])
        for i in range(len(whole)):
            s.sendall(whole[i:i + 1])
            time.sleep(0.001)
        assert cc.read_chariots_ack(s)[0]["status"] == "appended"
    assert [r["tags"]["p"] for r in find(server, f"hash={tag_hash('p', '0')}")] == ["0"]


@pytest.mark.parametrize(
    "payload, frame_type",
    [
        (b"{oops", cc.FRAME_RECORD),
        (b"", cc.FRAME_RECORD),
        (b"[1, 2]", cc.FRAME_RECORD),
        (b'{"Host":0,"Tags":{"k":{"deep":1}}}', cc.FRAME_RECORD),
        (b'{"Tags":{},"Pre":5}', cc.FRAME_RECORD),
        (b'{"Tags":{},"Seed":-1}', cc.FRAME_RECORD),
        (b'{"Host":0,"Tags":{}}', cc.FRAME_RECORDS),
        (b"[{oops", cc.FRAME_RECORDS),
        (b"{}", cc.FRAME_ACK),
    ],
    ids=["bad-json", "empty", "array-in-r", "nested-tag", "pre-not-object", "negative-seed",
         "object-in-s", "bad-json-in-s", "a-from-client"],
)
def test_a_bad_payload_gets_an_error_ack_and_the_connection_goes_on(server, payload, frame_type):
    with record_port(server) as s:
        s.sendall(cc.encode_chariots_frame(frame_type, payload))
        err = cc.read_chariots_ack(s)
        assert isinstance(err, dict) and set(err) == {"error", "code"}, err
        assert err["code"] == "bad_request" and err["error"], err
        s.sendall(cc.encode_record_frame(gochariots_record({"after": "error"})))
        assert cc.read_chariots_ack(s)["status"] == "appended"
    assert_healthy(server)


@pytest.mark.parametrize(
    "raw",
    [
        b"\x00\x00\x00\x05x{}{}",                           # unknown type byte
        b"\x00\x00\x00\x00r",                               # length 0: no room for the type
        struct.pack(">I", cc.DEFAULT_MAX_FRAME + 1) + b"r",  # above max_frame_size
    ],
    ids=["unknown-type", "zero-length", "too-large"],
)
def test_an_undecodable_frame_gets_an_error_ack_then_the_connection_ends(server, raw):
    with record_port(server) as s:
        s.sendall(raw)
        err = cc.read_chariots_ack(s)
        assert set(err) == {"error", "code"} and err["code"] == "bad_request", err
        assert cc.read_until_eof(s) == b""
    assert_healthy(server)


def test_records_from_both_doors_share_one_log(server):
    with record_port(server) as s:
        s.sendall(cc.encode_record_frame(gochariots_record({"door": "tcp"}, seed=6)))
        tcp = cc.read_chariots_ack(s)["lid"]
    http = appended(server, {"tags": {"door": "http"}, "seed": 6, "prehash": tag_hash("door", "tcp")})
    assert http > tcp
    assert [r["lid"] for r in find(server, f"hash={tag_hash('door', 'tcp')}")] == [tcp]


def test_records_and_the_queue_survive_a_crash(server):
    lid = appended(server, {"tags": {"before": "crash"}, "seed": 1})
    qid = waiting(server, {"tags": {"child": "1"}, "seed": 1, "prehash": tag_hash("parent", "1")})
    server.restart(signal.SIGKILL)
    assert get_record(server, lid)["tags"] == {"before": "crash"}
    assert queue_status(server, qid)["status"] == "waiting"
    parent = appended(server, {"tags": {"parent": "1"}, "seed": 1})
    st = queue_status(server, qid)
    assert st["status"] == "appended" and st["lid"] > parent
