//! The pool views the request path reads, rebuilt from the trackers on every
//! transition, and panic mode for active checks (Envoy's panic threshold): when no
//! server passes (or fewer than `panic_threshold` percent), the servers that fail only
//! their checks (not dead, ejected or draining) serve too, so checks that are wrong
//! about every server (a saturated bench, a slow database behind the ping) cannot
//! take the whole pool down. A pool with a `fallback` falls back instead.

use std::time::SystemTime;

use tokio::time::Instant;

use super::{Manager, RAMP_SCALE};
use crate::upstream::{Pool, PoolView};

impl Manager {
    /// Rebuild every pool's view from the trackers and publish it.
    pub(super) fn publish(&mut self) {
        let snap = self.state.load();
        let now = Instant::now();
        self.ramping = false;
        let views: Vec<PoolView> = snap.pools.iter().map(|p| self.view(p, now)).collect();
        for p in snap.pools.iter() {
            for e in &p.endpoints {
                if let Some(t) = self.trackers.get(&(p.name.clone(), e.addr)) {
                    let (state, ejections) = (t.state(), t.ejections);
                    let until = t
                        .ejected_until
                        .map(|u| SystemTime::now() + u.saturating_duration_since(now));
                    e.stats.update_status(|s| {
                        s.state = state;
                        s.ejections = ejections;
                        s.ejected_until = until;
                    });
                }
            }
        }
        self.state.store(snap.with_views(views));
    }

    fn view(&mut self, p: &Pool, now: Instant) -> PoolView {
        let mut eligible = Vec::new();
        for (i, e) in p.endpoints.iter().enumerate() {
            let Some(t) = self.trackers.get(&(p.name.clone(), e.addr)) else {
                continue;
            };
            if !t.eligible() {
                continue;
            }
            let full = e.weight * RAMP_SCALE;
            let w = match (p.cfg.slow_start, t.joined) {
                (Some(ss), Some(j)) if now.duration_since(j) < ss => {
                    self.ramping = true;
                    let frac = now.duration_since(j).as_secs_f64() / ss.as_secs_f64();
                    ((f64::from(full) * frac) as u32).max(1)
                }
                _ => full,
            };
            eligible.push((i, w));
        }
        let panic = self.panic(p, eligible.len());
        self.note_panic(p, panic.len());
        let in_panic = !panic.is_empty();
        eligible.extend(panic);
        PoolView::new(p.cfg.balance, eligible, &p.endpoints).in_panic(in_panic)
    }

    /// The servers panic mode adds to a pool with `healthy` eligible servers: those
    /// failing only their checks, at full weight, when too few pass.
    fn panic(&self, p: &Pool, healthy: usize) -> Vec<(usize, u32)> {
        let Some(check) = &p.cfg.health else {
            return Vec::new();
        };
        if !check.panic || p.cfg.fallback.is_some() {
            return Vec::new();
        }
        let tracker = |e: &crate::upstream::Endpoint| self.trackers.get(&(p.name.clone(), e.addr));
        let serving = p
            .endpoints
            .iter()
            .filter(|e| tracker(e).is_some_and(|t| !t.draining))
            .count();
        let few = healthy * 100 < usize::from(check.panic_threshold) * serving;
        if serving == 0 || (healthy > 0 && !few) {
            return Vec::new();
        }
        p.endpoints
            .iter()
            .enumerate()
            .filter(|(_, e)| tracker(e).is_some_and(|t| t.failing_checks_only()))
            .map(|(i, e)| (i, e.weight * RAMP_SCALE))
            .collect()
    }

    /// Log a pool entering or leaving panic mode.
    fn note_panic(&mut self, p: &Pool, added: usize) {
        let was = self.panicking.contains(&p.name);
        if added > 0 && !was {
            self.panicking.insert(p.name.clone());
            tracing::warn!(pool = %p.name, servers = added, "panic mode: too few servers pass active checks; the failing ones serve too");
        } else if added == 0 && was {
            self.panicking.remove(&p.name);
            tracing::info!(pool = %p.name, "panic mode over");
        }
    }
}
