//! Upstream pools: the servers of each `[pools.NAME]`, their in-flight counts, the
//! balancer that picks one, and the keep-alive HTTP/1.1 client that talks to them.
//!
//! Built from the config into the immutable [`Snapshot`](crate::state::Snapshot); the
//! request path calls [`Pool::pick`] and holds an [`InFlight`] guard while the
//! exchange lasts.

mod balance;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::uri::Authority;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

pub use balance::Balancer;

use crate::config::PoolConfig;
use crate::proxy::RequestBody;

/// The pooled upstream client; one per pool, keyed internally by server address.
pub type UpstreamClient = Client<HttpConnector, RequestBody>;

/// One server of a pool.
#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// `addr` as a URI authority, parsed once so building upstream URIs never parses.
    pub authority: Authority,
    pub weight: u32,
    in_flight: AtomicUsize,
}

impl Endpoint {
    pub fn new(addr: SocketAddr, weight: u32) -> Self {
        let authority = Authority::try_from(addr.to_string().as_str())
            .expect("invariant: a SocketAddr always formats as a valid authority");
        Endpoint {
            addr,
            authority,
            weight,
            in_flight: AtomicUsize::new(0),
        }
    }

    /// Requests currently being served by this endpoint.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Count one request against this endpoint until the guard drops.
    pub fn acquire(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }
}

/// Decrements the endpoint's in-flight count on drop.
#[derive(Debug)]
pub struct InFlight(Arc<Endpoint>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A named group of servers with one balancing policy and one set of timeouts.
#[derive(Debug)]
pub struct Pool {
    pub name: Arc<str>,
    pub endpoints: Vec<Arc<Endpoint>>,
    pub balancer: Balancer,
    pub client: UpstreamClient,
    /// Time from sending the request to the response head.
    pub read_timeout: Duration,
}

impl Pool {
    pub fn new(cfg: &PoolConfig) -> Self {
        let endpoints: Vec<Arc<Endpoint>> = cfg
            .servers
            .iter()
            .map(|s| Arc::new(Endpoint::new(s.addr, s.weight)))
            .collect();
        let weights: Vec<u32> = endpoints.iter().map(|e| e.weight).collect();
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(cfg.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(cfg.idle_timeout)
            .pool_max_idle_per_host(cfg.keepalive)
            .pool_timer(TokioTimer::new())
            .set_host(false)
            .build(connector);
        Pool {
            name: cfg.name.clone(),
            balancer: Balancer::new(cfg.balance, &weights),
            endpoints,
            client,
            read_timeout: cfg.read_timeout,
        }
    }

    /// The endpoint for the next request, by the pool's policy.
    pub fn pick(&self) -> Option<&Arc<Endpoint>> {
        let i = self
            .balancer
            .pick(&self.endpoints, &mut |n| fastrand::usize(..n))?;
        self.endpoints.get(i)
    }
}
