//! The receiving side of the inter-node port: the Raft groups of this node by id, and
//! the loop that serves one connection (any byte stream: the accept loop that owns the
//! socket lives with the other listeners). Each request runs as its own task, so a slow
//! snapshot install does not hold up another group's heartbeats.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::raft::{AppendEntriesRequest, TransferLeaderRequest, VoteRequest};
use openraft::Raft;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;

use super::rest::{Quiet, Rest};
use super::wire::{self, Chunk, Frame, Kind, PingAnswer, RestRequest, SnapshotDone, RESPONSE};
use super::GroupId;
use crate::partition::{propose_local, Proposal, Proposed, Refusal};
use crate::state_machine::{PartitionSnapshot, PartitionStateMachine};
use crate::sync::{read, write};
use crate::TypeConfig;

/// A partition group's Raft handle.
pub type PartitionRaft = Raft<TypeConfig, PartitionStateMachine>;

/// One group of this node: its Raft handle, and where snapshots sent to it are
/// assembled (a directory of its own, on the state machine's file system, so that
/// installing links rather than copies).
#[derive(Clone)]
pub struct Group {
    /// The group's Raft.
    pub raft: PartitionRaft,
    /// Where incoming snapshots are assembled.
    pub incoming: PathBuf,
    /// Set while the replica is being rebuilt after damage: it grants no vote.
    pub quarantine: Option<Arc<Quarantine>>,
    /// Whether its timers run (see [`super::rest`]).
    pub rest: Arc<Rest>,
}

/// A replica rebuilt from its peers after damage in its files: it takes entries from
/// the leader like any follower but grants no vote (nor pre-vote) until it holds what
/// it knew before the damage, so that it never helps elect a leader that lacks an
/// entry it had acknowledged.
#[derive(Debug)]
pub struct Quarantine {
    /// What was found.
    pub reason: String,
    /// The index it must have applied again (what it knew committed or held).
    pub target: u64,
    lifted: std::sync::atomic::AtomicBool,
}

