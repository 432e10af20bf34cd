//! Group commit: the slots appends wait on, the futex words they sleep on, the sync
//! leader that writes a group with one `pwrite` and makes it durable with one fdatasync,
//! and the commit thread that leads for submitted appends.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Waker;
use std::time::{Duration, Instant};

use rustix::thread::futex;

use crate::config::SyncPolicy;
use crate::error::{LogError, Result};
use crate::segment::AppendFailure;

use super::threads::IDLE_EXIT;
use super::*;

/// How many more groups an appender leading a sync commits before it hands over.
pub(super) const EXTRA_ROUNDS: usize = 4;

/// The longest a sync leader waits for the last group's appenders to come back.
pub(super) const MAX_GATHER: Duration = Duration::from_millis(1);

/// Pending bytes past which a leader stops waiting for more: a sync this large costs
/// about its transfer time, so a bigger group saves nothing.
pub(super) const GATHER_BYTES: usize = 1 << 20;

/// How long the commit thread spins for the next submitted append before it sleeps,
/// after a group of at most [`SPIN_GROUP`] appends. A producer that waits for each ack
/// sends its next append a few tens of microseconds after the last completed; a thread
/// asleep on a futex takes about as long again to be scheduled (on a VM an idle vCPU is
/// halted and needs an interrupt), which measured 10–15 % of one producer's rate. Large
/// groups mean many producers, whose tasks need the CPU more than the thread would save,
/// so after those it sleeps at once; and once an append came later than this after the
/// previous one (a slow producer), it sleeps at once until appends come close again, so
/// logs at a low rate cost no spinning.
pub(super) const COMMITTER_SPIN: Duration = Duration::from_micros(200);

/// The largest last group after which the commit thread spins (see [`COMMITTER_SPIN`]).
pub(super) const SPIN_GROUP: usize = 2;

/// Bumps a futex word, then wakes up to `n` of the threads sleeping on it. Whatever they
/// wait for is published before the call; a thread that read the word before the bump
/// does not go to sleep.
pub(super) fn wake_word(word: &AtomicU32, n: u32) {
    word.fetch_add(1, Ordering::Release);
    let _ = futex::wake(word, futex::Flags::PRIVATE, n);
}

/// The appends one `write_pending` wrote, and the id their waiters sleep on.
pub(super) struct Group {
    pub(super) id: u64,
    pub(super) slots: Vec<Arc<Slot>>,
}

/// Where one group-commit append learns its outcome. A blocking append's thread sleeps
/// on the futex word of its group (see [`WakeWords`]); whoever completes the group sets
/// every slot's outcome and then wakes the whole group with one system call. A submitted
/// append ([`Log::submit`]) has no thread: its [`Pending`] future leaves a waker here.
pub(super) struct Slot {
    /// Offset after the append's last record.
    pub(super) next: u64,
    /// The group this append belongs to (`Writer::group_id` when it was queued).
    pub(super) group: u64,
    pub(super) outcome: OnceLock<Result<(), SlotError>>,
    /// `Some` for a submitted append: the waker of the task polling its [`Pending`].
    pub(super) waker: Option<Mutex<Option<Waker>>>,
}

impl Slot {
    pub(super) fn new(next: u64, group: u64, submitted: bool) -> Self {
        Self {
            next,
            group,
            outcome: OnceLock::new(),
            waker: submitted.then(|| Mutex::new(None)),
        }
    }

    /// Whether a thread sleeps on this slot's group word (rather than a task's waker).
    pub(super) fn has_thread(&self) -> bool {
        self.waker.is_none()
    }

    /// A `sync_now` slot: it asks for no offset (an append's `next` is at least 1), only
    /// for a sync, so a truncation racing it does not concern it.
    pub(super) fn is_flush(&self) -> bool {
        self.next == 0
    }
}

/// Futex words the waiting appenders sleep on, one per group id modulo their number.
///
/// Waking a finished group of N appenders one thread at a time costs N `futex_wake`
/// calls on the leader's critical path (measured on a 2-vCPU VM: the wake-ups took longer
/// than the fdatasync itself). With one word per group, the leader wakes the whole group
/// with one call. Groups that share a word (ids four apart, possible only around a roll
/// or a truncation) merely see a spurious wake-up and sleep again.
pub(super) struct WakeWords(pub(super) [AtomicU32; 4]);

