//! The per-request context every stage takes: the process-wide handles ([`Shared`]),
//! the client connection ([`Conn`]), what does not change between attempts ([`Ctx`]),
//! and what is learnt on the way for logs, metrics and error bodies ([`Meta`]). Stages
//! import this, never the orchestrator (`forward.rs`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use http::header::HeaderName;
use tokio::time::Instant;

use crate::access::AccessLog;
use crate::host_limit::HostSlot;
use crate::routing::Route;
use crate::state::{ListenerInfo, SharedState, Snapshot};

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A request extension: the request came as 0-RTT early data (HTTP/3), which an
/// attacker can replay, so only safe methods are served (RFC 8470; others get 425).
#[derive(Debug, Clone, Copy)]
pub struct EarlyData;

/// Process-wide handles every request needs.
#[derive(Debug)]
pub struct Shared {
    pub state: Arc<SharedState>,
    pub access: Option<Arc<AccessLog>>,
    /// Passive-health reports to the health manager.
    pub events: crate::health::Events,
    /// The client connection cap, shared by every listener.
    pub cap: Arc<crate::conn_cap::ConnectionCap>,
}

/// One client connection.
#[derive(Debug)]
pub struct Conn {
    pub peer: SocketAddr,
    /// Address of the listener the connection came in on (listeners are matched to
    /// config entries, and to the `listener` route condition, by address).
    pub local: SocketAddr,
    pub scheme: &'static str,
    /// The peer's address as a header value, formatted once per connection.
    pub peer_ip: http::HeaderValue,
    /// Requests of this connection whose response has not ended: while there are any,
    /// the connection is not idle (the framing guard must not park it, so an end of
    /// input hyper sees is the client's, and aborts the request).
    pub busy: Arc<AtomicUsize>,
    /// The connection's place under the client connection cap. A WebSocket tunnel
    /// takes it along (the tunnel outlives the connection's task and keeps the
    /// client's descriptor).
    pub place: std::sync::Mutex<Option<tokio::sync::OwnedSemaphorePermit>>,
}

impl Conn {
    /// Take the connection's place under the cap (for a tunnel that outlives it).
    pub fn take_place(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.place.lock().ok().and_then(|mut p| p.take())
    }

    pub fn new(peer: SocketAddr, local: SocketAddr, scheme: &'static str) -> Self {
        Conn {
            peer,
            local,
            scheme,
            peer_ip: ip_value(peer.ip().to_canonical()),
            busy: Arc::default(),
            place: std::sync::Mutex::new(None),
        }
    }
}

/// Per-request context that does not change between attempts.
pub(crate) struct Ctx<'a> {
    pub(crate) conn: &'a Conn,
    pub(crate) snap: &'a Snapshot,
    pub(crate) shared: &'a Shared,
    pub(crate) bytes_in: &'a Arc<AtomicU64>,
    pub(crate) started: Instant,
    pub(crate) request_id: &'a HeaderValue,
    /// The listener the request came in on (`None` if a reload removed it), and its index.
    pub(crate) listener: Option<&'a ListenerInfo>,
    pub(crate) listener_index: usize,
    /// The request's site (see `sites`), when `[sites]` is configured.
    pub(crate) site: Option<Arc<str>>,
}

/// What is known about where a request went, for logs, metrics and error bodies.
#[derive(Debug, Default)]
pub(crate) struct Meta {
    pub(crate) route: Option<(usize, Arc<str>)>,
    pub(crate) pool: Option<(usize, Arc<str>)>,
    pub(crate) server: Option<SocketAddr>,
    pub(crate) upstream_time: Option<Duration>,
    /// A write failed after it may have reached the server.
    pub(crate) outcome_unknown: bool,
    /// The request's place under `max_requests_per_host`, held until its response ends.
    pub(crate) host_slot: Option<HostSlot>,
    /// Time spent in the pool's queue.
    pub(crate) queue_wait: Option<Duration>,
}

/// One allocation: the formatted address becomes the value's shared buffer.
pub fn ip_value(ip: std::net::IpAddr) -> HeaderValue {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(ip.to_string()))
        .expect("invariant: an IP address formats as a valid header value")
}

/// Keep a request id from a trusted proxy; otherwise make one.
pub(crate) fn request_id(
    headers: &http::HeaderMap,
    peer: SocketAddr,
    trusted: &[ipnet::IpNet],
) -> HeaderValue {
    let ip = peer.ip().to_canonical();
    if trusted.iter().any(|n| n.contains(&ip))
        && let Some(v) = headers
            .get(&X_REQUEST_ID)
            .filter(|v| !v.is_empty() && v.len() <= 128)
    {
        return v.clone();
    }
    // 16 hex digits, without the formatting machinery.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = fastrand::u64(..);
    let mut id = [0u8; 16];
    for (i, d) in id.iter_mut().enumerate() {
        *d = HEX[((n >> ((15 - i) * 4)) & 0xf) as usize];
    }
    HeaderValue::from_maybe_shared(Bytes::copy_from_slice(&id))
        .expect("invariant: hex digits form a valid header value")
}

pub(crate) fn route_of<'a>(snap: &'a Snapshot, meta: &Meta) -> Option<&'a Route> {
    meta.route.as_ref().and_then(|(i, _)| snap.routes.get(*i))
}

/// `max_body_size` for this request: the route's, else the listener's; `u64::MAX` for none.
pub(crate) fn max_body(route: &Route, cx: &Ctx<'_>) -> u64 {
    route
        .max_body_size
        .or_else(|| cx.listener?.max_body_size)
        .unwrap_or(u64::MAX)
}
