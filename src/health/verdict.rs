//! What a probe result does to a server. A pass or a failure feeds the rise/fall
//! threshold, except a timeout while the server is busy with the proxy's own requests:
//! a probe that waited behind them says nothing about the server's health, and
//! counting it would turn saturation into an outage (the report flood of a Frappe
//! bench). A refused or reset connection always counts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::Manager;
use super::events::ProbeFailure;
use super::tracker::Tracker;
use crate::config::HealthCheck;
use crate::upstream::{Endpoint, ProbeRecord};

/// How the manager sees a server when a probe result comes in.
#[derive(Debug, Clone, Copy)]
pub(super) struct Load {
    pub in_flight: usize,
    /// The per-server limit now; 0 = none.
    pub limit: usize,
    /// When the server was last seen answering a proxied request.
    pub answered_at: Option<Instant>,
}

/// Whether a probe timeout is explained by the server being busy: it is at its
/// concurrency limit, or it answered proxied requests within the last
/// `unhealthy_after + 1` probe periods.
pub(super) fn busy(load: Load, check: &HealthCheck, now: Instant) -> bool {
    if check.busy_fails {
        return false;
    }
    let period = check.interval.max(check.timeout);
    let window = period.saturating_mul(check.unhealthy_after.saturating_add(1));
    let at_limit = load.limit > 0 && load.in_flight >= load.limit;
    let recent = load
        .answered_at
        .is_some_and(|t| now.saturating_duration_since(t) <= window);
    at_limit || recent
}

impl Manager {
    /// Apply one probe result; true when the published view must change.
    pub(super) fn on_probe(
        &mut self,
        pool: Arc<str>,
        addr: SocketAddr,
        failure: Option<ProbeFailure>,
        latency: Duration,
        mut detail: String,
    ) -> bool {
        let Some((endpoint, check)) = self.probed_server(&pool, addr) else {
            return false;
        };
        let Some(t) = self.trackers.get_mut(&(pool.clone(), addr)) else {
            return false;
        };
        let now = Instant::now();
        let load = observe_answers(t, &endpoint, now);
        let excused = failure == Some(ProbeFailure::Timeout) && busy(load, &check, now);
        let result = match (failure, excused) {
            (None, _) => "pass",
            (Some(_), true) => "busy",
            (Some(_), false) => "fail",
        };
        self.state.load().metrics.health_check(&pool, addr, result);
        if excused {
            detail = format!(
                "{detail}; not counted: the server is busy ({} in flight, answering)",
                load.in_flight
            );
            tracing::debug!(pool = %pool, server = %addr, %detail, "probe timed out behind proxied requests");
            record(&endpoint, false, latency, detail, None);
            return false;
        }
        let ok = failure.is_none();
        t.dead = failure.is_some_and(ProbeFailure::is_dead);
        let (changed, counts) = Self::judge(&pool, addr, t, ok, &detail);
        record(&endpoint, ok, latency, detail, Some(counts));
        changed
    }

    /// Feed the threshold; returns (view changed, the admin's pass/fail counts).
    fn judge(
        pool: &str,
        addr: SocketAddr,
        t: &mut Tracker,
        ok: bool,
        detail: &str,
    ) -> (bool, (bool, bool, u32)) {
        let before = t.eligible();
        let flip = t.active.as_mut().and_then(|c| c.observe(ok));
        if ok && t.awaiting_probe {
            t.awaiting_probe = false;
        }
        let first_result = !t.probed;
        t.probed = true;
        match flip {
            Some(true) => {
                tracing::info!(pool, server = %addr, "server healthy: active checks pass")
            }
            Some(false) => {
                tracing::warn!(pool, server = %addr, reason = %detail, "server unhealthy: active checks fail")
            }
            None => {}
        }
        let after = t.eligible();
        if !before && after {
            t.joined = Some(Instant::now());
        }
        let (streak, healthy) = t.active.map_or((0, true), |c| (c.streak(), c.is_healthy()));
        (before != after || first_result, (ok, healthy, streak))
    }

    /// The endpoint of `addr` in `pool` and the pool's check.
    fn probed_server(&self, pool: &str, addr: SocketAddr) -> Option<(Arc<Endpoint>, HealthCheck)> {
        let (snap, i) = self.pool(pool)?;
        let p = &snap.pools[i];
        let e = p.endpoints.iter().find(|e| e.addr == addr)?.clone();
        Some((e, p.cfg.health.clone()?))
    }
}

/// Note whether the server answered since its last probe result; its load now.
fn observe_answers(t: &mut Tracker, e: &Endpoint, now: Instant) -> Load {
    let answers = e.stats.answers.load(Ordering::Relaxed);
    if answers != t.answers_seen {
        t.answers_seen = answers;
        t.answered_at = Some(now);
    }
    Load {
        in_flight: e.in_flight(),
        limit: e.limit.load(Ordering::Relaxed),
        answered_at: t.answered_at,
    }
}

/// The admin view of the probe. `counts`: (passed, healthy, streak), or `None` for a
/// result that was not counted.
fn record(
    e: &Endpoint,
    ok: bool,
    latency: Duration,
    detail: String,
    counts: Option<(bool, bool, u32)>,
) {
    e.stats.update_status(|s| {
        s.last_probe = Some(ProbeRecord {
            at: SystemTime::now(),
            ok,
            latency,
            detail,
        });
        let Some((ok, healthy, streak)) = counts else {
            return;
        };
        (s.probe_successes, s.probe_failures) = match (ok, healthy) {
            (true, true) => (s.probe_successes + 1, 0),
            (true, false) => (streak, 0),
            (false, false) => (0, s.probe_failures + 1),
            (false, true) => (0, streak),
        };
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(busy_fails: bool) -> HealthCheck {
        HealthCheck {
            method: http::Method::GET,
            path: http::uri::PathAndQuery::from_static("/"),
            host: None,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            healthy_after: 2,
            unhealthy_after: 2,
            expect_status: vec![(200, 399)],
            body_contains: None,
            busy_fails,
            panic: true,
            panic_threshold: 0,
        }
    }

    #[test]
    fn a_timeout_is_excused_at_the_limit_or_after_recent_answers_only() {
        let now = Instant::now();
        let idle = Load {
            in_flight: 0,
            limit: 4,
            answered_at: None,
        };
        assert!(!busy(idle, &check(false), now), "nothing explains it");
        let full = Load {
            in_flight: 4,
            ..idle
        };
        assert!(busy(full, &check(false), now), "at its limit");
        assert!(!busy(full, &check(true), now), "busy = \"fail\"");
        let no_limit = Load {
            in_flight: 9,
            limit: 0,
            answered_at: None,
        };
        assert!(!busy(no_limit, &check(false), now), "no limit, no answers");
        let answered = Load {
            answered_at: Some(now - Duration::from_secs(14)),
            ..no_limit
        };
        assert!(busy(answered, &check(false), now), "answered 14 s ago");
        let long_ago = Load {
            answered_at: now.checked_sub(Duration::from_secs(16)),
            ..no_limit
        };
        assert!(
            !busy(long_ago, &check(false), now),
            "silent for 3 periods: dead"
        );
    }
}
