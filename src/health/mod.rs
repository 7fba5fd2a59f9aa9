//! The health manager: the one owner of server state and the only writer of the
//! published snapshot after start-up. Active probers (one task per pool with a
//! `health` section), passive ejection requests from the request path and admin
//! drain/enable all arrive here as [`Event`]s. The manager applies them to a tracker
//! per (pool, server) and republishes the snapshot's pool views only on transitions,
//! so the request path never waits on a probe or a lock.

//!
//! - `events.rs`: the manager's inbox ([`Event`], [`Events`]).
//! - `tracker.rs`: one server's state as the manager keeps it.
//! - `threshold.rs`: the rise/fall counter of active checks.
//! - `probe.rs`: one probe, and the loop that probes a pool's servers.
//! - `verdict.rs`: what a probe result does to a server (busy is not dead).
//! - `names.rs`: server names: the resolver task's changed sets and the config they expand.
//! - `view.rs`: the pool views published from the trackers, and panic mode.

mod events;
mod names;
mod probe;
mod threshold;
mod tracker;
mod verdict;
mod view;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

pub use events::{Event, Events, ProbeFailure};
pub use probe::probe;
pub use threshold::Threshold;

use probe::probe_loop;
use tracker::Tracker;

use crate::state::{SharedState, Snapshot, StatsTable};

/// Events queued for the manager before senders start dropping them.
const QUEUE: usize = 4096;
/// How often ejection expiry and slow-start ramps are looked at.
const TICK: Duration = Duration::from_millis(100);
/// How often idle upstream connections are checked for expiry and server closes.
const SWEEP: Duration = Duration::from_secs(1);
/// Slow-start weights are scaled by this so a ramp has steps.
const RAMP_SCALE: u32 = 10;

struct Manager {
    state: Arc<SharedState>,
    /// Server counters by (pool, address), lent to every snapshot built.
    stats: StatsTable,
    trackers: HashMap<(Arc<str>, SocketAddr), Tracker>,
    probe_now: HashMap<Arc<str>, Arc<Notify>>,
    probers: Vec<(watch::Sender<bool>, JoinHandle<()>)>,
    events: Events,
    ramping: bool,
    /// Pools in panic mode now (for logging its start and end once).
    panicking: std::collections::HashSet<Arc<str>>,
    /// The config as loaded (names unexpanded) and the names' current addresses.
    raw: crate::config::Config,
    sets: crate::resolve::Sets,
    /// Tells the resolver task what to follow and when to hurry.
    spec: tokio::sync::watch::Sender<crate::resolve::Spec>,
    nudge: mpsc::Sender<Arc<str>>,
}

/// Start the manager, one prober per pool with active checks, and the resolver task
/// for server names (`raw` is the config as loaded, `sets` what the first round of
/// resolutions found); all stop when `stop` flips.
pub fn spawn(
    state: Arc<SharedState>,
    stats: StatsTable,
    stop: watch::Receiver<bool>,
    raw: crate::config::Config,
    sets: crate::resolve::Sets,
) -> (Events, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let events = Events(tx);
    let metrics = state.load().metrics.clone();
    let spec = crate::resolve::Spec::of(&raw);
    let resolver = crate::resolve::spawn(spec, &sets, state.names.clone(), metrics, stop.clone());
    let mut m = Manager {
        state,
        stats,
        trackers: HashMap::new(),
        probe_now: HashMap::new(),
        probers: Vec::new(),
        events: events.clone(),
        ramping: false,
        panicking: Default::default(),
        raw,
        sets,
        spec: resolver.spec,
        nudge: resolver.nudge,
    };
    let snap = m.state.load();
    m.sync(&snap, true);
    let (resolved, resolver_task) = (resolver.resolved, resolver.task);
    let task = tokio::spawn(async move {
        m.run(rx, resolved, stop).await;
        for (stop, task) in m.probers.drain(..) {
            let _ = stop.send(true);
            let _ = task.await;
        }
        let _ = resolver_task.await;
    });
    (events, task)
}

