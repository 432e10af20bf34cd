//! The Raft log store under kill -9: a child process appends entries, saves votes,
//! truncates its tail, purges (inside the log and past its end, which restarts the
//! log) and prints each operation once it has returned (an append: once its flush was
//! reported). The parent kills it with SIGKILL at random moments, reopens the store and
//! checks that every flushed entry not since truncated or purged is there with its
//! term, the entries are contiguous, and the vote and purged id are at least the last
//! ones saved; then a new child goes on in the same directory.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use chariot_log::LogConfig;
use chariot_raft::{Entry, LogId, RaftLogStore, TypeConfig, Vote};
use openraft::impls::leader_id_adv::LeaderId;
use openraft::storage::{IOFlushed, RaftLogReader, RaftLogStorage};
use openraft::type_config::TypeConfigExt;
use openraft::EntryPayload;
use rand::{Rng, SeedableRng};

const CHILD_ENV: &str = "CHARIOT_RAFT_STORE_CHILD_DIR";

fn config() -> LogConfig {
    LogConfig {
        // Rolls every 64 entries: purges drop segments, kills land during rolls.
        segment_bytes: 1 << 20,
        index_max_entries: 64,
        max_batch_bytes: 512 << 10,
        ..LogConfig::default()
    }
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(LeaderId { term, node_id: 1 }, index)
}

fn say(line: String) {
    let mut o = std::io::stdout().lock();
    writeln!(o, "{line}").unwrap();
    o.flush().unwrap();
}

async fn entry_at(store: &mut RaftLogStore, index: u64) -> Option<Entry> {
    store
        .try_get_log_entries(index..=index)
        .await
        .unwrap()
        .pop()
}

#[test]
#[ignore = "child process of kill9_keeps_flushed_entries_votes_and_purges"]
fn store_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut store = RaftLogStore::open(&dir, config()).await.unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(u64::from(std::process::id()));
        let mut term = store
            .read_vote()
            .await
            .unwrap()
            .map_or(1, |v| v.leader_id.term);
        loop {
            let state = store.get_log_state().await.unwrap();
            let purged = state.last_purged_log_id.map(|l| l.index);
            let next = state.last_log_id.map_or(0, |l| l.index + 1);
            let first = purged.map_or(0, |p| p + 1);
            let roll = rng.gen_range(0..100);
            if roll < 80 {
                let n = rng.gen_range(1..=5);
                let entries: Vec<Entry> = (next..next + n)
                    .map(|i| Entry {
                        log_id: log_id(term, i),
                        payload: EntryPayload::Normal(chariot_raft::Command::Append(
                            vec![(i % 251) as u8; rng.gen_range(1..2000)],
                        )),
                    })
                    .collect();
                let (tx, rx) = TypeConfig::oneshot();
                store.append(entries, IOFlushed::signal(tx)).await.unwrap();
                rx.await.unwrap().unwrap();
                for i in next..next + n {
                    say(format!("ACK {i} {term}"));
                }
            } else if roll < 85 {
                term += 1;
                say(format!("VOTING {term}"));
                store.save_vote(&Vote::new(term, 1)).await.unwrap();
                say(format!("VOTE {term}"));
            } else if roll < 92 {
                if next <= first {
                    continue;
                }
                let keep = next - 1 - rng.gen_range(0..(next - first).min(6));
                let Some(e) = entry_at(&mut store, keep).await else {
                    panic!("entry {keep} missing");
                };
                // A new leader's entries replace the cut ones: a new term first.
                term += 1;
                store.save_vote(&Vote::new(term, 1)).await.unwrap();
                say(format!("VOTE {term}"));
                say(format!("TRUNCATING {keep}"));
                store.truncate_after(Some(e.log_id)).await.unwrap();
                say(format!("TRUNC {keep}"));
            } else if roll < 99 {
                if next <= first + 1 {
                    continue;
                }
                let upto = rng.gen_range(first..next - 1);
                let e = entry_at(&mut store, upto).await.unwrap();
                say(format!("PURGING {upto}"));
                store.purge(e.log_id).await.unwrap();
                say(format!("PURGE {upto}"));
            } else {
                // Past the end, as after a snapshot installed on a follower.
                let upto = next + rng.gen_range(0..10);
                say(format!("PURGING {upto}"));
                store.purge(log_id(term, upto)).await.unwrap();
                say(format!("PURGE {upto}"));
            }
        }
    });
}

