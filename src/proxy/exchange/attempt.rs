//! The upstream side of one request: the attempt loop, the request body across
//! attempts, and sending. `proxy::forward` routes and prepares the request; this sends it.
//! Whether a failed attempt is followed by another (never a write twice) is decided by
//! `retry::decide` alone; `pick.rs` chooses the server, `passive.rs` reports outcomes.
//! [`Exchange`] holds what every attempt needs; its methods are the steps of one.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::uri::Scheme;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::body_source::Source;
use super::{headers, passive, pick, retry, tunnel};
use crate::proxy::error::ProxyError;
use crate::proxy::request::{Ctx, Meta, max_body};
use crate::proxy::respond::body::ProxyBody;
use crate::routing::Route;
use crate::upstream::{Endpoint, InFlight, Lease, PickKey, Pool, RequestBody, SendError, Unsent};

/// Most servers tried for one request (bounded by the pool's `attempts`).
const MAX_TRIED: usize = 8;

/// One request's exchange with its pool: what every attempt needs, held once. The
/// request head and body (`source`) travel from attempt to attempt; the retry rule
/// decides whether another follows.
pub(crate) struct Exchange<'a> {
    cx: &'a Ctx<'a>,
    pool: &'a Pool,
    route: &'a Route,
    parts: Parts,
    /// The method may be sent again (`retry.idempotent`).
    idempotent: bool,
    source: Source,
    /// The client side of a WebSocket upgrade, taken when the server agrees.
    on_client: Option<OnUpgrade>,
}

/// What one server made of the request. Not boxed: the answer moves on to the client
/// either way, and a box would cost every request an allocation.
#[allow(clippy::large_enum_variant)]
enum Tried {
    Answered(Response<ProxyBody>, InFlight),
    /// Failed, and the retry rule allows another server.
    Failed(ProxyError),
}

impl<'a> Exchange<'a> {
    pub(crate) fn new(
        cx: &'a Ctx<'a>,
        pool: &'a Pool,
        route: &'a Route,
        parts: Parts,
        on_client: Option<OnUpgrade>,
    ) -> Self {
        Exchange {
            cx,
            pool,
            route,
            idempotent: pool.cfg.retry.idempotent.contains(&parts.method),
            parts,
            source: Source::Gone,
            on_client,
        }
    }

    /// Send the request (its body: `replay`, then the rest of `body`), retrying on
    /// other servers when that is safe.
    pub(crate) async fn run(
        mut self,
        body: crate::client_body::ClientBody,
        replay: VecDeque<Frame<Bytes>>,
        meta: &mut Meta,
    ) -> Result<(Response<ProxyBody>, Option<InFlight>), ProxyError> {
        let (pool, retry) = (self.pool, &self.pool.cfg.retry);
        let key = pick::pick_key(pool, &self.parts, self.cx.conn.peer);
        let timeout = self.cx.snap.server.body_timeout;
        self.source = Source::open(body, replay, self.idempotent, retry, timeout).await?;
        pool.budget.record_request();
        let mut tried = [usize::MAX; MAX_TRIED];
        let attempts = (retry.attempts as usize).clamp(1, MAX_TRIED);
        let mut last = ProxyError::NoHealthy;
        for attempt in 0..attempts {
            if attempt > 0 && !pool.budget.try_retry() {
                tracing::debug!(pool = %pool.name, "retry budget exhausted");
                break;
            }
            let view = self.cx.snap.view(pool.index).ok_or(ProxyError::NoHealthy)?;
            let pick = (key, self.route.class);
            let grant =
                pick::admit(pool, view, pick, &tried[..attempt], attempt == 0, meta).await?;
            let in_flight = match grant {
                Some(g) => g,
                None if attempt == 0 => return Err(ProxyError::NoHealthy),
                None => break,
            };
            tried[attempt] = self.index_of(in_flight.endpoint());
            // Headers are cloned only if another attempt could follow this one.
            let may_retry = attempt + 1 < attempts && view.eligible.len() > attempt + 1;
            self.announce(attempt, in_flight.endpoint());
            meta.server = Some(in_flight.endpoint().addr);
            match self.on_server(in_flight, may_retry, meta).await? {
                Tried::Answered(mut resp, in_flight) => {
                    if pool.cfg.sticky.is_some() {
                        self.stick(&mut resp, key, tried[attempt]);
                    }
                    return Ok((resp, Some(in_flight)));
                }
                Tried::Failed(e) => last = e,
            }
        }
        Err(last)
    }

