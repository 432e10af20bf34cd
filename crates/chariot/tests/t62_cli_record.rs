//! `chariot record` against a real server: the Chariots causal log through the CLI, in
//! human and JSON form, and its errors. One scenario per test; each test has its own
//! server.
#![allow(
    missing_docs,
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing
)]

mod cli_support;

use std::process::Command;

use cli_support::{Server, CHARIOT};
use serde_json::{json, Value};

/// `chariot ARGS` with no address flags and no address variables.
fn bare(args: &[&str]) -> Command {
    let mut command = Command::new(CHARIOT);
    command
        .args(["--timeout", "10"])
        .args(args)
        .env_remove("CHARIOT_ADDR")
        .env_remove("CHARIOT_HTTP")
        .env("RUST_LOG", "warn");
    command
}

/// FNV-1a 64 of `k1:v1`, gochariots' documented check value.
const K1_V1: u64 = 9_489_172_654_252_433_228;

#[test]
fn hash_prints_the_documented_check_value_without_a_server() {
    // No server anywhere near: `hash` must not connect.
    let run = cli_support::run(
        bare(&["--http", "127.0.0.1:1", "record", "hash", "k1", "v1"]),
        None,
    );
    assert_eq!(run.success().stdout, format!("{K1_V1}\n"));

    let server = Server::start();
    assert_eq!(
        server.json(&["record", "hash", "k1", "v1"]),
        json!({"key": "k1", "value": "v1", "hash": K1_V1})
    );
}

#[test]
fn a_child_posted_before_its_parent_waits_then_follows_it() {
    let server = Server::start();
    let child = server.ok(&[
        "record", "post", "--tag", "k2=v2", "--after", "k1=v1", "--seed", "1",
    ]);
    assert!(
        child.starts_with("waiting for dependencies as queue entry "),
        "{child}"
    );
    let queued = server.json(&["record", "waiting"]);
    let entries = queued["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{queued}");
    assert_eq!(entries[0]["status"], "waiting");
    assert_eq!(entries[0]["missing"], json!([K1_V1]));
    let qid = entries[0]["id"].as_u64().unwrap();
    let human = server.ok(&["record", "waiting"]);
    assert!(
        human.starts_with(&format!(
            "id={qid} waiting seed=1 tags={{k2=v2}} missing=[{K1_V1}]"
        )),
        "{human}"
    );
    assert_eq!(
        server.ok(&["record", "waiting", &qid.to_string()]),
        format!("entry {qid}: waiting\n")
    );

    let parent = server.json(&["record", "post", "--tag", "k1=v1", "--seed", "1"]);
    assert_eq!(parent["status"], "appended", "{parent}");
    let parent_lid = parent["lid"].as_u64().unwrap();
    let resolved = server.json(&["record", "waiting", &qid.to_string()]);
    assert_eq!(resolved["id"], qid);
    assert_eq!(resolved["status"], "appended", "{resolved}");
    let child_lid = resolved["lid"].as_u64().unwrap();
    assert!(parent_lid < child_lid);
    assert_eq!(
        server.ok(&["record", "waiting"]),
        "no records waiting or rejected\n"
    );

    let record = server.json(&["record", "get", &child_lid.to_string()]);
    assert_eq!(record["lid"], child_lid);
    assert_eq!(record["tags"], json!({"k2": "v2"}));
    assert_eq!(record["seed"], 1);
    assert_eq!(record["prehash"], json!([K1_V1]));
    assert_eq!(record["origin_dc"], 0);
    assert!(
        record["toid"].is_u64() && record["timestamp"].is_i64(),
        "{record}"
    );
    let human = server.ok(&["record", "get", &child_lid.to_string()]);
    assert!(
        human.starts_with(&format!(
            "lid={child_lid} seed=1 tags={{k2=v2}} prehash=[{K1_V1}] origin_dc=0 toid="
        )),
        "{human}"
    );
}

