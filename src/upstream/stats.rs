//! Per-server counters and health as the admin API shows them. One `EndpointStats`
//! per (pool, address), created by the health manager's registry and carried across
//! config generations. The request path touches only the atomics.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

/// Weight of a new latency sample in the moving average.
const EWMA_ALPHA: f64 = 0.2;

#[derive(Debug, Default)]
pub struct EndpointStats {
    pub in_flight: AtomicUsize,
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    /// Latency EWMA in microseconds, as f64 bits (0 = no sample yet).
    ewma_us: AtomicU64,
    /// Response heads received from the server: the health manager reads it to tell a
    /// busy server (answering the proxy's requests) from a dead one.
    pub answers: AtomicU64,
    /// Consecutive connect/reset/timeout failures of live traffic.
    pub consecutive_failures: AtomicU32,
    pub consecutive_5xx: AtomicU32,
    /// An eject request is on its way to the health manager (sent once per streak).
    pub eject_pending: AtomicBool,
    /// Written by the health manager, read by the admin API; never by requests.
    pub status: Mutex<Status>,
}

/// Rotation state of one server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ServerState {
    #[default]
    Healthy,
    Unhealthy,
    Ejected,
    Draining,
    /// Added by a reload, not probed yet.
    Unknown,
}

impl ServerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::Healthy => "healthy",
            ServerState::Unhealthy => "unhealthy",
            ServerState::Ejected => "ejected",
            ServerState::Draining => "draining",
            ServerState::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ProbeRecord {
    pub at: SystemTime,
    pub ok: bool,
    pub latency: Duration,
    pub detail: String,
}

/// What the admin API reports about a server.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub state: ServerState,
    pub last_probe: Option<ProbeRecord>,
    pub probe_successes: u32,
    pub probe_failures: u32,
    pub ejections: u32,
    pub ejected_until: Option<SystemTime>,
}

impl EndpointStats {
    pub fn ewma_us(&self) -> f64 {
        f64::from_bits(self.ewma_us.load(Ordering::Relaxed))
    }

    /// Fold one response-head latency into the EWMA. A lost update under a race only
    /// drops one sample, which an average tolerates.
    pub fn observe_latency(&self, d: Duration) {
        self.answers.fetch_add(1, Ordering::Relaxed);
        let sample = d.as_secs_f64() * 1e6;
        let old = self.ewma_us();
        let new = if old == 0.0 {
            sample
        } else {
            old + EWMA_ALPHA * (sample - old)
        };
        self.ewma_us.store(new.to_bits(), Ordering::Relaxed);
    }

    /// Snapshot of the admin view.
    pub fn status(&self) -> Status {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Let the health manager rewrite the admin view.
    pub fn update_status(&self, f: impl FnOnce(&mut Status)) {
        if let Ok(mut s) = self.status.lock() {
            f(&mut s);
        }
    }
}
