//! Bounded resources (issue 9, §2), against the real binary: each test sends more than a
//! bound, checks that the server's resident memory stays within a stated budget, and
//! that other clients are still served.
//!
//! Budgets are generous next to what the bounds allow (so the tests do not depend on the
//! allocator) and far below what the same inputs cost before the bounds existed (3.2 GB
//! for one frame of 2.8 M empty records, ~1 GB for 16 MiB of tiny HTTP records, 840 MB
//! for 200 half-sent 8 MiB frames, 66 MB read-range replies).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod server_support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use server_support::{call, create, get, name, post, publish, Node};

/// Resident memory of a process, in bytes.
fn rss(node: &Node) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", node.child.id())).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kb * 1024
}

const MB: u64 = 1 << 20;

/// One test at a time: each measures a server's memory and timing, which a neighbour
/// pushing 16 MB bodies through a debug build on two cores would disturb.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A node with a log `t` of one partition.
fn node_with_log(extra: &[&str]) -> (tempfile::TempDir, Node) {
    let data = tempfile::tempdir().unwrap();
    let node = Node::start(data.path(), extra);
    assert_eq!(call(&node, &create("t", 1), false), Ok(None));
    (data, node)
}

/// The next offset of partition 0 of `t`, over HTTP.
fn next_offset(node: &Node) -> u64 {
    let (status, d) = get(node, "/logs/t");
    assert_eq!(status, 200, "{d}");
    d["partitions"][0]["next_offset"].as_u64().unwrap()
}

/// A small publish and its read-back on fresh connections: the server still serves.
fn still_serves(node: &Node, marker: &str) {
    assert_eq!(
        call(node, &publish("t", 0, marker.as_bytes()), false),
        Ok(None)
    );
    let (status, body) = get(node, "/logs/t/partitions/0/records?offset=0&limit=10000");
    assert_eq!(status, 200);
    let found = body["records"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["value"] == marker);
    assert!(found || body["next_offset"].as_u64() < Some(next_offset(node)));
}

