//! The one listener shape every port uses: an accept loop with a connection limit, one
//! task per connection, graceful drain; and the byte budget that bounds what all
//! connections together may hold of requests not yet received in full.
//!
//! A listener at its connection limit accepts and at once closes the newcomer (counted,
//! logged at most once per second), so a client learns immediately instead of waiting in
//! the kernel's backlog, and a flood on one port never takes the descriptors or the
//! memory another port needs. What a connection does is the caller's: the native
//! protocol and the record port run `framed` over the stream, HTTP runs hyper.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// How one listener admits and ends connections.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Its name in logs: `native`, `http`, `records`.
    pub name: &'static str,
    /// Most connections open at once; past it newcomers are closed at once.
    pub max_connections: usize,
    /// On shutdown, how long open connections get to finish before they are cut.
    pub drain: Duration,
}

/// Accepts on `listener` until `stop` flips, running `handle` in a task of its own for
/// each connection admitted; then waits up to `config.drain` for them to end.
pub async fn accept_loop<H, F>(
    listener: TcpListener,
    config: ListenerConfig,
    mut stop: watch::Receiver<bool>,
    handle: H,
) where
    H: Fn(TcpStream, SocketAddr) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let mut connections = JoinSet::new();
    let mut last_warning: Option<Instant> = None;
    let mut refused: u64 = 0;
    loop {
        let (socket, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning.
                    tracing::warn!(listener = config.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            refused += 1;
            if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                last_warning = Some(Instant::now());
                tracing::warn!(
                    listener = config.name,
                    limit = config.max_connections,
                    refused,
                    "connection limit reached; closing new connections"
                );
            }
            drop(socket);
            continue;
        };
        let _ = socket.set_nodelay(true);
        let task = handle(socket, peer);
        connections.spawn(async move {
            task.await;
            drop(permit);
        });
        // Reap finished connections so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    if tokio::time::timeout(config.drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tracing::warn!(
            listener = config.name,
            "closing connections still busy after the drain timeout"
        );
        connections.abort_all();
    }
}

/// Bytes of requests being received, shared by every connection of every listener.
///
/// A connection reserves what it buffers beyond a small allowance of its own
/// ([`ByteBudget::FREE_BYTES`], enough for any ordinary request) before reading more;
/// when the budget is spent it waits, reading nothing (backpressure), until others
/// finish or its frame times out. So partially received requests together hold at most
/// `connections × FREE_BYTES + budget` bytes, however many clients stall mid-request.
#[derive(Debug)]
pub struct ByteBudget {
    /// One permit per KiB.
    kib: Arc<Semaphore>,
    total_kib: usize,
}

impl ByteBudget {
    /// What each connection may buffer without reserving.
    pub const FREE_BYTES: usize = 64 << 10;

    /// A budget of `bytes` (rounded up to KiB, at least one maximum-size request should
    /// fit or large requests wait for their frame timeout).
    pub fn new(bytes: usize) -> Arc<Self> {
        let total_kib = bytes.div_ceil(1024).clamp(1, Semaphore::MAX_PERMITS);
        Arc::new(Self {
            kib: Arc::new(Semaphore::new(total_kib)),
            total_kib,
        })
    }

    /// The whole budget, in bytes.
    pub fn total_bytes(&self) -> usize {
        self.total_kib * 1024
    }

    /// KiB not reserved right now.
    pub fn available_bytes(&self) -> usize {
        self.kib.available_permits() * 1024
    }

    /// An empty reservation that can grow from this budget.
    pub fn reservation(self: &Arc<Self>) -> Reservation {
        Reservation {
            budget: Arc::clone(self),
            held_kib: 0,
        }
    }
}

/// Part of a [`ByteBudget`] held by one request or connection; returned when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<ByteBudget>,
    held_kib: usize,
}

impl Reservation {
    /// Makes the reservation cover `bytes` beyond the free allowance, waiting for the
    /// budget if it has to grow. Shrinks at once. A request larger than the whole budget
    /// is given the whole budget (it still fits the frame limit, which bounds it).
    pub async fn cover(&mut self, bytes: usize) {
        let want = bytes
            .saturating_sub(ByteBudget::FREE_BYTES)
            .div_ceil(1024)
            .min(self.budget.total_kib);
        if want <= self.held_kib {
            self.release_to(want);
            return;
        }
        let more = want - self.held_kib;
        let Ok(more32) = u32::try_from(more) else {
            return;
        };
        if let Ok(permit) = self.budget.kib.acquire_many(more32).await {
            permit.forget();
            self.held_kib = want;
        }
    }

    fn release_to(&mut self, kib: usize) {
        if self.held_kib > kib {
            self.budget.kib.add_permits(self.held_kib - kib);
            self.held_kib = kib;
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.release_to(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reservations_share_the_budget_and_return_it() {
        let budget = ByteBudget::new(256 << 10);
        let mut a = budget.reservation();
        // Within the free allowance nothing is reserved.
        a.cover(ByteBudget::FREE_BYTES).await;
        assert_eq!(budget.available_bytes(), 256 << 10);
        a.cover(ByteBudget::FREE_BYTES + (200 << 10)).await;
        assert_eq!(budget.available_bytes(), 56 << 10);
        // A second one waits while the budget is spent...
        let mut b = budget.reservation();
        let waiting = tokio::time::timeout(
            Duration::from_millis(50),
            b.cover(ByteBudget::FREE_BYTES + (100 << 10)),
        )
        .await;
        assert!(waiting.is_err(), "must wait for the budget");
        // ...and proceeds once the first shrinks.
        a.cover(0).await;
        b.cover(ByteBudget::FREE_BYTES + (100 << 10)).await;
        assert_eq!(budget.available_bytes(), 156 << 10);
        drop(b);
        drop(a);
        assert_eq!(budget.available_bytes(), 256 << 10);
        // More than the whole budget gets the whole budget, not a deadlock.
        let mut c = budget.reservation();
        c.cover(10 << 20).await;
        assert_eq!(budget.available_bytes(), 0);
    }
}
