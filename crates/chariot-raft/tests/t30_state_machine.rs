//! The partition state machine: committed appends land in the partition log once,
//! also when openraft applies them again after a restart from the checkpoint; acks
//! keep the largest offset; a bad batch is refused alike everywhere; a snapshot
//! installed on another replica gives it the same records at the same offsets.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::collections::{BTreeMap, BTreeSet};

use chariot_log::{Log, LogConfig, Record, RecordBatchBuilder, SyncPolicy};
use chariot_raft::{Command, Entry, LogId, PartitionStateMachine};
use openraft::impls::leader_id_adv::LeaderId;
use openraft::impls::BasicNode;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, Membership};

fn config() -> LogConfig {
    LogConfig {
        sync: SyncPolicy::Never,
        segment_bytes: 1 << 20,
        max_batch_bytes: 512 << 10,
        // Rolls every 4 batches: snapshots link sealed segments and copy the active one.
        index_max_entries: 4,
        ..LogConfig::default()
    }
}

fn id(index: u64) -> LogId {
    LogId::new(
        LeaderId {
            term: 2,
            node_id: 1,
        },
        index,
    )
}

fn append(index: u64, values: &[&str]) -> Entry {
    let mut b = RecordBatchBuilder::new();
    for v in values {
        b.push(&Record::value(v.as_bytes().to_vec()));
    }
    Entry {
        log_id: id(index),
        payload: EntryPayload::Normal(Command::Append(b.build().into_vec())),
    }
}

fn ack(index: u64, group: &str, offset: u64) -> Entry {
    Entry {
        log_id: id(index),
        payload: EntryPayload::Normal(Command::Ack {
            group: group.into(),
            offset,
        }),
    }
}

fn membership(index: u64) -> Entry {
    let nodes: BTreeMap<u64, BasicNode> = (1..=3)
        .map(|i| {
            (
                i,
                BasicNode {
                    addr: format!("127.0.0.1:{}", 7970 + i),
                },
            )
        })
        .collect();
    Entry {
        log_id: id(index),
        payload: EntryPayload::Membership(
            Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes).unwrap(),
        ),
    }
}

async fn apply(sm: &mut PartitionStateMachine, entries: Vec<Entry>) {
    let items = entries.into_iter().map(|e| Ok((e, None)));
    sm.apply(futures_util::stream::iter(items)).await.unwrap();
}

fn records(log: &Log) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut next = log.earliest_offset();
    while next < log.next_offset() {
        let read = log.read(next, 1 << 20).unwrap();
        for b in read.batches() {
            for r in b.records() {
                out.push((r.offset, String::from_utf8(r.value.to_vec()).unwrap()));
            }
        }
        next = read.next_offset;
    }
    out
}

