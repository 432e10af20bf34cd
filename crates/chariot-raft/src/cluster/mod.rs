//! A node of a Chariot cluster: the metadata group every node takes part in, and the
//! partition groups it holds, kept in step with the metadata.
//!
//! The metadata group (group [`META_GROUP`]) has every node of the static bootstrap
//! (`--peers`) as a voter; each node initializes it with the same membership, which
//! openraft allows. Its replicated log holds [`MetaEvent`]s; every node folds them, in
//! order, into an [`Image`] (which logs exist, which group and replicas each partition
//! has), then reconciles: it opens the groups of the partitions it holds, lists a log
//! with the broker once it holds all of its partitions, and closes and removes what the
//! image no longer has. A create or delete of a log, on any node, is a proposal to the
//! metadata group (forwarded to its leader), answered once this node has folded and
//! reconciled it.
//!
//! On disk (`<data dir>/cluster/`): `meta/` (the metadata group's Raft log and state
//! machine) and `groups/<id>/` per partition group held here (`raft/`, `sm/`,
//! `incoming/`).
//!
//! Unfinished (the cluster issue): membership changes (`--join`, add, remove, moving
//! replicas), serving a log from a node that does not hold all its partitions, consumer
//! offsets and the Chariots log as replicated state.

pub mod image;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use chariot_broker::error::BrokerError;
use chariot_broker::partition::{Catalog, CatalogFuture, PartitionLog};
use chariot_broker::Broker;
use chariot_log::{Log, LogConfig, RecordBatchBuilder};
use openraft::async_runtime::WatchReceiver;
use openraft::impls::BasicNode;
use openraft::Raft;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use image::{Image, LogPlacement, MetaEvent, PartitionPlacement, Replica, META_GROUP};

use crate::command::Command;
use crate::error::RaftStoreError;
use crate::network::{
    partition_config, Group, GroupId, GroupNetwork, Groups, PartitionRaft, Peers, Quarantine,
};
use crate::partition::{propose, Acks, RaftPartition};
use crate::{PartitionStateMachine, RaftLogStore, Response};

/// How long a create or delete waits for this node to fold it once committed.
const FOLD_WAIT: Duration = Duration::from_secs(30);

/// What a cluster node needs to know.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This node's id.
    pub node_id: u64,
    /// Every node of the static bootstrap by id, with its inter-node address (this
    /// node's included); the same on every node.
    pub peers: BTreeMap<u64, String>,
    /// Where the cluster's files live (`<data dir>/cluster`).
    pub dir: PathBuf,
    /// The configuration of Raft logs (their sync policy is the node's).
    pub raft_log: LogConfig,
    /// The configuration of replicas' partition logs (their durability comes from the
    /// Raft log: they are never fsynced on their own).
    pub replica_log: LogConfig,
}

/// Why a cluster node could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// This node is not among the peers.
    #[error("node {0} is not among the peers (--peers must list every node, this one too)")]
    NotAPeer(u64),
    /// A group's files could not be opened.
    #[error("{0}")]
    Store(#[from] RaftStoreError),
    /// openraft refused its configuration or failed to start.
    #[error("raft: {0}")]
    Raft(String),
}

/// One group of this node: its Raft and its state machine.
#[derive(Clone)]
struct Member {
    raft: PartitionRaft,
    sm: PartitionStateMachine,
    /// Rebuilt after damage: it learns the group from its leader, never initializes it.
    rebuilt: bool,
}

/// A log whose groups this node holds.
struct OpenLog {
    created_at: u64,
    groups: Vec<GroupId>,
}

/// A running cluster node; see the module documentation.
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClusterConfig,
    raft_config: Arc<openraft::Config>,
    peers: Peers,
    groups: Groups,
    broker: Arc<Broker>,
    meta: Member,
    /// The image as folded and reconciled.
    image: watch::Sender<Arc<Image>>,
    open: tokio::sync::Mutex<BTreeMap<String, OpenLog>>,
    /// A log failed to open: the next fold tries again.
    retry: std::sync::atomic::AtomicBool,
    fold: Mutex<Option<JoinHandle<()>>>,
}