/// `futex_wake`'s count of "every waiter" (the kernel reads the count as a signed int).
pub(super) const ALL: u32 = i32::MAX as u32;

impl WakeWords {
    pub(super) fn word(&self, group: u64) -> &AtomicU32 {
        let [w0, w1, w2, w3] = &self.0;
        match group % 4 {
            0 => w0,
            1 => w1,
            2 => w2,
            _ => w3,
        }
    }

    /// What a waiter reads before checking its outcome, and sleeps on if unchanged.
    pub(super) fn seen(&self, group: u64) -> u32 {
        self.word(group).load(Ordering::Acquire)
    }

    /// Sleeps until `group`'s word moves past `seen` (or a safety-net timeout).
    pub(super) fn sleep(&self, group: u64, seen: u32) {
        let timeout = futex::Timespec {
            tv_sec: 0,
            tv_nsec: 50_000_000,
        };
        // EAGAIN (the word already moved), EINTR and ETIMEDOUT all mean: look again.
        let _ = futex::wait(
            self.word(group),
            futex::Flags::PRIVATE,
            seen,
            Some(&timeout),
        );
    }

    /// Wakes up to `n` waiters of `group`, after the outcomes they wait for are set.
    pub(super) fn wake(&self, group: u64, n: u32) {
        wake_word(self.word(group), n);
    }

    pub(super) fn wake_all_groups(&self) {
        for g in 0..4 {
            self.wake(g, ALL);
        }
    }
}

/// A failure shared by every append of a group (`LogError` holds an `io::Error`, which
/// is not `Clone`).
#[derive(Debug, Clone)]
pub(super) enum SlotError {
    NoSpace(PathBuf),
    Write(PathBuf, String),
    Poisoned,
    Truncated(u64),
}

impl SlotError {
    pub(super) fn from_error(e: &LogError) -> Self {
        match e {
            LogError::NoSpace { path } => SlotError::NoSpace(path.clone()),
            LogError::Io { path, error, .. } => SlotError::Write(path.clone(), error.to_string()),
            LogError::ReadOnly { path, error } => SlotError::Write(path.clone(), error.to_string()),
            _ => SlotError::Poisoned,
        }
    }

    pub(super) fn into_error(self) -> LogError {
        match self {
            SlotError::NoSpace(path) => LogError::NoSpace { path },
            SlotError::Write(path, msg) => LogError::Io {
                op: "write",
                path,
                error: std::io::Error::other(msg),
            },
            SlotError::Poisoned => LogError::Poisoned,
            SlotError::Truncated(offset) => LogError::TruncatedConcurrently { offset },
        }
    }
}

/// Gives up leadership if a sync leader unwinds (a panicking waker, say): `syncing`
/// left set would stop every group commit for good.
pub(super) struct Leading<'a> {
    shared: &'a Shared,
    armed: bool,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.shared.syncing.store(false, Ordering::Release);
            self.shared.wake.wake_all_groups();
            self.shared.notify_committer();
        }
    }
}