impl Quarantine {
    /// A replica quarantined for `reason` until it has applied `target`.
    pub fn new(reason: String, target: u64) -> Self {
        Self {
            reason,
            target,
            lifted: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether it still refuses to vote.
    pub fn active(&self) -> bool {
        !self.lifted.load(std::sync::atomic::Ordering::Acquire)
    }

    /// It holds what it knew again: it votes from now on.
    pub fn lift(&self) {
        self.lifted
            .store(true, std::sync::atomic::Ordering::Release);
    }
}

/// Answers the cluster administration frames ([`Kind::Admin`]): the cluster node
/// decodes, executes or forwards them.
pub trait AdminHandler: Send + Sync {
    /// The encoded answer to the encoded request `payload`.
    fn admin(&self, payload: Vec<u8>) -> Pin<Box<dyn Future<Output = Vec<u8>> + Send + '_>>;
}

/// The Raft groups this node serves. Clones share them.
#[derive(Clone, Default)]
pub struct Groups {
    map: Arc<RwLock<HashMap<GroupId, Group>>>,
    admin: Arc<RwLock<Option<Weak<dyn AdminHandler>>>>,
    /// Bumped by every insert and remove.
    changes: Arc<std::sync::atomic::AtomicU64>,
    /// What the groups at rest share (see [`super::rest`]).
    quiet: Arc<Quiet>,
}

impl Groups {
    /// No groups.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `group` under `id` (replacing any group with that id).
    pub fn insert(&self, id: GroupId, group: Group) {
        write(&self.map).insert(id, group);
        self.changes
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Stops serving group `id`; returns it.
    pub fn remove(&self, id: GroupId) -> Option<Group> {
        let removed = write(&self.map).remove(&id);
        self.changes
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        removed
    }

    /// What the groups at rest of this node share.
    pub fn quiet(&self) -> &Arc<Quiet> {
        &self.quiet
    }

    /// Moves with every insert and remove: a list taken from [`Groups::rests`] is
    /// current while this has not moved.
    pub fn changes(&self) -> u64 {
        self.changes.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The ids of the groups served here.
    pub fn ids(&self) -> Vec<GroupId> {
        read(&self.map).keys().copied().collect()
    }

    /// The rest control of every group served here but `except` (one lock, no copies
    /// of the groups).
    pub fn rests(&self, except: GroupId) -> Vec<(GroupId, Arc<Rest>)> {
        read(&self.map)
            .iter()
            .filter(|(id, _)| **id != except)
            .map(|(id, g)| (*id, Arc::clone(&g.rest)))
            .collect()
    }

    /// Hands administration frames to `handler` from now on.
    pub fn set_admin(&self, handler: Weak<dyn AdminHandler>) {
        *write(&self.admin) = Some(handler);
    }

    fn admin(&self) -> Option<Arc<dyn AdminHandler>> {
        read(&self.admin).as_ref().and_then(Weak::upgrade)
    }

    /// Group `id`, if served here.
    pub fn get(&self, id: GroupId) -> Option<Group> {
        read(&self.map).get(&id).cloned()
    }
}

/// Serves one inter-node connection until the peer closes it or sends a frame that is
/// not understood (then the connection is dropped: a peer that speaks something else
/// gets no answer to misread).
pub async fn serve_connection<S>(stream: S, groups: Groups) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, wr) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Frame>(1024);
    let writer = tokio::spawn(async move {
        let mut w = BufWriter::with_capacity(256 << 10, wr);
        while let Some(f) = rx.recv().await {
            wire::write_frame(&mut w, &f).await?;
            while let Ok(f) = rx.try_recv() {
                wire::write_frame(&mut w, &f).await?;
            }
            w.flush().await?;
        }
        io::Result::Ok(())
    });
    let result = loop {
        let frame = match wire::read_frame(&mut rd).await {
            Ok(Some(f)) => f,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        let Some(kind) = Kind::from_byte(frame.kind) else {
            break Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("inter-node frame of unknown kind {}", frame.kind),
            ));
        };
        let (groups, tx) = (groups.clone(), tx.clone());
        tokio::spawn(async move {
            let payload = handle(&groups, kind, frame.group, &frame.payload).await;
            let response = Frame {
                id: frame.id,
                kind: frame.kind | RESPONSE,
                group: frame.group,
                payload,
            };
            let _ = tx.send(response).await;
        });
    };
    drop(tx);
    let _ = writer.await;
    result
}

fn answer<T: Serialize>(r: Result<T, String>) -> Vec<u8> {
    wire::encode(&r).unwrap_or_else(|e| {
        wire::encode(&Err::<(), String>(format!("cannot encode the answer: {e}")))
            .unwrap_or_default()
    })
}

async fn handle(groups: &Groups, kind: Kind, group: GroupId, payload: &[u8]) -> Vec<u8> {
    match kind {
        Kind::Admin => {
            return match groups.admin() {
                Some(h) => h.admin(payload.to_vec()).await,
                None => answer::<()>(Err("this node is not a cluster member yet".into())),
            }
        }
        Kind::Ping => {
            return match wire::decode::<Vec<GroupId>>(payload) {
                Ok(wake) => answer::<PingAnswer>(Ok(ping(groups, &wake))),
                Err(e) => answer::<()>(Err(e.to_string())),
            }
        }
        Kind::Rest => {
            return match wire::decode::<RestRequest>(payload) {
                Ok(req) => answer::<Vec<GroupId>>(Ok(agree_to_rest(groups, &req))),
                Err(e) => answer::<()>(Err(e.to_string())),
            }
        }
        _ => {}
    }
    let Some(g) = groups.get(group) else {
        return answer::<()>(Err(format!("group {group} is not on this node")));
    };
    if matches!(kind, Kind::Vote | Kind::PreVote) {
        if let Some(q) = g.quarantine.as_ref().filter(|q| q.active()) {
            return answer::<()>(Err(format!(
                "this replica of group {group} is being rebuilt after damage ({}); it grants \
                 no vote until it holds index {} again",
                q.reason, q.target
            )));
        }
    }
    // A replica at rest wakes for anything but a heartbeat of the leader it rests
    // under, after the request (an append from a leader restarts its election timer
    // first); one asked for a vote leaves the campaign to the asker for a while. A
    // forwarded write wakes the group in `propose_local`, once this node is known to
    // lead it (a follower that only refuses stays at rest); a leadership transfer wakes
    // only its target (the others wake by the new leader's first append).
    let wake = match kind {
        Kind::Append | Kind::Vote | Kind::PreVote | Kind::Propose | Kind::TransferLeader => None,
        _ => Some(g.rest.busy()),
    };
    let answered = handle_group(&g, kind, payload).await;
    drop(wake);
    answered
}

/// An append's next step on this replica, once it is handled: one resting wakes for
/// entries or another term, and one that holds its election (see
/// [`super::rest::ELECT_HOLD`]) has heard from a leader.
fn after_append(g: &Group, req_term: u64, entries: bool, accepted: bool) {
    if !accepted {
        return;
    }
    match g.rest.resting() {
        Some((term, _)) if entries || term != req_term => g.rest.wake_by_leader(),
        _ => g.rest.heard_leader(),
    }
}

/// Answers a peer's ping: wakes the groups it asks for that rest as led here (a
/// follower of theirs woke alone), and names the groups served here whose Raft
/// stopped.
fn ping(groups: &Groups, wake: &[GroupId]) -> PingAnswer {
    for id in wake {
        if let Some(g) = groups.get(*id) {
            if g.rest.resting_leader().is_some() {
                g.rest.wake();
            }
        }
    }
    PingAnswer {
        stopped: groups.quiet.stopped(),
        leaving: groups.quiet.leaving(),
    }
}

/// Longer than an election takes: a resting replica asked for a vote (or whose leader
/// went away while another replica was chosen to campaign) wakes this much later, so
/// that it does not split the vote; a leader elected meanwhile wakes it sooner with its
/// first entry.
pub const CAMPAIGN_STAGGER: Duration = Duration::from_millis(1500);

/// A follower's side of [`Kind::Rest`]: the groups it lets rest, because it follows
/// `req.leader` in that term and holds, and knows committed, the leader's last index.
fn agree_to_rest(groups: &Groups, req: &RestRequest) -> Vec<GroupId> {
    let mut agreed = Vec::new();
    // A leader this node counts as gone would never be noticed going away again; a
    // node shutting down lets nothing rest.
    if !groups.quiet.is_live(req.leader) || groups.quiet.leaving() {
        return agreed;
    }
    for ask in &req.groups {
        let Some(g) = groups.get(ask.group) else {
            continue;
        };
        if g.quarantine.as_ref().is_some_and(|q| q.active()) {
            continue;
        }
        let caught_up = |_started| {
            let m = g.raft.metrics().borrow_watched().clone();
            m.state == openraft::ServerState::Follower
                && m.current_leader == Some(req.leader)
                && m.current_term == ask.term
                && m.last_log_index == Some(ask.index)
                && m.local_committed.as_ref().map(|l| l.index) == Some(ask.index)
        };
        if g.rest.sleep_if(ask.term, ask.index, false, caught_up) {
            agreed.push(ask.group);
        }
    }
    agreed
}

async fn handle_group(g: &Group, kind: Kind, payload: &[u8]) -> Vec<u8> {
    match kind {
        Kind::Append => match wire::decode::<AppendEntriesRequest<TypeConfig>>(payload) {
            Ok(req) => {
                let (term, entries) = (req.vote.leader_id().term, !req.entries.is_empty());
                let r = g.raft.append_entries(req).await;
                let accepted = matches!(
                    r,
                    Ok(openraft::raft::AppendEntriesResponse::Success
                        | openraft::raft::AppendEntriesResponse::PartialSuccess(_)
                        | openraft::raft::AppendEntriesResponse::Conflict)
                );
                after_append(g, term, entries, accepted);
                answer(r.map_err(|e| e.to_string()))
            }
            Err(e) => answer::<()>(Err(e.to_string())),
        },
        Kind::Vote => match wire::decode::<VoteRequest<TypeConfig>>(payload) {
            Ok(req) => {
                let r = answer(g.raft.vote(req).await.map_err(|e| e.to_string()));
                g.rest.wake_later(CAMPAIGN_STAGGER, false);
                r
            }
            Err(e) => answer::<()>(Err(e.to_string())),
        },
        Kind::PreVote => match wire::decode::<VoteRequest<TypeConfig>>(payload) {
            Ok(req) => {
                let r = answer(g.raft.pre_vote(req).await.map_err(|e| e.to_string()));
                g.rest.wake_later(CAMPAIGN_STAGGER, false);
                r
            }
            Err(e) => answer::<()>(Err(e.to_string())),
        },
        Kind::TransferLeader => match wire::decode::<TransferLeaderRequest<TypeConfig>>(payload) {
            Ok(req) => {
                let target = *req.to_node_id() == g.raft.metrics().borrow_watched().id;
                let _busy = target.then(|| g.rest.busy());
                answer(
                    g.raft
                        .handle_transfer_leader(req)
                        .await
                        .map_err(|e| e.to_string()),
                )
            }
            Err(e) => answer::<()>(Err(e.to_string())),
        },
        Kind::SnapshotChunk => match wire::decode::<Chunk>(payload) {
            Ok(chunk) => answer(
                write_chunk(&g.incoming, chunk)
                    .await
                    .map_err(|e| e.to_string()),
            ),
            Err(e) => answer::<()>(Err(e.to_string())),
        },
        Kind::Propose => match wire::decode::<Proposal>(payload) {
            // One hop: a write forwarded here is proposed here or refused, never
            // forwarded again.
            Ok(p) => answer::<Result<Proposed, Refusal>>(Ok(propose_local(
                &g.rest,
                p.command,
                p.acks,
                Duration::from_millis(p.all_wait_ms),
            )
            .await
            .map_err(|e| Refusal::from(&e)))),
            Err(e) => answer::<()>(Err(e.to_string())),
        },
        Kind::AllowRevert => match wire::decode::<u64>(payload) {
            Ok(node) => answer(
                match g.raft.trigger().allow_next_revert(&node, true).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(fatal) => Err(fatal.to_string()),
                },
            ),
            Err(e) => answer::<()>(Err(e.to_string())),
        },
        Kind::SnapshotDone => match wire::decode::<SnapshotDone>(payload) {
            Ok(done) => answer(install(g, done).await),
            Err(e) => answer::<()>(Err(e.to_string())),
        },
        Kind::Admin | Kind::Rest | Kind::Ping => answer::<()>(Err("handled above".into())),
    }
}

