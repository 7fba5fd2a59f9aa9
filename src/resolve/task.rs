//! The resolver task: every name is resolved again when its TTL runs out, at most
//! `resolve_interval` later and at least 1 s after its last resolution; a nudge (an
//! address of the pool refused a connection) makes the pool's names due at once,
//! within the same 1 s floor. A timeout, SERVFAIL or REFUSED keeps the last good set;
//! an answer that the name has no address empties it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hickory_resolver::TokioResolver;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::lookup::{self, Outcome};
use super::{Key, NameStatus, Resolved, Sets, Spec, Table};
use crate::config::{MIN_RESOLVE_INTERVAL, ServerConfig};
use crate::metrics::Metrics;

/// How the health manager talks to the task.
pub struct Handle {
    pub spec: watch::Sender<Spec>,
    pub nudge: mpsc::Sender<Arc<str>>,
    pub resolved: mpsc::Receiver<Resolved>,
    pub task: JoinHandle<()>,
}

struct Entry {
    interval: Duration,
    due: Instant,
    last_try: Option<Instant>,
    set: Option<Vec<ServerConfig>>,
}

struct Task {
    entries: HashMap<Key, Entry>,
    resolver: Option<TokioResolver>,
    table: Table,
    metrics: Arc<Metrics>,
    out: mpsc::Sender<Resolved>,
}

/// Start following `spec`; `known` are the sets the first round found.
pub fn spawn(
    spec: Spec,
    known: &Sets,
    table: Table,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) -> Handle {
    let (spec_tx, mut spec_rx) = watch::channel(spec.clone());
    let (nudge_tx, mut nudge_rx) = mpsc::channel::<Arc<str>>(64);
    let (out, resolved) = mpsc::channel(256);
    let mut t = Task {
        entries: HashMap::new(),
        resolver: None,
        table,
        metrics,
        out,
    };
    t.follow(&spec, known);
    let task = tokio::spawn(async move {
        loop {
            let next = t.entries.values().map(|e| e.due).min();
            let sleep = next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            enum Next {
                Round,
                Spec(Spec),
                Nudge(Arc<str>),
                Stop,
            }
            let next = tokio::select! {
                _ = tokio::time::sleep_until(sleep) => Next::Round,
                changed = spec_rx.changed() => match changed {
                    Ok(()) => Next::Spec(spec_rx.borrow_and_update().clone()),
                    Err(_) => Next::Stop,
                },
                Some(pool) = nudge_rx.recv() => Next::Nudge(pool),
                _ = stop.wait_for(|s| *s) => Next::Stop,
            };
            match next {
                Next::Round => t.round().await,
                Next::Spec(spec) => t.follow(&spec, &Sets::new()),
                Next::Nudge(pool) => t.nudge(&pool),
                Next::Stop => return,
            }
        }
    });
    Handle {
        spec: spec_tx,
        nudge: nudge_tx,
        resolved,
        task,
    }
}

impl Task {
    /// Follow the names of `spec`: a name followed before keeps its state; a new one
    /// is due at once (unless the first round found it); a changed resolver is rebuilt.
    fn follow(&mut self, spec: &Spec, known: &Sets) {
        let now = Instant::now();
        let mut next = HashMap::new();
        for (pool, name, interval) in &spec.names {
            let key = (pool.clone(), name.clone());
            let interval = (*interval).max(MIN_RESOLVE_INTERVAL);
            let entry = match self.entries.remove(&key) {
                Some(mut e) => {
                    e.interval = interval;
                    e.due = e.due.min(now + interval);
                    e
                }
                None => Entry {
                    interval,
                    due: if known.contains_key(&key) {
                        now + interval
                    } else {
                        now
                    },
                    last_try: known.contains_key(&key).then_some(now),
                    set: known.get(&key).cloned(),
                },
            };
            next.insert(key, entry);
        }
        self.entries = next;
        if let Ok(mut t) = self.table.lock() {
            t.retain(|k, _| self.entries.contains_key(k));
        }
        match lookup::resolver(&spec.settings) {
            Ok(r) => self.resolver = Some(r),
            Err(e) => {
                tracing::error!(error = %e, "names cannot be resolved");
                self.resolver = None;
            }
        }
    }

