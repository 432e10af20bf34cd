//! Tests of the Raft log store's reads, flush ordering and restarts.
#![allow(clippy::unwrap_used)]
use openraft::impls::leader_id_adv::LeaderId;
use openraft::type_config::TypeConfigExt;
use openraft::EntryPayload;

use super::*;

fn entry(i: u64) -> Entry {
    Entry {
        log_id: LogId::new(
            LeaderId {
                term: 1,
                node_id: 1,
            },
            i,
        ),
        payload: EntryPayload::Blank,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_join_the_log_and_the_unflushed_entries() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = RaftLogStore::open(dir.path(), LogConfig::default())
        .await
        .unwrap();
    let (tx, rx) = TypeConfig::oneshot();
    store
        .append((0..10).map(entry), IOFlushed::signal(tx))
        .await
        .unwrap();
    rx.await.unwrap().unwrap();
    // As if 10 and 11 were appended and their group commit had not completed.
    {
        let mut st = lock(&store.inner.state);
        st.unflushed.insert(10, entry(10));
        st.unflushed.insert(11, entry(11));
        st.last = Some(entry(11).log_id);
    }
    let idx = |v: Vec<Entry>| v.iter().map(|e| e.log_id.index).collect::<Vec<_>>();
    // Wholly below the unflushed entries: from the log only.
    assert_eq!(
        idx(store.try_get_log_entries(2..5).await.unwrap()),
        [2, 3, 4]
    );
    assert_eq!(
        idx(store.try_get_log_entries(8..12).await.unwrap()),
        [8, 9, 10, 11]
    );
    assert_eq!(idx(store.try_get_log_entries(11..).await.unwrap()), [11]);
    assert!(store.try_get_log_entries(12..20).await.unwrap().is_empty());
}

async fn flushed(store: &mut RaftLogStore, entries: Vec<Entry>) {
    let (tx, rx) = TypeConfig::oneshot();
    store.append(entries, IOFlushed::signal(tx)).await.unwrap();
    rx.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_vote_comes_after_the_appends_queued_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = RaftLogStore::open(dir.path(), LogConfig::default())
        .await
        .unwrap();
    for round in 0..20u64 {
        let (tx, mut rx) = TypeConfig::oneshot();
        store
            .append((round * 5..round * 5 + 5).map(entry), IOFlushed::signal(tx))
            .await
            .unwrap();
        store.save_vote(&Vote::new(round + 1, 1)).await.unwrap();
        // openraft takes the vote's flush as the flush of everything before it.
        assert!(
            matches!(rx.try_recv(), Ok(Ok(()))),
            "round {round}: the vote was saved before the appends were durable"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_larger_than_a_segment_is_split_into_several_writes() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 1 << 20,
        max_batch_bytes: 256 << 10,
        ..LogConfig::default()
    };
    let mut store = RaftLogStore::open(dir.path(), config.clone())
        .await
        .unwrap();
    let big = |i: u64| Entry {
        log_id: LogId::new(
            LeaderId {
                term: 1,
                node_id: 1,
            },
            i,
        ),
        payload: EntryPayload::Normal(crate::Command::Append(vec![i as u8; 200 << 10])),
    };
    flushed(&mut store, (0..12).map(big).collect()).await;
    drop(store);
    let mut store = RaftLogStore::open(dir.path(), config).await.unwrap();
    let got = store.try_get_log_entries(0..).await.unwrap();
    assert_eq!(got, (0..12).map(big).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_started_past_zero_reopens_and_can_be_cut_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = RaftLogStore::open(dir.path(), LogConfig::default())
        .await
        .unwrap();
    flushed(&mut store, (5..9).map(entry).collect()).await;
    drop(store);
    let mut store = RaftLogStore::open(dir.path(), LogConfig::default())
        .await
        .unwrap();
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(entry(8).log_id));
    assert_eq!(store.try_get_log_entries(0..).await.unwrap().len(), 4);
    store.truncate_after(None).await.unwrap();
    assert_eq!(store.get_log_state().await.unwrap().last_log_id, None);
    flushed(&mut store, (0..2).map(entry).collect()).await;
    assert_eq!(store.try_get_log_entries(0..).await.unwrap().len(), 2);
}