    /// A sticky pool's cookie naming `chosen`, unless the request's already did.
    fn stick(&self, resp: &mut Response<ProxyBody>, key: PickKey, chosen: usize) {
        let https = self.cx.conn.scheme == "https";
        if let Some(c) = pick::sticky_cookie(self.pool, key, chosen, https) {
            resp.headers_mut().append(header::SET_COOKIE, c);
        }
    }

    fn index_of(&self, endpoint: &Arc<Endpoint>) -> usize {
        let endpoints = &self.pool.endpoints;
        endpoints
            .iter()
            .position(|e| Arc::ptr_eq(e, endpoint))
            .unwrap_or(usize::MAX)
    }

    /// Count and log an attempt after the first.
    fn announce(&self, attempt: usize, endpoint: &Endpoint) {
        if attempt == 0 {
            return;
        }
        let pool = self.pool;
        if let Some(c) = self.cx.snap.prepared.retries.get(pool.index) {
            c.inc();
        }
        tracing::info!(pool = %pool.name, upstream = %endpoint.addr, attempt, "retrying on another server");
    }

    /// Send to one server. Every request may take a pooled keep-alive connection: idle
    /// connections are retired before the server's keep-alive ends (`idle_timeout`, or
    /// what the server announces) and checked for a close at checkout, so a server
    /// closing one just as a request is written is rare. When it happens, the retry rule
    /// decides: a safe request goes again on a new connection to this server, a write is
    /// answered 502 with its outcome unknown, never sent twice. `may_retry`: whether
    /// another server may follow.
    async fn on_server(
        &mut self,
        in_flight: InFlight,
        may_retry: bool,
        meta: &mut Meta,
    ) -> Result<Tried, ProxyError> {
        let endpoint = in_flight.endpoint().clone();
        // Headers are kept for another attempt if another server, or a re-send of a safe
        // request on a new connection, could follow.
        let keep = may_retry || (self.idempotent && self.source.is_whole());
        let (mut req, mut give_back) = self.build(&endpoint, keep);
        let mut reuse = true;
        loop {
            let e = match self.send(&endpoint, req, reuse).await {
                Ok((resp, lease, took)) => {
                    meta.upstream_time = Some(took);
                    let resp = self.answered(&endpoint, resp, lease, took);
                    return Ok(Tried::Answered(resp, in_flight));
                }
                Err(e) => e,
            };
            match self.on_failure(&e, &endpoint, give_back.take())? {
                retry::Decision::Retry { same_server: true } => {
                    tracing::debug!(pool = %self.pool.name, upstream = %endpoint.addr, "reused connection was closed by the server; sending again on a new one");
                    reuse = false;
                    (req, give_back) = self.build(&endpoint, may_retry);
                }
                retry::Decision::Retry { same_server: false } => return Ok(Tried::Failed(e)),
                retry::Decision::Stop { unknown } => {
                    meta.outcome_unknown = unknown;
                    return Err(e);
                }
            }
        }
    }

    /// An answer from `endpoint`: its stats and passive health, then the client's response.
    fn answered(
        &mut self,
        endpoint: &Arc<Endpoint>,
        resp: Response<Incoming>,
        lease: Option<Lease>,
        took: Duration,
    ) -> Response<ProxyBody> {
        endpoint.stats.observe_latency(took);
        self.pool.admission.observe(endpoint, took);
        passive::success(self.pool, endpoint, resp.status(), self.cx);
        self.respond(resp, lease)
    }

