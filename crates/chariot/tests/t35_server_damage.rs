//! Damaged files of a stopped server: it restarts serving every intact record, reports
//! the damage, refuses writes to the damaged partition only, and `chariot repair` mends
//! it without reusing an offset.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod server_support;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use server_support::*;

/// The directory of partition `p` of the log named `log`.
fn partition_dir(data: &Path, log: &str, p: u32) -> PathBuf {
    for e in std::fs::read_dir(data.join("logs")).unwrap() {
        let dir = e.unwrap().path();
        let meta: Value =
            serde_json::from_slice(&std::fs::read(dir.join("meta.json")).unwrap()).unwrap();
        if meta["name"] == log {
            return dir.join(p.to_string());
        }
    }
    panic!("no log {log}");
}

/// Byte positions where the batches of a data file start.
fn batch_starts(file: &Path) -> Vec<u64> {
    let bytes = std::fs::read(file).unwrap();
    let (mut at, mut starts) = (0usize, Vec::new());
    while at + 12 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        starts.push(at as u64);
        at += 12 + len;
    }
    starts
}

fn flip(path: &Path, pos: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, pos).unwrap();
    f.write_all_at(&[b[0] ^ 0x04], pos).unwrap();
}

fn repair(data: &Path, dry_run: bool) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_chariot"));
    cmd.args(["repair", "--data-dir"]).arg(data);
    if dry_run {
        cmd.arg("--dry-run");
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn values(node: &Node, log: &str, p: u32, offset: u64) -> (u16, Value) {
    get(
        node,
        &format!("/logs/{log}/partitions/{p}/records?offset={offset}&limit=1000"),
    )
}

#[test]
fn damage_in_the_active_segment_keeps_every_record_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    assert_eq!(
        post(&node, "/logs", json!({"name": "orders", "partitions": 2})).0,
        201
    );
    for i in 0..20 {
        let (code, _) = post(
            &node,
            "/logs/orders/partitions/0/records",
            json!([{"value": format!("order {i}")}]),
        );
        assert_eq!(code, 200);
    }
    assert_eq!(node.terminate(), Some(0));
    let segment = partition_dir(dir.path(), "orders", 0).join("00000000000000000000.log");
    let starts = batch_starts(&segment);
    assert_eq!(starts.len(), 20);
    flip(&segment, starts[5] + 70); // a value byte of offset 5
    let damaged = std::fs::read(&segment).unwrap();

    let node = Node::start(dir.path(), &[]);
    let (code, health) = get(&node, "/health");
    assert_eq!((code, health["status"].as_str()), (200, Some("degraded")));
    assert_eq!(health["damaged"][0]["log"], "orders");
    assert_eq!(health["damaged"][0]["partition"], 0);
    let text = health["damaged"][0]["damage"].as_str().unwrap().to_string();
    assert!(
        text.contains(&segment.display().to_string())
            && text.contains(&format!("byte {}", starts[5])),
        "{text}"
    );
    let (_, described) = get(&node, "/logs/orders");
    assert_eq!(described["partitions"][0]["next_offset"], 5);
    assert!(described["partitions"][0]["damage"].is_string());
    assert!(described["partitions"][1].get("damage").is_none());
    // The intact prefix is served.
    let (code, body) = values(&node, "orders", 0, 0);
    assert_eq!(code, 200);
    let got: Vec<&str> = body["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["value"].as_str().unwrap())
        .collect();
    assert_eq!(
        got,
        (0..5).map(|i| format!("order {i}")).collect::<Vec<_>>()
    );
    // Writes to it are refused, with the reason, on both wires; the other partition works.
    let (code, body) = post(
        &node,
        "/logs/orders/partitions/0/records",
        json!([{"value": "x"}]),
    );
    assert_eq!((code, body["code"].as_str()), (503, Some("data_damaged")));
    match call(&node, &publish("orders", 0, b"y"), false) {
        Err(e) => assert!(e.contains("damaged"), "{e}"),
        other => panic!("{other:?}"),
    }
    let (code, body) = post(
        &node,
        "/logs/orders/partitions/1/records",
        json!([{"value": "fine"}]),
    );
    assert_eq!((code, body["offsets"].clone()), (200, json!([0])));
    assert_eq!(node.terminate(), Some(0));
    assert_eq!(std::fs::read(&segment).unwrap(), damaged, "no byte changed");

    let dry = repair(dir.path(), true);
    assert!(
        dry.contains("offsets 5..6 lost") && dry.contains("dry run"),
        "{dry}"
    );
    assert_eq!(
        std::fs::read(&segment).unwrap(),
        damaged,
        "a dry run changes nothing"
    );
    let done = repair(dir.path(), false);
    assert!(done.contains("repaired"), "{done}");

    let node = Node::start(dir.path(), &[]);
    assert_eq!(get(&node, "/health"), (200, json!({"status": "ok"})));
    let (_, body) = values(&node, "orders", 0, 0);
    let records = body["records"].as_array().unwrap();
    assert_eq!(records.len(), 20);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["offset"], i);
        if i == 5 {
            assert_eq!(r["value"], "");
            assert_eq!(r["headers"]["chariot.lost"], "damaged");
        } else {
            assert_eq!(r["value"], format!("order {i}"));
        }
    }
    // The next publish gets the next offset: none is handed out twice.
    let (code, body) = post(
        &node,
        "/logs/orders/partitions/0/records",
        json!([{"value": "after"}]),
    );
    assert_eq!((code, body["offsets"].clone()), (200, json!([20])));
}

