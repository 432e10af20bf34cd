//! `chariot bench` against a real server: short runs that must measure something.
//! Timings are never asserted, only that each side counted records and latencies.
#![allow(
    missing_docs,
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing
)]

mod cli_support;

use cli_support::Server;
use serde_json::Value;

fn assert_side_measured(report: &Value, side: &str) {
    let s = &report[side];
    assert!(s["records"].as_u64().unwrap() > 0, "{side}: {report}");
    assert!(s["bytes"].as_u64().unwrap() > 0, "{side}: {report}");
    assert!(
        s["records_per_sec"].as_f64().unwrap() > 0.0,
        "{side}: {report}"
    );
    assert!(
        s["latency_us"]["samples"].as_u64().unwrap() > 0,
        "{side}: {report}"
    );
    for p in ["p50", "p99", "p999"] {
        assert!(s["latency_us"][p].is_u64(), "{side} {p}: {report}");
    }
}

#[test]
fn native_bench_reports_both_sides() {
    let server = Server::start();
    let report = server.json(&[
        "bench",
        "--duration",
        "1",
        "--producers",
        "2",
        "--consumers",
        "2",
        "--partitions",
        "2",
        "--record-size",
        "64",
        "--batch-size",
        "20",
    ]);
    assert_eq!(report["protocol"], "native");
    assert_eq!(report["batch_size"], 20);
    assert_side_measured(&report, "producer");
    assert_side_measured(&report, "consumer");
    assert!(
        report["consumer"]["end_to_end_latency_us"]["samples"]
            .as_u64()
            .unwrap()
            > 0
    );
    // The log was created with the requested partitions.
    let described = server.json(&["log", "describe", "bench"]);
    assert_eq!(described["partitions"].as_array().unwrap().len(), 2);
}

#[test]
fn rog_bench_reports_both_sides() {
    let server = Server::start();
    let report = server.json(&[
        "bench",
        "--protocol",
        "rog",
        "--duration",
        "1",
        "--log",
        "rog-bench",
    ]);
    assert_eq!(report["protocol"], "rog");
    assert_eq!(report["batch_size"], 1);
    assert_side_measured(&report, "producer");
    assert_side_measured(&report, "consumer");
    // Rog consumers ack through a consumer group.
    let described = server.json(&["log", "describe", "rog-bench"]);
    assert!(
        described["partitions"][0]["groups"][0]["committed_offset"]
            .as_u64()
            .unwrap()
            > 0,
        "{described}"
    );
}

#[test]
fn single_record_bench_with_baseline_prints_a_text_report() {
    let server = Server::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let text = server.ok(&[
        "bench",
        "--duration",
        "1",
        "--batch-size",
        "1",
        "--baseline-dir",
        dir.path().to_str().unwrap(),
    ]);
    for expected in [
        "producers: ",
        "consumers: ",
        "p50 ",
        "p999 ",
        "baseline: raw sequential write",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(!text.contains("producers: 0 records"), "{text}");
    // The baseline's files are gone.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