    /// The client's response from the upstream's: hop-by-hop fields out, route headers
    /// in; a 101 to a WebSocket request starts the tunnel.
    fn respond(
        &mut self,
        mut resp: Response<Incoming>,
        lease: Option<Lease>,
    ) -> Response<ProxyBody> {
        let snap = self.cx.snap;
        let idle = self.pool.read_timeout();
        let upgrade = match (
            resp.status() == StatusCode::SWITCHING_PROTOCOLS,
            self.on_client.take(),
        ) {
            (true, Some(client)) => Some((client, hyper::upgrade::on(&mut resp))),
            _ => None,
        };
        let (mut rp, rb) = resp.into_parts();
        headers::strip_hop_by_hop(&mut rp.headers);
        if let Some((client, upstream)) = upgrade {
            rp.headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            rp.headers
                .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            let relay = tunnel::relay(
                client,
                upstream,
                snap.server.tunnel_idle_timeout,
                snap.metrics.clone(),
            );
            let place = self.cx.conn.take_place();
            tokio::spawn(async move {
                relay.await;
                drop(place);
            });
            return Response::from_parts(rp, ProxyBody::upstream(rb, None, None, idle));
        }
        let deadline = self.route.timeout.map(|t| self.cx.started + t);
        Response::from_parts(rp, ProxyBody::upstream(rb, lease, deadline, idle))
    }

    /// Account for a failed attempt and decide, by the retry rule, whether another may
    /// follow. A client-side body failure ends the request at once.
    fn on_failure(
        &mut self,
        e: &ProxyError,
        endpoint: &Endpoint,
        give_back: Option<oneshot::Receiver<Unsent>>,
    ) -> Result<retry::Decision, ProxyError> {
        let (failure, reused) = failure_of(e)?;
        if let (Some(mut rx), Source::Gone) = (give_back, &self.source)
            && let Ok(unsent) = rx.try_recv()
        {
            self.source = Source::Live(unsent);
        }
        let attempt = retry::Attempt {
            failure,
            reused,
            body: self.source.state(),
            method: &self.parts.method,
        };
        let policy = retry::Policy {
            idempotent: &self.pool.cfg.retry.idempotent,
            on_timeout: self.pool.cfg.retry.on_timeout,
        };
        let decision = retry::decide(&attempt, &policy);
        if decision != (retry::Decision::Retry { same_server: true }) {
            let pool = self.pool;
            endpoint.stats.errors.fetch_add(1, Ordering::Relaxed);
            passive::failure(pool, endpoint, e, self.cx);
            tracing::warn!(pool = %pool.name, upstream = %endpoint.addr, error = %e, ?failure, reused, ?decision, "upstream attempt failed");
        }
        Ok(decision)
    }

    /// The upstream request for one attempt; headers are cloned only if another attempt
    /// may follow (`keep`).
    fn build(
        &mut self,
        endpoint: &Endpoint,
        keep: bool,
    ) -> (Request<RequestBody>, Option<oneshot::Receiver<Unsent>>) {
        let limit = max_body(self.route, self.cx);
        let (body, give_back) = self.source.take_body(self.cx, limit);
        let parts = &mut self.parts;
        let mut headers = if keep {
            parts.headers.clone()
        } else {
            std::mem::take(&mut parts.headers)
        };
        let scheme = if self.pool.cfg.tls.is_some() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };
        let h2 = self.pool.cfg.upstream_h2.then_some(scheme);
        let (uri, version) =
            crate::upstream::target(&parts.uri, &mut headers, &endpoint.authority, h2);
        let mut req = Request::new(body);
        *req.method_mut() = parts.method.clone();
        *req.uri_mut() = uri;
        *req.version_mut() = version;
        *req.headers_mut() = headers;
        (req, give_back)
    }

    /// Send and wait for the response head within the pool's read timeout (and the
    /// route's total). HTTP/1.1, plain or TLS, goes over the server's own connections,
    /// driven by this task (an upgrade on a new connection of its own); HTTP/2 through
    /// the server's hyper-util client.
    async fn send(
        &self,
        endpoint: &Endpoint,
        req: Request<RequestBody>,
        reuse: bool,
    ) -> Result<(Response<Incoming>, Option<Lease>, Duration), ProxyError> {
        let sent = Instant::now();
        let head = sent + self.pool.read_timeout();
        let deadline = self
            .route
            .timeout
            .map_or(head, |t| head.min(self.cx.started + t));
        if let Some(client) = &endpoint.h2 {
            // Boxed: hyper-util's request future is large and this path is the rarer one.
            return match tokio::time::timeout_at(deadline, Box::pin(client.request(req))).await {
                Err(_) => Err(ProxyError::Timeout),
                Ok(Err(e)) => Err(ProxyError::from_client(e)),
                Ok(Ok(r)) => Ok((r, None, sent.elapsed())),
            };
        }
        if self.on_client.is_some() {
            let up = Box::pin(endpoint.conns.send_upgrade(req));
            let r = timed(tokio::time::timeout_at(deadline, up).await)?;
            return Ok((r, None, sent.elapsed()));
        }
        // The deadline lives with the upstream connection (its timer reused, see `idle`).
        let answer = endpoint.conns.send(req, reuse, deadline).await;
        let (r, lease) = answer.map_err(ProxyError::from_send)?;
        Ok((r, Some(lease), sent.elapsed()))
    }
}

