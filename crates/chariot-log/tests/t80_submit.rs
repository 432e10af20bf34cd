//! `Log::submit`: appends queued for the next group commit and awaited as futures, from
//! many tasks on one thread, beside blocking appenders, across segment rolls and reopens.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use chariot_log::{Log, LogConfig, LogError, SyncPolicy};
use common::*;

/// Awaits a submitted append, failing the test rather than hanging if it never completes
/// (a lost wake-up).
async fn within<F: Future>(f: F) -> F::Output {
    // The timer first: a timeout that polled the future again could hide the lost wake-up.
    tokio::select! {
        biased;
        () = tokio::time::sleep(Duration::from_secs(60)) => {
            panic!("a submitted append was not woken within 60 s")
        }
        out = f => out,
    }
}

/// Polls a future once, with a waker that does nothing.
fn poll_once<F: Future>(f: F) -> Poll<F::Output> {
    let mut f = pin!(f);
    f.as_mut().poll(&mut Context::from_waker(Waker::noop()))
}

/// Values written by writer `w`: `n` records per batch, `seq` its batch number.
fn values(w: &str, seq: u64) -> Vec<Vec<u8>> {
    (0..seq % 3 + 1)
        .map(|k| format!("{w}-s{seq}-k{k}").into_bytes())
        .collect()
}

/// Checks the log holds exactly `acked`, densely from 0, and that each writer's records
/// appear in the order it wrote them.
fn check(log: &Log, acked: &BTreeMap<u64, Vec<u8>>) {
    let all = read_all(log);
    assert_eq!(
        all.len(),
        acked.len(),
        "records appended but not acknowledged"
    );
    let mut last: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (i, (off, v)) in all.iter().enumerate() {
        assert_eq!(*off, i as u64, "hole in the log");
        assert_eq!(
            acked.get(off),
            Some(v),
            "offset {off} holds the wrong record"
        );
        let text = String::from_utf8_lossy(v).to_string();
        let mut parts = text.split('-');
        let writer = parts.next().unwrap().to_string();
        let seq: u64 = parts.next().unwrap()[1..].parse().unwrap();
        let k: u64 = parts.next().unwrap()[1..].parse().unwrap();
        if let Some(prev) = last.insert(writer.clone(), (seq, k)) {
            assert!(prev < (seq, k), "{writer}: {prev:?} then {:?}", (seq, k));
        }
    }
}

#[test]
fn submitted_appends_from_many_tasks_beside_blocking_appenders_are_dense_and_ordered() {
    let dir = tempfile::tempdir().unwrap();
    // A full index every 16 batches: the submitters roll segments too.
    let cfg = small(16, SyncPolicy::GroupCommit);
    let log = Arc::new(Log::open(dir.path(), cfg.clone()).unwrap());
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                for seq in 0..200 {
                    let v = values(&format!("thread{t}"), seq);
                    let info = log.append(&mut batch(&v)).unwrap();
                    for (k, v) in v.into_iter().enumerate() {
                        acked.push((info.base_offset + k as u64, v));
                    }
                }
                acked
            })
        })
        .collect();
    let mut acked: BTreeMap<u64, Vec<u8>> = runtime().block_on(async {
        let tasks: Vec<_> = (0..32)
            .map(|t| {
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let mut acked = Vec::new();
                    for seq in 0..50 {
                        let v = values(&format!("task{t}"), seq);
                        // Two batches in one submit: one unit, consecutive offsets.
                        let mut batches = [batch(&v[..1]), batch(&v[1..])];
                        let n = if v.len() > 1 { 2 } else { 1 };
                        let infos = within(log.submit(&mut batches[..n]).unwrap())
                            .await
                            .unwrap();
                        assert_eq!(infos.len(), n);
                        assert_eq!(infos[0].base_offset, infos[0].last_offset);
                        if n == 2 {
                            assert_eq!(infos[1].base_offset, infos[0].last_offset + 1);
                        }
                        for (k, v) in v.into_iter().enumerate() {
                            acked.push((infos[0].base_offset + k as u64, v));
                        }
                    }
                    acked
                })
            })
            .collect();
        let mut all = BTreeMap::new();
        for t in tasks {
            for (off, v) in t.await.unwrap() {
                assert!(all.insert(off, v).is_none(), "offset {off} given twice");
            }
        }
        all
    });
    for t in threads {
        for (off, v) in t.join().unwrap() {
            assert!(acked.insert(off, v).is_none(), "offset {off} given twice");
        }
    }
    assert!(log.segments().len() > 10, "the test did not roll segments");
    check(&log, &acked);
    drop(log);
    let log = Log::open(dir.path(), cfg).unwrap();
    check(&log, &acked);
}