#[derive(Default)]
struct Model {
    /// index -> term of entries flushed and not since cut or purged.
    entries: BTreeMap<u64, u64>,
    vote: u64,
    purged: Option<u64>,
}

#[test]
fn kill9_keeps_flushed_entries_votes_and_purges() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::thread_rng();
    let mut model = Model::default();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (mut acks, mut truncs, mut purges) = (0usize, 0usize, 0usize);
    for round in 0..20 {
        let mut child = Command::new(&exe)
            .args(["store_child", "--exact", "--ignored", "--nocapture"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<_>>()
        });
        std::thread::sleep(Duration::from_millis(rng.gen_range(100..500)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let lines = reader.join().unwrap();
        // What may be half done at the kill: a truncation or a purge under way.
        let (mut cutting, mut purging) = (None, None);
        for line in &lines {
            let mut w = line.split_whitespace();
            let (Some(op), Some(n)) = (w.next(), w.next().and_then(|n| n.parse::<u64>().ok()))
            else {
                continue;
            };
            match op {
                "ACK" => {
                    let Some(term) = w.next().and_then(|t| t.parse::<u64>().ok()) else {
                        continue;
                    };
                    model.entries.insert(n, term);
                    acks += 1;
                }
                "VOTE" => model.vote = model.vote.max(n),
                "TRUNCATING" => cutting = Some(n),
                "TRUNC" => {
                    model.entries.retain(|&i, _| i <= n);
                    cutting = None;
                    truncs += 1;
                }
                "PURGING" => purging = Some(n),
                "PURGE" => {
                    model.entries.retain(|&i, _| i > n);
                    model.purged = model.purged.max(Some(n));
                    purging = None;
                    purges += 1;
                }
                _ => {}
            }
        }
        rt.block_on(async {
            let mut store = RaftLogStore::open(dir.path(), config()).await.unwrap();
            let vote = store
                .read_vote()
                .await
                .unwrap()
                .map_or(0, |v| v.leader_id.term);
            assert!(
                vote >= model.vote,
                "round {round}: vote {vote} < saved {}",
                model.vote
            );
            let state = store.get_log_state().await.unwrap();
            let purged = state.last_purged_log_id.map(|l| l.index);
            assert!(
                purged >= model.purged,
                "round {round}: purged {purged:?} < saved {:?}",
                model.purged
            );
            if let (Some(p), Some(last)) = (purged, state.last_log_id) {
                assert!(
                    last.index >= p,
                    "round {round}: last {last:?} below purged {p}"
                );
            }
            let first = purged.map_or(0, |p| p + 1);
            let entries = store.try_get_log_entries(first..).await.unwrap();
            let actual: BTreeMap<u64, u64> = entries
                .iter()
                .map(|e| (e.log_id.index, e.log_id.leader_id.term))
                .collect();
            for (k, e) in entries.iter().enumerate() {
                assert_eq!(e.log_id.index, first + k as u64, "round {round}: a hole");
            }
            assert_eq!(
                entries.last().map(|e| e.log_id),
                state.last_log_id.filter(|l| Some(l.index) != purged),
                "round {round}: last log id"
            );
            for (&i, &term) in &model.entries {
                let gone_by_request = cutting.is_some_and(|k| i > k)
                    || purging.is_some_and(|k| i <= k)
                    || purged.is_some_and(|p| i <= p);
                if gone_by_request {
                    continue;
                }
                assert_eq!(
                    actual.get(&i),
                    Some(&term),
                    "round {round}: flushed entry {i} (term {term}) lost"
                );
            }
            // The next child starts from what is there.
            model.entries = actual;
            model.purged = purged;
            model.vote = vote;
        });
    }
    println!("acked {acks}, truncations {truncs}, purges {purges}, kill rounds 20");
    assert!(acks > 100, "the children flushed only {acks} entries");
}