/// An extension request: command, u32 body length, body.
fn extension(command: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![command];
    v.extend_from_slice(&(body.len() as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// Reads one extension response: (status, body).
fn read_extension(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 9];
    s.read_exact(&mut head).unwrap();
    let len = u64::from_be_bytes(head[1..9].try_into().unwrap()) as usize;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    (head[0], body)
}

/// True if the server closes `s` (EOF or reset) within `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn a_frame_of_millions_of_empty_records_is_refused_at_small_cost() {
    let _serial = serial();
    let (_data, node) = node_with_log(&[]);
    let before = rss(&node);
    // Publish-records with 2,000,000 empty values: an 8 MB frame.
    let count = 2_000_000u32;
    let mut body = name("t");
    body.extend_from_slice(&0u32.to_be_bytes());
    body.extend_from_slice(&count.to_be_bytes());
    body.resize(body.len() + 4 * count as usize, 0);
    let mut s = node.connect();
    // The server answers as soon as it has read the count, and may close before the
    // rest is sent: the write can fail, the answer is there all the same.
    let _ = s.write_all(&extension(0x11, &body));
    let (status, reply) = read_extension(&mut s);
    assert_eq!(status, 1);
    assert_eq!(
        u16::from_be_bytes([reply[0], reply[1]]),
        15,
        "frame_too_large"
    );
    let text = String::from_utf8_lossy(&reply[2..]).into_owned();
    assert!(
        text.contains("2000000 records in one request exceed the limit of 10000"),
        "{text}"
    );
    assert!(closed_within(&mut s, Duration::from_secs(5)));
    let grew = rss(&node).saturating_sub(before);
    assert!(grew < 64 * MB, "RSS grew by {} MB", grew / MB);
    assert_eq!(next_offset(&node), 0, "nothing was appended");
    // At the limit it is accepted.
    let mut body = name("t");
    body.extend_from_slice(&0u32.to_be_bytes());
    body.extend_from_slice(&10_000u32.to_be_bytes());
    body.resize(body.len() + 4 * 10_000, 0);
    let mut s = node.connect();
    s.write_all(&extension(0x11, &body)).unwrap();
    assert_eq!(read_extension(&mut s).0, 0);
    assert_eq!(next_offset(&node), 10_000);
    still_serves(&node, "after");
}

#[test]
fn an_http_body_of_a_million_tiny_records_is_refused_at_small_cost() {
    let _serial = serial();
    let (_data, node) = node_with_log(&[]);
    let before = rss(&node);
    // 16 MB of `{"value":""}`: about 1.2 M records.
    let one = br#"{"value":""},"#;
    let n = 16_000_000 / one.len();
    let mut body = Vec::with_capacity(n * one.len() + 2);
    body.push(b'[');
    for _ in 0..n {
        body.extend_from_slice(one);
    }
    body.pop();
    body.push(b']');
    let r = ureq::post(&node.url("/logs/t/partitions/0/records"))
        .set("content-type", "application/json")
        .send_bytes(&body);
    let (status, reply): (u16, serde_json::Value) = match r {
        Ok(r) => (r.status(), r.into_json().unwrap()),
        Err(ureq::Error::Status(c, r)) => (c, r.into_json().unwrap()),
        Err(e) => panic!("{e}"),
    };
    assert_eq!(status, 413, "{reply}");
    assert_eq!(reply["code"], "too_large");
    assert!(reply["error"]
        .as_str()
        .unwrap()
        .contains("more than 10000 records"));
    let grew = rss(&node).saturating_sub(before);
    assert!(grew < 96 * MB, "RSS grew by {} MB", grew / MB);
    assert_eq!(next_offset(&node), 0);
    // 10,000 records in one request are fine.
    let ok: Vec<serde_json::Value> = (0..10_000)
        .map(|i| serde_json::json!({"value": i.to_string()}))
        .collect();
    let (status, reply) = post(&node, "/logs/t/partitions/0/records", serde_json::json!(ok));
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["count"], 10_000);
    // A /record body over the 2 MiB of docs/openapi.yaml is refused on its declared
    // length: read and dropped (memory does not grow), then answered 413.
    let before = rss(&node);
    let big = format!(
        r#"{{"tags": {{"k": "{}"}}, "seed": 1}}"#,
        "x".repeat(30 << 20)
    );
    match ureq::post(&node.url("/record")).send_string(&big) {
        Err(ureq::Error::Status(413, r)) => {
            let v: serde_json::Value = r.into_json().unwrap();
            assert_eq!(v["code"], "too_large");
            assert!(
                v["error"]
                    .as_str()
                    .unwrap()
                    .contains("limit of 2097152 bytes"),
                "{v}"
            );
        }
        other => panic!("expected 413, got {other:?}"),
    }
    let grew = rss(&node).saturating_sub(before);
    assert!(
        grew < 16 * MB,
        "RSS grew by {} MB for a refused body",
        grew / MB
    );
    still_serves(&node, "after");
}

