//! The Chariots causal log against the real binary: seed chains, the dependency queue
//! (durable, bounded, timed out), the filter, the tag index, and the record port.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod server_support;

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::{json, Value};
use server_support::*;

#[test]
fn a_child_posted_before_its_parent_is_appended_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    assert_eq!(hash("k1", "v1"), 9_489_172_654_252_433_228);
    let (code, child) = post(
        &node,
        "/record",
        json!({"tags": {"k2": "v2"}, "prehash": hash("k1", "v1"), "seed": 7}),
    );
    assert_eq!((code, child["status"].as_str()), (200, Some("waiting")));
    let qid = child["id"].as_u64().unwrap();
    let (_, waiting) = get(&node, "/records/waiting");
    assert_eq!(waiting[0]["missing"], json!([hash("k1", "v1")]));
    // A record of another seed with the right tag does not satisfy it.
    let (_, other) = post(&node, "/record", json!({"tags": {"k1": "v1"}, "seed": 8}));
    assert_eq!(other["status"], "appended");
    assert_eq!(
        get(&node, &format!("/records/waiting/{qid}")).1["status"],
        "waiting"
    );

    let (_, parent) = post(
        &node,
        "/record",
        json!({"tags": {"k1": "v1"}, "seed": 7, "prehash": 0}),
    );
    let parent_lid = parent["lid"].as_u64().unwrap();
    let (_, status) = get(&node, &format!("/records/waiting/{qid}"));
    assert_eq!(status["status"], "appended");
    let child_lid = status["lid"].as_u64().unwrap();
    assert!(parent_lid < child_lid);
    let (_, rec) = get(&node, &format!("/record/{child_lid}"));
    assert_eq!(rec["tags"], json!({"k2": "v2"}));
    assert_eq!(
        (rec["seed"].as_u64(), rec["prehash"].clone()),
        (Some(7), json!([hash("k1", "v1")]))
    );
    assert_eq!(rec["origin_dc"], 0);
    assert!(rec["toid"].as_u64().unwrap() > 0);
    assert_eq!(get(&node, "/records/waiting").1, json!([]));
}

#[test]
fn multi_dependency_records_wait_for_all_and_lookups_intersect_tags() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let (_, c) = post(
        &node,
        "/record",
        json!({"tags": {"c": "3", "x": "1"}, "seed": 1, "strhash": [hash("a", "1").to_string(), hash("b", "2").to_string()]}),
    );
    let qid = c["id"].as_u64().unwrap();
    post(
        &node,
        "/record",
        json!({"tags": {"a": "1", "x": "1"}, "seed": 1}),
    );
    assert_eq!(
        get(&node, &format!("/records/waiting/{qid}")).1["status"],
        "waiting"
    );
    let (_, b) = post(
        &node,
        "/record?wait=true",
        json!({"tags": {"b": "2"}, "strseed": "1"}),
    );
    assert_eq!(b["status"], "appended");
    let (_, status) = get(&node, &format!("/records/waiting/{qid}"));
    assert!(status["lid"].as_u64().unwrap() > b["lid"].as_u64().unwrap());
    let (_, found) = get(&node, "/records?tag=x:1");
    assert_eq!(found.as_array().unwrap().len(), 2);
    let (_, found) = get(&node, "/records?tag=x:1&tag=c:3");
    assert_eq!(found.as_array().unwrap().len(), 1);
    assert_eq!(found[0]["tags"]["c"], "3");
    let (_, by_hash) = get(&node, &format!("/records?hash={}", hash("b", "2")));
    assert_eq!(by_hash[0]["lid"], b["lid"]);
}

