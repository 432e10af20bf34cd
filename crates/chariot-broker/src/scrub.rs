//! The node's scrubber: one thread that CRC-checks the sealed segments of every
//! partition (system logs included) at a bounded rate, a pass right after start-up and
//! then one per interval, so damage in data no one reads is reported (`/health`, the
//! partition's description, the log) before a reader or a consumer group reaches it.
//!
//! One thread for the whole node, idle between passes: a thousand partitions cost no
//! more at rest than one. The rate bounds what the scrub takes from the disk (and, for
//! data in the page cache, from a core: CRC32C of 32 MiB is a few milliseconds).

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{BrokerError, Result};
use crate::registry::Registry;

/// How the scrubber runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScrubConfig {
    /// Bytes checked per second at most; 0 turns the scrubber off.
    pub bytes_per_sec: u64,
    /// Pause between the end of one pass and the start of the next.
    pub interval: Duration,
}

impl Default for ScrubConfig {
    /// 32 MiB/s, a pass a day.
    fn default() -> Self {
        Self {
            bytes_per_sec: 32 << 20,
            interval: Duration::from_secs(24 * 60 * 60),
        }
    }
}

/// A stop flag a sleeping thread wakes for.
#[derive(Default)]
struct Stop {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Stop {
    /// Sleeps until `deadline` or a stop; whether it was stopped.
    fn sleep_until(&self, deadline: Instant) -> bool {
        let mut stopped = self.stopped.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let now = Instant::now();
            if *stopped || now >= deadline {
                return *stopped;
            }
            stopped = self
                .wake
                .wait_timeout(stopped, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn is_stopped(&self) -> bool {
        *self.stopped.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The running scrubber; stopping it (or dropping it) ends a pass at its next read.
pub(crate) struct Scrubber {
    stop: Arc<Stop>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Scrubber {
    /// Starts the thread (none if the rate is 0).
    pub(crate) fn start(registry: Arc<Registry>, config: ScrubConfig) -> Result<Option<Self>> {
        if config.bytes_per_sec == 0 {
            return Ok(None);
        }
        let stop = Arc::new(Stop::default());
        let s = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("chariot-scrub".into())
            .spawn(move || run(&registry, config, &s))
            .map_err(|e| BrokerError::Storage(format!("cannot start the scrub thread: {e}")))?;
        Ok(Some(Self {
            stop,
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// Stops the thread and waits for it (at most one read of up to 1 MiB).
    pub(crate) fn stop(&self) {
        *self
            .stop
            .stopped
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = true;
        self.stop.wake.notify_all();
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

impl Drop for Scrubber {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(registry: &Registry, config: ScrubConfig, stop: &Stop) {
    loop {
        pass(registry, config, stop);
        if stop.sleep_until(Instant::now() + config.interval) {
            return;
        }
    }
}

/// One pass over every partition, paced to `bytes_per_sec` over the whole pass.
fn pass(registry: &Registry, config: ScrubConfig, stop: &Stop) {
    let started = Instant::now();
    let (mut bytes, mut found, mut partitions) = (0u64, 0usize, 0usize);
    let per_sec = config.bytes_per_sec as f64;
    // By name, each log fetched when its turn comes: a log deleted meanwhile is not
    // held open (its disk space kept) until the pass ends.
    let names: Vec<String> = registry.all().iter().map(|e| e.meta.name.clone()).collect();
    for name in names {
        let Ok(entry) = registry.get(&name) else {
            continue;
        };
        for (i, p) in entry.partitions.iter().enumerate() {
            // A log deleted while it is scrubbed is left at once (its files are gone).
            let mut pace = |n: u64| {
                bytes += n;
                let due = started + Duration::from_secs_f64(bytes as f64 / per_sec);
                !stop.sleep_until(due)
                    && registry
                        .get(&entry.meta.name)
                        .is_ok_and(|now| Arc::ptr_eq(&now, &entry))
            };
            match p.log.scrub(&mut pace) {
                Ok(report) => {
                    found += report.found.len();
                    if report.complete {
                        partitions += 1;
                    }
                }
                Err(e) => {
                    tracing::debug!(log = %entry.meta.name, partition = i, error = %e, "scrub skipped a partition");
                }
            }
            if stop.is_stopped() {
                return;
            }
        }
    }
    if found > 0 {
        tracing::warn!(partitions, bytes, found, took = ?started.elapsed(), "scrub pass found damage");
    } else {
        tracing::info!(partitions, bytes, took = ?started.elapsed(), "scrub pass clean");
    }
}