#[test]
fn half_sent_frames_are_bounded_together_and_time_out() {
    let budget = 32 * MB;
    let _serial = serial();
    let (_data, node) = node_with_log(&[
        "--max-inflight-bytes",
        &budget.to_string(),
        "--frame-timeout-secs",
        "4",
    ]);
    let before = rss(&node);
    // 200 connections each announce an 8 MiB publish-batch and send part of it.
    let mut header = vec![0x10];
    let body_len = 8 * MB as u32;
    header.extend_from_slice(&body_len.to_be_bytes());
    header.extend(name("t"));
    header.extend_from_slice(&0u32.to_be_bytes());
    header.extend_from_slice(&(body_len - 10).to_be_bytes());
    let chunk = vec![0xAB; 1 << 20];
    let mut stalled = Vec::new();
    for _ in 0..200 {
        let mut s = node.connect();
        s.set_write_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        s.write_all(&header).unwrap();
        // Up to 4 MiB each; once the server stops reading, writes time out.
        for _ in 0..4 {
            if s.write_all(&chunk).is_err() {
                break;
            }
        }
        stalled.push(s);
    }
    let peak = rss(&node).saturating_sub(before);
    // The budget, 64 KiB per connection, read buffers' slack: far below 200 × 4 MiB.
    let allowed = budget + 200 * 64 * 1024 * 2 + 64 * MB;
    assert!(peak < allowed, "RSS grew by {} MB", peak / MB);
    // Another client is served meanwhile (a small request needs no budget).
    still_serves(&node, "while stalled");
    // The stalled frames time out: the server closes them, nothing was appended from them.
    let started = Instant::now();
    for s in &mut stalled {
        assert!(
            closed_within(s, Duration::from_secs(15)),
            "a stalled frame stayed open"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(next_offset(&node), 1, "only the one small publish");
    // With the budget back, a full-size request goes through.
    let records: Vec<serde_json::Value> = (0..4)
        .map(|_| serde_json::json!({"value": "y".repeat(1 << 20)}))
        .collect();
    let (status, _) = post(
        &node,
        "/logs/t/partitions/0/records",
        serde_json::json!(records),
    );
    assert_eq!(status, 200);
}

#[test]
fn replies_respect_their_byte_limits() {
    let _serial = serial();
    let (_data, node) = node_with_log(&[]);
    // 20 records of 1 MiB, each its own batch.
    let value = vec![b'v'; 1 << 20];
    for _ in 0..20 {
        assert_eq!(call(&node, &publish("t", 0, &value), false), Ok(None));
    }
    // Read-range asking for 4 GiB gets at most the protocol's frame (8 MiB + 64 KiB).
    let mut body = name("t");
    body.extend_from_slice(&0u32.to_be_bytes());
    body.extend_from_slice(&0u64.to_be_bytes());
    body.extend_from_slice(&u32::MAX.to_be_bytes());
    let mut s = node.connect();
    s.write_all(&extension(0x12, &body)).unwrap();
    let (status, reply) = read_extension(&mut s);
    assert_eq!(status, 0);
    assert!(reply.len() <= 8_454_144, "{} bytes", reply.len());
    assert!(reply.len() > 4 << 20, "whole batches up to the limit");
    // GET records with limit=10000 stops at about 4 MiB of record data; paging reads all.
    let mut offset = 0;
    let mut seen = 0;
    while offset < 20 {
        let r = ureq::get(&node.url(&format!(
            "/logs/t/partitions/0/records?offset={offset}&limit=10000"
        )))
        .call()
        .unwrap();
        let text = r.into_string().unwrap();
        assert!(text.len() < 6 << 20, "{} bytes", text.len());
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let n = v["records"].as_array().unwrap().len();
        assert!((1..=5).contains(&n), "{n} records");
        seen += n;
        offset = v["next_offset"].as_u64().unwrap();
    }
    assert_eq!(seen, 20);
}

#[test]
fn a_flood_on_one_port_never_locks_out_another() {
    let _serial = serial();
    let (_data, node) = node_with_log(&[
        "--max-connections",
        "40",
        "--max-record-connections",
        "40",
        "--max-http-connections",
        "40",
        "--idle-timeout-secs",
        "5",
    ]);
    // 45 idle connections to each of the native and record ports (limits 40): the 5
    // past the limit are told at once (closed), not left waiting in the backlog.
    let mut native: Vec<TcpStream> = (0..45).map(|_| node.connect()).collect();
    let mut records: Vec<TcpStream> = (0..45)
        .map(|_| TcpStream::connect(node.chariots).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    for conns in [&mut native, &mut records] {
        let mut open = Vec::new();
        for s in conns.drain(..) {
            s.set_nonblocking(true).unwrap();
            let closed = match (&s).read(&mut [0u8; 16]) {
                Ok(0) => true,
                Err(e) => e.kind() == ErrorKind::ConnectionReset,
                Ok(_) => false,
            };
            s.set_nonblocking(false).unwrap();
            if !closed {
                open.push(s);
            }
        }
        assert!(
            open.len() <= 40,
            "{} connections past the limit",
            open.len()
        );
        assert!(open.len() >= 35, "only {} admitted", open.len());
        *conns = open;
    }
    // HTTP is unaffected.
    let (status, _) = get(&node, "/health");
    assert_eq!(status, 200);
    // The idle ones are closed after the idle timeout, and the ports serve again.
    for mut s in native.into_iter().chain(records) {
        assert!(closed_within(&mut s, Duration::from_secs(10)));
    }
    still_serves(&node, "after the flood");
    // An idle HTTP keep-alive connection is closed too.
    let mut idle_http = TcpStream::connect(node.http).unwrap();
    assert!(closed_within(&mut idle_http, Duration::from_secs(10)));
}

#[test]
fn an_s_frame_of_too_many_records_is_refused_at_small_cost() {
    let _serial = serial();
    let (_data, node) = node_with_log(&[]);
    let before = rss(&node);
    // ~8 MB of `{}`: 2.6 M elements in one 's' frame.
    let n = 2_600_000usize;
    let mut payload = Vec::with_capacity(3 * n + 2);
    payload.push(b'[');
    for _ in 0..n {
        payload.extend_from_slice(b"{},");
    }
    payload.pop();
    payload.push(b']');
    let mut frame = ((payload.len() + 1) as u32).to_be_bytes().to_vec();
    frame.push(b's');
    frame.extend_from_slice(&payload);
    let mut s = TcpStream::connect(node.chariots).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(&frame).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut ack = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut ack).unwrap();
    assert_eq!(ack[0], b'a');
    let v: serde_json::Value = serde_json::from_slice(&ack[1..]).unwrap();
    assert_eq!(v["code"], "too_large", "{v}");
    let grew = rss(&node).saturating_sub(before);
    assert!(grew < 64 * MB, "RSS grew by {} MB", grew / MB);
    let (status, c) = get(&node, "/cluster");
    assert_eq!(status, 200);
    assert_eq!(c["local_records"], 0);
}

/// Lowers the open-file limit of a running process.
#[allow(unsafe_code)]
fn limit_open_files(pid: u32, n: u64) {
    let limit = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: prlimit only reads `limit`; the old-limit pointer may be null.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &limit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// A create that fails half-way (here: out of file descriptors after some of its 1024
/// partitions opened) is undone: nothing is left on disk, the name stays usable, and the
/// server goes on serving.
#[test]
fn a_create_that_runs_out_of_file_descriptors_leaves_nothing_behind() {
    let _serial = serial();
    let (data, node) = node_with_log(&[]);
    limit_open_files(node.child.id(), 256);
    let (code, err) = post(
        &node,
        "/logs",
        serde_json::json!({"name": "wide", "partitions": 1024}),
    );
    assert_eq!(
        (code, err["code"].as_str()),
        (500, Some("storage")),
        "{err}"
    );
    let left: Vec<String> = std::fs::read_dir(data.path().join("logs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["t"], "the failed create left {left:?}");
    let (_, logs) = get(&node, "/logs");
    assert_eq!(logs, serde_json::json!([{"name": "t", "partitions": 1}]));
    let (code, made) = post(
        &node,
        "/logs",
        serde_json::json!({"name": "wide", "partitions": 2}),
    );
    assert_eq!(code, 201, "{made}");
    assert_eq!(call(&node, &publish("wide", 1, b"x"), false), Ok(None));
    assert_eq!(call(&node, &publish("t", 0, b"y"), false), Ok(None));
}

/// `GET /get-all` streams the seed's whole log chunk by chunk: 64 MiB of messages cost
/// the server a few chunks of memory, not the log's size twice over (the reply used to
/// be built whole: every message as a string, then the JSON of all of them).
#[test]
fn get_all_streams_a_large_log_within_a_small_budget() {
    let _serial = serial();
    let data = tempfile::tempdir().unwrap();
    let node = Node::start(data.path(), &[]);
    let message = "m".repeat(1000 * 1000);
    for i in 0..64 {
        let (code, r) = post(
            &node,
            "/insert",
            serde_json::json!({"message": format!("{i:02}{message}")}),
        );
        assert_eq!(code, 200, "{r}");
    }
    let before = rss(&node);
    let reply = ureq::get(&node.url("/get-all")).call().unwrap();
    let mut body = reply.into_reader();
    let (mut got, mut peak) = (Vec::new(), before);
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = body.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        peak = peak.max(rss(&node));
        // A slow reader: the server must not race ahead and buffer the rest.
        std::thread::sleep(Duration::from_millis(2));
    }
    let all: Vec<String> = serde_json::from_slice(&got).unwrap();
    assert_eq!(all.len(), 64);
    for (i, m) in all.iter().enumerate() {
        assert!(
            m.starts_with(&format!("{i:02}m")) && m.len() == 1_000_002,
            "{i}"
        );
    }
    let grew = peak.saturating_sub(before);
    assert!(grew < 40 * MB, "the server grew by {} MB", grew / MB);
    still_serves_seed(&node);
}

fn still_serves_seed(node: &Node) {
    let (code, r) = post(node, "/insert", serde_json::json!({"message": "after"}));
    assert_eq!(code, 200, "{r}");
}

/// A delete whose directory cannot be taken away (here the rename to its tombstone meets
/// a non-empty directory in the way) fails with an error, and the log stays listed and
/// readable, its records and offsets intact.
#[test]
fn a_delete_that_cannot_take_the_directory_away_leaves_the_log_readable() {
    let (data, node) = node_with_log(&[]);
    assert!(call(&node, &publish("t", 0, b"kept"), false).is_ok());
    let blocker = data.path().join("logs").join(".deleted-t");
    std::fs::create_dir_all(&blocker).unwrap();
    std::fs::write(blocker.join("in-the-way"), b"x").unwrap();
    let (code, err) = match ureq::delete(&node.url("/logs/t")).call() {
        Ok(r) => (r.status(), r.into_json::<serde_json::Value>().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap()),
        Err(e) => panic!("{e}"),
    };
    assert_eq!(
        (code, err["code"].as_str()),
        (500, Some("storage")),
        "{err}"
    );
    let (_, logs) = get(&node, "/logs");
    assert_eq!(logs, serde_json::json!([{"name": "t", "partitions": 1}]));
    assert_eq!(next_offset(&node), 1);
    let (status, records) = get(&node, "/logs/t/partitions/0/records?offset=0");
    assert_eq!(status, 200, "{records}");
    assert_eq!(records["records"][0]["value"], "kept", "{records}");
    // Once the obstacle is gone, the delete goes through.
    std::fs::remove_dir_all(&blocker).unwrap();
    let status = ureq::delete(&node.url("/logs/t")).call().unwrap().status();
    assert_eq!(status, 204);
    assert!(!data.path().join("logs").join("t").exists());
}

/// `GET …/records` is streamed in chunks of record data but says what one read did: the
/// records from `offset` on, in order, until `limit` or 4 MiB of record data, then
/// `next_offset`.
#[test]
fn a_streamed_record_listing_is_whole_and_bounded() {
    let (_data, node) = node_with_log(&[]);
    let value = vec![b'v'; 20 << 10];
    for _ in 0..300 {
        assert_eq!(call(&node, &publish("t", 0, &value), false), Ok(None));
    }
    let (status, body) = get(&node, "/logs/t/partitions/0/records?offset=0&limit=10000");
    assert_eq!(status, 200);
    let records = body["records"].as_array().unwrap();
    // 4 MiB of 20 KiB records: the one that crosses the bound is the last.
    assert_eq!(records.len(), 205);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["offset"].as_u64(), Some(i as u64));
        assert_eq!(r["value"].as_str().map(str::len), Some(20 << 10));
    }
    assert_eq!(body["next_offset"], 205);
    let (_, body) = get(&node, "/logs/t/partitions/0/records?offset=290&limit=50");
    assert_eq!(body["records"].as_array().unwrap().len(), 10);
    assert_eq!(body["next_offset"], 300);
    let (_, body) = get(&node, "/logs/t/partitions/0/records?offset=13&limit=20");
    assert_eq!(body["records"].as_array().unwrap().len(), 20);
    assert_eq!(body["records"][0]["offset"], 13);
    assert_eq!(body["next_offset"], 33);
    let (_, body) = get(&node, "/logs/t/partitions/0/records?offset=300");
    assert_eq!(body, serde_json::json!({"records": [], "next_offset": 300}));
}
