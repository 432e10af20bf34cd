//! The write path: checking and queuing appends ([`Log::submit`]'s [`Pending`] future),
//! writing at the end of the active segment, and rolling to a new segment.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::batch::{BatchHeader, RecordBatch};
use crate::config::SyncPolicy;
use crate::error::{LogError, Result};
use crate::segment::{AppendFailure, Segment};

use super::*;

/// How `Shared::enqueue` was called.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum EnqueueMode {
    /// A blocking append: the caller waits for its slot.
    Blocking,
    /// [`Log::submit`]: queued, the caller gets the slot in a future.
    Submitted,
    /// [`Log::try_submit`]: as `Submitted`, but only if it needs no I/O on this thread.
    NoIo,
}

/// What `Shared::enqueue` did with an append.
pub(super) enum Queued {
    /// Not done: it would have rolled the segment or written in place ([`EnqueueMode::NoIo`]).
    WouldBlock,
    /// Appended, and as durable as the policy promises (policies other than group commit).
    Done(Vec<AppendInfo>),
    /// Queued for the next group commit; complete when the slot's outcome is set.
    Waiting(Arc<Slot>, Vec<AppendInfo>),
}

/// An append queued by [`Log::submit`]: a future that resolves to the offsets assigned
/// once the batches are as durable as the [`SyncPolicy`] promises.
///
/// The append is queued whether or not the future is polled: dropping it gives up the
/// answer, not the append. It needs no particular runtime: the thread that completes the
/// group commit calls the waker of the task that polled it last. A `Pending` shares the
/// log's state: until it is dropped, the directory stays locked even after the log is
/// closed.
#[must_use = "the append is queued either way; the future tells whether it is durable"]
pub struct Pending {
    state: PendingState,
}

pub(super) enum PendingState {
    /// The outcome is known (policies other than group commit, or already taken).
    Ready(Option<Result<Vec<AppendInfo>>>),
    Queued {
        shared: Arc<Shared>,
        slot: Arc<Slot>,
        infos: Vec<AppendInfo>,
    },
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let queued = matches!(self.state, PendingState::Queued { .. });
        f.debug_struct("Pending")
            .field("queued", &queued)
            .finish_non_exhaustive()
    }
}

impl Pending {
    /// The offsets the batches were given when they were queued (empty once the future
    /// has completed, or if they were refused): a caller that must know where its
    /// batches land (a Raft log, whose indexes are its offsets) checks them at once.
    pub fn assigned(&self) -> &[AppendInfo] {
        match &self.state {
            PendingState::Queued { infos, .. } => infos,
            PendingState::Ready(Some(Ok(infos))) => infos,
            PendingState::Ready(_) => &[],
        }
    }
}

impl Future for Pending {
    type Output = Result<Vec<AppendInfo>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (shared, slot, infos) = match &mut self.state {
            PendingState::Ready(outcome) => {
                return match outcome.take() {
                    Some(outcome) => Poll::Ready(outcome),
                    None => panic!("chariot_log::Pending polled after it completed"),
                }
            }
            PendingState::Queued {
                shared,
                slot,
                infos,
            } => (shared, slot, infos),
        };
        let outcome = |slot: &Slot, infos: &mut Vec<AppendInfo>| {
            slot.outcome.get().map(|o| {
                o.clone()
                    .map_err(SlotError::into_error)
                    .map(|()| std::mem::take(infos))
            })
        };
        let mut done = outcome(slot, infos);
        if done.is_none() && shared.poisoned.load(Ordering::Acquire) {
            done = Some(Err(LogError::Poisoned));
        }
        if done.is_none() {
            if let Some(waker) = &slot.waker {
                let mut w = lock(waker);
                if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *w = Some(cx.waker().clone());
                }
            }
            // The group may have completed before the waker was stored: look again.
            done = outcome(slot, infos);
        }
        match done {
            Some(done) => {
                self.state = PendingState::Ready(None);
                Poll::Ready(done)
            }
            None => Poll::Pending,
        }
    }
}

