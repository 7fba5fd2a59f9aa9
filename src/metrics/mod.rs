//! Prometheus metrics, encoded by `prometheus-client` (and served as the Prometheus
//! text format, see `text`). The request path never looks a
//! metric up by label: every handle it touches (request counters per route × pool ×
//! status class, a duration histogram per route, a retry counter per pool) is created
//! when a snapshot is built and stored in it. The histogram is ours, with atomic
//! buckets, because the crate's own histogram takes a mutex per observation. Gauges
//! for server health and in-flight requests are filled in at scrape time.
//!
//! - `mod.rs`: [`Metrics`], the handles a snapshot prepares, and rendering at scrape time.
//! - `histogram.rs`: the lock-free duration histogram; `labels.rs`: the label sets.
//! - `text.rs`: the Prometheus text format 0.0.4.

mod histogram;
mod labels;
mod text;

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub use histogram::AtomicHistogram;
use labels::*;

use crate::config::Config;
use crate::upstream::{Endpoint, Pool, PoolView};

/// Status classes, indexed 0..6 as `1xx`..`5xx` plus `other`.
const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

pub fn class_of(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status / 100) - 1,
        _ => 5,
    }
}

/// Handles one route's requests use; built per snapshot.
#[derive(Debug, Clone)]
pub struct RouteHandles {
    /// Indexed `[pool * CLASSES.len() + class]`.
    requests: Vec<Counter>,
    pub duration: AtomicHistogram,
}

impl RouteHandles {
    pub fn requests(&self, pool: usize, status: u16) -> Option<&Counter> {
        self.requests.get(pool * CLASSES.len() + class_of(status))
    }
}

