//! The client connection cap (`[server] max_connections`, nginx's `worker_connections`,
//! HAProxy's `maxconn`). Each open client connection holds a permit. At the cap an
//! accept loop holds the client it just accepted until a place frees and accepts no
//! more, so the kernel's backlog holds the rest; meanwhile an idle keep-alive
//! connection (parked after serving a request) is asked to close to make room, as nginx
//! reuses idle connections, only when a client is actually waiting. A connection with a
//! request in flight, HTTP/2 or a WebSocket tunnel is never cut for that.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// How often, while at the cap, another idle connection is asked to close.
const RECLAIM_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub struct ConnectionCap {
    permits: Arc<Semaphore>,
    pub max: usize,
    reclaim: Notify,
    /// Times an accept loop found the cap reached.
    pub capped: AtomicU64,
    /// Idle connections closed to make room.
    pub reclaimed: AtomicU64,
}

impl ConnectionCap {
    pub fn new(max: usize) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        ConnectionCap {
            permits: Arc::new(Semaphore::new(max)),
            max,
            reclaim: Notify::new(),
            capped: AtomicU64::new(0),
            reclaimed: AtomicU64::new(0),
        }
    }

    /// Client connections open now.
    pub fn open(&self) -> usize {
        self.max - self.permits.available_permits()
    }

    /// A place at once, if there is one (connections queued when a listener closes).
    pub fn try_admit(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }

    /// A place for the next connection; at the cap, wait for one (not accepting
    /// meanwhile), asking an idle connection to close every [`RECLAIM_EVERY`].
    pub async fn admit(&self) -> OwnedSemaphorePermit {
        if let Ok(p) = self.permits.clone().try_acquire_owned() {
            return p;
        }
        self.capped.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            max = self.max,
            "client connection cap reached; new clients wait in the backlog"
        );
        loop {
            self.reclaim.notify_one();
            tokio::select! {
                p = self.permits.clone().acquire_owned() => {
                    if let Ok(p) = p {
                        return p;
                    }
                }
                _ = tokio::time::sleep(RECLAIM_EVERY) => {}
            }
        }
    }

    /// Resolves when an idle connection should close to make room (a parked
    /// connection waits on it beside its next request).
    pub async fn reclaimed(&self) {
        loop {
            self.reclaim.notified().await;
            if self.permits.available_permits() == 0 {
                self.reclaimed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn at_the_cap_an_idle_connection_is_asked_to_close() {
        let cap = Arc::new(ConnectionCap::new(1));
        let first = cap.admit().await;
        assert_eq!(cap.open(), 1);
        let idle = tokio::spawn({
            let cap = cap.clone();
            async move {
                cap.reclaimed().await;
                drop(first);
            }
        });
        let second = tokio::time::timeout(Duration::from_secs(2), cap.admit()).await;
        assert!(second.is_ok(), "the idle connection made room");
        idle.await.unwrap();
        assert_eq!(cap.capped.load(Ordering::Relaxed), 1);
        assert_eq!(cap.reclaimed.load(Ordering::Relaxed), 1);
    }
}
