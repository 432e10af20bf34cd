//! The `chariot` CLI against a real server: every client subcommand, in human and JSON
//! form, and its errors. One scenario per test; each test has its own server.
#![allow(
    missing_docs,
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing
)]

mod cli_support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use cli_support::Server;
use serde_json::json;

#[test]
fn log_create_list_describe() {
    let server = Server::start();
    assert_eq!(
        server.ok(&["log", "create", "events", "--partitions", "3"]),
        "created log events with 3 partition(s)\n"
    );
    server.create_log("audit", 1);

    let listed = server.ok(&["log", "list"]);
    assert!(
        listed
            .lines()
            .any(|l| l.split_whitespace().eq(["events", "3"])),
        "{listed}"
    );
    assert!(
        listed
            .lines()
            .any(|l| l.split_whitespace().eq(["audit", "1"])),
        "{listed}"
    );
    let mut logs = server.json(&["log", "list"])["logs"]
        .as_array()
        .expect("logs array")
        .clone();
    logs.sort_by_key(|l| l["name"].as_str().map(str::to_owned));
    assert_eq!(
        logs,
        vec![
            json!({"name": "audit", "partitions": 1}),
            json!({"name": "events", "partitions": 3})
        ]
    );

    let described = server.json(&["log", "describe", "events"]);
    assert_eq!(described["log"], "events");
    let partitions = described["partitions"].as_array().expect("partitions");
    assert_eq!(partitions.len(), 3);
    for (index, p) in partitions.iter().enumerate() {
        assert_eq!(p["partition"], index);
        assert_eq!(p["earliest_offset"], 0);
        assert_eq!(p["next_offset"], 0);
        assert_eq!(p["groups"], json!([]));
    }
    let human = server.ok(&["log", "describe", "events"]);
    assert!(human.starts_with("log events: 3 partition(s)"), "{human}");
}

#[test]
fn creating_an_existing_log_fails_with_rogs_message() {
    let server = Server::start();
    server.create_log("events", 1);
    let line = server
        .run(&["log", "create", "events", "--partitions", "1"])
        .failure(1);
    assert!(line.contains("Log events already exists"), "{line}");
    let line = server
        .run(&["log", "create", "empty", "--partitions", "0"])
        .failure(1);
    assert!(
        line.contains("Number of partitions must be at least 1"),
        "{line}"
    );
}

#[test]
fn publish_from_argument_prints_the_offsets() {
    let server = Server::start();
    server.create_log("events", 2);
    assert_eq!(
        server.ok(&["publish", "events", "first"]),
        "published 1 record to events/0 at offset 0\n"
    );
    assert_eq!(
        server.ok(&["publish", "events", "second"]),
        "published 1 record to events/0 at offset 1\n"
    );
    let published = server.json(&["publish", "events", "--partition", "1", "other"]);
    assert_eq!(
        published,
        json!({
            "log": "events",
            "partition": 1,
            "count": 1,
            "ranges": [{"first_offset": 0, "last_offset": 0}]
        })
    );
}

#[test]
fn publish_from_file_keeps_binary_bytes() {
    let server = Server::start();
    server.create_log("blobs", 1);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("blob.bin");
    let bytes: Vec<u8> = vec![0, 1, 0xFF, b'\n', 0x1B, b'x'];
    std::fs::write(&path, &bytes).expect("write blob");
    let path = path.to_str().expect("UTF-8 path");
    assert_eq!(
        server.ok(&["publish", "blobs", "--file", path]),
        "published 1 record to blobs/0 at offset 0\n"
    );

    let read = server
        .run(&["read", "blobs", "--json"])
        .success()
        .json_lines();
    assert_eq!(read.len(), 1);
    assert_eq!(read[0]["offset"], 0);
    assert_eq!(read[0]["value"], serde_json::Value::Null, "not UTF-8");
    assert_eq!(read[0]["value_base64"], "AAH/Cht4");
    // People see one escaped line, never raw control bytes.
    let human = server.ok(&["read", "blobs"]);
    assert_eq!(human, "0\t\\0\\u{1}\u{FFFD}\\n\\u{1b}x\n");
}