    /// A pool's address refused a connection: its names are due (1 s apart at most).
    fn nudge(&mut self, pool: &str) {
        let now = Instant::now();
        for ((p, name), e) in &mut self.entries {
            if &**p == pool {
                let soonest = e.last_try.map_or(now, |t| t + MIN_RESOLVE_INTERVAL);
                if soonest < e.due {
                    tracing::debug!(pool, %name, "a refused connection: resolving again early");
                    e.due = soonest.max(now);
                }
            }
        }
    }

    /// Resolve every due name, concurrently.
    async fn round(&mut self) {
        let now = Instant::now();
        let due: Vec<Key> = (self.entries.iter())
            .filter(|(_, e)| e.due <= now)
            .map(|(k, _)| k.clone())
            .collect();
        let outcomes = match &self.resolver {
            Some(r) => {
                futures_util::future::join_all(due.iter().map(|k| lookup::resolve(r, &k.1))).await
            }
            None => due
                .iter()
                .map(|_| Outcome::Failed("no resolver (see the error at start or reload)".into()))
                .collect(),
        };
        for (key, outcome) in due.into_iter().zip(outcomes) {
            self.settle(key, outcome).await;
        }
    }

    /// Record one outcome, schedule the name again, and report a changed set.
    async fn settle(&mut self, key: Key, outcome: Outcome) {
        record(&self.table, &key, &outcome);
        self.metrics.resolution(&key.0, result(&outcome));
        let Some(e) = self.entries.get_mut(&key) else {
            return;
        };
        let now = Instant::now();
        e.last_try = Some(now);
        let (set, wait) = match &outcome {
            Outcome::Found(addrs, ttl) => (
                Some(addrs.clone()),
                (*ttl).clamp(MIN_RESOLVE_INTERVAL, e.interval),
            ),
            Outcome::Gone(why) => {
                tracing::warn!(pool = %key.0, name = %key.1, why, "name has no address: its servers leave the pool");
                (Some(Vec::new()), e.interval)
            }
            Outcome::Failed(why) => {
                tracing::warn!(pool = %key.0, name = %key.1, error = %why, "resolution failed; keeping the last addresses");
                (None, e.interval)
            }
        };
        e.due = now + wait;
        let Some(set) = set.filter(|s| e.set.as_ref() != Some(s)) else {
            return;
        };
        let shown: Vec<String> = set.iter().map(|s| s.addr.to_string()).collect();
        tracing::info!(pool = %key.0, name = %key.1, addresses = %shown.join(", "), "name resolved to a new set");
        e.set = Some(set.clone());
        let _ = self.out.send(Resolved { key, addrs: set }).await;
    }
}

fn result(o: &Outcome) -> &'static str {
    match o {
        Outcome::Found(..) => "found",
        Outcome::Gone(_) => "gone",
        Outcome::Failed(_) => "failed",
    }
}

/// Note an outcome in the admin's table.
pub(super) fn record(table: &Table, key: &Key, outcome: &Outcome) {
    let Ok(mut t) = table.lock() else { return };
    let st = t.entry(key.clone()).or_insert_with(NameStatus::default);
    match outcome {
        Outcome::Found(addrs, ttl) => {
            st.addrs = addrs.clone();
            st.ttl = Some(*ttl);
            st.resolved_at = Some(SystemTime::now());
            st.last_error = None;
        }
        Outcome::Gone(why) => {
            st.addrs.clear();
            st.ttl = None;
            st.resolved_at = Some(SystemTime::now());
            st.last_error = Some(why.clone());
        }
        Outcome::Failed(why) => st.last_error = Some(why.clone()),
    }
}
