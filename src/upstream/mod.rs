//! Upstream pools: the servers of each `[pools.NAME]`, their live counters, the
//! published view of which of them may take traffic, and the pooled HTTP/1.1 client.
//!
//! A [`Pool`] is static for one config generation. Which servers are eligible, and with
//! what weight, lives in a [`PoolView`] that the health manager rebuilds on every
//! transition and publishes inside the [`Snapshot`](crate::state::Snapshot). The
//! request path only reads views and bumps atomics.
//!
//! - `mod.rs`: [`Pool`], [`Endpoint`] and [`PoolView`].
//! - `balance.rs`: the balancers over a view (round robin, least connections, hash).
//! - `admit.rs`: admission: per-server limits, request classes and the pool's queue.
//! - `budget.rs`: the retry budget.
//! - `h1.rs`, `slots.rs`, `stream.rs`: the pooled HTTP/1.1 client (connections per server,
//!   the lock-free idle set, a set per worker under the per-worker scheduler, plain or
//!   TLS transport).
//! - `send_error.rs`: how a send failed, for the retry rule.
//! - `request_body.rs`: the request body on its way upstream.
//! - `target.rs`: the request target and version an upstream gets.
//! - `stats.rs`: per-server counters and health as the admin API shows them.
//! - `sticky.rs`: the sticky-session cookie of each server.

mod admit;
mod balance;
mod budget;
mod h1;
mod request_body;
mod send_error;
mod slots;
mod stats;
mod sticky;
mod stream;
mod target;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::uri::Authority;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

pub use admit::{Admission, InFlight, Refusal};
pub use balance::{PickKey, PoolView, hash_of};
pub use budget::RetryBudget;
pub use h1::{H1Pool, Lease};
pub use request_body::{BodyError, RequestBody, Unsent};
pub use send_error::SendError;
pub use stats::{EndpointStats, ProbeRecord, ServerState, Status};
pub use sticky::{StickyCookie, cookie};
pub use target::target;

use crate::config::PoolConfig;

/// The HTTP/2 client of one server (pools with `upstream_h2`). Plain and TLS HTTP/1.1
/// go through the server's own connections ([`H1Pool`]).
pub type UpstreamClient = Client<HttpsConnector<FixedAddr>, RequestBody>;

/// Connects to one server whatever the request URI's authority says, so the URI (and
/// with it HTTP/2's `:authority`) can carry the client's Host.
#[derive(Debug, Clone)]
pub struct FixedAddr {
    addr: SocketAddr,
    timeout: Duration,
}

impl tower_service::Service<http::Uri> for FixedAddr {
    type Response = TokioIo<tokio::net::TcpStream>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let (addr, timeout) = (self.addr, self.timeout);
        Box::pin(async move {
            let s = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
                })??;
            s.set_nodelay(true)?;
            Ok(TokioIo::new(s))
        })
    }
}

/// The HTTP/2 client of one server: keep-alive pool, connect timeout, TLS as configured.
fn h2_client(cfg: &PoolConfig, addr: SocketAddr) -> UpstreamClient {
    let fixed = FixedAddr {
        addr,
        timeout: cfg.connect_timeout,
    };
    let tls = cfg.tls.as_ref().map_or_else(
        || {
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map(|b| {
                b.with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth()
            })
        },
        |t| Ok((*t.client).clone()),
    );
    let tls = tls.expect("invariant: ring supports the default TLS versions");
    let name = cfg
        .tls
        .as_ref()
        .and_then(|t| t.server_name.clone())
        .unwrap_or_else(|| rustls::pki_types::ServerName::IpAddress(addr.ip().into()));
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .with_server_name_resolver(FixedServerNameResolver::new(name))
        .enable_http2()
        .wrap_connector(fixed);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(cfg.idle_timeout)
        .pool_max_idle_per_host(cfg.keepalive)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .http2_only(true)
        .set_host(false)
        .build(connector)
}

/// One server of a pool.
#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// `addr` as a URI authority, parsed once so building upstream URIs never parses.
    pub authority: Authority,
    pub weight: u32,
    /// Counters and health, shared across config generations (keyed by pool + address).
    pub stats: Arc<EndpointStats>,
    /// Idle HTTP/1.1 connections, plain or TLS (unused by HTTP/2 pools).
    pub conns: Arc<H1Pool>,
    /// The HTTP/2 client, for pools with `upstream_h2` only.
    pub h2: Option<UpstreamClient>,
    /// Requests in flight per class (see `admit`).
    pub class_in_flight: Box<[AtomicUsize]>,
    /// The adaptive limit now (pools with `limit = "adaptive"`).
    pub limit: AtomicUsize,
    pub adapt: admit::Adapt,
    /// The server's sticky-session cookie (pools with `[pools.NAME.sticky]`).
    pub sticky: Option<StickyCookie>,
}

impl Endpoint {
    pub fn new(addr: SocketAddr, weight: u32, stats: Arc<EndpointStats>) -> Self {
        let authority = Authority::try_from(addr.to_string().as_str())
            .expect("invariant: a SocketAddr always formats as a valid authority");
        Endpoint {
            addr,
            authority,
            weight,
            stats,
            conns: Arc::new(H1Pool::new(
                addr,
                0,
                Duration::from_secs(5),
                Duration::from_secs(60),
                None,
            )),
            h2: None,
            class_in_flight: Box::new([AtomicUsize::new(0)]),
            limit: AtomicUsize::new(0),
            adapt: admit::Adapt::default(),
            sticky: None,
        }
    }