/// Entries 1..=21: a membership, then appends of three records and acks.
fn history() -> Vec<Entry> {
    let mut h = vec![membership(1)];
    for i in 2..=21u64 {
        if i % 5 == 0 {
            // Acks out of order: the larger offset stays.
            h.push(ack(i, "g", if i == 15 { 3 } else { i }));
        } else {
            h.push(append(
                i,
                &[&format!("{i}a"), &format!("{i}b"), &format!("{i}c")],
            ));
        }
    }
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reapplied_entries_after_a_restart_are_not_written_twice() {
    let dir = tempfile::tempdir().unwrap();
    let all = history();
    let mut sm = PartitionStateMachine::open(dir.path(), config())
        .await
        .unwrap();
    apply(&mut sm, all[..10].to_vec()).await;
    let snap = sm.build_snapshot().await.unwrap();
    assert_eq!(snap.meta.last_log_id, Some(id(10)));
    apply(&mut sm, all[10..].to_vec()).await;
    let before = records(&sm.log());
    assert_eq!(before.len(), 16 * 3);
    assert_eq!(sm.group_offset("g"), Some(20));
    drop(sm);

    // The checkpoint is the snapshot's: openraft applies 11..=21 again.
    let mut sm = PartitionStateMachine::open(dir.path(), config())
        .await
        .unwrap();
    let (applied, members) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(id(10)));
    assert_eq!(members.log_id(), &Some(id(1)));
    assert_eq!(sm.group_offset("g"), Some(10));
    apply(&mut sm, all[10..].to_vec()).await;
    assert_eq!(
        records(&sm.log()),
        before,
        "a re-applied append was written again"
    );
    assert_eq!(sm.group_offset("g"), Some(20));
    // And new entries go on at the right offset.
    apply(&mut sm, vec![append(22, &["22a"])]).await;
    assert_eq!(records(&sm.log()).last(), Some(&(48, "22a".to_string())));
    assert_eq!(sm.applied_state().await.unwrap().0, Some(id(22)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_batch_is_refused_and_applied_moves_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = PartitionStateMachine::open(dir.path(), config())
        .await
        .unwrap();
    let bad = Entry {
        log_id: id(2),
        payload: EntryPayload::Normal(Command::Append(vec![0xff; 80])),
    };
    apply(&mut sm, vec![append(1, &["x"]), bad, append(3, &["y"])]).await;
    assert_eq!(
        records(&sm.log()),
        vec![(0, "x".to_string()), (1, "y".to_string())]
    );
    assert_eq!(sm.applied_state().await.unwrap().0, Some(id(3)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_installed_snapshot_has_the_same_records_offsets_and_groups() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let all = history();
    let mut leader = PartitionStateMachine::open(a.path(), config())
        .await
        .unwrap();
    apply(&mut leader, all[..17].to_vec()).await;
    let snap = leader.build_snapshot().await.unwrap();
    let at_snapshot = records(&leader.log());
    // The leader goes on after the snapshot; the follower gets the snapshot's state.
    apply(&mut leader, all[17..].to_vec()).await;
    let current = leader.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, snap.meta);

    let mut follower = PartitionStateMachine::open(b.path(), config())
        .await
        .unwrap();
    apply(&mut follower, vec![append(1, &["stale"])]).await;
    follower
        .install_snapshot(&current.meta, current.snapshot)
        .await
        .unwrap();
    assert_eq!(records(&follower.log()), at_snapshot);
    assert_eq!(follower.group_offset("g"), Some(10));
    assert_eq!(
        follower.applied_state().await.unwrap(),
        (snap.meta.last_log_id, snap.meta.last_membership.clone())
    );
    // It then applies the rest like the leader did, and survives a restart.
    apply(&mut follower, all[17..].to_vec()).await;
    assert_eq!(records(&follower.log()), records(&leader.log()));
    drop(follower);
    let follower = PartitionStateMachine::open(b.path(), config())
        .await
        .unwrap();
    assert_eq!(records(&follower.log()), records(&leader.log()));
    assert_eq!(
        follower.group_offset("g"),
        Some(10),
        "acks after the snapshot are re-applied by openraft"
    );
}

fn one_segment_config() -> LogConfig {
    LogConfig {
        index_max_entries: 1 << 20,
        ..config()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_and_oversized_batches_are_refused_and_large_runs_are_split() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = PartitionStateMachine::open(dir.path(), one_segment_config())
        .await
        .unwrap();
    let empty = Entry {
        log_id: id(1),
        payload: EntryPayload::Normal(Command::Append(
            RecordBatchBuilder::new().build().into_vec(),
        )),
    };
    let huge = append(2, &[&"h".repeat(600 << 10)]);
    // Ten batches of 200 KiB: two megabytes in one run, over the 1 MiB segment.
    let mut run = vec![empty, huge];
    for i in 3..13u64 {
        run.push(append(i, &[&format!("{i}:{}", "x".repeat(200 << 10))]));
    }
    apply(&mut sm, run).await;
    let got = records(&sm.log());
    assert_eq!(got.len(), 10);
    for (k, (offset, v)) in got.iter().enumerate() {
        assert_eq!(*offset, k as u64);
        assert!(v.starts_with(&format!("{}:", k + 3)), "{offset}");
    }
    assert_eq!(sm.applied_state().await.unwrap().0, Some(id(12)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_installed_log_shares_no_writable_file_with_its_source() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let all = history();
    let mut leader = PartitionStateMachine::open(a.path(), one_segment_config())
        .await
        .unwrap();
    apply(&mut leader, all[..8].to_vec()).await;
    let snap = leader.build_snapshot().await.unwrap();
    let mut follower = PartitionStateMachine::open(b.path(), one_segment_config())
        .await
        .unwrap();
    follower
        .install_snapshot(&snap.meta, snap.snapshot)
        .await
        .unwrap();
    // Both go on with different entries: neither may see the other's.
    apply(&mut follower, vec![append(9, &["follower-only"])]).await;
    apply(&mut leader, vec![append(9, &["leader-only"])]).await;
    let (l, f) = (records(&leader.log()), records(&follower.log()));
    assert_eq!(l.last().unwrap().1, "leader-only");
    assert_eq!(f.last().unwrap().1, "follower-only");
    assert_eq!(l[..l.len() - 1], f[..f.len() - 1]);
    drop(leader);
    let leader = PartitionStateMachine::open(a.path(), one_segment_config())
        .await
        .unwrap();
    assert_eq!(records(&leader.log()), l);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_made_again_after_the_leader_sealed_its_segment_is_still_a_copy() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut leader = PartitionStateMachine::open(a.path(), config())
        .await
        .unwrap();
    // Six batches: a sealed segment of four, the active one with two.
    apply(
        &mut leader,
        (1..7).map(|i| append(i, &[&format!("a{i}")])).collect(),
    )
    .await;
    let snap = leader.build_snapshot().await.unwrap();
    // The segment that held the snapshot's end is sealed now.
    apply(
        &mut leader,
        (7..12).map(|i| append(i, &[&format!("a{i}")])).collect(),
    )
    .await;
    let before = records(&leader.log());
    // As after a crash between the checkpoint and its files: made again on demand.
    std::fs::remove_dir_all(&snap.snapshot.dir).unwrap();
    let again = leader.get_current_snapshot().await.unwrap().unwrap();
    let mut follower = PartitionStateMachine::open(b.path(), one_segment_config())
        .await
        .unwrap();
    follower
        .install_snapshot(&again.meta, again.snapshot)
        .await
        .unwrap();
    assert_eq!(records(&follower.log()), before[..6].to_vec());
    apply(&mut follower, vec![append(7, &["follower-only"])]).await;
    drop((follower, leader));
    let leader = PartitionStateMachine::open(a.path(), config())
        .await
        .unwrap();
    assert_eq!(
        records(&leader.log()),
        before,
        "the follower's writes reached the leader's files"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_partition_takes_no_append_or_ack_also_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let seal = |index| Entry {
        log_id: id(index),
        payload: EntryPayload::Normal(Command::Seal),
    };
    let entries = [
        membership(1),
        append(2, &["kept"]),
        ack(3, "g", 1),
        seal(4),
        append(5, &["refused"]),
        ack(6, "g", 7),
        append(7, &["refused too"]),
    ];
    let mut sm = PartitionStateMachine::open(dir.path(), config())
        .await
        .unwrap();
    apply(&mut sm, entries[..2].to_vec()).await;
    let snap = sm.build_snapshot().await.unwrap();
    assert_eq!(snap.meta.last_log_id, Some(id(2)));
    apply(&mut sm, entries[2..].to_vec()).await;
    assert!(sm.sealed());
    assert_eq!(records(&sm.log()), vec![(0, "kept".to_string())]);
    assert_eq!(sm.group_offset("g"), Some(1));
    assert_eq!(sm.applied_state().await.unwrap().0, Some(id(7)));
    drop(sm);
    // From the checkpoint (before the seal), the same entries give the same state.
    let mut sm = PartitionStateMachine::open(dir.path(), config())
        .await
        .unwrap();
    assert!(!sm.sealed());
    apply(&mut sm, entries[2..].to_vec()).await;
    assert!(sm.sealed());
    assert_eq!(records(&sm.log()), vec![(0, "kept".to_string())]);
    assert_eq!(sm.group_offset("g"), Some(1));
}

fn produced(index: u64, pid: i64, seq: i32, values: &[&str]) -> Entry {
    let mut b = RecordBatchBuilder::new().producer(pid, seq);
    for v in values {
        b.push(&Record::value(v.as_bytes().to_vec()));
    }
    Entry {
        log_id: id(index),
        payload: EntryPayload::Normal(Command::Append(b.build().into_vec())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producers_repeated_batch_is_stored_once_also_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = PartitionStateMachine::open(dir.path(), config())
        .await
        .unwrap();
    apply(
        &mut sm,
        vec![
            membership(1),
            produced(2, 7, 0, &["a", "b"]),
            // A retry of the same publish (after a lost answer, a leader change).
            produced(3, 7, 0, &["a", "b"]),
            produced(4, 7, 2, &["c"]),
            // Sequences producer 7 has passed: refused.
            produced(5, 7, 1, &["b", "c"]),
            // A retry of the first batch after the second was stored (two publishes in
            // flight): still recognized.
            produced(6, 7, 0, &["a", "b"]),
            // Another producer, and a batch without a producer: always stored.
            produced(7, 8, 0, &["x"]),
            append(8, &["plain"]),
            append(9, &["plain"]),
        ],
    )
    .await;
    let want: Vec<(u64, String)> = ["a", "b", "c", "x", "plain", "plain"]
        .iter()
        .enumerate()
        .map(|(i, v)| (i as u64, v.to_string()))
        .collect();
    assert_eq!(records(&sm.log()), want);
    sm.build_snapshot().await.unwrap();
    drop(sm);
    // The producers' state is in the checkpoint: a retry after the restart is still one.
    let mut sm = PartitionStateMachine::open(dir.path(), config())
        .await
        .unwrap();
    apply(
        &mut sm,
        vec![produced(10, 7, 2, &["c"]), produced(11, 8, 1, &["y"])],
    )
    .await;
    let mut want = want;
    want.push((6, "y".into()));
    assert_eq!(records(&sm.log()), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_remembers_a_bounded_number_of_producers() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = PartitionStateMachine::open(dir.path(), config())
        .await
        .unwrap();
    let n = chariot_raft::state_machine::MAX_PRODUCERS as i64;
    let entries: Vec<Entry> = (0..=n)
        .map(|pid| produced(pid as u64 + 1, pid, 0, &["v"]))
        .collect();
    apply(&mut sm, entries).await;
    let stored = records(&sm.log()).len();
    assert_eq!(stored, n as usize + 1);
    // Producer 0, the oldest, was forgotten: its repeat is stored again; producer 1's
    // is not (asked first: storing producer 0 again forgets producer 1 in turn).
    apply(
        &mut sm,
        vec![
            produced(n as u64 + 2, 1, 0, &["v"]),
            produced(n as u64 + 3, 0, 0, &["v"]),
        ],
    )
    .await;
    assert_eq!(records(&sm.log()).len(), stored + 1);
}