impl Cluster {
    /// Starts this node's part of the cluster: opens the metadata group (initializing
    /// it on first start), folds its log, opens the groups this node holds and lists
    /// their logs with `broker`, whose creates and deletes go through the cluster from
    /// now on. `groups` is what the inter-node listener serves; `peers` its sending
    /// side.
    pub async fn start(
        config: ClusterConfig,
        broker: Arc<Broker>,
        groups: Groups,
        peers: Peers,
    ) -> Result<Cluster, ClusterError> {
        if !config.peers.contains_key(&config.node_id) {
            return Err(ClusterError::NotAPeer(config.node_id));
        }
        for (id, addr) in &config.peers {
            peers.set_addr(*id, addr);
        }
        let raft_config =
            Arc::new(partition_config("chariot").map_err(|e| ClusterError::Raft(e.to_string()))?);
        let meta = open_member(
            &config,
            &raft_config,
            &peers,
            &groups,
            META_GROUP,
            config.dir.join("meta"),
        )
        .await?;
        let members: BTreeMap<u64, BasicNode> = config
            .peers
            .iter()
            .map(|(&id, addr)| (id, BasicNode { addr: addr.clone() }))
            .collect();
        if !meta.rebuilt {
            if let Err(e) = initialize(&meta.raft, members).await {
                groups.remove(META_GROUP);
                let _ = meta.raft.shutdown().await;
                return Err(e);
            }
        }
        let (image, _) = watch::channel(Arc::new(Image::default()));
        let inner = Arc::new(Inner {
            config,
            raft_config,
            peers,
            groups,
            broker: Arc::clone(&broker),
            meta,
            image,
            open: tokio::sync::Mutex::new(BTreeMap::new()),
            retry: std::sync::atomic::AtomicBool::new(false),
            fold: Mutex::new(None),
        });
        // What is applied here already, before anything is served.
        inner.fold_new().await;
        inner.remove_orphans().await;
        let weak = Arc::downgrade(&inner);
        let task = tokio::spawn(fold_loop(weak.clone(), inner.meta.raft.clone()));
        *inner.fold.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        broker.set_catalog(Arc::new(CatalogHandle(weak)));
        tracing::info!(
            node = inner.config.node_id,
            peers = inner.config.peers.len(),
            "cluster node started"
        );
        Ok(Cluster { inner })
    }

    /// The metadata as this node has folded it.
    pub fn image(&self) -> Arc<Image> {
        Arc::clone(&self.inner.image.borrow())
    }

    /// What this node knows of the cluster, for `GET /cluster`: the members, the
    /// metadata group's leader, and each partition's group, replicas and (where this
    /// node holds it) Raft state.
    pub fn status(&self) -> serde_json::Value {
        use serde_json::json;
        let raft_state = |raft: &PartitionRaft| {
            let m = raft.metrics().borrow_watched().clone();
            // On the leader: how far behind its last entry each replica is, in entries
            // (a replica it has not heard from yet counts from the start).
            let last = m.last_log_index.unwrap_or(0);
            let lag: Option<BTreeMap<String, u64>> = m.replication.as_ref().map(|r| {
                r.iter()
                    .filter(|(id, _)| **id != m.id)
                    .map(|(id, matched)| {
                        let at = matched.as_ref().map_or(0, |l| l.index + 1);
                        (id.to_string(), (last + 1).saturating_sub(at))
                    })
                    .collect()
            });
            json!({
                "state": format!("{:?}", m.state).to_lowercase(),
                "leader": m.current_leader,
                "term": m.current_term,
                "last_log_index": m.last_log_index,
                "last_applied": m.last_applied.map(|l| l.index),
                "replica_lag": lag,
            })
        };
        let image = self.image();
        let members: Vec<serde_json::Value> = self
            .inner
            .members()
            .into_iter()
            .map(|(id, addr)| json!({"id": id, "addr": addr}))
            .collect();
        let mut partitions = Vec::new();
        for (name, log) in &image.logs {
            for (p, placement) in log.partitions.iter().enumerate() {
                let mut entry = json!({
                    "log": name,
                    "partition": p,
                    "group": placement.group,
                    "replicas": placement.replicas.iter().map(|r| r.id).collect::<Vec<_>>(),
                });
                let group = self.inner.groups.get(placement.group);
                if let (Some(g), Some(obj)) = (group, entry.as_object_mut()) {
                    let mut local = raft_state(&g.raft);
                    let rebuilding = g.quarantine.filter(|q| q.active());
                    if let (Some(q), Some(l)) = (rebuilding, local.as_object_mut()) {
                        l.insert(
                            "rebuilding".into(),
                            json!({"reason": q.reason, "until_index": q.target}),
                        );
                    }
                    obj.insert("local".into(), local);
                }
                partitions.push(entry);
            }
        }
        json!({
            "node": self.inner.config.node_id,
            "members": members,
            "metadata": raft_state(&self.inner.meta.raft),
            "metadata_folded": image.folded,
            "partitions": partitions,
        })
    }