#[test]
fn damage_in_a_sealed_segment_is_read_around_and_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--segment-bytes", "1048576"];
    let node = Node::start(dir.path(), &flags);
    assert_eq!(
        post(&node, "/logs", json!({"name": "big", "partitions": 1})).0,
        201
    );
    let value = |i: usize| format!("{i}-{}", "v".repeat(200_000));
    for i in 0..8 {
        assert_eq!(
            post(
                &node,
                "/logs/big/partitions/0/records",
                json!([{"value": value(i)}])
            )
            .0,
            200
        );
    }
    assert_eq!(node.terminate(), Some(0));
    let pdir = partition_dir(dir.path(), "big", 0);
    let sealed = pdir.join("00000000000000000000.log");
    let starts = batch_starts(&sealed);
    assert!(starts.len() >= 3 && pdir.join("00000000000000000000.index").exists());
    flip(&sealed, starts[1] + 1000); // offset 1

    let node = Node::start(dir.path(), &flags);
    // Records before the damage are served, the damaged one is a clear error, and
    // reads after it work.
    let (code, body) = values(&node, "big", 0, 0);
    assert_eq!(code, 200);
    assert_eq!(body["records"].as_array().unwrap().len(), 1);
    assert_eq!(body["next_offset"], 1);
    let (code, body) = values(&node, "big", 0, 1);
    assert_eq!((code, body["code"].as_str()), (503, Some("data_damaged")));
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains(&sealed.display().to_string())
            && message.contains(&format!("position {}", starts[1])),
        "{message}"
    );
    let (code, body) = values(&node, "big", 0, 2);
    assert_eq!((code, body["records"].as_array().unwrap().len()), (200, 6));
    // A consumer group reaches the damage and is told what it is.
    assert_eq!(
        post(&node, "/logs/big/partitions/0/groups/g/ack", json!(null)).1,
        json!({"offset": 1})
    );
    let (code, body) = post(&node, "/logs/big/partitions/0/groups/g/fetch", json!(null));
    assert_eq!((code, body["code"].as_str()), (503, Some("data_damaged")));
    assert_eq!(node.terminate(), Some(0));

    let done = repair(dir.path(), false);
    assert!(done.contains("offsets 1..2 lost"), "{done}");
    let node = Node::start(dir.path(), &flags);
    let (code, body) = post(&node, "/logs/big/partitions/0/groups/g/fetch", json!(null));
    assert_eq!(
        (code, body["headers"]["chariot.lost"].as_str()),
        (200, Some("damaged"))
    );
    let (_, body) = values(&node, "big", 0, 0);
    let records = body["records"].as_array().unwrap();
    assert_eq!(records.len(), 8);
    for (i, r) in records.iter().enumerate().filter(|(i, _)| *i != 1) {
        assert_eq!(r["value"], value(i));
    }
}

#[test]
fn the_scrub_reports_damage_in_a_sealed_segment_before_any_read() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--segment-bytes", "1048576"];
    let node = Node::start(dir.path(), &flags);
    assert_eq!(
        post(&node, "/logs", json!({"name": "cold", "partitions": 1})).0,
        201
    );
    let value = |i: usize| format!("{i}-{}", "c".repeat(200_000));
    for i in 0..8 {
        let records = json!([{"value": value(i)}]);
        assert_eq!(
            post(&node, "/logs/cold/partitions/0/records", records).0,
            200
        );
    }
    assert_eq!(get(&node, "/health").1, json!({"status": "ok"}));
    assert_eq!(node.terminate(), Some(0));
    let sealed = partition_dir(dir.path(), "cold", 0).join("00000000000000000000.log");
    let starts = batch_starts(&sealed);
    flip(&sealed, starts[2] + 5000); // offset 2; its index is intact

    // Opening trusts the index, so only the scrub can find it; no read is made.
    let node = Node::start(dir.path(), &flags);
    let mut health = Value::Null;
    wait_until(|| {
        health = get(&node, "/health").1;
        health["status"] == "degraded"
    });
    let places = health["damaged"].as_array().unwrap();
    assert_eq!(places.len(), 1, "{health}");
    assert_eq!(
        (
            &places[0]["log"],
            &places[0]["partition"],
            &places[0]["read_only"]
        ),
        (&json!("cold"), &json!(0), &json!(false))
    );
    let damage = places[0]["damage"].as_str().unwrap();
    assert!(
        damage.contains(&sealed.display().to_string())
            && damage.contains(&format!("byte {}", starts[2])),
        "{damage}"
    );
    let (_, description) = get(&node, "/logs/cold");
    let partition = &description["partitions"][0];
    assert_eq!(partition["sealed_damage"], json!([damage]), "{description}");
    assert!(partition.get("damage").is_none(), "{description}");
    // Publishes go on (they never touch a sealed segment); reads work around it.
    let records = json!([{"value": "after"}]);
    let (code, body) = post(&node, "/logs/cold/partitions/0/records", records);
    assert_eq!((code, &body["base_offset"]), (200, &json!(8)), "{body}");
    let (code, body) = values(&node, "cold", 0, 2);
    assert_eq!((code, body["code"].as_str()), (503, Some("data_damaged")));
    let (code, body) = values(&node, "cold", 0, 3);
    assert_eq!((code, body["records"].as_array().unwrap().len()), (200, 6));
}
