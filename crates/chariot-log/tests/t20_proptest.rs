//! Property test: random interleavings of appends (blocking and submitted), reads, rolls,
//! truncations, retention and reopen return exactly what was appended, in order.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use chariot_log::{Log, LogConfig, LogError, SyncPolicy};
use common::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Append a batch of records with these value sizes.
    Append(Vec<usize>),
    /// Submit these batches one `submit` each, then await all their futures.
    Submit(Vec<Vec<usize>>),
    /// Read from a point chosen as a fraction of the retained range.
    Read(f64, usize),
    /// Truncate to a batch boundary chosen as a fraction of the retained ones.
    Truncate(f64),
    Reopen,
    Retention,
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec(0usize..3000, 1..6).prop_map(Op::Append),
        2 => prop::collection::vec(prop::collection::vec(0usize..3000, 1..4), 1..8)
            .prop_map(Op::Submit),
        2 => (0.0..1.0f64, 1usize..20_000).prop_map(|(f, m)| Op::Read(f, m)),
        1 => (0.0..1.0f64).prop_map(Op::Truncate),
        1 => Just(Op::Reopen),
        1 => Just(Op::Retention),
        1 => Just(Op::Flush),
    ]
}

fn policy() -> impl Strategy<Value = SyncPolicy> {
    prop_oneof![
        Just(SyncPolicy::GroupCommit),
        Just(SyncPolicy::EveryAppend),
        Just(SyncPolicy::Never),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_a_vec_model(
        ops in prop::collection::vec(op(), 1..40),
        entries in 1u32..6,
        retention in prop::option::of(20_000u64..60_000),
        sync in policy(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig { retention_bytes: retention, ..small(entries, sync) };
        let mut log = Log::open(dir.path(), cfg.clone()).unwrap();
        let rt = runtime();
        // Model: every record ever kept, by offset; batch start offsets; earliest retained.
        let mut model: Vec<Vec<u8>> = Vec::new();
        let mut boundaries: Vec<u64> = Vec::new();
        let mut earliest = 0u64;
        for op in ops {
            match op {
                Op::Append(sizes) => {
                    let base = model.len() as u64;
                    let values = values_from(base, &sizes);
                    let info = log.append(&mut batch(&values)).unwrap();
                    prop_assert_eq!(info.base_offset, base);
                    prop_assert_eq!(info.last_offset, base + values.len() as u64 - 1);
                    boundaries.push(base);
                    model.extend(values);
                }
                Op::Submit(batches) => {
                    let mut pending = Vec::new();
                    for sizes in batches {
                        let base = model.len() as u64;
                        let values = values_from(base, &sizes);
                        let p = log.submit(&mut [batch(&values)]).unwrap();
                        pending.push((base, values.len() as u64, p));
                        boundaries.push(base);
                        model.extend(values);
                    }
                    for (base, n, p) in pending {
                        let infos = rt.block_on(p).unwrap();
                        prop_assert_eq!(infos[0].base_offset, base);
                        prop_assert_eq!(infos[0].last_offset, base + n - 1);
                    }
                }
                Op::Read(f, max) => {
                    let span = model.len() as u64 - earliest;
                    let at = earliest + (f * span as f64) as u64;
                    let r = log.read(at, max).unwrap();
                    if at == model.len() as u64 {
                        prop_assert!(r.bytes.is_empty());
                    } else {
                        prop_assert!(r.first_offset <= at && at < r.next_offset);
                        for b in r.batches() {
                            for rec in b.records() {
                                prop_assert_eq!(rec.value, &model[rec.offset as usize][..]);
                            }
                        }
                    }
                    let past = model.len() as u64 + 1;
                    let out_of_range = matches!(
                        log.read(past, max),
                        Err(LogError::OffsetOutOfRange { .. })
                    );
                    prop_assert!(out_of_range);
                }
                Op::Truncate(f) => {
                    let kept: Vec<u64> =
                        boundaries.iter().copied().filter(|&b| b >= earliest).collect();
                    if let Some(&to) = kept.get((f * kept.len() as f64) as usize) {
                        log.truncate_to(to).unwrap();
                        model.truncate(to as usize);
                        boundaries.retain(|&b| b < to);
                    }
                }
                Op::Reopen => {
                    drop(log);
                    log = Log::open(dir.path(), cfg.clone()).unwrap();
                }
                Op::Retention => {
                    log.apply_retention().unwrap();
                }
                Op::Flush => log.flush().unwrap(),
            }
            // Retention only ever moves the start forward, to a batch boundary.
            let e = log.earliest_offset();
            prop_assert!(e >= earliest.min(model.len() as u64));
            earliest = e;
            prop_assert_eq!(log.next_offset(), model.len() as u64);
            let all = read_all(&log);
            prop_assert_eq!(all.len() as u64, model.len() as u64 - earliest);
            for (o, v) in all {
                prop_assert_eq!(&v, &model[o as usize]);
            }
        }
    }
}