    /// Stops every group of this node (the metadata group last).
    pub async fn shutdown(&self) {
        let task = self
            .inner
            .fold
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(t) = task {
            t.abort();
            let _ = t.await;
        }
        // Every group registered, also one a fold stopped half-way had opened.
        self.inner.open.lock().await.clear();
        for g in self.inner.groups.ids() {
            if g != META_GROUP {
                self.inner.close_group(g, false).await;
            }
        }
        self.inner.close_group(META_GROUP, false).await;
    }
}

/// Initializes a group on its first start (every replica with the same members: see
/// the module documentation); a group that has a log or a vote already is left alone.
async fn initialize(
    raft: &PartitionRaft,
    members: BTreeMap<u64, BasicNode>,
) -> Result<(), ClusterError> {
    let initialized = raft
        .is_initialized()
        .await
        .map_err(|e| ClusterError::Raft(e.to_string()))?;
    if !initialized {
        match raft.initialize(members).await {
            Ok(()) => {}
            // Another replica's initialization reached this one first.
            Err(openraft::error::RaftError::APIError(
                openraft::error::InitializeError::NotAllowed(_),
            )) => {}
            Err(e) => return Err(ClusterError::Raft(e.to_string())),
        }
    }
    Ok(())
}

async fn open_member(
    config: &ClusterConfig,
    raft_config: &Arc<openraft::Config>,
    peers: &Peers,
    groups: &Groups,
    group: GroupId,
    dir: PathBuf,
) -> Result<Member, ClusterError> {
    // A snapshot half received before a stop is of no use: the sender starts over.
    let incoming = dir.join("incoming");
    let _ = tokio::fs::remove_dir_all(&incoming).await;
    let (store, sm, quarantine) = open_or_rebuild(config, group, &dir).await?;
    let raft = Raft::new(
        config.node_id,
        Arc::clone(raft_config),
        GroupNetwork::new(peers.clone(), group),
        store,
        sm.clone(),
    )
    .await
    .map_err(|e| ClusterError::Raft(e.to_string()))?;
    if let Some(q) = &quarantine {
        tokio::spawn(lift_when_caught_up(
            raft.clone(),
            peers.clone(),
            Arc::clone(q),
            group,
        ));
    }
    groups.insert(
        group,
        Group {
            raft: raft.clone(),
            incoming,
            quarantine: quarantine.clone(),
        },
    );
    Ok(Member {
        raft,
        sm,
        rebuilt: quarantine.is_some(),
    })
}