/// The handles of one snapshot.
#[derive(Debug, Clone, Default)]
pub struct Prepared {
    pub routes: Vec<RouteHandles>,
    /// Requests no route matched, by status class.
    pub unrouted: Vec<Counter>,
    pub retries: Vec<Counter>,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, AtomicHistogram>,
    retries: Family<PoolLabels, Counter>,
    healthy: Family<ServerLabels, Gauge>,
    in_flight: Family<ServerLabels, Gauge>,
    limit: Family<ServerLabels, Gauge>,
    class_in_flight: Family<ServerClassLabels, Gauge>,
    queued: Family<ClassLabels, Gauge>,
    rejected: Family<ClassLabels, Counter>,
    ejections: Family<ServerLabels, Gauge>,
    checks: Family<CheckLabels, Counter>,
    resolutions: Family<ResolutionLabels, Counter>,
    shortages: Family<ShortageLabels, Counter>,
    pub outcome_unknown: Counter,
    pub reload_failures: Counter,
    pub config_generation: Gauge,
    pub tunnels_open: Gauge,
    /// Client connections open, and those of them parked between requests.
    pub connections_open: Gauge,
    pub connections_parked: Gauge,
    /// The client connection cap, and how often it was reached / idle ones closed.
    pub connections_max: Gauge,
    pub connections_capped: Counter,
    pub connections_reclaimed: Counter,
    pub tunnel_bytes_up: Counter,
    pub tunnel_bytes_down: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("switchyard");
        let m = Metrics {
            requests: Family::default(),
            duration: Family::default(),
            retries: Family::default(),
            healthy: Family::default(),
            in_flight: Family::default(),
            limit: Family::default(),
            class_in_flight: Family::default(),
            queued: Family::default(),
            rejected: Family::default(),
            ejections: Family::default(),
            checks: Family::default(),
            resolutions: Family::default(),
            shortages: Family::default(),
            outcome_unknown: Counter::default(),
            reload_failures: Counter::default(),
            config_generation: Gauge::default(),
            tunnels_open: Gauge::default(),
            connections_open: Gauge::default(),
            connections_parked: Gauge::default(),
            connections_max: Gauge::default(),
            connections_capped: Counter::default(),
            connections_reclaimed: Counter::default(),
            tunnel_bytes_up: Counter::default(),
            tunnel_bytes_down: Counter::default(),
            registry: Registry::default(),
        };
        m.register_requests(&mut registry);
        m.register_upstreams(&mut registry);
        m.register_upstream_limits(&mut registry);
        m.register_process(&mut registry);
        m.register_connections(&mut registry);
        Metrics { registry, ..m }
    }

    fn register_requests(&self, r: &mut Registry) {
        r.register(
            "requests",
            "Requests by route, pool and status class",
            self.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Request duration by route, response body included",
            self.duration.clone(),
        );
        r.register(
            "retries",
            "Retries sent to another server, by pool",
            self.retries.clone(),
        );
    }

    fn register_upstreams(&self, r: &mut Registry) {
        r.register(
            "upstream_healthy",
            "1 when the server may take traffic",
            self.healthy.clone(),
        );
        r.register(
            "upstream_in_flight",
            "Requests in flight per server",
            self.in_flight.clone(),
        );
    }

    fn register_upstream_limits(&self, r: &mut Registry) {
        r.register(
            "upstream_limit",
            "Requests a server may have in flight now (max_connections, or the adaptive limit); 0 = unlimited",
            self.limit.clone(),
        );
        r.register(
            "upstream_class_in_flight",
            "Requests in flight per server and request class",
            self.class_in_flight.clone(),
        );
        r.register(
            "upstream_queued",
            "Requests waiting in a pool's queue, per class",
            self.queued.clone(),
        );
        r.register(
            "upstream_rejected",
            "Requests refused by a pool's limits (queue full or queue_timeout), per class",
            self.rejected.clone(),
        );
        r.register(
            "upstream_ejections",
            "Passive ejections per server since start",
            self.ejections.clone(),
        );
        r.register(
            "health_checks",
            "Active health-check results",
            self.checks.clone(),
        );
        r.register(
            "shortages",
            "The proxy's own shortages (descriptors, ports, memory) by kind and place (upstream_connect, accept): answered 503, no server blamed",
            self.shortages.clone(),
        );
        r.register(
            "resolutions",
            "Resolutions of server names by pool and result (found, gone, failed)",
            self.resolutions.clone(),
        );
    }

    fn register_process(&self, r: &mut Registry) {
        r.register(
            "outcome_unknown",
            "Writes that failed after they may have reached a server",
            self.outcome_unknown.clone(),
        );
        r.register(
            "reload_failures",
            "Config reloads refused (the old config kept serving)",
            self.reload_failures.clone(),
        );
        r.register(
            "config_generation",
            "Config generation being served",
            self.config_generation.clone(),
        );
    }

    fn register_connections(&self, r: &mut Registry) {
        r.register(
            "tunnels_open",
            "WebSocket tunnels open",
            self.tunnels_open.clone(),
        );
        r.register(
            "client_connections_open",
            "Client connections open",
            self.connections_open.clone(),
        );
        r.register(
            "client_connections_parked",
            "Client connections idle between requests, holding no HTTP state or buffers",
            self.connections_parked.clone(),
        );
        r.register(
            "client_connections_max",
            "The client connection cap ([server] max_connections)",
            self.connections_max.clone(),
        );
        r.register(
            "client_connections_capped",
            "Times the accept loops found the cap reached and stopped accepting",
            self.connections_capped.clone(),
        );
        r.register(
            "client_connections_reclaimed",
            "Idle keep-alive connections closed to make room at the cap",
            self.connections_reclaimed.clone(),
        );
        r.register(
            "tunnel_bytes_client_to_upstream",
            "Bytes relayed from clients through tunnels",
            self.tunnel_bytes_up.clone(),
        );
        r.register(
            "tunnel_bytes_upstream_to_client",
            "Bytes relayed to clients through tunnels",
            self.tunnel_bytes_down.clone(),
        );
    }

    /// Create (or find) every request-path handle for `config`.
    pub fn prepare(&self, config: &Config) -> Prepared {
        let pools: Vec<&str> = config.pools.iter().map(|p| &*p.name).collect();
        let routes = config
            .routes
            .iter()
            .map(|r| self.route_handles(&r.name, &pools))
            .collect();
        let unrouted = CLASSES
            .iter()
            .map(|c| self.request_counter("-", "-", c))
            .collect();
        let retries = config
            .pools
            .iter()
            .map(|p| {
                self.retries
                    .get_or_create(&PoolLabels {
                        pool: p.name.to_string(),
                    })
                    .clone()
            })
            .collect();
        Prepared {
            routes,
            unrouted,
            retries,
        }
    }

    /// A route's handles: one request counter per pool and status class, then `-` for
    /// answers no pool gave (files, redirects), and its duration histogram.
    fn route_handles(&self, route: &str, pools: &[&str]) -> RouteHandles {
        RouteHandles {
            requests: pools
                .iter()
                .copied()
                .chain(["-"])
                .flat_map(|p| CLASSES.iter().map(move |c| (p, c)))
                .map(|(p, c)| self.request_counter(route, p, c))
                .collect(),
            duration: self
                .duration
                .get_or_create(&RouteLabels {
                    route: route.to_owned(),
                })
                .clone(),
        }
    }

    fn request_counter(&self, route: &str, pool: &str, class: &str) -> Counter {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                pool: pool.to_owned(),
                class: class.to_owned(),
            })
            .clone()
    }

    /// Count one active check result (health manager, off the request path).
    /// One resolution of a name of `pool`: `found`, `gone` (no address) or `failed`.
    pub fn resolution(&self, pool: &str, result: &str) {
        let l = ResolutionLabels {
            pool: pool.to_owned(),
            result: result.to_owned(),
        };
        self.resolutions.get_or_create(&l).inc();
    }

    /// One probe result: `pass`, `fail`, or `busy` (a timeout not counted).
    pub fn health_check(&self, pool: &str, server: std::net::SocketAddr, result: &str) {
        let l = CheckLabels {
            pool: pool.to_owned(),
            server: server.to_string(),
            result: result.to_owned(),
        };
        self.checks.get_or_create(&l).inc();
    }

    /// A pool's queue lengths and refusals per class.
    fn render_classes(&self, classes: &[Arc<str>], p: &Pool) {
        use std::sync::atomic::Ordering::Relaxed;
        for (i, c) in classes.iter().enumerate() {
            let l = ClassLabels {
                pool: p.name.to_string(),
                class: c.to_string(),
            };
            let queued = p.admission.queued.get(i).map_or(0, |n| n.load(Relaxed));
            self.queued
                .get_or_create(&l)
                .set(i64::try_from(queued).unwrap_or(i64::MAX));
            let refused = p.admission.rejected.get(i).map_or(0, |n| n.load(Relaxed));
            let counter = self.rejected.get_or_create(&l);
            counter.inc_by(refused.saturating_sub(counter.get()));
        }
    }

    /// One server's gauges: health, requests in flight (per class too), ejections, limit.
    fn render_server(&self, p: &Pool, e: &Endpoint, healthy: bool, classes: &[Arc<str>]) {
        let l = ServerLabels {
            pool: p.name.to_string(),
            server: e.addr.to_string(),
        };
        self.healthy.get_or_create(&l).set(i64::from(healthy));
        self.in_flight
            .get_or_create(&l)
            .set(i64::try_from(e.in_flight()).unwrap_or(i64::MAX));
        self.ejections
            .get_or_create(&l)
            .set(i64::from(e.stats.status().ejections));
        let limit = p.admission.limit(e).unwrap_or(0);
        self.limit
            .get_or_create(&l)
            .set(i64::try_from(limit).unwrap_or(i64::MAX));
        for (c, n) in classes.iter().zip(e.class_in_flight.iter()) {
            let l = ServerClassLabels {
                pool: p.name.to_string(),
                server: e.addr.to_string(),
                class: c.to_string(),
            };
            let n = n.load(std::sync::atomic::Ordering::Relaxed);
            self.class_in_flight
                .get_or_create(&l)
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// The exposition text, with server gauges read from the pools and their views
    /// (same index) as the caller's snapshot has them.
    pub fn render(&self, pools: &[Pool], views: &[PoolView], classes: &[Arc<str>]) -> String {
        for (p, view) in pools.iter().zip(views) {
            for (i, e) in p.endpoints.iter().enumerate() {
                self.render_server(p, e, view.eligible.contains(&i), classes);
            }
            self.render_classes(classes, p);
        }
        for (at, kind, n) in crate::shortage::totals() {
            let c = self.shortages.get_or_create(&ShortageLabels {
                kind: kind.as_str().to_owned(),
                at: at.as_str().to_owned(),
            });
            c.inc_by(n.saturating_sub(c.get()));
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            tracing::error!("cannot encode metrics");
        }
        text::prometheus(&out)
    }
}
