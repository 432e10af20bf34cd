//! The sending side of the inter-node port: one TCP connection per peer node, shared
//! by every Raft group (openraft-multi's `GroupRouter`), with requests multiplexed by
//! id. A connection that fails is dropped with every request waiting on it, and the
//! next request opens a new one.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft_multi::GroupRouter;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use super::wire::{self, Chunk, Frame, Kind, PingAnswer, RestRequest, SnapshotDone, RESPONSE};
use super::GroupId;
use crate::partition::{Proposal, Proposed, Refusal};
use crate::state_machine::PartitionSnapshot;
use crate::sync::lock;
use crate::{TypeConfig, Vote};

/// Bytes of a snapshot file sent per frame.
const CHUNK: usize = 1 << 20;

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Requests queued for a connection's writer.
const QUEUE: usize = 1024;

/// Why a forwarded write got no answer.
#[derive(Debug)]
pub enum ForwardError {
    /// It never reached the node: nothing was proposed.
    NotSent(io::Error),
    /// It was sent and its answer was lost: it may have been proposed.
    Lost(io::Error),
}

/// The peers of this node and the connections to them. Clones share them.
#[derive(Clone, Default)]
pub struct Peers {
    inner: Arc<Inner>,
}

struct Inner {
    addrs: Mutex<HashMap<u64, String>>,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
    /// What [`Conn::heard`] counts from.
    started: Instant,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            addrs: Mutex::default(),
            conns: Mutex::default(),
            next_id: AtomicU64::new(0),
            started: Instant::now(),
        }
    }
}

struct Conn {
    tx: mpsc::Sender<Frame>,
    waiting: Mutex<HashMap<u64, oneshot::Sender<Frame>>>,
    dead: AtomicBool,
    /// When the last frame came from the peer (milliseconds after `Inner::started`,
    /// plus one; 0: never).
    heard: AtomicU64,
    /// Set once the connection is given up: its reader and writer tasks end, and the
    /// socket closes with them.
    closed: tokio::sync::watch::Sender<bool>,
}

impl Conn {
    fn fail_all(&self) {
        self.dead.store(true, Ordering::Release);
        lock(&self.waiting).clear();
        self.closed.send_replace(true);
    }
}

impl Peers {
    /// No peers yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Where node `id` listens (openraft tells it with each new client).
    pub fn set_addr(&self, id: u64, addr: &str) {
        let mut addrs = lock(&self.inner.addrs);
        if addrs.get(&id).map(String::as_str) != Some(addr) {
            addrs.insert(id, addr.to_owned());
            // A moved node: the next request connects to its new address.
            if let Some(c) = lock(&self.inner.conns).remove(&id) {
                c.fail_all();
            }
        }
    }