/// Opens a group's Raft log and state machine. If either is damaged (a flipped byte,
/// a truncated file: see [`RaftLogStore::suspect`]), the replica is rebuilt from its
/// peers instead: its files move to `damaged-<ms>/` (kept for the operator), an empty
/// store starts with the vote it had saved (so it never votes twice in a term), and it
/// is quarantined: it grants no vote until it holds again what it knew.
async fn open_or_rebuild(
    config: &ClusterConfig,
    group: GroupId,
    dir: &std::path::Path,
) -> Result<(RaftLogStore, PartitionStateMachine, Option<Arc<Quarantine>>), ClusterError> {
    let (raft_dir, sm_dir) = (dir.join("raft"), dir.join("sm"));
    let (reason, vote, target) = match RaftLogStore::open(&raft_dir, config.raft_log.clone()).await
    {
        Ok(store) => match PartitionStateMachine::open(&sm_dir, config.replica_log.clone()).await {
            Ok(sm) => match store.suspect().or_else(|| sm.suspect()) {
                None => return Ok((store, sm, None)),
                Some(why) if trusts_damaged_replicas() => {
                    tracing::warn!(
                        group,
                        why,
                        "{SEEDED_FAULT}: keeping a damaged replica as it is"
                    );
                    store.forget_lost_commits();
                    return Ok((store, sm, None));
                }
                Some(why) => (why, store.saved_vote(), store.known_index()),
            },
            Err(e) if e.is_damage() => (e.to_string(), store.saved_vote(), store.known_index()),
            Err(e) => return Err(e.into()),
        },
        Err(e) if e.is_damage() => {
            let d = raft_dir.clone();
            let vote = tokio::task::spawn_blocking(move || RaftLogStore::read_vote(&d))
                .await
                .ok()
                .flatten();
            (e.to_string(), vote, 0)
        }
        Err(e) => return Err(e.into()),
    };
    let aside = dir.join(format!("damaged-{}", chariot_broker::now_ms()));
    tracing::error!(
        group,
        reason,
        kept = %aside.display(),
        "replica files damaged: rebuilding it from its peers; it grants no vote until it \
         holds index {target} again"
    );
    let (r, m, a) = (raft_dir.clone(), sm_dir.clone(), aside.clone());
    tokio::task::spawn_blocking(move || -> Result<(), RaftStoreError> {
        std::fs::create_dir_all(&a).map_err(|e| RaftStoreError::io("create", &a, e))?;
        for (from, name) in [(&r, "raft"), (&m, "sm")] {
            if from.exists() {
                let to = a.join(name);
                std::fs::rename(from, &to)
                    .map_err(|e| RaftStoreError::io("move aside", from, e))?;
            }
        }
        RaftLogStore::seed_vote(&r, vote)?;
        crate::state_file::sync_dir(&a)
    })
    .await
    .map_err(|e| ClusterError::Raft(format!("rebuild task failed: {e}")))??;
    let store = RaftLogStore::open(&raft_dir, config.raft_log.clone()).await?;
    let sm = PartitionStateMachine::open(&sm_dir, config.replica_log.clone()).await?;
    Ok((store, sm, Some(Arc::new(Quarantine::new(reason, target)))))
}

/// The environment variable of the one seeded fault, for the test that shows the
/// history checker catching what it exists to catch: set to `trust-damaged-replicas`,
/// a replica whose files are damaged keeps them and votes as if nothing happened (the
/// behaviour that lost acknowledged writes on NATS). Never set it anywhere else.
pub const SEEDED_FAULT: &str = "CHARIOT_SEEDED_FAULT";

fn trusts_damaged_replicas() -> bool {
    std::env::var(SEEDED_FAULT).is_ok_and(|v| v == "trust-damaged-replicas")
}

/// Brings a rebuilt replica back: asks each leader it learns of to replicate to it from
/// the beginning (openraft's leader otherwise takes the shorter log for a bug and
/// waits), and lifts the quarantine once it follows a leader and has applied what it
/// knew before the damage.
async fn lift_when_caught_up(
    raft: PartitionRaft,
    peers: Peers,
    q: Arc<Quarantine>,
    group: GroupId,
) {
    let mut rx = raft.metrics();
    let mut asked: Option<(u64, tokio::time::Instant)> = None;
    loop {
        let (me, leader, applied) = {
            let m = rx.borrow_watched();
            (
                m.id,
                m.current_leader,
                m.last_applied.as_ref().map_or(0, |l| l.index),
            )
        };
        let leader = leader.filter(|&l| l != me);
        if leader.is_some() && applied >= q.target {
            q.lift();
            tracing::info!(
                group,
                index = q.target,
                "rebuilt replica caught up; it votes again"
            );
            return;
        }
        if let Some(l) = leader {
            // Asked again if the leader changed, or after a while (the request or its
            // effect may have been lost with a leader's restart).
            let due =
                asked.is_none_or(|(who, at)| who != l || at.elapsed() > Duration::from_secs(2));
            if due {
                asked = Some((l, tokio::time::Instant::now()));
                if let Err(e) = peers.allow_revert(l, group, me).await {
                    tracing::debug!(group, leader = l, error = %e, "asking the leader to resend");
                }
            }
        }
        let changed = tokio::time::timeout(Duration::from_millis(500), rx.changed()).await;
        if let Ok(Err(_)) = changed {
            return;
        }
    }
}

