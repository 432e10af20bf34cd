//! Crash durability with real processes: a child appends under the safe default policy and
//! prints every acknowledged offset; the parent kills it with SIGKILL at random moments,
//! many times over, and checks after each kill that every acknowledged record is present,
//! intact, and that appending continues at the right offset.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use chariot_log::{Log, SyncPolicy};
use common::*;
use rand::Rng;

const CHILD_ENV: &str = "CHARIOT_LOG_CRASH_CHILD_DIR";

fn config() -> chariot_log::LogConfig {
    // Small index so segments roll every few batches: kills land during rolls too.
    small(16, SyncPolicy::GroupCommit)
}

/// Prints `ACK <offset> <value>` for each record of an acknowledged append.
fn print_acks(out: &std::sync::Mutex<std::io::Stdout>, base: u64, values: &[Vec<u8>]) {
    let mut o = out.lock().unwrap();
    for (k, v) in values.iter().enumerate() {
        writeln!(o, "ACK {} {}", base + k as u64, String::from_utf8_lossy(v)).unwrap();
    }
    o.flush().unwrap();
}

/// The child: appends forever from 3 threads blocked in `append` and from 8 tasks on a
/// fourth thread awaiting `submit`, printing `ACK <offset> <value>` per record once its
/// append is acknowledged.
#[test]
#[ignore = "child process of kill9_never_loses_an_acknowledged_record"]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let log = Arc::new(Log::open(&dir, config()).unwrap());
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let pid = std::process::id();
    let values = move |writer: &str, seq: u64| -> Vec<Vec<u8>> {
        (0..seq % 3 + 1)
            .map(|k| format!("p{pid}-{writer}-s{seq}-k{k}").into_bytes())
            .collect()
    };
    let mut threads: Vec<_> = (0..3)
        .map(|t| {
            let (log, out) = (Arc::clone(&log), Arc::clone(&out));
            std::thread::spawn(move || {
                for seq in 0u64.. {
                    let v = values(&format!("t{t}"), seq);
                    let info = log.append(&mut batch(&v)).unwrap();
                    print_acks(&out, info.base_offset, &v);
                }
            })
        })
        .collect();
    let (log, out) = (Arc::clone(&log), Arc::clone(&out));
    threads.push(std::thread::spawn(move || {
        runtime().block_on(async {
            let tasks: Vec<_> = (0..8)
                .map(|t| {
                    let (log, out) = (Arc::clone(&log), Arc::clone(&out));
                    tokio::spawn(async move {
                        for seq in 0u64.. {
                            let v = values(&format!("task{t}"), seq);
                            let pending = log.submit(&mut [batch(&v)]).unwrap();
                            let infos = pending.await.unwrap();
                            print_acks(&out, infos[0].base_offset, &v);
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        });
    }));
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn kill9_never_loses_an_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::thread_rng();
    let mut acked: BTreeMap<u64, String> = BTreeMap::new();
    let rounds = 30;
    for round in 0..rounds {
        let mut child = Command::new(&exe)
            .args(["crash_child", "--exact", "--ignored", "--nocapture"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                lines.push(line);
            }
            lines
        });
        std::thread::sleep(Duration::from_millis(rng.gen_range(20..150)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let lines = reader.join().unwrap();
        let before = acked.len();
        for line in lines {
            let mut parts = line.splitn(3, ' ');
            if let (Some("ACK"), Some(off), Some(val)) = (parts.next(), parts.next(), parts.next())
            {
                if let Ok(off) = off.parse::<u64>() {
                    // An offset is acknowledged once; a second value would mean reuse.
                    if let Some(prev) = acked.insert(off, val.to_string()) {
                        assert_eq!(prev, val, "offset {off} acknowledged twice");
                    }
                }
            }
        }

        let log = Log::open(dir.path(), config()).unwrap();
        let all = read_all(&log);
        // Dense from 0, and every acknowledged record present and intact.
        for (i, (o, _)) in all.iter().enumerate() {
            assert_eq!(*o, i as u64, "round {round}: hole in the log");
        }
        for (off, val) in &acked {
            let got = all
                .get(*off as usize)
                .map(|(_, v)| String::from_utf8_lossy(v));
            assert_eq!(
                got.as_deref(),
                Some(val.as_str()),
                "round {round}: acknowledged offset {off} lost or changed"
            );
        }
        // Appending continues right after what survived.
        let next = log.next_offset();
        assert_eq!(next, all.len() as u64);
        let info = log.append(&mut batch(&[b"parent".to_vec()])).unwrap();
        assert_eq!(info.base_offset, next);
        acked.insert(next, "parent".into());
        log.close().unwrap();
        eprintln!(
            "round {round}: {} newly acknowledged, log holds {}",
            acked.len() - before - 1,
            next + 1
        );
    }
    assert!(
        acked.len() > rounds,
        "the child never acknowledged anything: the test did not exercise crashes"
    );
    assert!(
        acked.values().any(|v| v.contains("-task")),
        "no submitted append was acknowledged: the test did not exercise `submit`"
    );
}
