//! A log at rest holds no thread: the commit and tail threads start with the first work
//! and exit after a quiet spell, and appends after they exited are committed as before
//! (by a new thread). One test in this binary, so that the threads it counts are its
//! own.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::time::Duration;

use chariot_log::{Log, LogConfig, SyncPolicy};
use common::*;

/// Threads of this process that belong to logs.
fn log_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("chariot-log"))
        .count()
}

/// Polls until no log thread is left (a liveness bound, not a speed assertion).
fn wait_for_no_threads() {
    poll_until(Duration::from_secs(30), || match log_threads() {
        0 => Ok(()),
        _ => Err("log threads still running after 30 s at rest".into()),
    });
}

#[test]
fn a_log_at_rest_holds_no_thread_and_commits_again_when_work_comes() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        sync: SyncPolicy::GroupCommit,
        zero_fill_ahead: true,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), config.clone()).unwrap();
    assert_eq!(log_threads(), 0, "a log just opened starts no thread");
    let rt = runtime();
    let mut expected = Vec::new();
    for round in 0..3u64 {
        // Submitted appends need the commit thread; blocking ones lead their own sync.
        let values: Vec<Vec<u8>> = (0..20)
            .map(|i| format!("r{round}-{i}").into_bytes())
            .collect();
        let pending: Vec<_> = values
            .iter()
            .map(|v| log.submit(&mut [batch(std::slice::from_ref(v))]).unwrap())
            .collect();
        for p in pending {
            rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(60), p)
                    .await
                    .expect("a submitted append was not committed within 60 s")
                    .unwrap()
            });
        }
        let extra = format!("r{round}-blocking").into_bytes();
        log.append(&mut batch(std::slice::from_ref(&extra)))
            .unwrap();
        expected.extend(values);
        expected.push(extra);
        wait_for_no_threads();
    }
    let got: Vec<Vec<u8>> = read_all(&log).into_iter().map(|(_, v)| v).collect();
    assert_eq!(got, expected);
    log.close().unwrap();
    // Everything acknowledged is there after a reopen.
    let log = Log::open(dir.path(), config.clone()).unwrap();
    assert_eq!(read_all(&log).len(), expected.len());
    log.close().unwrap();

    // A close with appends still queued: its last sync writes them, and no thread
    // starts after the close joined them (one would hold the directory lock).
    let mut total = expected.len();
    for round in 0..60u64 {
        let log = Log::open(dir.path(), config.clone()).unwrap();
        let pending: Vec<_> = (0..200)
            .map(|i| {
                let v = format!("c{round}-{i}").into_bytes();
                log.submit(&mut [batch(std::slice::from_ref(&v))]).unwrap()
            })
            .collect();
        log.close().unwrap();
        assert_eq!(log_threads(), 0, "a thread of the log runs after its close");
        for p in pending {
            rt.block_on(p).unwrap();
        }
        total += 200;
    }
    let log = Log::open(dir.path(), config).unwrap();
    assert_eq!(read_all(&log).len(), total);
}