/// What kind of failure `e` is for the retry rule, and whether it came on a reused
/// connection; a client-side body failure ends the request at once (`Err`).
fn failure_of(e: &ProxyError) -> Result<(retry::Failure, bool), ProxyError> {
    Ok(match e {
        ProxyError::ClientBody => return Err(ProxyError::ClientBody),
        ProxyError::ClientBodyTimeout => return Err(ProxyError::ClientBodyTimeout),
        ProxyError::BodyTooLarge(n) => return Err(ProxyError::BodyTooLarge(*n)),
        // The proxy's own shortage: no server is to blame, and another would fail alike.
        ProxyError::Shortage(k) => return Err(ProxyError::Shortage(*k)),
        // A hyper error here is a request handed back unsent; otherwise the connect failed.
        ProxyError::Connect(c) if c.is::<hyper::Error>() => {
            (retry::Failure::ClosedBeforeWrite, false)
        }
        ProxyError::Connect(_) => (retry::Failure::ConnectRefused, false),
        ProxyError::ConnectTimeout => (retry::Failure::ConnectTimeout, false),
        ProxyError::Timeout => (retry::Failure::ReadTimeout, false),
        ProxyError::Stale(_) => (retry::Failure::ClosedAfterWrite, true),
        e if e.is_bad_response() => (retry::Failure::BadResponse, false),
        _ => (retry::Failure::ClosedAfterWrite, false),
    })
}

/// The outcome of a send bounded by a deadline.
fn timed<T>(r: Result<Result<T, SendError>, tokio::time::error::Elapsed>) -> Result<T, ProxyError> {
    match r {
        Err(_) => Err(ProxyError::Timeout),
        Ok(Err(e)) => Err(ProxyError::from_send(e)),
        Ok(Ok(r)) => Ok(r),
    }
}

/// Every request moves these futures and bodies several times (each `.await` moves the
/// callee's state into the caller's), so their size is per-request work: a guard
/// against a change that quietly doubles them. Bounds are about 1.5× today's sizes.
#[cfg(test)]
mod size_guard {
    use std::mem::size_of;

    fn output_size<F: FnOnce(A, B, C) -> R, A, B, C, R>(_: &F) -> usize {
        size_of::<R>()
    }

    #[test]
    fn request_futures_and_bodies_stay_small() {
        let handle = output_size(&crate::proxy::forward::handle);
        // About 2 KB (test build) since the exchange is boxed; it was about 6 KB inline.
        assert!(handle <= 3_000, "request future grew to {handle} bytes");
        let body = size_of::<super::ProxyBody>();
        assert!(body <= 256, "response body grew to {body} bytes");
        let lease = size_of::<super::Lease>();
        assert!(lease <= 16, "connection lease grew to {lease} bytes");
        let resp = size_of::<http::Response<super::ProxyBody>>();
        assert!(resp <= 384, "response grew to {resp} bytes");
    }
}
