//! The native protocol against the real binary: Rog's commands, byte for byte.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod server_support;

use std::io::{Read, Write};

use server_support::*;

#[test]
fn create_publish_fetch_ack_with_rog_texts() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    assert_eq!(call(&node, &create("orders", 2), false), Ok(None));
    assert_eq!(
        call(&node, &create("orders", 2), false),
        Err("Log orders already exists".into())
    );
    assert_eq!(
        call(&node, &create("zero", 0), false),
        Err("Number of partitions must be at least 1".into())
    );
    assert_eq!(
        call(&node, &publish("nope", 0, b"x"), false),
        Err("No log registered with name nope".into())
    );
    assert_eq!(
        call(&node, &publish("orders", 2, b"x"), false),
        Err("Trying to access partition 2 but log orders has 2 partitions".into())
    );
    assert_eq!(
        call(&node, &fetch("orders", 0, "g"), true),
        Err("No data left in the log to be read".into())
    );
    for v in [&b"a"[..], b"b"] {
        assert_eq!(call(&node, &publish("orders", 1, v), false), Ok(None));
    }
    // Fetch does not advance; ack does, and never past the end.
    for _ in 0..3 {
        assert_eq!(
            call(&node, &fetch("orders", 1, "g"), true),
            Ok(Some(b"a".to_vec()))
        );
    }
    assert_eq!(call(&node, &ack("orders", 1, "g"), false), Ok(None));
    assert_eq!(
        call(&node, &fetch("orders", 1, "g"), true),
        Ok(Some(b"b".to_vec()))
    );
    assert_eq!(call(&node, &ack("orders", 1, "g"), false), Ok(None));
    assert_eq!(
        call(&node, &ack("orders", 1, "g"), false),
        Err("No data left in the log to be read".into())
    );
    // Groups are independent.
    assert_eq!(
        call(&node, &fetch("orders", 1, "other"), true),
        Ok(Some(b"a".to_vec()))
    );
}

#[test]
fn many_requests_on_one_connection_and_frames_split_byte_by_byte() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let mut s = node.connect();
    s.write_all(&create("l", 1)).unwrap();
    assert_eq!(read_reply(&mut s, false), Ok(None));
    // Pipelined: three publishes in one write, answered in order.
    let mut burst = Vec::new();
    for i in 0..3u8 {
        burst.extend(publish("l", 0, &[i; 5000]));
    }
    s.write_all(&burst).unwrap();
    for _ in 0..3 {
        assert_eq!(read_reply(&mut s, false), Ok(None));
    }
    // One byte per write.
    for b in fetch("l", 0, "g") {
        s.write_all(&[b]).unwrap();
        s.flush().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert_eq!(read_reply(&mut s, true), Ok(Some(vec![0u8; 5000])));
}

#[test]
fn malformed_truncated_oversized_and_unknown_frames_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--max-record-bytes", "1024"]);
    assert_eq!(call(&node, &create("l", 1), false), Ok(None));
    assert_eq!(call(&node, &publish("l", 0, b"keep"), false), Ok(None));

    // Oversized: refused from the header, connection closed, nothing appended.
    let mut s = node.connect();
    s.write_all(&publish("l", 0, &[1u8; 2000])).unwrap();
    let reply = read_reply(&mut s, false);
    assert!(reply.unwrap_err().contains("exceeds"));
    // Unknown command byte: an error response, then a clean close.
    let mut s = node.connect();
    s.write_all(&[0x7F, 0, 0]).unwrap();
    assert!(read_reply(&mut s, false).is_err());
    let mut rest = Vec::new();
    assert_eq!(s.read_to_end(&mut rest).unwrap(), 0);
    // Invalid UTF-8 in a name.
    let mut s = node.connect();
    s.write_all(&[0, 1, 2, 0xFF, 0xFE]).unwrap();
    assert!(read_reply(&mut s, false).is_err());
    // Truncated: the client gives up mid-frame.
    let mut s = node.connect();
    let frame = publish("l", 0, b"never");
    s.write_all(&frame[..frame.len() - 2]).unwrap();
    drop(s);

    // The server is healthy and the partition holds only the good record.
    assert_eq!(
        call(&node, &fetch("l", 0, "g"), true),
        Ok(Some(b"keep".to_vec()))
    );
    assert_eq!(call(&node, &ack("l", 0, "g"), false), Ok(None));
    assert_eq!(
        call(&node, &fetch("l", 0, "g"), true),
        Err("No data left in the log to be read".into())
    );
}

#[test]
fn concurrent_publishers_lose_nothing_and_keep_their_order() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    assert_eq!(call(&node, &create("c", 1), false), Ok(None));
    let producers = 8;
    let per = 50;
    std::thread::scope(|scope| {
        for p in 0..producers {
            let node = &node;
            scope.spawn(move || {
                let mut s = node.connect();
                for i in 0..per {
                    s.write_all(&publish("c", 0, format!("{p}:{i}").as_bytes()))
                        .unwrap();
                    assert_eq!(read_reply(&mut s, false), Ok(None));
                }
            });
        }
    });
    let body: serde_json::Value =
        ureq::get(&node.url("/logs/c/partitions/0/records?offset=0&limit=10000"))
            .call()
            .unwrap()
            .into_json()
            .unwrap();
    let values: Vec<String> = body["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["value"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(values.len(), producers * per);
    let mut unique = values.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), values.len(), "duplicates");
    for p in 0..producers {
        let mine: Vec<usize> = values
            .iter()
            .filter_map(|v| v.strip_prefix(&format!("{p}:")))
            .map(|i| i.parse().unwrap())
            .collect();
        assert_eq!(mine, (0..per).collect::<Vec<_>>(), "producer {p} order");
    }
}