async fn fold_loop(inner: Weak<Inner>, meta: PartitionRaft) {
    let mut metrics = meta.metrics();
    loop {
        match inner.upgrade() {
            Some(i) => i.fold_new().await,
            None => return,
        }
        // Applied entries show in the metrics; the tick covers a missed change.
        if let Ok(Err(_)) = tokio::time::timeout(Duration::from_secs(1), metrics.changed()).await {
            tracing::error!("the metadata group stopped; this node follows no more changes");
            return;
        }
    }
}

impl Inner {
    /// Folds the metadata records applied since the last fold, reconciles, and
    /// publishes the new image.
    async fn fold_new(&self) {
        let current = Arc::clone(&self.image.borrow());
        let log = self.meta.sm.log();
        if log.next_offset() <= current.folded {
            // Nothing new; try again what failed to open (out of descriptors, say).
            if self.retry.swap(false, std::sync::atomic::Ordering::AcqRel) {
                self.reconcile(&current).await;
            }
            return;
        }
        let mut image = (*current).clone();
        let records = match read_values(log, image.folded).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the metadata log");
                return;
            }
        };
        for (offset, value) in records {
            if let image::Folded::Skipped(why) = image.fold(offset, &value) {
                tracing::debug!(offset, why, "metadata record skipped");
            }
        }
        self.reconcile(&image).await;
        self.image.send_replace(Arc::new(image));
    }

    /// Opens what `image` places here and is not open; closes (and removes) what is
    /// open and not in `image`.
    async fn reconcile(&self, image: &Image) {
        let mut open = self.open.lock().await;
        let gone: Vec<String> = open
            .iter()
            .filter(|(name, o)| image.logs.get(*name).map(|l| l.created_at) != Some(o.created_at))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            if let Some(o) = open.remove(&name) {
                match self.broker.detach_log(&name).await {
                    Ok(()) | Err(BrokerError::UnknownLog(_)) => {}
                    Err(e) => tracing::warn!(log = name, error = %e, "cannot unlist a deleted log"),
                }
                for g in o.groups {
                    self.close_group(g, true).await;
                }
            }
        }
        for (name, placement) in &image.logs {
            if open.contains_key(name) {
                continue;
            }
            match self.open_log(name, placement).await {
                Ok(o) => {
                    open.insert(name.clone(), o);
                }
                Err(e) => {
                    self.retry.store(true, std::sync::atomic::Ordering::Release);
                    tracing::error!(log = name, error = %e, "cannot open the log's groups; retrying")
                }
            }
        }
    }

    async fn open_log(
        &self,
        name: &str,
        placement: &LogPlacement,
    ) -> Result<OpenLog, ClusterError> {
        let me = self.config.node_id;
        let mut writers: Vec<Arc<dyn PartitionLog>> = Vec::new();
        let mut groups = Vec::new();
        for p in &placement.partitions {
            if !p.replicas.iter().any(|r| r.id == me) {
                continue;
            }
            for r in &p.replicas {
                self.peers.set_addr(r.id, &r.addr);
            }
            let member = match self.open_partition(p).await {
                Ok(m) => m,
                Err(e) => {
                    // The groups of this log opened so far close again: all or nothing.
                    for g in groups {
                        self.close_group(g, false).await;
                    }
                    return Err(e);
                }
            };
            groups.push(p.group);
            writers.push(Arc::new(RaftPartition::new(
                name,
                member.raft,
                member.sm,
                self.peers.clone(),
                p.group,
            )));
        }
        if writers.len() == placement.partitions.len() {
            if let Err(e) = self.broker.attach_log(name, writers) {
                tracing::error!(log = name, error = %e, "cannot list the replicated log");
            }
        } else {
            tracing::info!(
                log = name,
                held = writers.len(),
                partitions = placement.partitions.len(),
                "log not served on this node: it holds only some of its partitions"
            );
        }
        Ok(OpenLog {
            created_at: placement.created_at,
            groups,
        })
    }

    /// Opens this node's replica of one partition's group and, on its first start,
    /// initializes the group with the replicas the metadata names (a replica rebuilt
    /// after damage learns the group from its leader instead). A group that fails to
    /// initialize is closed again.
    async fn open_partition(&self, p: &PartitionPlacement) -> Result<Member, ClusterError> {
        let member = open_member(
            &self.config,
            &self.raft_config,
            &self.peers,
            &self.groups,
            p.group,
            self.group_dir(p.group),
        )
        .await?;
        if !member.rebuilt {
            let members = p
                .replicas
                .iter()
                .map(|r| {
                    (
                        r.id,
                        BasicNode {
                            addr: r.addr.clone(),
                        },
                    )
                })
                .collect();
            if let Err(e) = initialize(&member.raft, members).await {
                self.close_group(p.group, false).await;
                return Err(e);
            }
        }
        Ok(member)
    }

    fn group_dir(&self, group: GroupId) -> PathBuf {
        self.config.dir.join("groups").join(group.to_string())
    }

    async fn close_group(&self, group: GroupId, remove: bool) {
        if let Some(g) = self.groups.remove(group) {
            if let Err(e) = g.raft.shutdown().await {
                tracing::warn!(group, error = %e, "group did not stop cleanly");
            }
        }
        if remove {
            let dir = self.group_dir(group);
            if let Err(e) = tokio::fs::remove_dir_all(&dir).await {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a deleted group");
                }
            }
        }
    }

    /// Removes the directories of groups that the image had and no longer has (their
    /// log was deleted while this node was away).
    async fn remove_orphans(&self) {
        let me = self.config.node_id;
        let (next, open): (GroupId, Vec<GroupId>) = {
            let image = self.image.borrow();
            // Every group the image places here, opened or not (one that failed to
            // open keeps its files: they may be all that is left of its entries).
            let live = image
                .logs
                .values()
                .flat_map(|l| l.partitions.iter())
                .filter(|p| p.replicas.iter().any(|r| r.id == me))
                .map(|p| p.group)
                .collect();
            (image.next_group, live)
        };
        let root = self.config.dir.join("groups");
        let Ok(mut listing) = tokio::fs::read_dir(&root).await else {
            return;
        };
        while let Ok(Some(item)) = listing.next_entry().await {
            let Some(id) = item
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<GroupId>().ok())
            else {
                continue;
            };
            if id < next && !open.contains(&id) {
                tracing::info!(group = id, "removing the files of a deleted group");
                let _ = tokio::fs::remove_dir_all(item.path()).await;
            }
        }
    }

    /// Proposes `event` to the metadata group and waits until this node has folded it;
    /// the image then and the event's offset.
    async fn submit(&self, event: &MetaEvent) -> Result<(Arc<Image>, u64), BrokerError> {
        let value = serde_json::to_vec(event)
            .map_err(|e| BrokerError::Storage(format!("cannot encode {event:?}: {e}")))?;
        let mut b = RecordBatchBuilder::new();
        b.push_parts(chariot_broker::now_ms(), None, &value, &[]);
        let proposed = propose(
            &self.meta.raft,
            &self.peers,
            META_GROUP,
            Command::Append(b.build().into_vec()),
            Acks::Quorum,
            Duration::ZERO,
        )
        .await?;
        let Response::Appended { base_offset, .. } = proposed.response else {
            return Err(BrokerError::Storage(format!(
                "the metadata group answered {:?}",
                proposed.response
            )));
        };
        let mut rx = self.image.subscribe();
        let folded = tokio::time::timeout(FOLD_WAIT, rx.wait_for(|i| i.folded > base_offset)).await;
        match folded {
            Ok(Ok(image)) => Ok((Arc::clone(&image), base_offset)),
            Ok(Err(_)) => Err(BrokerError::ShuttingDown),
            Err(_) => Err(BrokerError::Indeterminate(format!(
                "committed, not applied on this node within {FOLD_WAIT:?}"
            ))),
        }
    }

    fn members(&self) -> BTreeMap<u64, String> {
        let m = self.meta.raft.metrics().borrow_watched().clone();
        m.membership_config
            .membership()
            .nodes()
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect()
    }

    async fn create_log(&self, name: &str, partitions: u32) -> Result<(), BrokerError> {
        let image = self.image.borrow().clone();
        if image.logs.contains_key(name) {
            return Err(BrokerError::LogExists(name.to_string()));
        }
        let replicas = image::place(&self.members(), partitions, image.next_group);
        let event = MetaEvent::CreateLog {
            name: name.to_string(),
            replicas,
        };
        let (image, offset) = self.submit(&event).await?;
        match image.logs.get(name) {
            Some(l) if l.created_at == offset => Ok(()),
            // Another create of the same name came first.
            _ => Err(BrokerError::LogExists(name.to_string())),
        }
    }

    async fn delete_log(&self, name: &str) -> Result<(), BrokerError> {
        let Some(placement) = self.image.borrow().logs.get(name).cloned() else {
            return Err(BrokerError::UnknownLog(name.to_string()));
        };
        // Seal every partition first: a replica that has not folded the delete yet
        // (or a leader that lags) can no longer acknowledge a write to it. A group not
        // held here is sealed by nobody (more than three nodes: unfinished).
        for p in &placement.partitions {
            let Some(g) = self.groups.get(p.group) else {
                continue;
            };
            let sealed = propose(
                &g.raft,
                &self.peers,
                p.group,
                Command::Seal,
                Acks::Quorum,
                Duration::ZERO,
            )
            .await?;
            if !matches!(sealed.response, Response::Applied | Response::Sealed) {
                return Err(BrokerError::Storage(format!(
                    "sealing group {} answered {:?}",
                    p.group, sealed.response
                )));
            }
        }
        self.submit(&MetaEvent::DeleteLog {
            name: name.to_string(),
        })
        .await
        .map(|_| ())
    }
}