#[test]
fn a_missing_dependency_is_rejected_after_the_timeout_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--dependency-timeout-ms", "300"]);
    let (code, body) = post(
        &node,
        "/record?wait=true",
        json!({"tags": {"k": "v"}, "seed": 2, "prehash": 12345}),
    );
    assert_eq!((code, body["code"].as_str()), (408, Some("rejected")));
    assert!(body["error"].as_str().unwrap().contains("12345"));
    let (_, listed) = get(&node, "/records/waiting");
    assert_eq!(listed[0]["status"], "rejected");
    assert!(listed[0]["reason"]
        .as_str()
        .unwrap()
        .contains("did not arrive"));
    // The dependency arriving later does not resurrect it.
    post(&node, "/record", json!({"tags": {"p": "q"}, "seed": 2}));
    let id = listed[0]["id"].as_u64().unwrap();
    assert_eq!(
        get(&node, &format!("/records/waiting/{id}")).1["status"],
        "rejected"
    );
}

#[test]
fn the_dependency_queue_survives_kill9_and_the_filter_survives_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let (_, w) = post(
        &node,
        "/record",
        json!({"id": "child-1", "tags": {"child": "1"}, "seed": 5, "prehash": hash("parent", "1")}),
    );
    let qid = w["id"].as_u64().unwrap();
    let (_, dup) = post(
        &node,
        "/record",
        json!({"id": "child-1", "tags": {"child": "1"}, "seed": 5}),
    );
    assert_eq!(dup, w, "a repeated id gets the first outcome");
    node.kill9();

    let node = Node::start(dir.path(), &[]);
    assert_eq!(
        get(&node, &format!("/records/waiting/{qid}")).1["status"],
        "waiting"
    );
    let (_, parent) = post(
        &node,
        "/record",
        json!({"id": "parent-1", "tags": {"parent": "1"}, "seed": 5}),
    );
    let (_, status) = get(&node, &format!("/records/waiting/{qid}"));
    assert_eq!(status["status"], "appended");
    assert!(status["lid"].as_u64() > parent["lid"].as_u64());
    node.terminate();

    let node = Node::start(dir.path(), &[]);
    let (_, again) = post(
        &node,
        "/record",
        json!({"id": "parent-1", "tags": {"parent": "1"}, "seed": 5}),
    );
    assert_eq!(again["lid"], parent["lid"], "dedup survives a restart");
    let (_, all) = get(&node, "/records?tag=parent:1");
    assert_eq!(all.as_array().unwrap().len(), 1);
    let (_, children) = get(&node, "/records?tag=child:1");
    assert_eq!(
        children.as_array().unwrap().len(),
        1,
        "the child was appended exactly once"
    );
}

#[test]
fn the_queue_is_bounded_and_bad_records_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(
        dir.path(),
        &["--max-waiting", "2", "--max-record-bytes", "1000"],
    );
    for i in 0..2 {
        assert_eq!(
            post(
                &node,
                "/record",
                json!({"tags": {"i": i.to_string()}, "seed": 1, "prehash": 99})
            )
            .1["status"],
            "waiting"
        );
    }
    let (code, body) = post(
        &node,
        "/record",
        json!({"tags": {}, "seed": 1, "prehash": 99}),
    );
    assert_eq!((code, body["code"].as_str()), (503, Some("busy")));
    for bad in [
        json!({"tags": "k:v"}),
        json!([1]),
        json!({"seed": -3}),
        json!({"tags": {"k": {"deep": 1}}}),
    ] {
        let (code, body) = post(&node, "/record", bad);
        assert_eq!(
            (code, body["code"].as_str()),
            (400, Some("bad_request")),
            "{body}"
        );
    }
    let r = ureq::post(&node.url("/record")).send_string("{not json");
    assert!(matches!(r, Err(ureq::Error::Status(400, _))));
    let (code, _) = post(
        &node,
        "/record",
        json!({"tags": {"big": "x".repeat(5000)}, "seed": 1}),
    );
    assert_eq!(code, 413);
}