#[test]
fn post_forms_and_outcomes() {
    let server = Server::start();
    // Appended right away: a record without dependencies, human form.
    let out = server.ok(&[
        "record", "post", "--tag", "a=1", "--tag", "x=1", "--seed", "9",
    ]);
    assert_eq!(out, "appended at lid 0\n");
    // --prehash takes the number itself; 0 means no dependency.
    let hash_of_a1 = server.ok(&["record", "hash", "a", "1"]);
    let b = server.json(&[
        "record",
        "post",
        "--tag",
        "b=2",
        "--tag",
        "x=1",
        "--seed",
        "9",
        "--prehash",
        hash_of_a1.trim(),
        "--prehash",
        "0",
    ]);
    assert_eq!(b, json!({"status": "appended", "lid": 1}));
    // Several --after: waits for both; --wait returns the final outcome.
    let c = server.json(&[
        "record", "post", "--tag", "c=3", "--seed", "9", "--after", "a=1", "--after", "b=2",
        "--wait",
    ]);
    assert_eq!(c, json!({"status": "appended", "lid": 2}));
    // A client id: the repeat gets the first outcome, no second record.
    let first = server.json(&["record", "post", "--tag", "d=4", "--id", "req-1"]);
    let again = server.json(&["record", "post", "--tag", "d=4", "--id", "req-1"]);
    assert_eq!(first, again);
    assert_eq!(
        server.json(&["record", "find", "--tag", "d=4"])["records"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let record = server.json(&["record", "get", &first["lid"].to_string()]);
    assert_eq!(record["id"], "req-1");
}

#[test]
fn find_intersects_tags_and_hashes() {
    let server = Server::start();
    server.ok(&["record", "post", "--tag", "a=1", "--tag", "x=1"]);
    server.ok(&["record", "post", "--tag", "b=2", "--tag", "x=1"]);
    server.ok(&["record", "post", "--tag", "note=two words & more"]);

    let lids = |args: &[&str]| -> Vec<u64> {
        let mut full = vec!["record", "find"];
        full.extend_from_slice(args);
        server.json(&full)["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["lid"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(lids(&["--tag", "x=1"]), vec![0, 1]);
    assert_eq!(lids(&["--tag", "x=1", "--tag", "b=2"]), vec![1]);
    assert_eq!(lids(&["--tag", "a=1", "--tag", "b=2"]), Vec::<u64>::new());
    // Query components are URL-encoded: spaces, '&' and ':' survive.
    assert_eq!(lids(&["--tag", "note=two words & more"]), vec![2]);
    let hash = server.ok(&["record", "hash", "b", "2"]);
    assert_eq!(lids(&["--hash", hash.trim(), "--tag", "x=1"]), vec![1]);

    let human = server.ok(&["record", "find", "--tag", "x=1"]);
    let lines: Vec<&str> = human.lines().collect();
    assert_eq!(lines.len(), 2, "{human}");
    assert!(
        lines[0].starts_with("lid=0 seed=0 tags={a=1,x=1} prehash=[]"),
        "{human}"
    );
    assert_eq!(
        server.ok(&["record", "find", "--tag", "nothing=here"]),
        "no records\n"
    );
}

#[test]
fn a_rejected_record_exits_1_with_its_reason() {
    let server = Server::start_with(&["--dependency-timeout-ms", "300"]);
    let line = server
        .run(&[
            "record",
            "post",
            "--tag",
            "k=v",
            "--after",
            "never=comes",
            "--wait",
        ])
        .failure(1);
    assert!(
        line.starts_with("error: record rejected (queue entry "),
        "{line}"
    );
    assert!(line.contains("did not arrive"), "{line}");
    // With --json the outcome is on stdout too, and the exit status still says it failed.
    let run = server.run(&[
        "record",
        "post",
        "--tag",
        "k=w",
        "--prehash",
        "12345",
        "--wait",
        "--json",
    ]);
    let outcome: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(outcome["status"], "rejected");
    assert!(outcome["reason"].as_str().unwrap().contains("12345"));
    let id = outcome["id"].as_u64().unwrap();
    run.failure(1);
    // The queue lists it, and so does the entry lookup (a lookup is not a failure).
    let listed = server.json(&["record", "waiting"]);
    assert!(listed["entries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["id"] == id && e["status"] == "rejected"));
    let status = server.ok(&["record", "waiting", &id.to_string()]);
    assert!(
        status.starts_with(&format!("entry {id}: rejected: dependencies [12345]")),
        "{status}"
    );
}

#[test]
fn errors_are_one_line_and_exit_non_zero() {
    let server = Server::start();
    // Usage errors: status 2.
    for args in [
        &["record", "post", "--tag", "novalue"][..],
        &["record", "post", "--tag", "=v"],
        &["record", "post", "--seed", "1"],
        &["record", "post", "--tag", "k=v", "--seed", "-1"],
        &["record", "find"],
        &["record", "get", "x"],
    ] {
        server.run(args).failure(2);
    }
    // Refused by the CLI or by the server: status 1.
    let line = server.run(&["record", "get", "0"]).failure(1);
    assert_eq!(line, "error: no record at lid 0");
    server.ok(&["record", "post", "--tag", "k=v"]);
    let line = server.run(&["record", "get", "5"]).failure(1);
    assert_eq!(line, "error: no record at lid 5");
    let line = server
        .run(&["record", "post", "--tag", "k=1", "--tag", "k=2"])
        .failure(1);
    assert!(line.contains("tag \"k\" is given twice"), "{line}");
    let line = server.run(&["record", "waiting", "77"]).failure(1);
    assert!(line.contains("unknown_id"), "{line}");
    let line = server
        .run(&["record", "post", "--tag", "k=v", "--id", ""])
        .failure(1);
    assert!(line.contains("HTTP 400, bad_request"), "{line}");
    // Nobody listening.
    let line =
        cli_support::run(bare(&["--http", "127.0.0.1:1", "record", "waiting"]), None).failure(1);
    assert!(
        line.contains("cannot reach the HTTP API at http://127.0.0.1:1"),
        "{line}"
    );
}

#[test]
fn the_http_address_comes_from_the_environment_too() {
    let server = Server::start();
    let mut command = bare(&["record", "post", "--tag", "via=env", "--json"]);
    command.env("CHARIOT_HTTP", server.http.to_string());
    let outcome = cli_support::run(command, None).success().json();
    assert_eq!(outcome, json!({"status": "appended", "lid": 0}));
    // An http:// URL works as well.
    let url = format!("http://{}/", server.http);
    let found = cli_support::run(
        bare(&[
            "--http", &url, "record", "find", "--tag", "via=env", "--json",
        ]),
        None,
    );
    assert_eq!(found.success().json()["records"][0]["tags"]["via"], "env");
}
