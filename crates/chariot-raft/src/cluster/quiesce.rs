//! The node's driver of groups at rest (see [`crate::network::rest`]): pings the peers,
//! wakes resting groups when a peer goes away or comes back, and lets idle groups this
//! node leads rest. The metadata group never rests.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::ServerState;

use super::{Inner, META_GROUP};
use crate::network::rest::Quiet;
use crate::network::server::CAMPAIGN_STAGGER;
use crate::network::wire::{PingAnswer, RestAsk, RestRequest};
use crate::network::{GroupId, Rest};
use crate::sync::lock;

/// How often peers are pinged and their liveness looked at.
pub const PING_EVERY: Duration = Duration::from_millis(100);

/// A peer from which nothing came for this long is taken for gone: the resting groups
/// it led elect a new leader. Shorter than openraft's election timeout (0.5–1 s) plus
/// the campaign, so that a resting group fails over as fast as an awake one.
pub const DOWN_AFTER: Duration = Duration::from_millis(600);

/// Every this many pings, resting leaders look whether their log moved (insurance: a
/// write that starts wakes its group).
const MOVED_EVERY: u64 = 50;

/// Every this many pings, idle groups led here are asked to rest. An idle group rests
/// once two looks this far apart saw it unchanged (so its followers have had a
/// heartbeat with its commit index meanwhile).
const REST_EVERY: u64 = 3;

/// How long a follower may take to answer a rest request.
const REST_TIMEOUT: Duration = Duration::from_secs(1);

/// What a look at a group led here found.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Seen {
    term: u64,
    index: u64,
    /// Writes started here ([`Rest::started`]).
    started: u64,
}

/// Every this many pings, the groups served here are looked at for a stopped Raft
/// (told to the followers in the answer to their pings).
const STOPPED_EVERY: u64 = 5;

/// What the last ping of a peer brought.
type News = Arc<Mutex<HashMap<u64, PingAnswer>>>;

/// Runs until the node stops (the task is aborted) or its state is dropped.
pub(super) async fn run(inner: Weak<Inner>) {
    let mut alive: HashMap<u64, bool> = HashMap::new();
    let mut seen: HashMap<GroupId, Seen> = HashMap::new();
    let pinging: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let news: News = Arc::default();
    let mut stopped_seen: HashMap<u64, Vec<GroupId>> = HashMap::new();
    let mut tick = tokio::time::interval(PING_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut round: u64 = 0;
    let mut groups: Arc<Vec<(GroupId, Arc<Rest>)>> = Arc::default();
    let mut groups_at = u64::MAX;
    // The round of rests under way (its own task, so that pings never wait on it;
    // aborted with this one).
    let mut resting: Option<AbortOnDrop<HashMap<GroupId, Seen>>> = None;
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let me = inner.config.node_id;
        let quiet = inner.groups.quiet();
        let nodes: Vec<u64> = inner
            .meta
            .raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .filter(|id| *id != me)
            .collect();
        for &peer in &nodes {
            let first = lock(&pinging).insert(peer);
            if first {
                let (peers, pinging, news) =
                    (inner.peers.clone(), Arc::clone(&pinging), Arc::clone(&news));
                let wake = quiet.take_nudges(peer);
                tokio::spawn(async move {
                    if let Ok(answer) = peers.ping(peer, &wake, DOWN_AFTER).await {
                        lock(&news).insert(peer, answer);
                    }
                    lock(&pinging).remove(&peer);
                });
            }
        }
        // The list of groups is taken again only when it changed.
        if inner.groups.changes() != groups_at {
            groups_at = inner.groups.changes();
            groups = Arc::new(inner.groups.rests(META_GROUP));
        }
        let heard: HashMap<u64, PingAnswer> = lock(&news).clone();
        for &peer in &nodes {
            // One shutting down may still answer (it votes, it would refuse to rest):
            // live for the groups it follows, gone for those it led.
            let leaving = heard.get(&peer).is_some_and(|a| a.leaving);
            let answers = inner.peers.heard_within(peer, DOWN_AFTER);
            quiet.set_live(peer, answers);
            quiet.set_leaving(peer, leaving);
            let now = answers && !leaving;
            match alive.insert(peer, now) {
                Some(true) if !now => {
                    tracing::info!(node = peer, leaving, "peer stopped answering");
                    went_away(me, peer, &groups, quiet, |_| true);
                }
                Some(false) if now => {
                    tracing::info!(node = peer, "peer answers again");
                    came_back(peer, &groups);
                }
                _ => {}
            }
            // Groups it led at rest whose Raft stopped there: elect another leader.
            let stopped = heard
                .get(&peer)
                .map(|a| a.stopped.clone())
                .unwrap_or_default();
            if now && stopped_seen.get(&peer) != Some(&stopped) {
                if !stopped.is_empty() {
                    tracing::info!(node = peer, groups = ?stopped, "groups stopped on their leader");
                    went_away(me, peer, &groups, quiet, |id| stopped.contains(&id));
                }
                stopped_seen.insert(peer, stopped);
            }
        }
        alive.retain(|id, _| nodes.contains(id));
        stopped_seen.retain(|id, _| nodes.contains(id));
        lock(&news).retain(|id, _| nodes.contains(id));
        quiet.retain(&nodes);
        if round.is_multiple_of(MOVED_EVERY) {
            wake_moved(&groups);
        }
        if round.is_multiple_of(STOPPED_EVERY) {
            quiet.set_stopped(stopped_here(&groups));
        }
        if round.is_multiple_of(REST_EVERY) && resting.as_ref().is_none_or(|t| t.0.is_finished()) {
            if let Some(mut done) = resting.take() {
                seen = (&mut done.0).await.unwrap_or_default();
            }
            let (inner, groups) = (Arc::clone(&inner), Arc::clone(&groups));
            let last = std::mem::take(&mut seen);
            resting = Some(AbortOnDrop(tokio::spawn(async move {
                rest_idle(&inner, &groups, last).await
            })));
        }
        round += 1;
    }
}