impl Shared {
    /// Appends `batches` as one unit: one write, at most one sync, all or nothing. The
    /// segment-roll decision is taken once for the whole call, so a call never straddles
    /// two segments (a segment may exceed `segment_bytes` by at most one call).
    pub(super) fn append_many(&self, batches: &mut [RecordBatch]) -> Result<Vec<AppendInfo>> {
        match self.enqueue(batches, EnqueueMode::Blocking)? {
            Queued::Done(infos) => Ok(infos),
            Queued::Waiting(slot, infos) => {
                self.wait_for(&slot)?;
                Ok(infos)
            }
            // Only `EnqueueMode::NoIo` gives up.
            Queued::WouldBlock => Err(LogError::Poisoned),
        }
    }

    /// Appends `batches` (see `append_many`) under every policy but group commit, and
    /// queues them for the next group commit under that one: a blocking append then
    /// waits for its slot (`submitted` false), a submitted one returns it to a future.
    pub(super) fn enqueue(&self, batches: &mut [RecordBatch], mode: EnqueueMode) -> Result<Queued> {
        let submitted = mode != EnqueueMode::Blocking;
        let gc = self.config.sync == SyncPolicy::GroupCommit;
        if mode == EnqueueMode::NoIo && !gc {
            return Ok(Queued::WouldBlock);
        }
        self.check_writable()?;
        let mut total = 0u64;
        for b in batches.iter() {
            if b.len() > self.config.max_batch_bytes {
                return Err(LogError::BatchTooLarge {
                    size: b.len(),
                    max: self.config.max_batch_bytes,
                });
            }
            if b.is_empty() {
                return Err(LogError::EmptyBatch);
            }
            total += b.len() as u64;
        }
        if batches.is_empty() {
            return Ok(Queued::Done(Vec::new()));
        }
        if total > self.config.segment_bytes {
            return Err(LogError::BatchTooLarge {
                size: total as usize,
                max: self.config.segment_bytes as usize,
            });
        }
        let mut w = lock(&self.writer);
        self.check_usable()?;
        let size = w.active.size() + w.pending.len() as u64;
        let entries = w.active.entry_count() + w.pending_headers.len();
        if size > 0
            && (size + total > self.config.segment_bytes
                || entries + batches.len() > self.config.index_max_entries as usize)
        {
            if mode == EnqueueMode::NoIo {
                return Ok(Queued::WouldBlock);
            }
            self.roll(&mut w)?;
        }
        if !gc {
            if let [batch] = batches {
                // One batch and no group to join: write it in place, without a copy.
                let base = w.next_offset;
                batch.set_base_offset(base);
                let h = batch.header();
                match self.write_active(&w, batch.as_bytes(), &[h]) {
                    Ok(()) => {}
                    Err(AppendFailure::RolledBack(e)) => return Err(e),
                    Err(AppendFailure::Unrecoverable(e)) => return Err(self.poison(e)),
                }
                w.next_offset = h.next_offset();
                return self.finish_direct(&w).map(|()| {
                    Queued::Done(vec![AppendInfo {
                        base_offset: base,
                        last_offset: h.next_offset() - 1,
                    }])
                });
            }
        }
        let mut infos = Vec::with_capacity(batches.len());
        for batch in batches.iter_mut() {
            let base = w.next_offset;
            batch.set_base_offset(base);
            let h = batch.header();
            w.pending.extend_from_slice(batch.as_bytes());
            w.pending_headers.push(h);
            w.next_offset = h.next_offset();
            infos.push(AppendInfo {
                base_offset: base,
                last_offset: h.next_offset() - 1,
            });
        }
        if gc {
            let slot = Arc::new(Slot::new(w.next_offset, w.group_id, submitted));
            w.pending_slots.push(Arc::clone(&slot));
            let want = self.gather_want.load(Ordering::Relaxed);
            let gathered =
                want != 0 && (w.pending_slots.len() >= want || w.pending.len() >= GATHER_BYTES);
            drop(w);
            if gathered {
                wake_word(&self.gather_word, 1);
            }
            // No thread waits on a submitted append: if no sync is running, the commit
            // thread leads one. (A leader clears `syncing` before it last looks at the
            // pending appends under the writer lock, so one of the two sees this one.)
            if submitted && !self.syncing.load(Ordering::Acquire) {
                self.notify_committer();
            }
            return Ok(Queued::Waiting(slot, infos));
        }
        let (_, written) = self.write_pending(&mut w);
        written?;
        self.finish_direct(&w)?;
        Ok(Queued::Done(infos))
    }

