//! The log's background threads run only while there is work: the commit thread and
//! the tail thread start with the first work after a quiet spell and exit after
//! [`IDLE_EXIT`] without any, so a log at rest holds no thread (a node with a thousand
//! idle partitions would otherwise hold thousands of sleeping threads).
//!
//! Starting and exiting race with the notifications that bring work, and the rule
//! that settles it is the usual one (Dekker's): whoever brings work publishes it, then
//! looks whether a thread runs and starts one if not; a thread that would exit clears
//! its running flag, then looks for work once more and, if some came, takes the flag
//! back (unless a new thread already took it) and carries on. Either the notifier sees
//! the flag cleared, or the exiting thread sees the work.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

use super::{lock, Shared};

/// How long a background thread waits for work before it exits.
pub(super) const IDLE_EXIT: Duration = Duration::from_secs(2);

/// One kind of background thread of a log: at most one runs at a time.
pub(super) struct Worker {
    name: &'static str,
    running: AtomicBool,
    /// The running thread's handle, and those of threads that exited or are exiting
    /// (joined at the next start once finished, and all at close: a thread that is
    /// still returning holds the log's state, and with it the directory lock).
    handles: Mutex<Handles>,
}

#[derive(Default)]
struct Handles {
    threads: Vec<JoinHandle<()>>,
    /// The log closed: no thread starts any more (one started after the last join
    /// would hold the directory lock).
    closed: bool,
}

impl Worker {
    pub(super) fn new(name: &'static str) -> Self {
        Self {
            name,
            running: AtomicBool::new(false),
            handles: Mutex::new(Handles::default()),
        }
    }

    /// After publishing work: starts the thread (`body`) unless it runs. False if it had
    /// to start and could not (no thread could be created).
    pub(super) fn ensure(&self, shared: &Shared, body: fn(&Shared)) -> bool {
        if self.running.load(Ordering::SeqCst) {
            return true;
        }
        if self
            .running
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return true;
        }
        let Some(me) = shared.me.upgrade() else {
            // The log is being dropped: nothing is left to do.
            self.running.store(false, Ordering::SeqCst);
            return true;
        };
        // Under the lock that closing takes: a thread either starts before the close
        // and is joined by it, or does not start.
        let mut handles = lock(&self.handles);
        if handles.closed {
            self.running.store(false, Ordering::SeqCst);
            return true;
        }
        let spawned = std::thread::Builder::new()
            .name(self.name.into())
            .spawn(move || body(&me));
        match spawned {
            Ok(handle) => {
                // Earlier threads that are done: joining them does not wait.
                let (done, going): (Vec<_>, Vec<_>) =
                    handles.threads.drain(..).partition(JoinHandle::is_finished);
                handles.threads = going;
                handles.threads.push(handle);
                drop(handles);
                for t in done {
                    let _ = t.join();
                }
                true
            }
            Err(e) => {
                drop(handles);
                self.running.store(false, Ordering::SeqCst);
                tracing::error!(dir = %shared.dir.display(), thread = self.name, error = %e, "cannot start a log thread");
                false
            }
        }
    }

    /// Called by the thread when it found no work for [`IDLE_EXIT`]: true if it should
    /// exit, false if work came meanwhile (`more` looks) and it goes on.
    pub(super) fn may_exit(&self, more: impl FnOnce() -> bool) -> bool {
        self.running.store(false, Ordering::SeqCst);
        if !more() {
            return true;
        }
        // Work came: carry on, unless a thread started for it already.
        self.running
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
    }

    /// Lets no thread start any more and waits for every thread started (the caller
    /// told them to stop first).
    pub(super) fn close(&self) {
        let threads = {
            let mut handles = lock(&self.handles);
            handles.closed = true;
            std::mem::take(&mut handles.threads)
        };
        for t in threads {
            let _ = t.join();
        }
    }
}