#[test]
fn record_port_frames_from_clients_that_read_and_clients_that_never_do() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    // gochariots' rawpost.py: one 'r' frame, then close without reading.
    {
        let mut s = std::net::TcpStream::connect(node.chariots).unwrap();
        s.write_all(&frame(
            b'r',
            br#"{"Host":0,"Tags":{"raw":"post"},"Pre":{"Hash":0},"Seed":0}"#,
        ))
        .unwrap();
    }
    wait_until(|| {
        get(&node, "/records?tag=raw:post")
            .1
            .as_array()
            .is_some_and(|a| a.len() == 1)
    });
    // A client that reads gets one 'a' frame per frame.
    let mut s = std::net::TcpStream::connect(node.chariots).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let batch = json!([
        {"Host": 0, "Tags": {"s": "1"}, "Pre": {"Hash": 0}, "Seed": 4},
        {"Host": 0, "Tags": {"s": "2"}, "Pre": {"Hash": hash("s", "1")}, "Seed": 4}
    ]);
    s.write_all(&frame(b's', batch.to_string().as_bytes()))
        .unwrap();
    let mut head = [0u8; 5];
    s.read_exact(&mut head).unwrap();
    assert_eq!(head[4], b'a');
    let mut body = vec![0u8; u32::from_be_bytes(head[..4].try_into().unwrap()) as usize - 1];
    s.read_exact(&mut body).unwrap();
    let acks: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(acks[0]["status"], "appended");
    assert_eq!(acks[1]["status"], "appended");
    assert!(acks[1]["lid"].as_u64() > acks[0]["lid"].as_u64());
    // Malformed JSON in a frame: an error ack, and the server stays up.
    s.write_all(&frame(b'r', b"{oops")).unwrap();
    s.read_exact(&mut head).unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(head[..4].try_into().unwrap()) as usize - 1];
    s.read_exact(&mut body).unwrap();
    assert!(String::from_utf8_lossy(&body).contains("bad_request"));
    assert_eq!(get(&node, "/health").0, 200);
}

#[test]
fn a_cascade_of_large_records_is_split_into_batches_that_fit() {
    let dir = tempfile::tempdir().unwrap();
    // 1 MiB segments make the batch limit 1 MiB. 130 children with 8 KB tags (1.06 MB)
    // wait for one parent; its arrival frees them all in one sequencer round, which must
    // append them as several batches, not refuse them as one.
    let node = Node::start(dir.path(), &["--segment-bytes", "1048576"]);
    let records: Vec<Value> = (0..130)
        .map(|i| {
            json!({"Host": 0, "Tags": {"big": "x".repeat(8000), "child": i.to_string()},
                   "Pre": {"Hash": hash("parent", "1")}, "Seed": 1})
        })
        .collect();
    let mut s = std::net::TcpStream::connect(node.chariots).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(&frame(b's', Value::Array(records).to_string().as_bytes()))
        .unwrap();
    let mut head = [0u8; 5];
    s.read_exact(&mut head).unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(head[..4].try_into().unwrap()) as usize - 1];
    s.read_exact(&mut body).unwrap();
    let acks: Value = serde_json::from_slice(&body).unwrap();
    assert!(acks
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["status"] == "waiting"));
    post(
        &node,
        "/record",
        json!({"tags": {"parent": "1"}, "seed": 1}),
    );
    // Released records are appended by the maintainer stage right after.
    let big = format!("/records?hash={}", hash("big", &"x".repeat(8000)));
    wait_until(|| {
        get(&node, &big)
            .1
            .as_array()
            .is_some_and(|a| a.len() == 130)
    });
    assert_eq!(get(&node, "/records/waiting").1, json!([]));
}

