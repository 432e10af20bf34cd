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
    /// Sleeps until `deadline` (`None`: until a stop) or a stop; whether it was stopped.
    fn sleep_until(&self, deadline: Option<Instant>) -> bool {
        let mut stopped = self.stopped.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let now = Instant::now();
            if *stopped || deadline.is_some_and(|d| now >= d) {
                return *stopped;
            }
            stopped = match deadline {
                Some(d) => {
                    self.wake
                        .wait_timeout(stopped, d - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                None => self
                    .wake
                    .wait(stopped)
                    .unwrap_or_else(PoisonError::into_inner),
            };
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
        // An interval too large for the clock means: start-up pass only.
        if stop.sleep_until(Instant::now().checked_add(config.interval)) {
            return;
        }
    }
}

/// Longest single sleep of the pacing: a log deleted meanwhile is let go within it.
const PACE_SLICE: Duration = Duration::from_millis(200);

/// One pass over every partition, paced to `bytes_per_sec`: reads are spread so that
/// the bytes since `since` never run ahead of the rate; after a stretch where reads were
/// slower than the rate (more than a second behind), the count starts over, so the
/// scrub never bursts to catch up.
fn pass(registry: &Registry, config: ScrubConfig, stop: &Stop) {
    let started = Instant::now();
    let (mut bytes, mut found, mut partitions) = (0u64, 0usize, 0usize);
    let (mut since, mut paced) = (started, 0u64);
    let per_sec = config.bytes_per_sec as f64;
    // By name, each log fetched when its turn comes: a log deleted meanwhile is not
    // held open (its disk space kept) until the pass ends.
    let names: Vec<String> = registry.all().iter().map(|e| e.meta.name.clone()).collect();
    for name in names {
        let Ok(entry) = registry.get(&name) else {
            continue;
        };
        // A log deleted while it is scrubbed is left within a slice (its files are gone,
        // and the scrub would keep them open).
        let still_listed = || {
            registry
                .get(&entry.meta.name)
                .is_ok_and(|now| Arc::ptr_eq(&now, &entry))
        };
        for (i, p) in entry.partitions.iter().enumerate() {
            let mut pace = |n: u64| {
                bytes += n;
                paced += n;
                let due = since + Duration::from_secs_f64(paced as f64 / per_sec);
                let now = Instant::now();
                if now > due + Duration::from_secs(1) {
                    (since, paced) = (now, 0);
                }
                loop {
                    let now = Instant::now();
                    if now >= due {
                        return !stop.is_stopped() && still_listed();
                    }
                    if stop.sleep_until(Some(due.min(now + PACE_SLICE))) || !still_listed() {
                        return false;
                    }
                }
            };
            match p.log().scrub(&mut pace) {
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
            if !still_listed() {
                break; // deleted: its other partitions are not checked
            }
        }
    }
    if found > 0 {
        tracing::warn!(partitions, bytes, found, took = ?started.elapsed(), "scrub pass found damage");
    } else {
        tracing::info!(partitions, bytes, took = ?started.elapsed(), "scrub pass clean");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interval_too_large_for_the_clock_means_start_up_only_and_stop_still_works() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let registry = Registry::open(dir.path(), &chariot_log::LogConfig::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let config = ScrubConfig {
            bytes_per_sec: 1 << 20,
            interval: Duration::MAX,
        };
        let scrubber = Scrubber::start(Arc::new(registry), config)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("a scrubber with a rate runs"));
        // The start-up pass over no logs ends at once; then the thread must sleep
        // (before, `now + interval` overflowed and the thread panicked).
        std::thread::sleep(Duration::from_millis(300));
        let thread = scrubber
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        assert!(thread.as_ref().is_some_and(|t| !t.is_finished()));
        drop(thread);
        scrubber.stop();
        assert!(scrubber
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none());
    }
}