    async fn conn(&self, target: u64) -> io::Result<Arc<Conn>> {
        if let Some(c) = lock(&self.inner.conns).get(&target) {
            if !c.dead.load(Ordering::Acquire) {
                return Ok(Arc::clone(c));
            }
        }
        let addr = lock(&self.inner.addrs)
            .get(&target)
            .cloned()
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no address known for node {target}"),
                )
            })?;
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addr))
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connecting to node {target} at {addr}"),
                )
            })??;
        stream.set_nodelay(true)?;
        let (mut rd, wr) = stream.into_split();
        let (tx, mut rx) = mpsc::channel::<Frame>(QUEUE);
        let (closed, closed_rx) = tokio::sync::watch::channel(false);
        let conn = Arc::new(Conn {
            tx,
            waiting: Mutex::new(HashMap::new()),
            dead: AtomicBool::new(false),
            heard: AtomicU64::new(0),
            closed,
        });
        // The writer holds the connection weakly: once nobody else does (replaced after
        // a failure, or the node's peers dropped), the channel closes and it ends.
        let writer_conn = Arc::downgrade(&conn);
        let mut writer_closed = closed_rx.clone();
        tokio::spawn(async move {
            let mut w = BufWriter::with_capacity(256 << 10, wr);
            loop {
                let f = tokio::select! {
                    f = rx.recv() => match f {
                        Some(f) => f,
                        None => return,
                    },
                    _ = writer_closed.wait_for(|c| *c) => return,
                };
                let mut ok = wire::write_frame(&mut w, &f).await.is_ok();
                // Everything queued meanwhile goes out with one flush.
                while ok {
                    match rx.try_recv() {
                        Ok(f) => ok = wire::write_frame(&mut w, &f).await.is_ok(),
                        Err(_) => break,
                    }
                }
                if !ok || w.flush().await.is_err() {
                    if let Some(c) = writer_conn.upgrade() {
                        c.fail_all();
                    }
                    return;
                }
            }
        });
        let reader_conn = Arc::downgrade(&conn);
        let mut reader_closed = closed_rx;
        let started = self.inner.started;
        tokio::spawn(async move {
            loop {
                let read = tokio::select! {
                    r = wire::read_frame(&mut rd) => r,
                    _ = reader_closed.wait_for(|c| *c) => return,
                };
                let Some(conn) = reader_conn.upgrade() else {
                    return;
                };
                match read {
                    Ok(Some(f)) => {
                        let now = started.elapsed().as_millis() as u64 + 1;
                        conn.heard.store(now, Ordering::Relaxed);
                        if let Some(tx) = lock(&conn.waiting).remove(&f.id) {
                            let _ = tx.send(f);
                        }
                    }
                    Ok(None) | Err(_) => {
                        conn.fail_all();
                        return;
                    }
                }
            }
        });
        lock(&self.inner.conns).insert(target, Arc::clone(&conn));
        Ok(conn)
    }

    /// Sends one request and waits (at most `timeout`) for its response payload.
    async fn call(
        &self,
        target: u64,
        kind: Kind,
        group: GroupId,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> io::Result<Vec<u8>> {
        let conn = self.conn(target).await?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&conn.waiting).insert(id, tx);
        let frame = Frame {
            id,
            kind: kind as u8,
            group,
            payload,
        };
        let gone = || {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                format!("connection to node {target} lost"),
            )
        };
        if conn.tx.send(frame).await.is_err() {
            conn.fail_all();
            return Err(gone());
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(f)) if f.kind == kind as u8 | RESPONSE => Ok(f.payload),
            Ok(Ok(f)) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "node {target} answered kind {} to kind {}",
                    f.kind, kind as u8
                ),
            )),
            Ok(Err(_)) => Err(gone()),
            Err(_) => {
                lock(&conn.waiting).remove(&id);
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("node {target} did not answer within {timeout:?}"),
                ))
            }
        }
    }

    /// A request whose response is `Result<Resp, String>`.
    async fn rpc<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        target: u64,
        kind: Kind,
        group: GroupId,
        req: &Req,
        timeout: Duration,
    ) -> io::Result<Resp> {
        let bytes = self
            .call(target, kind, group, wire::encode(req)?, timeout)
            .await?;
        wire::decode::<Result<Resp, String>>(&bytes)?
            .map_err(|e| io::Error::other(format!("node {target}: {e}")))
    }

    /// [`Peers::rpc`] for openraft: a peer that cannot be asked, or that cannot answer
    /// (its group gone, its Raft stopped), is unreachable for now; openraft backs off
    /// and retries.
    async fn raft_rpc<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        target: u64,
        kind: Kind,
        group: GroupId,
        req: &Req,
        option: RPCOption,
    ) -> Result<Resp, RPCError<TypeConfig>> {
        self.rpc(target, kind, group, req, option.hard_ttl())
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
    }

    /// Forwards a client write to node `target`, which proposes it to group `group`
    /// if it leads it (else refuses it, naming the leader it knows). The error says
    /// whether the proposal may have reached the node.
    pub async fn propose(
        &self,
        target: u64,
        group: GroupId,
        proposal: &Proposal,
        timeout: Duration,
    ) -> Result<Result<Proposed, Refusal>, ForwardError> {
        // Nothing is sent until a connection exists.
        self.conn(target).await.map_err(ForwardError::NotSent)?;
        let payload = wire::encode(proposal).map_err(ForwardError::NotSent)?;
        let bytes = self
            .call(target, Kind::Propose, group, payload, timeout)
            .await
            .map_err(ForwardError::Lost)?;
        match wire::decode::<Result<Result<Proposed, Refusal>, String>>(&bytes) {
            Ok(Ok(answer)) => Ok(answer),
            // The node answers a bare error only before proposing (no such group here,
            // a frame it cannot decode).
            Ok(Err(e)) => Err(ForwardError::NotSent(io::Error::other(format!(
                "node {target}: {e}"
            )))),
            Err(e) => Err(ForwardError::Lost(e)),
        }
    }

    /// Asks node `target`, the leader of group `group`, to replicate to node `node`
    /// from the beginning (`node` was rebuilt after damage).
    pub async fn allow_revert(&self, target: u64, group: GroupId, node: u64) -> io::Result<()> {
        self.rpc(
            target,
            Kind::AllowRevert,
            group,
            &node,
            Duration::from_secs(5),
        )
        .await
    }

    /// Whether node `target` answered anything within `within` on a connection that is
    /// still up (see [`Peers::ping`]).
    pub fn heard_within(&self, target: u64, within: Duration) -> bool {
        let Some(c) = lock(&self.inner.conns).get(&target).cloned() else {
            return false;
        };
        let heard = c.heard.load(Ordering::Relaxed);
        !c.dead.load(Ordering::Acquire)
            && heard > 0
            && self.inner.started.elapsed().as_millis() as u64 + 1 - heard
                <= within.as_millis() as u64
    }

    /// Asks node `target` whether it is there (any answer counts in
    /// [`Peers::heard_within`]), and to wake the groups `wake` that rest as led there.
    pub async fn ping(
        &self,
        target: u64,
        wake: &[GroupId],
        timeout: Duration,
    ) -> io::Result<PingAnswer> {
        self.rpc(target, Kind::Ping, 0, &wake, timeout).await
    }

    /// Asks node `target` to let groups rest that this node leads; the ones it agreed
    /// to (see [`super::rest`]).
    pub async fn rest(
        &self,
        target: u64,
        request: &RestRequest,
        timeout: Duration,
    ) -> io::Result<Vec<GroupId>> {
        self.rpc(target, Kind::Rest, 0, request, timeout).await
    }

    /// Sends an administration request to node `target` (see
    /// [`crate::cluster::admin`]); its encoded answer.
    pub async fn admin(
        &self,
        target: u64,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> io::Result<Vec<u8>> {
        self.call(target, Kind::Admin, 0, payload, timeout).await
    }

    async fn send_snapshot(
        &self,
        target: u64,
        group: GroupId,
        vote: Vote,
        snapshot: openraft::alias::SnapshotOf<TypeConfig, PartitionSnapshot>,
        timeout: Duration,
    ) -> io::Result<SnapshotResponse<TypeConfig>> {
        let dir = snapshot.snapshot.dir.clone();
        let key = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut files = Vec::new();
        let mut listing = tokio::fs::read_dir(&dir).await?;
        while let Some(item) = listing.next_entry().await? {
            if item.file_type().await?.is_file() {
                files.push(item.file_name().to_string_lossy().into_owned());
            }
        }
        files.sort();
        let mut sizes = Vec::with_capacity(files.len());
        for name in files {
            let size = send_file(self, target, group, &key, &dir, &name, timeout).await?;
            sizes.push((name, size));
        }
        let done = SnapshotDone {
            key,
            vote,
            last: snapshot.meta.last_log_id,
            meta: snapshot.meta,
            files: sizes,
        };
        self.rpc(target, Kind::SnapshotDone, group, &done, timeout)
            .await
    }
}

