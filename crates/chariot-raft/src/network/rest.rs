//! Idle groups at rest: a partition group with nothing to replicate stops its timers, so
//! that a thousand idle partitions cost no heartbeats and no ticks (CockroachDB calls
//! this quiescence, TiKV hibernation).
//!
//! A group's timers are openraft's tick: the leader's heartbeats and a follower's
//! election timeout both run on it. The node-level [`crate::cluster`] task that drives
//! rest does three things:
//! - it lets a leader whose group is caught up on every live replica, and has not moved
//!   for a while, ask the followers to rest ([`Kind::Rest`](super::wire::Kind::Rest));
//!   a follower agrees only if it follows that leader in that term and holds and knows
//!   committed everything the leader has, and then stops its tick; the leader stops its
//!   own once every live follower agreed;
//! - it pings every peer ([`Kind::Ping`](super::wire::Kind::Ping)); when a node stops
//!   answering, one replica of each resting group it led wakes at once (its election
//!   timeout has long passed, so it campaigns, with pre-vote, at its next tick) and the
//!   others later, so that they do not split the vote; when a node answers again, the
//!   groups led here that it belongs to wake to catch it up;
//! - every write, membership change or leadership transfer wakes its group first, and a
//!   resting replica that receives anything but a heartbeat from its leader wakes.
//!
//! A follower that wakes alone (not for an append of its leader) finds its election
//! timeout long passed: left to itself it would campaign at its next tick and depose a
//! leader that merely rests. So while that leader answers pings, the follower holds its
//! election ([`ELECT_HOLD`] at most, until its leader's first append) and asks the
//! leader, with its next ping, to wake the group. A ping's answer names the groups of
//! the answering node whose Raft stopped (a fatal storage error, say), so that the
//! followers resting under it elect another leader although the node still answers; a
//! node shutting down says so: it counts as gone for the groups it led, and groups it
//! belongs to do not rest meanwhile.
//!
//! Rest only ever stops timers: Raft's safety does not rest on them, and a group woken
//! needlessly merely heartbeats again until it rests once more.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;

use super::server::PartitionRaft;
use super::GroupId;
use crate::sync::{lock, read, write};

/// Longest a follower woken alone holds its election while its leader answers pings
/// (see the module documentation): ample for a ping and the heartbeat it brings.
pub const ELECT_HOLD: Duration = Duration::from_secs(2);

/// What the groups at rest of one node share: which peers answer, what to tell them with
/// the next ping, what to answer theirs.
#[derive(Debug, Default)]
pub struct Quiet {
    /// Peers by id: whether they answered lately (kept by the rest driver; a peer not
    /// looked at yet counts as live).
    live: RwLock<HashMap<u64, bool>>,
    /// Groups woken here as followers, by their leader: it should wake them too.
    nudges: Mutex<HashMap<u64, BTreeSet<GroupId>>>,
    /// Groups served here whose Raft stopped.
    stopped: RwLock<Vec<GroupId>>,
    /// Peers whose last ping answer said they shut down.
    peers_leaving: RwLock<BTreeSet<u64>>,
    /// This node is shutting down.
    leaving: AtomicBool,
}

impl Quiet {
    /// Whether peer `node` counts as live.
    pub fn is_live(&self, node: u64) -> bool {
        read(&self.live).get(&node).copied().unwrap_or(true)
    }

    /// Records whether peer `node` answers.
    pub fn set_live(&self, node: u64, live: bool) {
        write(&self.live).insert(node, live);
    }

    /// Whether peer `node` said it shuts down (it may still answer): it counts as gone
    /// for the groups it led, and groups it belongs to do not rest.
    pub fn is_leaving(&self, node: u64) -> bool {
        read(&self.peers_leaving).contains(&node)
    }

    /// Records whether peer `node` said it shuts down.
    pub fn set_leaving(&self, node: u64, leaving: bool) {
        let mut l = write(&self.peers_leaving);
        if leaving {
            l.insert(node);
        } else {
            l.remove(&node);
        }
    }

    /// Whether peer `node` answers and stays: one that may lead, or campaign.
    pub fn is_up(&self, node: u64) -> bool {
        self.is_live(node) && !self.is_leaving(node)
    }

    /// Forgets the peers not in `nodes`.
    pub fn retain(&self, nodes: &[u64]) {
        write(&self.live).retain(|id, _| nodes.contains(id));
        write(&self.peers_leaving).retain(|id| nodes.contains(id));
        lock(&self.nudges).retain(|id, _| nodes.contains(id));
    }