#[test]
fn a_node_pointed_at_itself_refuses_its_own_records() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--dc-id", "0"]);
    post(
        &node,
        "/datacenters",
        json!({"id": 1, "addr": node.chariots.to_string()}),
    );
    post(
        &node,
        "/record",
        json!({"tags": {"only": "once"}, "seed": 1}),
    );
    wait_until(|| {
        let c = get(&node, "/cluster").1;
        c["remote_datacenters"][0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("its own records"))
    });
    assert_eq!(
        get(&node, "/records?tag=only:once")
            .1
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn the_shared_log_name_is_configurable_and_cluster_reports_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--chariots-log", "causal", "--dc-id", "3"]);
    let (_, r) = post(&node, "/record", json!({"tags": {"a": "1"}, "seed": 1}));
    assert_eq!(r["status"], "appended");
    assert_eq!(get(&node, "/logs/causal").0, 200);
    let (_, cluster) = get(&node, "/cluster");
    assert_eq!(cluster["datacenter"], 3);
    assert_eq!(cluster["shared_log"], "causal");
    assert_eq!(cluster["listeners"]["records"], node.chariots.to_string());
    assert_eq!(cluster["listeners"]["native"], node.tcp.to_string());
    assert_eq!(cluster["listeners"]["http"], node.http.to_string());
    assert_eq!(
        get(&node, &format!("/record/{}", r["lid"])).1["origin_dc"],
        3
    );
}

/// A small tmpfs of our own, to fill up (needs CAP_SYS_ADMIN; CI runs as root).
fn mount_tmpfs(dir: &std::path::Path, size: &str) -> bool {
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIPPED: cannot mount a tmpfs here (not root?)");
    }
    ok
}

#[test]
fn a_full_disk_stops_chariots_cleanly_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    if !mount_tmpfs(dir.path(), "6m") {
        return;
    }
    struct Unmount<'a>(&'a std::path::Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(dir.path());
    let data = dir.path().join("data");
    let node = Node::start(&data, &["--segment-bytes", "1048576"]);
    let mut acked = Vec::new();
    let mut failure = None;
    for i in 0..400 {
        let (code, body) = post(
            &node,
            "/record",
            json!({"tags": {"i": i.to_string(), "pad": "p".repeat(50_000)}, "seed": 1}),
        );
        if code == 200 {
            acked.push(body["lid"].as_u64().unwrap());
        } else {
            failure = Some((code, body));
            break;
        }
    }
    let (code, body) = failure.expect("6 MiB never filled up");
    assert_eq!(
        (code, body["code"].as_str()),
        (507, Some("no_space")),
        "{body}"
    );
    // Stopped: a clear error, not a guess about what might have been appended.
    let (code, body) = post(
        &node,
        "/record",
        json!({"tags": {"after": "full"}, "seed": 1}),
    );
    assert_eq!(code, 500, "{body}");
    assert!(body["error"].as_str().unwrap().contains("restart"));
    node.kill9();

    // More room, a restart: every acknowledged record is there, and appends resume.
    let st = std::process::Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(st.success());
    let node = Node::start(&data, &["--segment-bytes", "1048576"]);
    for lid in &acked {
        assert_eq!(
            get(&node, &format!("/record/{lid}")).0,
            200,
            "lost lid {lid}"
        );
    }
    let (_, r) = post(
        &node,
        "/record",
        json!({"tags": {"after": "restart"}, "seed": 1}),
    );
    assert_eq!(r["status"], "appended");
}