/// Every record value of `log` from offset `from` on, read on the blocking pool.
async fn read_values(log: Arc<Log>, from: u64) -> Result<Vec<(u64, Vec<u8>)>, BrokerError> {
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        let mut next = from.max(log.earliest_offset());
        while next < log.next_offset() {
            let read = log.read(next, 1 << 20)?;
            if read.next_offset <= next {
                break;
            }
            for b in read.batches() {
                for r in b.records() {
                    if r.offset >= from {
                        out.push((r.offset, r.value.to_vec()));
                    }
                }
            }
            next = read.next_offset;
        }
        Ok(out)
    })
    .await
    .map_err(|e| BrokerError::Storage(format!("metadata read task failed: {e}")))?
}

/// The broker's way into the cluster (weak: the cluster holds the broker).
struct CatalogHandle(Weak<Inner>);

impl CatalogHandle {
    fn inner(&self) -> Result<Arc<Inner>, BrokerError> {
        self.0.upgrade().ok_or(BrokerError::ShuttingDown)
    }
}

impl Catalog for CatalogHandle {
    fn create_log<'a>(&'a self, name: &'a str, partitions: u32) -> CatalogFuture<'a> {
        Box::pin(async move { self.inner()?.create_log(name, partitions).await })
    }

    fn delete_log<'a>(&'a self, name: &'a str) -> CatalogFuture<'a> {
        Box::pin(async move { self.inner()?.delete_log(name).await })
    }
}