    /// Asks `leader`, with the next ping, to wake `group`.
    fn nudge(&self, leader: u64, group: GroupId) {
        lock(&self.nudges).entry(leader).or_default().insert(group);
    }

    /// The groups to ask `leader` to wake (forgotten here).
    pub fn take_nudges(&self, leader: u64) -> Vec<GroupId> {
        lock(&self.nudges)
            .remove(&leader)
            .map(|s| s.into_iter().collect())
            .unwrap_or_default()
    }

    /// Sets the groups served here whose Raft stopped.
    pub fn set_stopped(&self, groups: Vec<GroupId>) {
        *write(&self.stopped) = groups;
    }

    /// The groups served here whose Raft stopped.
    pub fn stopped(&self) -> Vec<GroupId> {
        read(&self.stopped).clone()
    }

    /// This node shuts down: its pings say so from now on, and it lets nothing rest.
    pub fn leave(&self) {
        self.leaving.store(true, Ordering::Release);
    }

    /// Whether this node shuts down.
    pub fn leaving(&self) -> bool {
        self.leaving.load(Ordering::Acquire)
    }
}

/// Whether a group's timers run, and the handle that starts and stops them.
pub struct Rest {
    raft: PartitionRaft,
    group: GroupId,
    quiet: Arc<Quiet>,
    state: Mutex<State>,
    /// Mirrors `state.hold != 0`, for checks without the lock.
    held: AtomicBool,
    /// Mirrors `state.resting.is_some()`, for scans that skip resting groups.
    asleep: std::sync::atomic::AtomicBool,
    /// Bumped by every change, so that a wake planned for later is dropped if the
    /// group rested again (under a new leader) or woke meanwhile.
    epoch: AtomicU64,
}

#[derive(Default)]
struct State {
    /// `Some((term, index))` while at rest: the term it rested in and its last index.
    resting: Option<(u64, u64)>,
    /// It rested as the group's leader.
    leading: bool,
    /// Writes and changes in progress on this replica: it does not rest meanwhile.
    busy: usize,
    /// Writes and changes started on this replica so far.
    started: u64,
    /// Non-zero while its election is held (see [`ELECT_HOLD`]): which hold.
    hold: u64,
}

/// Why a group wakes.
#[derive(Clone, Copy)]
enum Why {
    /// An append of its leader.
    Leader,
    /// Its leader is gone: it may campaign at once.
    Campaign,
    /// Anything else: a follower holds its election while its leader answers.
    Alone,
}

impl std::fmt::Debug for Rest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rest")
            .field("resting", &self.resting())
            .finish_non_exhaustive()
    }
}

/// A write or change in progress (see [`Rest::busy`]).
pub struct Busy(Arc<Rest>);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.busy = s.busy.saturating_sub(1);
    }
}

impl Rest {
    /// Group `group`'s rest control on a node whose groups share `quiet`; groups start
    /// awake.
    pub fn new(raft: PartitionRaft, group: GroupId, quiet: Arc<Quiet>) -> Arc<Self> {
        Arc::new(Self {
            raft,
            group,
            quiet,
            held: AtomicBool::new(false),
            state: Mutex::new(State::default()),
            asleep: std::sync::atomic::AtomicBool::new(false),
            epoch: AtomicU64::new(0),
        })
    }