impl Manager {
    async fn run(
        &mut self,
        mut rx: mpsc::Receiver<Event>,
        mut resolved: mpsc::Receiver<crate::resolve::Resolved>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut last_ramp = Instant::now();
        let mut last_sweep = Instant::now();
        loop {
            let changed = tokio::select! {
                ev = rx.recv() => match ev {
                    Some(ev) => self.handle(ev),
                    None => return,
                },
                Some(r) = resolved.recv() => self.on_resolved(r),
                _ = tick.tick() => {
                    let ramp = self.ramping && last_ramp.elapsed() >= Duration::from_secs(1);
                    if ramp {
                        last_ramp = Instant::now();
                    }
                    if last_sweep.elapsed() >= SWEEP {
                        last_sweep = Instant::now();
                        for pool in self.state.load().pools.iter() {
                            pool.sweep();
                        }
                    }
                    self.expire() || ramp
                }
                _ = stop.wait_for(|s| *s) => return,
            };
            if changed {
                self.publish();
            }
        }
    }

    /// Match trackers and probers to `snap`: servers present before keep their state;
    /// new ones (after start-up) start unknown in pools with active checks and are
    /// probed at once; removed ones are forgotten.
    fn sync(&mut self, snap: &Snapshot, start: bool) {
        let now = Instant::now();
        let mut next = HashMap::new();
        for pool in snap.pools.iter() {
            let health = pool.cfg.health.as_ref();
            for e in &pool.endpoints {
                let key = (pool.name.clone(), e.addr);
                let t = match self.trackers.remove(&key) {
                    Some(mut t) => {
                        let healthy = t.active.is_none_or(|c| c.is_healthy());
                        t.active = health
                            .map(|h| Threshold::new(healthy, h.healthy_after, h.unhealthy_after));
                        t
                    }
                    None => Tracker {
                        active: health
                            .map(|h| Threshold::new(true, h.healthy_after, h.unhealthy_after)),
                        ejected_until: None,
                        awaiting_probe: !start && health.is_some(),
                        ejections: 0,
                        draining: false,
                        joined: (!start).then_some(now),
                        probed: start || health.is_none(),
                        answers_seen: e.stats.answers.load(Ordering::Relaxed),
                        answered_at: None,
                        dead: false,
                    },
                };
                next.insert(key, t);
            }
        }
        self.trackers = next;
        self.admit_new_where_none_serve(snap);
        for (stop, _) in self.probers.drain(..) {
            let _ = stop.send(true);
        }
        self.probe_now.clear();
        for pool in snap.pools.iter() {
            let Some(check) = pool.cfg.health.clone() else {
                continue;
            };
            let now = Arc::new(Notify::new());
            self.probe_now.insert(pool.name.clone(), now.clone());
            let addrs = pool.endpoints.iter().map(|e| e.addr).collect();
            let (stop_tx, stop_rx) = watch::channel(false);
            let task = tokio::spawn(probe_loop(
                pool.name.clone(),
                addrs,
                check,
                pool.cfg.tls.clone(),
                self.events.clone(),
                now,
                stop_rx,
            ));
            self.probers.push((stop_tx, task));
        }
    }

    /// New servers wait for a passing probe, except in a pool where no other server
    /// may serve (a name that moved, a reload that replaced every server): there a
    /// probe would only stretch an outage, so they serve at once, as at start, and the
    /// probe that follows immediately takes out one that fails.
    fn admit_new_where_none_serve(&mut self, snap: &Snapshot) {
        for pool in snap.pools.iter() {
            let key = |e: &Arc<crate::upstream::Endpoint>| (pool.name.clone(), e.addr);
            let serving = pool
                .endpoints
                .iter()
                .any(|e| self.trackers.get(&key(e)).is_some_and(Tracker::eligible));
            if serving {
                continue;
            }
            for e in &pool.endpoints {
                if let Some(t) = self.trackers.get_mut(&key(e)).filter(|t| !t.probed) {
                    t.awaiting_probe = false;
                }
            }
        }
    }

    /// Build `config` (names expanded) into generation `generation`, carry state
    /// over, publish.
    fn build(&mut self, config: &crate::config::Config, generation: u64) -> u64 {
        let current = self.state.load();
        let next = Snapshot::build(
            config,
            generation,
            &mut self.stats,
            current.metrics.clone(),
            Some(&current),
        );
        self.sync(&next, false);
        self.state.store(next);
        self.publish();
        generation
    }

