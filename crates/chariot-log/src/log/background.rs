//! The log's background threads besides the commit thread: the tail worker (zero-fill
//! ahead, or sync behind) and the interval policy's sync thread.

use std::sync::atomic::Ordering;
use std::sync::PoisonError;
use std::time::Duration;

use crate::tail::{Claim, Finish, TailFile};

use super::threads::IDLE_EXIT;
use super::*;

impl Shared {
    /// The tail thread. Zero-fill: zero the next chunk ahead of the tail, sync it,
    /// repeat. Write-behind: sync the active segment each time enough was written. It
    /// sleeps while there is nothing to do. A write error (a full disk) only stops
    /// zero-filling of that segment; a sync error poisons the log like any failed sync.
    pub(super) fn run_tail_worker(&self) {
        let mut file: Option<TailFile> = None;
        // Started by a write that asked for work (see `threads`).
        loop {
            let claim = {
                let w = lock(&self.writer);
                let tail = w.active.size() + w.pending.len() as u64;
                let file_len = w.active.file().metadata().map_or(0, |m| m.len());
                self.tail
                    .claim(&w.active, tail, file_len, self.config.segment_bytes)
            };
            let (segment, zeros, to) = match claim {
                Claim::Stop => return,
                Claim::Idle => {
                    file = None;
                    // Out of work for IDLE_EXIT, the thread exits (the next write that
                    // asks for work starts another).
                    while !self.tail.wait_for_work(IDLE_EXIT) {
                        if self.tail_thread.may_exit(|| self.tail.has_work()) {
                            return;
                        }
                    }
                    continue;
                }
                Claim::Chunk(segment, from, to) => (segment, Some(from), to),
                Claim::Sync(segment, upto) => (segment, None, upto),
            };
            // Ends the claim even if this thread panics, so the writer never waits forever.
            let mut done = Finish::new(&self.tail, to);
            if !file.as_ref().is_some_and(|f| f.is_for(&segment)) {
                file = TailFile::open(&segment)
                    .inspect_err(|e| tracing::debug!(error = %e, "no tail work"))
                    .ok();
            }
            let ok = match &file {
                None => false,
                Some(f) => {
                    let written = match zeros {
                        Some(from) => f.write_zeros(from, to),
                        None => Ok(()),
                    };
                    match written {
                        Err(e) => {
                            tracing::debug!(error = %e, "zero-filling stopped");
                            false
                        }
                        Ok(()) => match f.sync() {
                            Ok(()) => true,
                            Err(e) => {
                                self.poison(e);
                                false
                            }
                        },
                    }
                }
            };
            done.ok = ok;
        }
    }

    pub(super) fn run_interval_sync(&self, every: Duration) {
        let mut stop = lock(&self.stop);
        loop {
            let (s, _) = self
                .stopping
                .wait_timeout(stop, every)
                .unwrap_or_else(PoisonError::into_inner);
            stop = s;
            if *stop || self.poisoned.load(Ordering::Acquire) {
                return;
            }
            drop(stop);
            if let Err(e) = self.sync_now() {
                tracing::error!(dir = %self.dir.display(), error = %e, "interval sync failed");
            }
            stop = lock(&self.stop);
        }
    }
}
