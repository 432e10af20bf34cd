//! Durability of the whole server: SIGTERM and SIGKILL restarts keep every acknowledged
//! record and every consumer-group offset.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod server_support;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use server_support::*;

fn all_values(node: &Node, log: &str, group: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut s = node.connect();
    loop {
        s.write_all(&fetch(log, 0, group)).unwrap();
        match read_reply(&mut s, true) {
            Ok(Some(v)) => out.push(v),
            Err(e) if e == "No data left in the log to be read" => break,
            other => panic!("{other:?}"),
        }
        s.write_all(&ack(log, 0, group)).unwrap();
        assert_eq!(read_reply(&mut s, false), Ok(None));
    }
    out
}

#[test]
fn sigterm_restart_keeps_records_logs_and_group_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    assert_eq!(call(&node, &create("l", 3), false), Ok(None));
    for i in 0..10u8 {
        assert_eq!(call(&node, &publish("l", 2, &[i]), false), Ok(None));
    }
    for _ in 0..4 {
        assert_eq!(call(&node, &ack("l", 2, "g"), false), Ok(None));
    }
    assert_eq!(node.terminate(), Some(0), "clean shutdown exits 0");
    let node = Node::start(dir.path(), &[]);
    assert_eq!(
        call(&node, &create("l", 3), false),
        Err("Log l already exists".into())
    );
    assert_eq!(call(&node, &fetch("l", 2, "g"), true), Ok(Some(vec![4])));
    assert_eq!(
        call(&node, &publish("l", 3, b"x"), false),
        Err("Trying to access partition 3 but log l has 3 partitions".into())
    );
}

#[test]
fn kill9_under_load_loses_no_acknowledged_publish_or_ack() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked: Vec<Vec<u8>> = Vec::new();
    let mut acked_group_offset = 0u64;
    for round in 0..4 {
        let node = Node::start(dir.path(), &[]);
        if round == 0 {
            assert_eq!(call(&node, &create("k", 1), false), Ok(None));
        }
        // Everything acknowledged before any earlier kill is still there, in order.
        let present = all_values(&node, "k", &format!("verify{round}"));
        assert!(present.len() >= acked.len());
        let present_set: std::collections::HashSet<_> = present.iter().cloned().collect();
        for v in &acked {
            assert!(
                present_set.contains(v),
                "round {round}: lost {:?}",
                String::from_utf8_lossy(v)
            );
        }
        // A group's acknowledged acks survive too (an ack in flight at the kill may
        // or may not have landed, so the offset is at least the acknowledged count).
        let described: serde_json::Value = ureq::get(&node.url("/logs/k"))
            .call()
            .unwrap()
            .into_json()
            .unwrap();
        let g = described["partitions"][0]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["group"] == "g")
            .map_or(0, |g| g["offset"].as_u64().unwrap());
        assert!(
            g >= acked_group_offset,
            "round {round}: group offset {g} < acknowledged {acked_group_offset}"
        );

        let stop = Arc::new(AtomicBool::new(false));
        let newly = Arc::new(Mutex::new(Vec::new()));
        let acks = Arc::new(Mutex::new(0u64));
        std::thread::scope(|scope| {
            for t in 0..4 {
                let (node, stop, newly) = (&node, Arc::clone(&stop), Arc::clone(&newly));
                scope.spawn(move || {
                    let mut s = node.connect();
                    for i in 0.. {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let v = format!("r{round}-t{t}-{i}").into_bytes();
                        if s.write_all(&publish("k", 0, &v)).is_err() {
                            break;
                        }
                        let mut status = [0u8; 1];
                        use std::io::Read;
                        if s.read_exact(&mut status).is_err() {
                            break;
                        }
                        assert_eq!(status[0], 0);
                        newly.lock().unwrap().push(v);
                    }
                });
            }
            let (node_ref, stop_acker, acks) = (&node, Arc::clone(&stop), Arc::clone(&acks));
            scope.spawn(move || {
                let mut s = node_ref.connect();
                while !stop_acker.load(Ordering::Relaxed) {
                    if s.write_all(&ack("k", 0, "g")).is_err() {
                        break;
                    }
                    let mut status = [0u8; 1];
                    use std::io::Read;
                    if s.read_exact(&mut status).is_err() {
                        break;
                    }
                    if status[0] == 0 {
                        *acks.lock().unwrap() += 1;
                    } else {
                        let mut rest = [0u8; 8];
                        if s.read_exact(&mut rest).is_err() {
                            break;
                        }
                        let mut msg = vec![0u8; u64::from_be_bytes(rest) as usize];
                        if s.read_exact(&mut msg).is_err() {
                            break;
                        }
                    }
                }
            });
            std::thread::sleep(std::time::Duration::from_millis(300));
            let pid = node.child.id();
            std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status()
                .unwrap();
            stop.store(true, Ordering::Relaxed);
        });
        node.kill9();
        acked.extend(newly.lock().unwrap().drain(..));
        acked_group_offset += *acks.lock().unwrap();
    }
    assert!(acked.len() > 10, "the load never got going");
}