impl Shared {
    /// Sets the outcome of every append of `group`, then wakes them all with one call.
    pub(super) fn complete(&self, group: &Group, outcome: impl Fn(&Slot) -> Result<(), SlotError>) {
        let mut threads = false;
        let mut wakers = Vec::new();
        for s in &group.slots {
            let _ = s.outcome.set(outcome(s));
            match &s.waker {
                None => threads = true,
                // Taken under the lock `Pending::poll` stores it with, after the outcome
                // is set: either this finds the waker or the poll sees the outcome.
                Some(waker) => wakers.extend(lock(waker).take()),
            }
        }
        if threads {
            self.wake.wake(group.id, ALL);
        }
        // Every outcome is set before any waker runs, and a waker that panics (it is the
        // caller's code) cannot keep the others from running.
        for waker in wakers {
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| waker.wake())).is_err() {
                tracing::error!(dir = %self.dir.display(), "a waker of a submitted append panicked");
            }
        }
    }

    /// Asks the commit thread to look for submitted appends without a leader, starting
    /// it if it is not running (group commit only; never once the log closes, whose
    /// last sync takes what is pending).
    /// Not with the writer lock held (a failure to start the thread fails the pending
    /// appends, which takes it): see [`Shared::wake_committer`].
    pub(super) fn notify_committer(&self) {
        if !self.wake_committer() {
            // No thread to lead the syncs of submitted appends: they fail rather than
            // wait for ever (blocking appenders lead their own).
            self.fail_pending_with(SlotError::Write(
                self.dir.clone(),
                "cannot start the log's commit thread".into(),
            ));
        }
    }

    /// Asks the commit thread to look for work, starting it if it is not running: false
    /// if it had to start and could not. Safe with the writer lock held.
    pub(super) fn wake_committer(&self) -> bool {
        // Both SeqCst: if this reads `committer_spinning` set, the commit thread's later
        // clear and its futex wait come after the bump, so the wait sees the word moved.
        self.commit_word.fetch_add(1, Ordering::SeqCst);
        if !self.committer_spinning.load(Ordering::SeqCst) {
            let _ = futex::wake(&self.commit_word, futex::Flags::PRIVATE, 1);
        }
        self.config.sync != SyncPolicy::GroupCommit
            || self.commit_stop.load(Ordering::Acquire)
            || self.committer.ensure(self, Shared::run_committer)
    }

    /// The commit thread, out of work: spins until `until` for `commit_word` to move
    /// past `seen`, if the last group was small (see [`COMMITTER_SPIN`]). True if it
    /// moved.
    fn spin_for_work(&self, seen: u32, until: Instant) -> bool {
        if self.last_group.load(Ordering::Relaxed) > SPIN_GROUP {
            return false;
        }
        self.committer_spinning.store(true, Ordering::SeqCst);
        let mut moved = false;
        while !moved && Instant::now() < until {
            for _ in 0..64 {
                std::hint::spin_loop();
            }
            moved = self.commit_word.load(Ordering::Acquire) != seen;
        }
        self.committer_spinning.store(false, Ordering::SeqCst);
        moved
    }

    /// Claims the leadership of the next sync if nobody holds it.
    pub(super) fn try_lead(&self) -> bool {
        !self.syncing.load(Ordering::Relaxed)
            && self
                .syncing
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }

    /// Waits for a group-commit append's slot, leading a sync whenever none is running:
    /// the leader writes every pending batch with one write, runs one fdatasync for all of
    /// them, and completes their slots, so N concurrent appends cost about two syncs.
    pub(super) fn wait_for(&self, slot: &Slot) -> Result<()> {
        loop {
            // Read the word before looking at the outcome: a completion after this read
            // moves the word, so the sleep below cannot miss it.
            let seen = self.wake.seen(slot.group);
            if let Some(outcome) = slot.outcome.get() {
                return outcome.clone().map_err(SlotError::into_error);
            }
            if self.poisoned.load(Ordering::Acquire) {
                return Err(LogError::Poisoned);
            }
            if self.try_lead() {
                // Its error reached the slots it concerns, ours included if it did.
                let _ = self.lead_sync(EXTRA_ROUNDS);
                continue;
            }
            // Woken when the group completes, when it should lead, or on poisoning; the
            // timeout is only a safety net.
            self.wake.sleep(slot.group, seen);
        }
    }

    /// Group commits, run by the thread that set `syncing`: write the pending batches,
    /// fdatasync the active segment, publish, complete the slots. If more appends queued
    /// meanwhile, lead their sync too (up to `extra_rounds` times) rather than hand over:
    /// waking another thread to lead costs a scheduling delay per sync. An appender
    /// leading for its group stops after [`EXTRA_ROUNDS`] to get back to its caller; the
    /// commit thread has no caller and goes on while there is work.
    pub(super) fn lead_sync(&self, extra_rounds: usize) -> Result<()> {
        let mut leading = Leading {
            shared: self,
            armed: true,
        };
        let mut rounds = 0;
        loop {
            self.gather();
            let mut w = lock(&self.writer);
            if self.poisoned.load(Ordering::Acquire) {
                // Appends already told `Poisoned` may still be pending: none is written.
                // (`leading` gives up leadership and wakes every waiter on its way out.)
                drop(w);
                self.fail_pending();
                return Err(LogError::Poisoned);
            }
            let (group, written) = self.write_pending(&mut w);
            let (segment, upto, generation) = (Arc::clone(&w.active), w.next_offset, w.generation);
            drop(w);
            // Earlier segments were synced when they were sealed, so syncing the active
            // one makes everything below `upto` durable.
            let started = Instant::now();
            let synced = written.and_then(|()| segment.sync().map_err(|e| self.poison(e)));
            self.last_sync_nanos
                .store(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
            self.last_group.store(group.slots.len(), Ordering::Relaxed);
            let outcome = match &synced {
                Ok(()) => {
                    let c = lock(&self.commit);
                    if c.generation == generation {
                        self.visible_next.fetch_max(upto, Ordering::AcqRel);
                        Ok(())
                    } else {
                        Err(SlotError::Truncated(upto.saturating_sub(1)))
                    }
                }
                Err(e) => Err(SlotError::from_error(e)),
            };
            self.complete(&group, |s| match &synced {
                Ok(()) if s.is_flush() => Ok(()),
                _ => outcome.clone(),
            });
            let more = synced.is_ok() && !lock(&self.writer).pending_slots.is_empty();
            if more && rounds < extra_rounds {
                rounds += 1;
                continue;
            }
            leading.armed = false;
            self.syncing.store(false, Ordering::Release);
            // Appends that queued during the last sync wait for a leader: wake one of their
            // threads, or the commit thread if they were all submitted.
            let w = lock(&self.writer);
            if w.pending_slots.iter().any(|s| s.has_thread()) {
                self.wake.wake(w.group_id, 1);
            } else if !w.pending_slots.is_empty() {
                drop(w);
                self.notify_committer();
            }
            return synced;
        }
    }

    /// Before a sync leader takes the pending appends: if the last group was large, wait
    /// (at most as long as its fdatasync took, and [`MAX_GATHER`]) until most of its
    /// appenders are back. They were woken together, and each needs a moment of CPU to
    /// append again; a sync started at once would take the first few of them and make
    /// the rest wait for a whole extra sync. A lone appender (a group of one) never
    /// waits.
    pub(super) fn gather(&self) {
        let last = self.last_group.load(Ordering::Relaxed);
        let want = last - last / 8;
        if want <= 1 {
            return;
        }
        let budget =
            Duration::from_nanos(self.last_sync_nanos.load(Ordering::Relaxed)).min(MAX_GATHER);
        let deadline = Instant::now() + budget;
        // Published before the count is read under the writer lock: an append queued
        // after that read sees `want` and wakes this thread (after the word is read).
        self.gather_want.store(want, Ordering::Relaxed);
        loop {
            let seen = self.gather_word.load(Ordering::Acquire);
            {
                let w = lock(&self.writer);
                if w.pending_slots.len() >= want || w.pending.len() >= GATHER_BYTES {
                    break;
                }
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            let timeout = futex::Timespec {
                tv_sec: 0,
                tv_nsec: left.as_nanos().min(999_999_999) as i64,
            };
            let _ = futex::wait(
                &self.gather_word,
                futex::Flags::PRIVATE,
                seen,
                Some(&timeout),
            );
        }
        self.gather_want.store(0, Ordering::Relaxed);
    }

    /// Writes the pending batches to the active segment and returns their slots. On a
    /// failed write the batches are dropped, their offsets are given back, and their
    /// slots complete with the error; the file is as it was before them.
    pub(super) fn write_pending(&self, w: &mut Writer) -> (Group, Result<()>) {
        let group = Group {
            id: w.group_id,
            slots: std::mem::take(&mut w.pending_slots),
        };
        w.group_id += 1;
        if w.pending_headers.is_empty() {
            return (group, Ok(()));
        }
        let bytes = std::mem::take(&mut w.pending);
        let headers = std::mem::take(&mut w.pending_headers);
        let failure = match self.write_active(w, &bytes, &headers) {
            Ok(()) => return (group, Ok(())),
            Err(AppendFailure::RolledBack(e)) => e,
            Err(AppendFailure::Unrecoverable(e)) => self.poison(e),
        };
        if let Some(first) = headers.first() {
            w.next_offset = first.base_offset;
        }
        let shared = SlotError::from_error(&failure);
        self.complete(&group, |_| Err(shared.clone()));
        let completed = Group {
            slots: Vec::new(),
            ..group
        };
        (completed, Err(failure))
    }

    /// Makes everything appended so far durable (flush, close, interval policy). Under
    /// group commit it joins the next group with a slot of its own, as a blocking append
    /// without batches, so a steady stream of appends leading syncs cannot keep it
    /// waiting; under the other policies it syncs the active segment.
    pub(super) fn sync_now(&self) -> Result<()> {
        if self.config.sync != SyncPolicy::GroupCommit {
            // Appends are written in place under the writer lock, and a roll syncs the
            // segment it seals: syncing the active segment covers everything appended.
            let active = Arc::clone(&lock(&self.writer).active);
            return active.sync().map_err(|e| self.poison(e));
        }
        let slot = {
            let mut w = lock(&self.writer);
            // It asks for no offset: `next` 0 is kept by any truncation racing it.
            let slot = Arc::new(Slot::new(0, w.group_id, false));
            w.pending_slots.push(Arc::clone(&slot));
            slot
        };
        self.wait_for(&slot)
    }

    /// Makes a group just written by the writer durable with `sync`, publishes it, and
    /// completes its slots: `Ok` where `kept` says so, `Truncated` elsewhere. A failed
    /// sync poisons the log and fails the whole group.
    pub(super) fn settle(
        &self,
        w: &Writer,
        group: &Group,
        publish: u64,
        sync: impl FnOnce() -> Result<()>,
        kept: impl Fn(&Slot) -> bool,
    ) -> Result<()> {
        if let Err(e) = sync() {
            self.complete(group, |_| Err(SlotError::Poisoned));
            return Err(self.poison(e));
        }
        self.visible_next
            .fetch_max(publish.min(w.next_offset), Ordering::AcqRel);
        self.complete(group, |s| {
            if s.is_flush() || kept(s) {
                Ok(())
            } else {
                Err(SlotError::Truncated(s.next.saturating_sub(1)))
            }
        });
        Ok(())
    }

    /// The commit thread (group commit only): leads the syncs of submitted appends,
    /// which have no thread of their own to lead one. Blocking appenders still lead
    /// their own groups; whoever claims `syncing` commits everything pending. Once the
    /// log is poisoned no sync runs again, and it fails the appends still queued.
    pub(super) fn run_committer(&self) {
        // When the thread last ran out of work, and whether the gap before the next
        // append was short enough that spinning through the next one pays.
        let mut idle_since: Option<Instant> = None;
        let mut spin = true;
        loop {
            // Read the word before looking for work: a notification after this read
            // moves it, so the wait below cannot miss it.
            let seen = self.commit_word.load(Ordering::Acquire);
            if self.poisoned.load(Ordering::Acquire) {
                self.fail_pending();
            }
            if self.commit_stop.load(Ordering::Acquire) {
                return;
            }
            if !self.poisoned.load(Ordering::Acquire) {
                let work = !lock(&self.writer).pending_slots.is_empty();
                if work {
                    if let Some(since) = idle_since.take() {
                        spin = since.elapsed() < COMMITTER_SPIN;
                    }
                }
                if work && self.try_lead() {
                    // Errors reached the slots they concern.
                    let _ = self.lead_sync(usize::MAX);
                    continue;
                }
            }
            let idle = *idle_since.get_or_insert_with(Instant::now);
            if spin && self.spin_for_work(seen, idle + COMMITTER_SPIN) {
                continue;
            }
            // EAGAIN (the word moved) and EINTR both mean: look again. Out of work for
            // IDLE_EXIT, the thread exits (the next notification starts another).
            let timeout = futex::Timespec {
                tv_sec: IDLE_EXIT.as_secs() as i64,
                tv_nsec: i64::from(IDLE_EXIT.subsec_nanos()),
            };
            let waited = futex::wait(
                &self.commit_word,
                futex::Flags::PRIVATE,
                seen,
                Some(&timeout),
            );
            if waited == Err(rustix::io::Errno::TIMEDOUT) {
                let more = || {
                    self.commit_word.load(Ordering::SeqCst) != seen
                        || !lock(&self.writer).pending_slots.is_empty()
                };
                if self.committer.may_exit(more) {
                    return;
                }
            }
        }
    }

    /// On a poisoned log: drops the appends still queued (their bytes are never written)
    /// and fails them, waking their threads and tasks.
    pub(super) fn fail_pending(&self) {
        self.fail_pending_with(SlotError::Poisoned);
    }

    /// Drops the appends still queued and fails them with `error`.
    pub(super) fn fail_pending_with(&self, error: SlotError) {
        let group = {
            let mut w = lock(&self.writer);
            // Their offsets are given back, as after a failed write.
            if let Some(first) = w.pending_headers.first() {
                w.next_offset = first.base_offset;
            }
            w.pending.clear();
            w.pending_headers.clear();
            Group {
                id: w.group_id,
                slots: std::mem::take(&mut w.pending_slots),
            }
        };
        self.complete(&group, |_| Err(error.clone()));
    }
}