#[test]
fn publish_from_stdin_makes_one_record_per_line() {
    let server = Server::start();
    server.create_log("lines", 1);
    let out = server
        .run_with_stdin(&["publish", "lines"], Some(b"alpha\nbeta\r\n\ngamma"))
        .success()
        .stdout;
    assert_eq!(out, "published 4 records to lines/0 at offsets 0-3\n");
    let values: Vec<String> = server
        .run(&["read", "lines", "--json"])
        .success()
        .json_lines()
        .iter()
        .map(|r| r["value"].as_str().expect("text").to_owned())
        .collect();
    assert_eq!(values, ["alpha", "beta", "", "gamma"]);

    let out = server
        .run_with_stdin(&["publish", "lines", "--json"], Some(b"delta\n"))
        .success()
        .json();
    assert_eq!(out["count"], 1);
    assert_eq!(
        out["ranges"],
        json!([{"first_offset": 4, "last_offset": 4}])
    );
}

#[test]
fn fetch_repeats_the_same_record_until_acked() {
    let server = Server::start();
    server.create_log("events", 1);
    server.ok(&["publish", "events", "one"]);
    server.ok(&["publish", "events", "two"]);
    for _ in 0..3 {
        assert_eq!(server.ok(&["fetch", "events", "--group", "g"]), "one\n");
    }
    let fetched = server.json(&["fetch", "events", "--partition", "0", "--group", "g"]);
    assert_eq!(
        fetched,
        json!({
            "log": "events",
            "partition": 0,
            "group": "g",
            "record": {"value": "one", "value_base64": "b25l"}
        })
    );
    // Another group has its own position.
    assert_eq!(server.ok(&["fetch", "events", "--group", "h"]), "one\n");
}

#[test]
fn ack_advances_the_group() {
    let server = Server::start();
    server.create_log("events", 1);
    server.ok(&["publish", "events", "one"]);
    server.ok(&["publish", "events", "two"]);
    server.ok(&["fetch", "events", "--group", "g"]);
    let acked = server.json(&["ack", "events", "--group", "g"]);
    assert_eq!(acked["acked"], true);
    assert_eq!(server.ok(&["fetch", "events", "--group", "g"]), "two\n");
    server.ok(&["ack", "events", "--group", "g"]);

    let described = server.json(&["log", "describe", "events"]);
    assert_eq!(
        described["partitions"][0]["groups"],
        json!([{"group": "g", "committed_offset": 2, "lag": 0}])
    );
    // At the end of the log, fetch succeeds with nothing.
    let run = server.run(&["fetch", "events", "--group", "g"]).success();
    assert_eq!(run.stdout, "");
    assert!(run.stderr.contains("no data left"), "{run:?}");
    let fetched = server.json(&["fetch", "events", "--group", "g"]);
    assert_eq!(fetched["record"], serde_json::Value::Null);
}

#[test]
fn ack_to_moves_the_group_to_an_offset_and_never_back() {
    let server = Server::start();
    server.create_log("events", 1);
    for v in ["zero", "one", "two", "three"] {
        server.ok(&["publish", "events", v]);
    }
    let acked = server.json(&["ack", "events", "--group", "g", "--to", "3"]);
    assert_eq!(acked["offset"], 3);
    let again = server.json(&["ack", "events", "--group", "g", "--to", "1"]);
    assert_eq!(again["offset"], 3, "never back");
    assert_eq!(
        server.ok(&["fetch", "events", "--group", "g"]),
        "three
"
    );
    let past = server
        .run(&["ack", "events", "--group", "g", "--to", "9"])
        .failure(1);
    assert!(past.contains("cannot ack events/0 to 9"), "{past}");
}

#[test]
fn consume_drains_every_partition_then_stops() {
    let server = Server::start();
    server.create_log("events", 3);
    for (partition, value) in [("0", "a0"), ("0", "a1"), ("1", "b0"), ("2", "c0")] {
        server.ok(&["publish", "events", "--partition", partition, value]);
    }
    let records = server
        .run(&["consume", "events", "--group", "g", "--json"])
        .success()
        .json_lines();
    let mut seen: Vec<(u64, String)> = records
        .iter()
        .map(|r| {
            (
                r["partition"].as_u64().expect("partition"),
                r["value"].as_str().expect("value").to_owned(),
            )
        })
        .collect();
    // Within a partition, order is the log's.
    let in_partition_0: Vec<&str> = seen
        .iter()
        .filter(|(p, _)| *p == 0)
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(in_partition_0, ["a0", "a1"]);
    seen.sort();
    assert_eq!(
        seen,
        [
            (0, "a0".to_owned()),
            (0, "a1".to_owned()),
            (1, "b0".to_owned()),
            (2, "c0".to_owned())
        ]
    );
    // Everything was acked: a second pass finds nothing.
    let again = server.run(&["consume", "events", "--group", "g"]).success();
    assert_eq!(again.stdout, "");
    assert!(again.stderr.contains("consumed 0 record(s)"), "{again:?}");
}

