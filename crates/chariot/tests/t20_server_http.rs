//! The HTTP API against the real binary.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod server_support;

use serde_json::{json, Value};
use server_support::*;

#[test]
fn logs_records_groups_and_errors_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--max-record-bytes", "100"]);
    assert_eq!(get(&node, "/health"), (200, json!({"status": "ok"})));
    assert_eq!(
        post(&node, "/logs", json!({"name": "l", "partitions": 2})).0,
        201
    );
    let (code, body) = post(&node, "/logs", json!({"name": "l", "partitions": 2}));
    assert_eq!((code, body["code"].as_str()), (409, Some("log_exists")));
    let (code, body) = post(&node, "/logs", json!({"name": "z", "partitions": 0}));
    assert_eq!(
        (code, body["error"].as_str()),
        (400, Some("Number of partitions must be at least 1"))
    );
    assert_eq!(
        get(&node, "/logs").1,
        json!([{"name": "l", "partitions": 2}])
    );

    let (code, body) = post(
        &node,
        "/logs/l/partitions/1/records",
        json!([{"value": "one"}, {"value": "/w==", "encoding": "base64", "headers": {"k": "v"}}]),
    );
    assert_eq!(code, 200);
    assert_eq!(body["offsets"], json!([0, 1]));
    let (_, body) = get(&node, "/logs/l/partitions/1/records?offset=0");
    assert_eq!(body["records"][0]["value"], "one");
    assert_eq!(body["records"][1]["value"], "/w==");
    assert_eq!(body["records"][1]["encoding"], "base64");
    assert_eq!(body["records"][1]["headers"], json!({"k": "v"}));
    assert_eq!(body["next_offset"], 2);

    assert_eq!(
        post(&node, "/logs/l/partitions/1/groups/g/fetch", json!(null)).1["value"],
        "one"
    );
    assert_eq!(
        post(&node, "/logs/l/partitions/1/groups/g/fetch", json!(null)).1["value"],
        "one"
    );
    assert_eq!(
        post(&node, "/logs/l/partitions/1/groups/g/ack", json!(null)).1,
        json!({"offset": 1})
    );
    let (_, d) = get(&node, "/logs/l");
    assert_eq!(
        d["partitions"][1]["groups"],
        json!([{"group": "g", "offset": 1}])
    );
    assert_eq!(d["partitions"][1]["next_offset"], 2);

    // Errors: status and code, JSON bodies throughout.
    let cases: Vec<(u16, &str, (u16, Value))> = vec![
        (404, "unknown_log", get(&node, "/logs/nope")),
        (
            404,
            "partition_out_of_range",
            get(&node, "/logs/l/partitions/5/records"),
        ),
        (
            416,
            "offset_out_of_range",
            get(&node, "/logs/l/partitions/1/records?offset=3"),
        ),
        (
            400,
            "bad_request",
            post(&node, "/logs/l/partitions/0/records", json!({"value": 5})),
        ),
        (
            400,
            "bad_request",
            post(
                &node,
                "/logs/l/partitions/0/records",
                json!({"value": "%", "encoding": "base64"}),
            ),
        ),
        (
            413,
            "too_large",
            post(
                &node,
                "/logs/l/partitions/0/records",
                json!({"value": "x".repeat(101)}),
            ),
        ),
        (
            404,
            "no_data",
            post(&node, "/logs/l/partitions/0/groups/g/fetch", json!(null)),
        ),
        (
            400,
            "bad_request",
            get(&node, "/logs/l/partitions/x/records"),
        ),
    ];
    for (status, code, (got_status, body)) in cases {
        assert_eq!(
            (got_status, body["code"].as_str()),
            (status, Some(code)),
            "{body}"
        );
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    // Malformed JSON.
    let r = ureq::post(&node.url("/logs"))
        .set("content-type", "application/json")
        .send_string("{nope");
    match r {
        Err(ureq::Error::Status(400, resp)) => {
            let v: Value = resp.into_json().unwrap();
            assert_eq!(v["code"], "bad_request");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        ureq::delete(&node.url("/logs/l")).call().unwrap().status(),
        204
    );
    assert_eq!(get(&node, "/logs/l").0, 404);
}

#[test]
fn insert_and_get_all_keep_insertion_order_and_match_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    assert_eq!(get(&node, "/get-all"), (200, json!([])));
    for m in ["1", "2", "3"] {
        assert_eq!(post(&node, "/insert", json!({"message": m})).0, 200);
    }
    // The seed's own example: curl -d '...' sends a form content type, not JSON.
    let r = ureq::post(&node.url("/insert"))
        .set("content-type", "application/x-www-form-urlencoded")
        .send_string(r#"{"message": "4"}"#)
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(get(&node, "/get-all").1, json!(["1", "2", "3", "4"]));
    // The same records through the native protocol.
    assert_eq!(
        call(&node, &fetch("default", 0, "tcp"), true),
        Ok(Some(b"1".to_vec()))
    );
}