/// The queue's index: a fact frees exactly the records it completes, the listing shows
/// what each still misses, and listings come in bounded pages.
#[test]
fn a_fact_frees_what_it_completes_and_the_queue_lists_in_pages() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let (a, b, z) = (hash("a", "1"), hash("b", "1"), hash("z", "1"));
    let wait = |tag: &str, prehash: Value| {
        let (code, r) = post(
            &node,
            "/record",
            json!({"tags": {tag: "1"}, "prehash": prehash, "seed": 1}),
        );
        assert_eq!((code, r["status"].as_str()), (200, Some("waiting")), "{r}");
        r["id"].as_u64().unwrap()
    };
    let both = wait("c1", json!([a, b]));
    let only_a = wait("c2", json!([a]));
    let never = wait("c3", json!([z]));
    let ids = |v: &Value| -> Vec<u64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(
        ids(&get(&node, "/records/waiting?limit=2").1),
        [both, only_a]
    );
    assert_eq!(
        ids(&get(&node, &format!("/records/waiting?after={only_a}")).1),
        [never]
    );
    let (code, err) = get(&node, "/records/waiting?limit=10001");
    assert_eq!(
        (code, err["code"].as_str()),
        (400, Some("bad_request")),
        "{err}"
    );
    assert_eq!(get(&node, "/cluster").1["waiting"], 3);

    let (_, r) = post(&node, "/record", json!({"tags": {"a": "1"}, "seed": 1}));
    assert_eq!(r["status"], "appended");
    assert_eq!(
        get(&node, &format!("/records/waiting/{only_a}")).1["status"],
        "appended"
    );
    let (_, listed) = get(&node, "/records/waiting?status=waiting");
    assert_eq!(ids(&listed), [both, never]);
    assert_eq!(listed[0]["missing"], json!([b]), "{listed}");
    assert_eq!(listed[1]["missing"], json!([z]), "{listed}");

    post(&node, "/record", json!({"tags": {"b": "1"}, "seed": 1}));
    assert_eq!(
        get(&node, &format!("/records/waiting/{both}")).1["status"],
        "appended"
    );
    assert_eq!(ids(&get(&node, "/records/waiting").1), [never]);
    assert_eq!(get(&node, "/cluster").1["waiting"], 1);
    // Lookups are paged the same way.
    post(&node, "/record", json!({"tags": {"a": "1"}, "seed": 2}));
    let (_, found) = get(&node, "/records?tag=a:1&limit=1");
    assert_eq!(found.as_array().unwrap().len(), 1);
    let first = found[0]["lid"].as_u64().unwrap();
    let (_, rest) = get(&node, &format!("/records?tag=a:1&after={first}"));
    assert_eq!(rest.as_array().unwrap().len(), 1);
    assert!(rest[0]["lid"].as_u64().unwrap() > first);
}

/// The shared log is Chariots' state: readable by anyone, but neither written, deleted
/// nor created through the public API (a deleted shared log would make tag lookups
/// answer wrong records and let a record whose dependency vanished in).
#[test]
fn the_shared_log_cannot_be_written_deleted_or_created_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    // Reserved before it exists.
    let (code, err) = post(&node, "/logs", json!({"name": "chariots", "partitions": 1}));
    assert_eq!(
        (code, err["code"].as_str()),
        (403, Some("internal_log")),
        "{err}"
    );
    let (_, r) = post(&node, "/record", json!({"tags": {"k": "v"}, "seed": 1}));
    assert_eq!(r["status"], "appended");
    let deleted = ureq::delete(&node.url("/logs/chariots")).call();
    match deleted {
        Err(ureq::Error::Status(code, r)) => {
            let body: Value = r.into_json().unwrap();
            assert_eq!(
                (code, body["code"].as_str()),
                (403, Some("internal_log")),
                "{body}"
            );
        }
        other => panic!("delete of the shared log: {other:?}"),
    }
    let (code, err) = post(
        &node,
        "/logs/chariots/partitions/0/records",
        json!([{"value": "x"}]),
    );
    assert_eq!(
        (code, err["code"].as_str()),
        (403, Some("internal_log")),
        "{err}"
    );
    // Rog's publish gets the same refusal as its error text.
    let reply = call(&node, &publish("chariots", 0, b"plain"), false);
    assert!(
        reply.as_ref().is_err_and(|e| e.contains("internal")),
        "{reply:?}"
    );
    // Nothing changed: one record, still found by its tag; reads work.
    let (_, found) = get(&node, "/records?tag=k:v");
    assert_eq!(found.as_array().unwrap().len(), 1, "{found}");
    let (code, d) = get(&node, "/logs/chariots");
    assert_eq!(code, 200);
    assert_eq!(d["partitions"][0]["next_offset"], 1, "{d}");
    // And a restart keeps it protected (the catalogue says it is internal).
    drop(node);
    let node = Node::start(dir.path(), &[]);
    let reply = call(&node, &publish("chariots", 0, b"plain"), false);
    assert!(reply.is_err(), "{reply:?}");
}
