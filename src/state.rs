//! The runtime snapshot: routes, pools and listener facts of one config generation,
//! built off the request path and published whole through one `ArcSwap`, so a request
//! never sees new routes with old pools or the reverse.

use std::sync::Arc;

use arc_swap::ArcSwap;
use ipnet::IpNet;

use crate::config::{Config, ServerSettings};
use crate::routing::RouteTable;
use crate::upstream::Pool;

/// What a listener contributes to request handling.
#[derive(Debug)]
pub struct ListenerInfo {
    pub name: Arc<str>,
    pub trusted_proxies: Vec<IpNet>,
}

/// One immutable config generation as the request path sees it.
#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub routes: RouteTable,
    pub pools: Vec<Pool>,
    pub listeners: Vec<ListenerInfo>,
    pub server: ServerSettings,
}

impl Snapshot {
    /// Build the runtime view of `config`. Pool clients are created here, once.
    pub fn build(config: &Config, generation: u64) -> Self {
        Snapshot {
            generation,
            routes: RouteTable::new(config.routes.clone()),
            pools: config.pools.iter().map(Pool::new).collect(),
            listeners: config
                .listeners
                .iter()
                .map(|l| ListenerInfo {
                    name: l.name.clone(),
                    trusted_proxies: l.trusted_proxies.clone(),
                })
                .collect(),
            server: config.server.clone(),
        }
    }
}

/// The one published snapshot. Readers `load()` without locking; there is one writer.
#[derive(Debug)]
pub struct SharedState {
    current: ArcSwap<Snapshot>,
}

impl SharedState {
    pub fn new(snapshot: Snapshot) -> Self {
        SharedState {
            current: ArcSwap::from_pointee(snapshot),
        }
    }

    /// The current snapshot, kept alive for as long as the caller holds it (a request
    /// finishes on the generation it started with).
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Publish a new generation.
    pub fn store(&self, snapshot: Snapshot) {
        self.current.store(Arc::new(snapshot));
    }
}