    fn pool(&self, name: &str) -> Option<(Arc<Snapshot>, usize)> {
        let snap = self.state.load();
        let i = snap.pools.iter().position(|p| &*p.name == name)?;
        Some((snap, i))
    }

    fn handle(&mut self, ev: Event) -> bool {
        match ev {
            Event::Probe {
                pool,
                addr,
                failure,
                latency,
                detail,
            } => self.on_probe(pool, addr, failure, latency, detail),
            Event::Eject { pool, addr, reason } => self.on_eject(&pool, addr, reason),
            Event::Apply { config, reply } => {
                let generation = self.apply(*config);
                let _ = reply.send(generation);
                false
            }
            Event::Refused { pool } => {
                let _ = self.nudge.try_send(pool);
                false
            }
            Event::Admin {
                pool,
                addr,
                drain,
                reply,
            } => {
                let key = self
                    .pool(&pool)
                    .map(|(s, i)| (s.pools[i].name.clone(), addr));
                let Some(t) = key.as_ref().and_then(|k| self.trackers.get_mut(k)) else {
                    let _ = reply.send(Err(format!("no server {addr} in pool `{pool}`")));
                    return false;
                };
                let changed = t.draining != drain;
                t.draining = drain;
                if !drain && changed {
                    t.joined = Some(Instant::now());
                }
                tracing::info!(pool, server = %addr, state = if drain { "draining" } else { "enabled" }, "server set by admin");
                let _ = reply.send(Ok(if drain { "draining" } else { "enabled" }));
                changed
            }
        }
    }

    fn on_eject(&mut self, pool: &Arc<str>, addr: SocketAddr, reason: &'static str) -> bool {
        let Some((snap, pi)) = self.pool(pool) else {
            return false;
        };
        let p = &snap.pools[pi];
        let stats = self.stats(pool, addr);
        if let Some(s) = &stats {
            s.eject_pending.store(false, Ordering::Relaxed);
            s.consecutive_failures.store(0, Ordering::Relaxed);
            s.consecutive_5xx.store(0, Ordering::Relaxed);
        }
        let others = p
            .endpoints
            .iter()
            .filter(|e| e.addr != addr)
            .filter(|e| {
                self.trackers
                    .get(&(pool.clone(), e.addr))
                    .is_some_and(Tracker::eligible)
            })
            .count();
        let Some(t) = self.trackers.get_mut(&(pool.clone(), addr)) else {
            return false;
        };
        if !t.eligible() {
            return false;
        }
        if others == 0 {
            tracing::warn!(pool = %pool, server = %addr, reason, "panic mode: not ejecting the last healthy server of the pool");
            return false;
        }
        let base = p.cfg.passive.ejection_time;
        let time = base
            .saturating_mul(1 << t.ejections.min(16))
            .min(p.cfg.passive.max_ejection_time);
        t.ejections += 1;
        t.ejected_until = Some(Instant::now() + time);
        tracing::warn!(pool = %pool, server = %addr, reason, ejection = t.ejections, secs = time.as_secs_f64(), "server ejected");
        true
    }

    /// End ejections whose time is up.
    fn expire(&mut self) -> bool {
        let now = Instant::now();
        let mut changed = false;
        for ((pool, addr), t) in &mut self.trackers {
            if t.ejected_until.is_some_and(|u| u <= now) {
                t.ejected_until = None;
                changed = true;
                if t.active.is_some() {
                    t.awaiting_probe = true;
                    if let Some(n) = self.probe_now.get(pool) {
                        n.notify_one();
                    }
                    tracing::info!(pool = %pool, server = %addr, "ejection over; waiting for a passing probe");
                } else {
                    t.joined = Some(now);
                    tracing::info!(pool = %pool, server = %addr, "ejection over; server back in rotation");
                }
            }
        }
        changed
    }

    fn stats(&self, pool: &str, addr: SocketAddr) -> Option<Arc<crate::upstream::EndpointStats>> {
        let (snap, i) = self.pool(pool)?;
        snap.pools[i]
            .endpoints
            .iter()
            .find(|e| e.addr == addr)
            .map(|e| e.stats.clone())
    }
}