    /// Writes batches at the end of the active segment (the only way the writer writes
    /// to it), keeping the tail thread in step: waits out a chunk of zeros in the way,
    /// reports the new tail and the write's size, and after a rolled-back write stops
    /// the tail work on the segment and cuts it again. (A chunk of zeros being written
    /// past the cut could have grown the file back; the second cut leaves the files
    /// exactly as before the append.)
    pub(super) fn write_active(
        &self,
        w: &Writer,
        bytes: &[u8],
        headers: &[BatchHeader],
    ) -> Result<(), AppendFailure> {
        self.tail.before_write(w.active.size() + bytes.len() as u64);
        let written = w.active.append(bytes, headers);
        match &written {
            Ok(()) => {
                if self.tail.wrote(w.active.size(), bytes.len() as u64) && self.tail_enabled {
                    self.tail_thread.ensure(self, Shared::run_tail_worker);
                }
            }
            Err(AppendFailure::RolledBack(_)) => {
                self.tail.retarget(None);
                if let Err(e) = w.active.trim() {
                    // Its sync may have been the one to see a writeback error of other data.
                    self.poison(e);
                }
            }
            Err(AppendFailure::Unrecoverable(_)) => {}
        }
        written
    }

    /// Completes an append written directly (policies other than group commit).
    pub(super) fn finish_direct(&self, w: &Writer) -> Result<()> {
        if self.config.sync == SyncPolicy::EveryAppend {
            if let Err(e) = w.active.sync() {
                return Err(self.poison(e));
            }
        }
        self.visible_next.store(w.next_offset, Ordering::Release);
        Ok(())
    }

    pub(super) fn roll(&self, w: &mut Writer) -> Result<()> {
        // No zeros may land in a segment being sealed (its preallocation is trimmed), and
        // the sync behind its tail is the seal's job now.
        self.tail.retarget(None);
        let (group, written) = self.write_pending(w);
        written?;
        // Sealing syncs the segment: everything written so far becomes durable.
        let upto = w.next_offset;
        self.settle(w, &group, upto, || w.active.seal(), |_| true)?;
        // A segment that could not be created leaves nothing behind: appends continue in
        // the sealed one, which recovery treats as active again. But a created file that
        // is not in the list (its directory entry not durable) would break the next
        // roll and the next open: refuse further writes instead.
        let seg = Arc::new(Segment::create(&self.dir, w.next_offset)?);
        if self.config.preallocate {
            seg.preallocate(self.config.segment_bytes);
        }
        if let Err(e) = sync_dir(&self.dir) {
            return Err(self.poison(e));
        }
        let mut list: Vec<Arc<Segment>> = self.segment_list().iter().cloned().collect();
        list.push(Arc::clone(&seg));
        self.set_segment_list(list);
        if self.tail_enabled {
            self.tail.retarget(Some(Arc::clone(&seg)));
        }
        w.active = seg;
        if let Err(e) = self.apply_retention(w) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "retention failed");
        }
        Ok(())
    }
}

impl Log {
    pub(super) fn pending(&self, queued: Queued) -> Option<Pending> {
        let state = match queued {
            Queued::WouldBlock => return None,
            Queued::Done(infos) => PendingState::Ready(Some(Ok(infos))),
            Queued::Waiting(slot, infos) => PendingState::Queued {
                shared: Arc::clone(&self.shared),
                slot,
                infos,
            },
        };
        Some(Pending { state })
    }
}