/// A task aborted when its handle is dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The groups served here whose Raft stopped (their followers act on it only where
/// they rest, or hold their election, under this node).
fn stopped_here(groups: &[(GroupId, Arc<Rest>)]) -> Vec<GroupId> {
    groups
        .iter()
        .filter(|(_, g)| g.raft().metrics().borrow_watched().running_state.is_err())
        .map(|(id, _)| *id)
        .collect()
}

/// Groups led by `peer` (which stopped answering, or whose Raft of them stopped) that
/// rest here, or hold their election for it, and are `chosen`: one live voter (chosen
/// by the group id, so that the load spreads) wakes to campaign at once, the others
/// later.
fn went_away(
    me: u64,
    peer: u64,
    groups: &[(GroupId, Arc<Rest>)],
    quiet: &Quiet,
    chosen: impl Fn(GroupId) -> bool,
) {
    for (id, g) in groups {
        if !(g.is_resting() || g.is_held()) || !chosen(*id) {
            continue;
        }
        let (leader, voters) = {
            let m = g.raft().metrics();
            let m = m.borrow_watched();
            let voters: Vec<u64> = m
                .membership_config
                .membership()
                .voter_ids()
                .filter(|v| *v != peer && (*v == me || quiet.is_up(*v)))
                .collect();
            (m.current_leader, voters)
        };
        if leader != Some(peer) || voters.is_empty() {
            continue;
        }
        if voters.get((*id as usize) % voters.len()) == Some(&me) {
            tracing::debug!(group = id, "its leader went away: campaigning");
            g.wake_to_campaign();
        } else {
            g.wake_later(CAMPAIGN_STAGGER, true);
        }
    }
}

/// Resting groups led here that `peer` belongs to: they heartbeat again, so that it
/// catches up (and does not campaign for want of a leader).
fn came_back(peer: u64, groups: &[(GroupId, Arc<Rest>)]) {
    for (_, g) in groups {
        if !g.is_resting() {
            continue;
        }
        let wake = {
            let m = g.raft().metrics();
            let m = m.borrow_watched();
            m.state == ServerState::Leader
                && m.membership_config
                    .membership()
                    .nodes()
                    .any(|(id, _)| *id == peer)
        };
        if wake {
            g.wake();
        }
    }
}

/// Groups resting as led here whose term or log moved since they rested: awake again.
/// Nothing should move a resting leader's log without waking it (every write does, and
/// a leader rests only if no write started between two looks); this is insurance.
/// Followers wake by what they receive.
fn wake_moved(groups: &[(GroupId, Arc<Rest>)]) {
    for (_, g) in groups {
        let Some((term, index)) = g.resting_leader() else {
            continue;
        };
        let moved = {
            let m = g.raft().metrics();
            let m = m.borrow_watched();
            m.current_term != term || m.last_log_index != Some(index)
        };
        if moved {
            g.wake();
        }
    }
}

