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
//! Rest only ever stops timers: Raft's safety does not rest on them, and a group woken
//! needlessly merely heartbeats again until it rests once more.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::server::PartitionRaft;

/// Whether a group's timers run, and the handle that starts and stops them.
pub struct Rest {
    raft: PartitionRaft,
    state: Mutex<State>,
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
    /// A group's rest control; groups start awake.
    pub fn new(raft: PartitionRaft) -> Arc<Self> {
        Arc::new(Self {
            raft,
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
        self.state.lock().unwrap_or_else(|p| p.into_inner())
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

    /// Starts the group's timers again.
    pub fn wake(&self) {
        self.wake_locked(&mut self.lock());
    }

    fn wake_locked(&self, s: &mut State) {
        if s.resting.is_some() {
            self.epoch.fetch_add(1, Ordering::AcqRel);
            s.resting = None;
            self.asleep.store(false, Ordering::Release);
            self.raft.runtime_config().tick(true);
        }
    }

    /// Wakes the group and keeps it from resting until the guard is dropped: taken by
    /// every write, membership change and leadership transfer before it starts.
    pub fn busy(self: &Arc<Self>) -> Busy {
        let mut s = self.lock();
        s.busy += 1;
        s.started += 1;
        self.wake_locked(&mut s);
        Busy(Arc::clone(self))
    }

    /// Wakes the group after `delay`, unless it woke or rested again meanwhile: for a
    /// replica that should leave the next campaign to another.
    pub fn wake_later(self: &Arc<Self>, delay: Duration) {
        let seen = self.epoch.load(Ordering::Acquire);
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(rest) = me.upgrade() {
                let mut s = rest.lock();
                if rest.epoch.load(Ordering::Acquire) == seen {
                    rest.wake_locked(&mut s);
                }
            }
        });
    }
}