async fn send_file(
    peers: &Peers,
    target: u64,
    group: GroupId,
    key: &str,
    dir: &Path,
    name: &str,
    timeout: Duration,
) -> io::Result<u64> {
    let mut f = tokio::fs::File::open(dir.join(name)).await?;
    let mut offset = 0u64;
    loop {
        let mut data = vec![0u8; CHUNK];
        let mut filled = 0;
        while filled < CHUNK {
            let n = f.read(data.get_mut(filled..).unwrap_or_default()).await?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        data.truncate(filled);
        // The first chunk goes even when empty, so the file exists on the receiver.
        if filled > 0 || offset == 0 {
            let chunk = Chunk {
                key: key.to_owned(),
                file: name.to_owned(),
                offset,
                data,
            };
            peers
                .rpc::<_, ()>(target, Kind::SnapshotChunk, group, &chunk, timeout)
                .await?;
        }
        offset += filled as u64;
        if filled < CHUNK {
            return Ok(offset);
        }
    }
}

impl GroupRouter<TypeConfig, GroupId> for Peers {
    type SnapshotData = PartitionSnapshot;

    async fn append_entries(
        &self,
        target: u64,
        group_id: GroupId,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.raft_rpc(target, Kind::Append, group_id, &rpc, option)
            .await
    }

    async fn vote(
        &self,
        target: u64,
        group_id: GroupId,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.raft_rpc(target, Kind::Vote, group_id, &rpc, option)
            .await
    }

    async fn pre_vote(
        &self,
        target: u64,
        group_id: GroupId,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.raft_rpc(target, Kind::PreVote, group_id, &rpc, option)
            .await
    }

    async fn full_snapshot(
        &self,
        target: u64,
        group_id: GroupId,
        vote: Vote,
        snapshot: openraft::alias::SnapshotOf<TypeConfig, PartitionSnapshot>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        // A whole partition may take long to send: each frame gets the RPC's timeout.
        let send = self.send_snapshot(target, group_id, vote, snapshot, option.hard_ttl());
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            sent = send => sent.map_err(|e| StreamingError::Network(NetworkError::new(&e))),
        }
    }

    async fn transfer_leader(
        &self,
        target: u64,
        group_id: GroupId,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.raft_rpc(target, Kind::TransferLeader, group_id, &req, option)
            .await
    }
}

/// Sends one administration request to the node at `addr` on a connection of its own
/// (a node joining the cluster knows only an address); its encoded answer.
pub async fn admin_at(addr: &str, payload: Vec<u8>, timeout: Duration) -> io::Result<Vec<u8>> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let frame = Frame {
            id: 1,
            kind: Kind::Admin as u8,
            group: 0,
            payload,
        };
        wire::write_frame(&mut stream, &frame).await?;
        tokio::io::AsyncWriteExt::flush(&mut stream).await?;
        match wire::read_frame(&mut stream).await? {
            Some(f) if f.id == 1 && f.kind == Kind::Admin as u8 | RESPONSE => Ok(f.payload),
            Some(f) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{addr} answered kind {} to an administration request",
                    f.kind
                ),
            )),
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{addr} closed the connection without an answer"),
            )),
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("no answer from {addr}")))?
}
