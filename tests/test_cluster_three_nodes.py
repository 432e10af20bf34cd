"""A 3-node cluster of real processes: a log created on one node is listed on all;
publishes through any node (forwarded to the partition's leader) get dense offsets;
every node returns the same committed records, byte for byte; the replicated-log seed's
`/insert` on one node shows in `/get-all` on the others; a delete through any node
takes the log and its files away everywhere."""

from __future__ import annotations

from conftest import wait_until


def test_any_node_serves_and_every_replica_returns_the_same_bytes(make_cluster):
    c = make_cluster(3)
    c.new_log("orders", 2)
    # A second create of the name, through another node, is refused.
    r = c[2].http.post("/logs", {"name": "orders", "partitions": 1})
    assert r.status == 409, r

    sent = {0: [], 1: []}
    for k in range(60):
        node, p = 1 + k % 3, k % 2
        value = f"v{k}-via{node}".encode()
        with c[node].connect() as conn:
            if k % 4 == 0:
                conn.publish("orders", p, value)  # Rog's own publish
            else:
                conn.publish_records("orders", p, [value])
        sent[p].append(value)

    for p in (0, 1):
        replicas = c.converged("orders", p)
        for i, records in replicas.items():
            assert [v for _, v in records] == sent[p], f"node {i}, partition {p}"
            assert [o for o, _ in records] == list(range(len(sent[p])))
        # The committed batches are the same bytes on every replica.
        raw = set()
        for i in c.ids():
            with c[i].connect() as conn:
                raw.add(conn.read_range("orders", p, 0, 1 << 20).batches)
        assert len(raw) == 1

    # The seed's example: insert on one node, read from every node.
    for k, node in enumerate((1, 2, 3, 2)):
        r = c[node].http.post("/insert", {"message": f"m{k}"})
        assert r.status == 200, r
        assert r.json()["offset"] == k
    for i in c.ids():
        # /insert waits until every replica holds the record durably (acks=all); a
        # follower applies it, and so serves it, when it next hears of the commit.
        wait_until(lambda: c[i].http.get("/get-all").json() == ["m0", "m1", "m2", "m3"],
                   what=f"node {i} to serve every insert")

    # `?acks=all` over HTTP; an unknown value is refused.
    r = c[3].http.post(c[3].http.records_path("orders", 0) + "?acks=all", [{"value": "all"}])
    assert r.status == 200, r
    assert r.json()["base_offset"] == len(sent[0])
    r = c[3].http.post(c[3].http.records_path("orders", 0) + "?acks=most", [{"value": "x"}])
    assert r.status == 400, r

    st = c.status(1)
    assert sorted(m["id"] for m in st["members"]) == [1, 2, 3]
    orders = [p for p in st["partitions"] if p["log"] == "orders"]
    assert [p["partition"] for p in orders] == [0, 1]
    assert all(sorted(p["replicas"]) == [1, 2, 3] for p in orders)

    # Delete through a third node: gone everywhere, files included.
    groups = [p["group"] for p in orders]
    r = c[3].http.delete("/logs/orders")
    assert r.status in (200, 204), r
    for i in c.ids():
        wait_until(
            lambda: "orders" not in [l["name"] for l in c[i].http.get("/logs").json()],
            what=f"node {i} to drop the log",
        )
        for g in groups:
            d = c[i].data_dir / "cluster" / "groups" / str(g)
            wait_until(lambda: not d.exists(), what=f"{d} to be removed")


def test_a_restarted_cluster_keeps_its_logs_and_records(make_cluster):
    c = make_cluster(3)
    assert c[2].http.post("/logs", {"name": "kept", "partitions": 1}).status == 201
    c.wait_listed("kept")
    for k in range(10):
        with c[1 + k % 3].connect() as conn:
            conn.publish_records("kept", 0, [f"r{k}".encode()])
    before = c.converged("kept", 0)[1]
    for i in c.ids():
        c[i].stop_clean()
    for i in c.ids():
        c[i].start()
    c.wait_listed("kept")
    after = c.converged("kept", 0)
    assert all(v == before for v in after.values())
    # And it takes writes again once a leader is elected.
    c.leader_of("kept", 0)
    with c[3].connect() as conn:
        assert conn.publish_records("kept", 0, [b"again"]) == 10


def test_nodes_started_together_on_new_directories_form_the_cluster(make_cluster):
    # Each asks the others whether they know it (a node that lost its disk must not come
    # back under its id); nodes that are starting too know nothing, and say so.
    c = make_cluster(3, together=True)
    c.new_log("together")
    with c[2].connect() as conn:
        conn.publish_records("together", 0, [b"x"])
    assert all(len(v) == 1 for v in c.converged("together", 0).values())
