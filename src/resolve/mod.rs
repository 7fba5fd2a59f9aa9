//! Servers by name. Each name among a pool's `servers` (`"backend:8000"`, or
//! `{ srv = "_http._tcp.gunicorn…" }`) becomes the set of its current addresses,
//! resolved in the background and never on the request path. The health manager owns
//! the resolver task: it says which names to follow ([`Spec`]) and when an address
//! refused a connection (a nudge), and receives every set that changed
//! ([`Resolved`]), which it publishes through the same snapshot swap as any change:
//! new addresses join (through health checks where the pool has them), removed ones
//! get no new requests and their requests in flight finish.
//!
//! - `lookup.rs`: one resolution with hickory-resolver, and what its answer means.
//! - `task.rs`: the schedule (the TTL, `resolve_interval`, at least 1 s apart, nudges).

mod lookup;
mod task;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

pub use lookup::Outcome;
pub use task::{Handle, spawn};

use crate::config::{Config, NameConfig, ResolverSettings, ServerConfig};

/// One name of one pool.
pub type Key = (Arc<str>, NameConfig);

/// The current address set of every name resolved so far.
pub type Sets = HashMap<Key, Vec<ServerConfig>>;

/// What the resolver last said about one name, for the admin API.
#[derive(Debug, Clone, Default)]
pub struct NameStatus {
    pub addrs: Vec<ServerConfig>,
    pub ttl: Option<Duration>,
    pub resolved_at: Option<SystemTime>,
    pub last_error: Option<String>,
}

/// Every name's status, shared with the admin API.
pub type Table = Arc<Mutex<BTreeMap<Key, NameStatus>>>;

/// What the resolver task follows: the resolver settings and every (pool, name).
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub settings: ResolverSettings,
    pub names: Vec<(Arc<str>, NameConfig, Duration)>,
}

impl Spec {
    pub fn of(config: &Config) -> Spec {
        let names = config
            .pools
            .iter()
            .flat_map(|p| {
                p.names
                    .iter()
                    .map(|n| (p.name.clone(), n.clone(), p.resolve_interval))
            })
            .collect();
        Spec {
            settings: config.resolver.clone(),
            names,
        }
    }
}

/// A name whose set of addresses changed.
#[derive(Debug)]
pub struct Resolved {
    pub key: Key,
    pub addrs: Vec<ServerConfig>,
}

/// Resolve every name of `config` once, concurrently (at start, before serving, so a
/// restart or an upgrade does not answer 503 while names resolve).
pub async fn first_round(config: &Config, table: &Table) -> Sets {
    let spec = Spec::of(config);
    if spec.names.is_empty() {
        return Sets::new();
    }
    let r = match lookup::resolver(&spec.settings) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "names cannot be resolved");
            return Sets::new();
        }
    };
    let outcomes =
        futures_util::future::join_all(spec.names.iter().map(|(_, n, _)| lookup::resolve(&r, n)))
            .await;
    let mut sets = Sets::new();
    for ((pool, name, _), outcome) in spec.names.into_iter().zip(outcomes) {
        let key = (pool, name);
        task::record(table, &key, &outcome);
        if let Outcome::Found(addrs, _) = outcome {
            sets.insert(key, addrs);
        }
    }
    sets
}

/// For `--check`: resolve every name once; one line per name with its addresses, or
/// a warning when it has none (not an error: the pool waits for it).
pub async fn check(config: &Config) -> Vec<String> {
    let table = Table::default();
    first_round(config, &table).await;
    let t = table.lock().map(|t| t.clone()).unwrap_or_default();
    Spec::of(config)
        .names
        .into_iter()
        .map(|(pool, name, every)| {
            let st = t.get(&(pool.clone(), name.clone()));
            match st.filter(|s| !s.addrs.is_empty()) {
                Some(s) => {
                    let a: Vec<String> = s.addrs.iter().map(|a| a.addr.to_string()).collect();
                    format!("pool {pool}: name {name} -> {} (re-resolved every {every:?} at most)", a.join(", "))
                }
                None => format!(
                    "warning: pool {pool}: name {name} has no address now ({}); switchyard starts and the pool answers 503 until it resolves",
                    st.and_then(|s| s.last_error.clone()).unwrap_or_else(|| "no answer".into())
                ),
            }
        })
        .collect()
}

/// The config a snapshot is built from: `config` with each pool's resolved addresses
/// added to its servers (an address already there keeps its place), and, for a pool
/// left without any server, why (its names and what the resolver said).
pub fn expand(config: &Config, sets: &Sets, table: &Table) -> Config {
    let mut out = config.clone();
    let statuses = table.lock().map(|t| t.clone()).unwrap_or_default();
    for pool in out.pools.iter_mut().filter(|p| !p.names.is_empty()) {
        let mut why = Vec::new();
        for name in &pool.names {
            let key = (pool.name.clone(), name.clone());
            for s in sets.get(&key).into_iter().flatten() {
                if !pool.servers.iter().any(|x| x.addr == s.addr) {
                    pool.servers.push(*s);
                }
            }
            let said = statuses
                .get(&key)
                .and_then(|st| st.last_error.clone())
                .unwrap_or_else(|| "not resolved yet".into());
            why.push(format!("{name}: {said}"));
        }
        pool.unresolved = pool
            .servers
            .is_empty()
            .then(|| Arc::from(format!("no address for {}", why.join("; "))));
    }
    out
}