#[test]
fn consume_follow_prints_records_published_later() {
    let server = Server::start();
    server.create_log("events", 2);
    server.ok(&["publish", "events", "before"]);
    let mut follower = server
        .command(&["consume", "events", "--group", "g", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn consume --follow");
    let stdout = follower.stdout.take().expect("piped stdout");
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let next = || received.recv_timeout(Duration::from_secs(10));
    assert_eq!(next().expect("the record published before"), "[0] before");
    server.ok(&["publish", "events", "--partition", "1", "after"]);
    assert_eq!(next().expect("the record published after"), "[1] after");
    let _ = follower.kill();
    let _ = follower.wait();
}

#[test]
fn read_prints_records_from_an_offset() {
    let server = Server::start();
    server.create_log("events", 1);
    server.run_with_stdin(&["publish", "events"], Some(b"r0\nr1\nr2\nr3\nr4\n"));
    assert_eq!(
        server.ok(&["read", "events", "--offset", "2"]),
        "2\tr2\n3\tr3\n4\tr4\n"
    );
    assert_eq!(
        server.ok(&[
            "read",
            "events",
            "--partition",
            "0",
            "--offset",
            "1",
            "--count",
            "2"
        ]),
        "1\tr1\n2\tr2\n"
    );
    let records = server
        .run(&["read", "events", "--offset", "3", "--json"])
        .success()
        .json_lines();
    let offsets: Vec<u64> = records
        .iter()
        .map(|r| r["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [3, 4]);
    assert_eq!(records[0]["value"], "r3");
    assert_eq!(records[0]["key"], serde_json::Value::Null);
    assert!(records[0]["timestamp"].as_i64().unwrap() > 0);
    // At the end of the log there is nothing to print; past it is an error.
    assert_eq!(server.ok(&["read", "events", "--offset", "5"]), "");
    let line = server.run(&["read", "events", "--offset", "6"]).failure(1);
    assert!(line.contains("out of range"), "{line}");
    // Reading does not move any consumer group.
    assert_eq!(server.ok(&["fetch", "events", "--group", "g"]), "r0\n");
}

#[test]
fn unknown_log_is_one_error_line() {
    let server = Server::start();
    for args in [
        &["publish", "ghost", "x"][..],
        &["fetch", "ghost", "--group", "g"],
        &["ack", "ghost", "--group", "g"],
        &["consume", "ghost", "--group", "g"],
        &["read", "ghost", "--offset", "0"],
        &["log", "describe", "ghost"],
    ] {
        let line = server.run(args).failure(1);
        assert!(
            line.contains("No log registered with name ghost"),
            "{args:?}: {line}"
        );
    }
    // --json changes stdout, not how errors are reported.
    let line = server
        .run(&["fetch", "ghost", "--group", "g", "--json"])
        .failure(1);
    assert!(line.contains("No log registered with name ghost"), "{line}");
}

#[test]
fn bad_partition_is_one_error_line() {
    let server = Server::start();
    server.create_log("events", 2);
    for args in [
        &["publish", "events", "--partition", "2", "x"][..],
        &["fetch", "events", "--partition", "7", "--group", "g"],
        &["ack", "events", "--partition", "2", "--group", "g"],
        &["read", "events", "--partition", "9", "--offset", "0"],
    ] {
        let line = server.run(args).failure(1);
        assert!(
            line.contains("Trying to access partition"),
            "{args:?}: {line}"
        );
        assert!(
            line.contains("but log events has 2 partitions"),
            "{args:?}: {line}"
        );
    }
    // Rog's commands address partitions with one byte: caught before any request.
    let line = server
        .run(&["fetch", "events", "--partition", "300", "--group", "g"])
        .failure(2);
    assert!(line.contains("300"), "{line}");
}

#[test]
fn unreachable_server_is_one_error_line() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    drop(listener);
    let output = std::process::Command::new(cli_support::CHARIOT)
        .args(["--addr", &addr, "log", "list"])
        .output()
        .expect("run chariot");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).expect("UTF-8");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!("error: cannot connect to {addr}")),
        "{stderr}"
    );
}

#[test]
fn usage_errors_are_one_line_with_status_2() {
    let output = std::process::Command::new(cli_support::CHARIOT)
        .args(["publish"])
        .output()
        .expect("run chariot");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).expect("UTF-8");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains("<LOG>"), "{stderr}");
}