/// A file or transfer name that stays inside its directory.
fn plain(name: &str) -> io::Result<&str> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\0');
    if ok {
        Ok(name)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("snapshot name {name:?} is not a plain file name"),
        ))
    }
}

async fn write_chunk(incoming: &Path, chunk: Chunk) -> io::Result<()> {
    let dir = incoming.join(plain(&chunk.key)?);
    let path = dir.join(plain(&chunk.file)?);
    tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::FileExt;
        std::fs::create_dir_all(&dir)?;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(chunk.offset == 0)
            .open(&path)?;
        f.write_all_at(&chunk.data, chunk.offset)
    })
    .await
    .map_err(io::Error::other)?
}

async fn install(
    g: &Group,
    done: SnapshotDone,
) -> Result<openraft::raft::SnapshotResponse<TypeConfig>, String> {
    let key = plain(&done.key).map_err(|e| e.to_string())?;
    let dir = g.incoming.join(key);
    // Every file, at its full length: a transfer cut short is not installed.
    for (name, size) in &done.files {
        let path = dir.join(plain(name).map_err(|e| e.to_string())?);
        let len = tokio::fs::metadata(&path)
            .await
            .map_err(|e| format!("snapshot file {}: {e}", path.display()))?
            .len();
        if len != *size {
            return Err(format!(
                "snapshot file {} has {len} bytes, {size} were sent",
                path.display()
            ));
        }
    }
    let snapshot = openraft::alias::SnapshotOf::<TypeConfig, PartitionSnapshot> {
        meta: done.meta,
        snapshot: PartitionSnapshot { dir: dir.clone() },
    };
    let installed = g
        .raft
        .install_full_snapshot(done.vote, snapshot)
        .await
        .map_err(|e| e.to_string());
    // Installed (its files are linked into the partition) or refused: either way the
    // received copy has served.
    let _ = tokio::fs::remove_dir_all(&dir).await;
    installed
}