/// What makes an awake group led here idle: every live replica holds its last entry,
/// which is committed and applied, its membership is settled and has no learners.
/// `started`: the writes started here so far (part of what two looks compare).
fn idle(me: u64, g: &Rest, quiet: &Quiet, started: u64) -> Option<(Seen, Vec<u64>)> {
    if quiet.leaving() {
        return None;
    }
    let m = g.raft().metrics();
    let m = m.borrow_watched();
    if m.state != ServerState::Leader || m.current_leader != Some(me) {
        return None;
    }
    let membership = m.membership_config.membership();
    if membership.get_joint_config().len() != 1
        || membership.learner_ids().next().is_some()
        || m.committed_membership_config.log_id() != m.membership_config.log_id()
    {
        return None;
    }
    let index = m.last_log_index?;
    let at = |l: &Option<crate::LogId>| l.as_ref().map(|l| l.index);
    if at(&m.local_committed) != Some(index) || at(&m.last_applied) != Some(index) {
        return None;
    }
    let replication = m.replication.as_ref()?;
    let mut followers = Vec::new();
    for v in membership.voter_ids().filter(|v| *v != me) {
        // One shutting down would not agree, and would campaign later without
        // heartbeats: nothing rests until it is gone.
        if quiet.is_leaving(v) {
            return None;
        }
        if !quiet.is_live(v) {
            continue;
        }
        if replication.get(&v).map(at) != Some(Some(index)) {
            return None;
        }
        followers.push(v);
    }
    Some((
        Seen {
            term: m.current_term,
            index,
            started,
        },
        followers,
    ))
}

/// Asks the followers of idle groups led here to rest, and rests those every live
/// follower agreed to. `seen`: what the last round looked at; what this one did.
async fn rest_idle(
    inner: &Inner,
    groups: &[(GroupId, Arc<Rest>)],
    seen: HashMap<GroupId, Seen>,
) -> HashMap<GroupId, Seen> {
    let (me, quiet) = (inner.config.node_id, inner.groups.quiet());
    let mut asks: BTreeMap<u64, Vec<RestAsk>> = BTreeMap::new();
    let mut candidates: Vec<(GroupId, &Arc<Rest>, Seen, Vec<u64>)> = Vec::new();
    let mut looked = HashMap::new();
    for (id, g) in groups {
        if g.is_resting() {
            continue;
        }
        let Some((now, followers)) = idle(me, g, quiet, g.started()) else {
            continue;
        };
        looked.insert(*id, now);
        if seen.get(id) != Some(&now) {
            continue;
        }
        for &f in &followers {
            asks.entry(f).or_default().push(RestAsk {
                group: *id,
                term: now.term,
                index: now.index,
            });
        }
        candidates.push((*id, g, now, followers));
    }
    if candidates.is_empty() || quiet.leaving() {
        return looked;
    }
    let answers = ask_to_rest(inner, me, asks).await;
    let mut rested = 0usize;
    for (id, g, now, followers) in candidates {
        let agreed = followers
            .iter()
            .all(|f| answers.get(f).is_some_and(|set| set.contains(&id)));
        if !agreed {
            continue;
        }
        // Unchanged, with the same followers (one that came back meanwhile was not
        // asked).
        let still =
            |started| idle(me, g, quiet, started).is_some_and(|(s, f)| s == now && f == followers);
        if g.sleep_if(now.term, now.index, true, still) {
            rested += 1;
        }
    }
    if rested > 0 {
        tracing::debug!(groups = rested, "idle groups at rest");
    }
    looked
}

/// Sends every follower its rest request at once; the groups each agreed to.
async fn ask_to_rest(
    inner: &Inner,
    me: u64,
    asks: BTreeMap<u64, Vec<RestAsk>>,
) -> HashMap<u64, BTreeSet<GroupId>> {
    let mut tasks = tokio::task::JoinSet::new();
    for (follower, groups) in asks {
        let peers = inner.peers.clone();
        tasks.spawn(async move {
            let request = RestRequest { leader: me, groups };
            let agreed = peers.rest(follower, &request, REST_TIMEOUT).await;
            (follower, agreed)
        });
    }
    let mut answers = HashMap::new();
    while let Some(done) = tasks.join_next().await {
        if let Ok((follower, Ok(agreed))) = done {
            answers.insert(follower, agreed.into_iter().collect());
        }
    }
    answers
}
