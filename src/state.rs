//! The runtime snapshot: routes, pools, and which servers may take traffic, for one
//! config generation, published whole through one `ArcSwap`. A request sees routes,
//! pools and views that belong together. The health manager is the only writer after
//! start-up: on each health transition it republishes the same routes and pools with
//! new views.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use ipnet::IpNet;

use crate::config::{Config, Listener, ServerSettings};
use crate::host_limit::HostLimit;
use crate::metrics::{Metrics, Prepared};
use crate::routing::RouteTable;
use crate::upstream::{EndpointStats, Pool, PoolView};

/// What a listener contributes to request handling.
#[derive(Debug)]
pub struct ListenerInfo {
    pub name: Arc<str>,
    pub addr: SocketAddr,
    /// TLS termination for this listener, built from the config's certificates.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub redirect_https: bool,
    pub trusted_proxies: Vec<IpNet>,
    /// Largest request body; `None` = no limit.
    pub max_body_size: Option<u64>,
    /// Pages for errors the proxy generates.
    pub error_pages: Vec<crate::routing::ErrorPage>,
    /// Added to every response after the route's (see `proxy::respond::filters`).
    pub add_response_headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub response_headers_always: bool,
    /// The site pinned to this listener.
    pub site: Option<Arc<str>>,
    /// `max_requests_per_host`'s counters.
    pub host_limit: Option<Arc<HostLimit>>,
    /// HTTP/3 on this listener's port (`http3 = true`), and the `Alt-Svc` value that
    /// advertises it on HTTP/1.1 and HTTP/2 responses.
    pub http3: Option<crate::config::Http3>,
    pub alt_svc: Option<http::HeaderValue>,
}

impl ListenerInfo {
    fn new(l: &Listener) -> Self {
        ListenerInfo {
            name: l.name.clone(),
            addr: l.addr,
            tls: l.tls.clone(),
            redirect_https: l.redirect_https,
            trusted_proxies: l.trusted_proxies.clone(),
            max_body_size: l.max_body_size,
            error_pages: l.error_pages.clone(),
            add_response_headers: l.add_response_headers.clone(),
            response_headers_always: l.response_headers_always,
            site: l.site.clone(),
            host_limit: l.max_requests_per_host.map(HostLimit::new),
            alt_svc: l.http3.as_ref().map(|h| alt_svc(l.addr.port(), h)),
            http3: l.http3.clone(),
        }
    }
}

/// `h3=":PORT"; ma=SECONDS`: HTTP/3 is served on this port too.
fn alt_svc(port: u16, h: &crate::config::Http3) -> http::HeaderValue {
    let v = format!("h3=\":{port}\"; ma={}", h.alt_svc_max_age.as_secs());
    http::HeaderValue::try_from(v).expect("invariant: digits and ASCII form a header value")
}

/// Server counters keyed by (pool, address), so they outlive any one snapshot.
#[derive(Debug, Default)]
pub struct StatsTable {
    stats: HashMap<(Arc<str>, SocketAddr), Arc<EndpointStats>>,
}

impl StatsTable {
    pub fn stats_for(&mut self, pool: &Arc<str>, addr: SocketAddr) -> Arc<EndpointStats> {
        self.stats.entry((pool.clone(), addr)).or_default().clone()
    }
}

/// One immutable generation as the request path sees it.
#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub routes: Arc<RouteTable>,
    pub pools: Arc<Vec<Pool>>,
    /// Per pool (same index): the servers that may take traffic now.
    pub views: Vec<PoolView>,
    pub listeners: Arc<Vec<ListenerInfo>>,
    /// Shared with every connection that arrived under this generation (a parked
    /// connection holds a pointer, not a copy).
    pub server: Arc<ServerSettings>,
    pub metrics: Arc<Metrics>,
    /// This generation's metric handles (no label lookups on the request path).
    pub prepared: Arc<Prepared>,
    /// Bearer token for admin changes.
    pub admin_token: Option<Arc<str>>,
    pub sites: Option<Arc<crate::sites::Sites>>,
    /// Request class names; index 0 is `default`.
    pub classes: Arc<Vec<Arc<str>>>,
    pub compression: Option<Arc<crate::config::CompressionSettings>>,
}

impl Snapshot {
    /// Build the runtime view of `config`; every server starts eligible at full weight.
    pub fn build(
        config: &Config,
        generation: u64,
        stats: &mut StatsTable,
        metrics: Arc<Metrics>,
        previous: Option<&Snapshot>,
    ) -> Self {
        let pools: Vec<Pool> = config
            .pools
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let prev = previous.and_then(|s| s.pools.iter().find(|q| q.name == p.name));
                Pool::new(i, p, &mut |addr| stats.stats_for(&p.name, addr), prev)
            })
            .collect();
        let views = pools.iter().map(full_view).collect();
        let prepared = Arc::new(metrics.prepare(config));
        Snapshot {
            generation,
            routes: Arc::new(RouteTable::new(config.routes.clone())),
            pools: Arc::new(pools),
            views,
            listeners: Arc::new(config.listeners.iter().map(ListenerInfo::new).collect()),
            server: Arc::new(config.server.clone()),
            metrics,
            prepared,
            admin_token: config.admin.token.as_deref().map(Arc::from),
            sites: config.sites.clone(),
            classes: Arc::new(config.classes.clone()),
            compression: config.compression.clone(),
        }
    }

    /// The same generation with new server views.
    pub fn with_views(&self, views: Vec<PoolView>) -> Self {
        Snapshot {
            generation: self.generation,
            routes: self.routes.clone(),
            pools: self.pools.clone(),
            views,
            listeners: self.listeners.clone(),
            server: self.server.clone(),
            metrics: self.metrics.clone(),
            prepared: self.prepared.clone(),
            admin_token: self.admin_token.clone(),
            sites: self.sites.clone(),
            classes: self.classes.clone(),
            compression: self.compression.clone(),
        }
    }

    pub fn view(&self, pool: usize) -> Option<&PoolView> {
        self.views.get(pool)
    }

    /// Index (for the `listener` route condition) of the listener bound to `addr`.
    pub fn listener_index(&self, addr: SocketAddr) -> usize {
        self.listeners
            .iter()
            .position(|l| l.addr == addr)
            .unwrap_or(usize::MAX)
    }
}

/// Every server of `pool` eligible, at its full weight.
fn full_view(pool: &Pool) -> PoolView {
    let weights = pool
        .endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| (i, e.weight));
    PoolView::new(pool.cfg.balance, weights.collect(), &pool.endpoints)
}

/// The one published snapshot. Readers `load()` without locking; one writer stores.
#[derive(Debug)]
pub struct SharedState {
    current: ArcSwap<Snapshot>,
    /// What the resolver last said of every server name (for the admin API).
    pub names: crate::resolve::Table,
}

impl SharedState {
    pub fn new(snapshot: Snapshot) -> Self {
        SharedState {
            current: ArcSwap::from_pointee(snapshot),
            names: Default::default(),
        }
    }

    /// With the name table the first round of resolutions filled.
    pub fn with_names(mut self, names: crate::resolve::Table) -> Self {
        self.names = names;
        self
    }

    /// The current snapshot, kept alive for as long as the caller holds it (a request
    /// finishes on the generation it started with).
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    pub fn store(&self, snapshot: Snapshot) {
        self.current.store(Arc::new(snapshot));
    }
}