#[test]
fn a_dropped_future_does_not_withdraw_its_append() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let mut expected = Vec::new();
    for i in 0..100u64 {
        let v = value_for(i, 64);
        let pending = log.submit(&mut [batch(std::slice::from_ref(&v))]).unwrap();
        if i % 2 == 0 {
            // Polled once, so its waker is registered, then dropped.
            let _ = poll_once(pending);
        } else {
            drop(pending);
        }
        expected.push((i, v));
    }
    // Offsets were assigned at submit; the next blocking append waits its turn.
    let info = log.append(&mut batch(&[b"last".to_vec()])).unwrap();
    assert_eq!(info.base_offset, 100);
    expected.push((100, b"last".to_vec()));
    assert_eq!(read_all(&log), expected);
    drop(log);
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(read_all(&log), expected);
}

#[test]
fn under_policies_without_group_commit_a_submit_is_done_when_it_returns() {
    for sync in [
        SyncPolicy::EveryAppend,
        SyncPolicy::Never,
        SyncPolicy::Interval(Duration::from_millis(5)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), small(4, sync)).unwrap();
        for i in 0..10u64 {
            let v = value_for(i, 100);
            let pending = log.submit(&mut [batch(&[v])]).unwrap();
            match poll_once(pending) {
                Poll::Ready(Ok(infos)) => assert_eq!(infos[0].base_offset, i, "{sync:?}"),
                other => panic!("{sync:?}: expected a ready future, got {other:?}"),
            }
        }
        assert_eq!(read_all(&log).len(), 10, "{sync:?}");
    }
}

#[test]
fn bad_batches_are_refused_at_submit_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        max_batch_bytes: 4096,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), cfg).unwrap();
    let first = log.submit(&mut [batch(&[b"kept".to_vec()])]).unwrap();
    assert!(matches!(
        log.submit(&mut [batch(&[vec![7u8; 8192]])]),
        Err(LogError::BatchTooLarge { .. })
    ));
    assert!(matches!(
        log.submit(&mut [batch(&[])]),
        Err(LogError::EmptyBatch)
    ));
    // Nothing at all is a valid, empty unit.
    match poll_once(log.submit(&mut []).unwrap()) {
        Poll::Ready(Ok(infos)) => assert!(infos.is_empty()),
        other => panic!("expected an empty ready result, got {other:?}"),
    }
    let infos = runtime().block_on(within(first)).unwrap();
    assert_eq!(infos[0].base_offset, 0);
    assert_eq!(log.next_offset(), 1);
    assert_eq!(read_all(&log), vec![(0, b"kept".to_vec())]);
}

/// Runs `f` on a thread and fails the test if it has not returned within 60 s (a hang
/// detector, not a timing assertion).
fn finishes<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("{what} did not return within 60 s"))
}

/// `flush` takes a slot in the next group commit, so tasks keeping the commit thread
/// busy leading syncs cannot make it wait for a gap in their stream; and what was
/// submitted before a flush is acknowledged when the flush returns.
#[test]
fn flush_completes_while_submitted_appends_keep_coming() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path(), LogConfig::default()).unwrap());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = {
        let (log, stop) = (Arc::clone(&log), Arc::clone(&stop));
        std::thread::spawn(move || {
            runtime().block_on(async {
                let tasks: Vec<_> = (0..16)
                    .map(|t| {
                        let (log, stop) = (Arc::clone(&log), Arc::clone(&stop));
                        tokio::spawn(async move {
                            let mut n = 0u64;
                            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                                let v = format!("t{t}-{n}").into_bytes();
                                within(log.submit(&mut [batch(&[v])]).unwrap())
                                    .await
                                    .unwrap();
                                n += 1;
                            }
                            n
                        })
                    })
                    .collect();
                let mut total = 0;
                for t in tasks {
                    total += t.await.unwrap();
                }
                total
            })
        })
    };
    let flusher = Arc::clone(&log);
    let mine = finishes("flush under a steady stream", move || {
        let mut mine = 0u64;
        for i in 0..50 {
            let pending = flusher
                .submit(&mut [batch(&[format!("flushed-{i}").into_bytes()])])
                .unwrap();
            flusher.flush().unwrap();
            match poll_once(pending) {
                Poll::Ready(Ok(_)) => mine += 1,
                other => panic!("submitted before a flush, not done after it: {other:?}"),
            }
        }
        mine
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let total = producer.join().unwrap();
    assert!(total > 0, "the producers never appended");
    assert_eq!(read_all(&log).len() as u64, total + mine);
}

/// Under the policies without group commit, `flush` syncs directly and never waits on
/// a group: appends of several batches at once (which write in place) cannot strand it.
#[test]
fn flush_beside_multi_batch_appends_under_every_policy() {
    for sync in [
        SyncPolicy::Never,
        SyncPolicy::EveryAppend,
        SyncPolicy::Interval(Duration::from_millis(1)),
        SyncPolicy::GroupCommit,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(Log::open(dir.path(), small(8, sync)).unwrap());
        let appender = {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for i in 0..300u64 {
                    let mut two = [batch(&[value_for(i, 50)]), batch(&[value_for(i, 60)])];
                    log.append_batches(&mut two).unwrap();
                }
            })
        };
        let flusher = Arc::clone(&log);
        finishes(&format!("flush under {sync:?}"), move || {
            for _ in 0..300 {
                flusher.flush().unwrap();
            }
        });
        appender.join().unwrap();
        assert_eq!(read_all(&log).len(), 600, "{sync:?}");
        let log = Arc::try_unwrap(log).unwrap();
        finishes(&format!("close under {sync:?}"), move || {
            log.close().unwrap()
        });
    }
}