    /// The group's Raft.
    pub fn raft(&self) -> &PartitionRaft {
        &self.raft
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// The term and last index it rests at, if it does.
    pub fn resting(&self) -> Option<(u64, u64)> {
        self.lock().resting
    }

    /// Whether it rests (without taking its lock).
    pub fn is_resting(&self) -> bool {
        self.asleep.load(Ordering::Acquire)
    }

    /// How many writes and changes started on this replica (see [`Rest::busy`]): a
    /// leader that saw it unchanged between two looks had none in between.
    pub fn started(&self) -> u64 {
        self.lock().started
    }

    /// Whether it rests as the group's leader.
    pub fn resting_leader(&self) -> Option<(u64, u64)> {
        let s = self.lock();
        s.resting.filter(|_| s.leading)
    }

    /// Stops the group's timers if nothing is in progress and `still` holds (checked
    /// under the same lock a write takes to start, and given [`Rest::started`]): it
    /// rests in `term` at `index`, as its leader if `leading`. Whether it rests.
    pub fn sleep_if(
        &self,
        term: u64,
        index: u64,
        leading: bool,
        still: impl FnOnce(u64) -> bool,
    ) -> bool {
        let mut s = self.lock();
        if s.resting.is_some() {
            return true;
        }
        if s.busy > 0 || !still(s.started) {
            return false;
        }
        self.epoch.fetch_add(1, Ordering::AcqRel);
        s.resting = Some((term, index));
        s.leading = leading;
        self.asleep.store(true, Ordering::Release);
        self.raft.runtime_config().tick(false);
        true
    }

    /// Starts the group's timers again. A follower whose leader answers pings holds its
    /// election meanwhile (see [`ELECT_HOLD`]); one whose leader is gone campaigns at its
    /// next tick.
    pub fn wake(self: &Arc<Self>) {
        self.wake_locked(&mut self.lock(), Why::Alone);
    }

    /// Wakes the group for an append of its leader (its election timer restarted).
    pub fn wake_by_leader(self: &Arc<Self>) {
        self.wake_locked(&mut self.lock(), Why::Leader);
    }

    /// Wakes the group to campaign at its next tick: its leader went away (or its Raft
    /// stopped there), whether or not that node still answers pings.
    pub fn wake_to_campaign(self: &Arc<Self>) {
        self.wake_locked(&mut self.lock(), Why::Campaign);
    }

    fn wake_locked(self: &Arc<Self>, s: &mut State, why: Why) {
        let woke = s.resting.is_some();
        if woke {
            self.epoch.fetch_add(1, Ordering::AcqRel);
            s.resting = None;
            self.asleep.store(false, Ordering::Release);
        }
        match why {
            Why::Leader | Why::Campaign => self.release_locked(s),
            Why::Alone if woke && !s.leading => self.hold_if_leader_live(s),
            // Awake already: a hold whose leader is gone ends.
            Why::Alone if s.hold != 0 && self.leader_live().is_none() => self.release_locked(s),
            Why::Alone => {}
        }
        if woke {
            self.raft.runtime_config().tick(true);
        }
    }

    /// The leader it follows, if that is another node that answers pings (and is not
    /// shutting down).
    fn leader_live(&self) -> Option<u64> {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        m.current_leader
            .filter(|l| *l != m.id && self.quiet.is_up(*l))
    }

    fn hold_if_leader_live(self: &Arc<Self>, s: &mut State) {
        let Some(leader) = self.leader_live() else {
            self.release_locked(s);
            return;
        };
        // Names this hold (the epoch this wake moved to, never 0).
        let hold = self.epoch.load(Ordering::Acquire).max(1);
        s.hold = hold;
        self.held.store(true, Ordering::Release);
        self.raft.runtime_config().elect(false);
        self.quiet.nudge(leader, self.group);
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(ELECT_HOLD).await;
            if let Some(rest) = me.upgrade() {
                let mut s = rest.lock();
                if s.hold == hold {
                    rest.release_locked(&mut s);
                }
            }
        });
    }

    /// Whether its election is held (see [`ELECT_HOLD`]).
    pub fn is_held(&self) -> bool {
        self.held.load(Ordering::Acquire)
    }

    /// Its leader was heard from: the election is no longer held.
    pub fn heard_leader(&self) {
        if self.is_held() {
            self.release_locked(&mut self.lock());
        }
    }

    /// Ends the hold, if any (under the lock, as holds start: a release cannot pass a
    /// hold that started before it and leave elections off).
    fn release_locked(&self, s: &mut State) {
        if s.hold != 0 {
            s.hold = 0;
            self.held.store(false, Ordering::Release);
            self.raft.runtime_config().elect(true);
        }
    }

    /// Wakes the group and keeps it from resting until the guard is dropped: taken by
    /// every write, membership change and leadership transfer before it starts.
    pub fn busy(self: &Arc<Self>) -> Busy {
        let mut s = self.lock();
        s.busy += 1;
        s.started += 1;
        self.wake_locked(&mut s, Why::Alone);
        Busy(Arc::clone(self))
    }

    /// Wakes the group after `delay`, unless it woke or rested again meanwhile: for a
    /// replica that should leave the next campaign to another. `campaign`: as
    /// [`Rest::wake_to_campaign`] (its leader is gone), else as [`Rest::wake`].
    pub fn wake_later(self: &Arc<Self>, delay: Duration, campaign: bool) {
        let seen = self.epoch.load(Ordering::Acquire);
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(rest) = me.upgrade() {
                let mut s = rest.lock();
                if rest.epoch.load(Ordering::Acquire) == seen {
                    let why = if campaign { Why::Campaign } else { Why::Alone };
                    rest.wake_locked(&mut s, why);
                }
            }
        });
    }
}