    /// Count requests of `classes` classes; start the adaptive limit at `limit`.
    pub fn with_classes(mut self, classes: usize, limit: usize) -> Self {
        self.class_in_flight = (0..classes.max(1)).map(|_| AtomicUsize::new(0)).collect();
        self.limit = AtomicUsize::new(limit);
        self
    }

    /// Use `conns` for this server's idle connections.
    pub fn with_conns(mut self, conns: Arc<H1Pool>) -> Self {
        self.conns = conns;
        self
    }

    pub fn in_flight(&self) -> usize {
        self.stats.in_flight.load(Ordering::Relaxed)
    }
}

/// Whether two generations of a pool connect alike (so connections may be kept).
fn same_connections(a: &PoolConfig, b: &PoolConfig) -> bool {
    (
        a.connect_timeout,
        a.idle_timeout,
        a.keepalive,
        a.upstream_h2,
    ) == (
        b.connect_timeout,
        b.idle_timeout,
        b.keepalive,
        b.upstream_h2,
    ) && a.tls.is_none()
        && b.tls.is_none()
}

/// A named group of servers with one policy and one set of timeouts.
#[derive(Debug)]
pub struct Pool {
    pub index: usize,
    pub name: Arc<str>,
    pub endpoints: Vec<Arc<Endpoint>>,
    pub cfg: PoolConfig,
    pub budget: RetryBudget,
    /// Rotates round robin and least_conn tie-breaks; persists across view rebuilds.
    next: AtomicUsize,
    /// Server limits, class caps and the waiting queue.
    pub admission: Arc<Admission>,
}

impl Pool {
    /// `stats_for(addr)` returns the carried-over counters of a server.
    pub fn new(
        index: usize,
        cfg: &PoolConfig,
        stats_for: &mut dyn FnMut(SocketAddr) -> Arc<EndpointStats>,
        previous: Option<&Pool>,
    ) -> Self {
        // A server keeps its idle connections (and its HTTP/2 client) across a reload
        // that leaves its pool's connection settings alone.
        let kept = |addr: SocketAddr| {
            previous
                .filter(|p| same_connections(&p.cfg, cfg))
                .and_then(|p| p.endpoints.iter().find(|e| e.addr == addr))
        };
        let endpoints = cfg
            .servers
            .iter()
            .map(|s| {
                let (keep, connect, idle) = (cfg.keepalive, cfg.connect_timeout, cfg.idle_timeout);
                let old = kept(s.addr);
                let conns = old
                    .filter(|e| e.conns.same_settings(keep, connect, idle))
                    .map_or_else(
                        || Arc::new(H1Pool::new(s.addr, keep, connect, idle, cfg.tls.clone())),
                        |e| Arc::clone(&e.conns),
                    );
                // The adaptive limit starts low and rises with fast answers.
                let start = cfg
                    .max_connections
                    .map_or(0, |m| if cfg.adaptive { m.min(4) } else { m });
                let mut e = Endpoint::new(s.addr, s.weight, stats_for(s.addr))
                    .with_conns(conns)
                    .with_classes(cfg.classes.len(), start);
                e.sticky = cfg
                    .sticky
                    .as_ref()
                    .map(|st| StickyCookie::new(st, &cfg.name, s.addr));
                if cfg.upstream_h2 {
                    e.h2 = Some(
                        old.and_then(|e| e.h2.clone())
                            .unwrap_or_else(|| h2_client(cfg, s.addr)),
                    );
                }
                Arc::new(e)
            })
            .collect();
        Pool {
            index,
            name: cfg.name.clone(),
            endpoints,
            budget: RetryBudget::new(cfg.retry.budget_ratio, cfg.retry.budget_min_per_sec),
            cfg: cfg.clone(),
            next: AtomicUsize::new(0),
            admission: Admission::new(cfg),
        }
    }

    /// Whether requests go through the per-server HTTP/1.1 connections ([`H1Pool`]),
    /// plain or TLS; HTTP/2 pools use each server's hyper-util client.
    pub fn is_h1(&self) -> bool {
        !self.cfg.upstream_h2
    }

    /// Close expired and server-closed idle connections.
    pub fn sweep(&self) {
        for e in &self.endpoints {
            e.conns.sweep();
        }
    }

    pub fn read_timeout(&self) -> Duration {
        self.cfg.read_timeout
    }

    /// The server whose sticky cookie the request carries, if the pool is sticky.
    pub fn sticky_server(&self, headers: &http::HeaderMap) -> Option<usize> {
        let name = &self.cfg.sticky.as_ref()?.cookie;
        let value = cookie(headers, name)?;
        self.endpoints
            .iter()
            .position(|e| e.sticky.as_ref().is_some_and(|c| *c.value == *value))
    }

    /// The endpoint for the next request of `class` among the view's eligible ones,
    /// skipping `exclude` (servers already tried) and servers without room.
    pub fn pick(
        &self,
        view: &PoolView,
        key: PickKey,
        exclude: &[usize],
        class: usize,
    ) -> Option<&Arc<Endpoint>> {
        let rotate = self.next.fetch_add(1, Ordering::Relaxed);
        let ok = |i: usize| {
            !exclude.contains(&i)
                && self
                    .endpoints
                    .get(i)
                    .is_some_and(|e| self.admission.room(e, class))
        };
        let i = view.pick(
            self.cfg.balance,
            &self.endpoints,
            rotate,
            key,
            &ok,
            &mut |n| fastrand::usize(..n),
        )?;
        self.endpoints.get(i)
    }
}