/// Closing (or dropping) a log with submitted appends not yet awaited commits them:
/// their futures resolve, and the records are there after a reopen.
#[test]
fn closing_the_log_completes_outstanding_futures() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let pending: Vec<_> = (0..200u64)
        .map(|i| log.submit(&mut [batch(&[value_for(i, 100)])]).unwrap())
        .collect();
    finishes("close with futures outstanding", move || {
        log.close().unwrap()
    });
    for (i, p) in pending.into_iter().enumerate() {
        match poll_once(p) {
            Poll::Ready(Ok(infos)) => assert_eq!(infos[0].base_offset, i as u64),
            other => panic!("future {i} not done after close: {other:?}"),
        }
    }
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(read_all(&log).len(), 200);
}

/// A waker that panics (the caller's code) neither keeps the other appends of its group
/// from being woken nor stops group commit.
#[test]
fn a_panicking_waker_does_not_strand_the_rest_of_its_group() {
    struct Panics;
    impl std::task::Wake for Panics {
        fn wake(self: Arc<Self>) {
            panic!("this waker panics");
        }
    }
    struct Flag(std::sync::atomic::AtomicBool);
    impl std::task::Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let flag = Arc::new(Flag(std::sync::atomic::AtomicBool::new(false)));
    let (panicky, flagged) = (
        Waker::from(Arc::new(Panics)),
        Waker::from(Arc::clone(&flag)),
    );
    let mut first = log.submit(&mut [batch(&[b"first".to_vec()])]).unwrap();
    let mut second = log.submit(&mut [batch(&[b"second".to_vec()])]).unwrap();
    // Registered before the group completes (or already complete: then nothing to wake).
    let first_done = std::pin::Pin::new(&mut first)
        .poll(&mut Context::from_waker(&panicky))
        .is_ready();
    let second_done = std::pin::Pin::new(&mut second)
        .poll(&mut Context::from_waker(&flagged))
        .is_ready();
    // A blocking append leads (or follows) the next sync and returns after it.
    let log = Arc::new(log);
    let appender = Arc::clone(&log);
    finishes("an append after a panicking waker", move || {
        appender.append(&mut batch(&[b"third".to_vec()])).unwrap();
    });
    if !second_done {
        assert!(
            flag.0.load(std::sync::atomic::Ordering::SeqCst),
            "the second append's waker was never called"
        );
    }
    let _ = first_done;
    assert!(matches!(poll_once(second), Poll::Ready(Ok(_))));
    assert!(matches!(poll_once(first), Poll::Ready(Ok(_))));
    assert_eq!(read_all(&log).len(), 3);
}

/// `try_submit` (for async worker threads) queues only what takes no I/O on the calling
/// thread: nothing under policies that write in place, nothing when the segment must
/// roll first; the batches are left for a blocking `submit`, and nothing is lost or
/// reordered.
#[test]
fn try_submit_queues_only_what_needs_no_io_on_the_calling_thread() {
    for sync in [SyncPolicy::EveryAppend, SyncPolicy::Never] {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), small(4, sync)).unwrap();
        let mut b = [batch(&[value_for(0, 100)])];
        assert!(log.try_submit(&mut b).unwrap().is_none(), "{sync:?}");
        assert_eq!(log.next_offset(), 0, "{sync:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small(4, SyncPolicy::GroupCommit)).unwrap();
    runtime().block_on(async {
        for i in 0..4u64 {
            let p = log
                .try_submit(&mut [batch(&[value_for(i, 100)])])
                .unwrap()
                .expect("room in the segment: queued");
            assert_eq!(within(p).await.unwrap()[0].base_offset, i);
        }
        // The index of the active segment is full: the next batch needs a roll.
        let mut next = [batch(&[value_for(4, 100)])];
        assert!(log.try_submit(&mut next).unwrap().is_none());
        assert_eq!(log.next_offset(), 4);
        let p = log.submit(&mut next).unwrap();
        assert_eq!(within(p).await.unwrap()[0].base_offset, 4);
        let p = log
            .try_submit(&mut [batch(&[value_for(5, 100)])])
            .unwrap()
            .expect("a fresh segment: queued");
        assert_eq!(within(p).await.unwrap()[0].base_offset, 5);
    });
    assert_eq!(log.segments().len(), 2);
    let all = read_all(&log);
    assert_eq!(all.len(), 6);
    for (i, (off, v)) in all.iter().enumerate() {
        assert_eq!((*off, v), (i as u64, &value_for(i as u64, 100)));
    }
}
