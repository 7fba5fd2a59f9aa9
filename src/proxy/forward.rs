//! One request, start to finish: check framing, route (with the body look when a
//! `param` route asks for it), choose a pool (following `fallback` when a pool has no
//! healthy server), pick a server, send, retry when that is safe, and stream the
//! response back. Errors become a short plain-text answer and a log event.
//!
//! Sending, with the retry rule, lives in `exchange/attempt.rs`. A request that fails after it
//! may have been written, and is not idempotent, is answered 502/504 with
//! `X-Switchyard-Outcome: unknown` and logged with its id.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use crate::client_body::ClientBody;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Request, Response, Version};
use http_body::Frame;
use prometheus_client::metrics::counter::Counter;
use tokio::time::Instant;

use crate::access::{AccessLog, AccessRecord};
use crate::metrics::{AtomicHistogram, class_of};
use crate::proxy::action::{self, accel};
use crate::proxy::error::ProxyError;
use crate::proxy::exchange::{attempt, tunnel, upstream_request};
use crate::proxy::request::{
    Conn, Ctx, EarlyData, Meta, Shared, X_REQUEST_ID, max_body, request_id, route_of,
};
use crate::proxy::respond::body::{Busy, Finish, ProxyBody};
use crate::proxy::respond::{compress, error_response, filters};
use crate::proxy::route;
use crate::routing::{self, Route};
use crate::state::{ListenerInfo, Snapshot};
use crate::upstream::{InFlight, Pool};

/// Serve one request; never fails (errors become responses).
pub async fn handle(req: Request<ClientBody>, conn: &Conn, shared: &Shared) -> Response<ProxyBody> {
    let opened = Accounting::open(conn, shared, Instant::now());
    let snap = shared.state.load();
    // The listener is looked up once; every stage reads it from the context.
    let listener_index = snap.listener_index(conn.local);
    let listener = snap.listeners.get(listener_index);
    let trusted = listener.map_or(&[][..], |l| &l.trusted_proxies[..]);
    let request_id = request_id(req.headers(), conn.peer, trusted);
    let record = shared
        .access
        .as_ref()
        .map(|_| access_record(&req, conn, &request_id));
    let (method, uri) = (req.method().clone(), req.uri().clone());
    // Only what the compression filter reads, and only when it is on.
    let accept = snap.compression.as_ref().map(|_| {
        let v = req.headers().get(header::ACCEPT_ENCODING).cloned();
        (v, req.version())
    });
    let mut meta = Meta::default();
    let ctx = Ctx {
        conn,
        snap: &snap,
        shared,
        bytes_in: &opened.bytes_in,
        started: opened.started,
        request_id: &request_id,
        listener,
        listener_index,
        site: site_of(&snap, listener, &req),
    };
    let (resp, in_flight) = match forward(req, &ctx, &mut meta).await {
        Ok(ok) => ok,
        Err(e) => {
            let mut resp =
                error_response::respond(&e, &meta, conn, &request_id, &method, uri.path());
            filters::error_page(&mut resp, route_of(&snap, &meta), listener);
            (resp, None)
        }
    };
    let mut resp = filter(resp, &snap, &meta, listener, accept);
    resp.headers_mut().insert(&X_REQUEST_ID, request_id);
    let status = resp.status().as_u16();
    let finish = opened.close(record, in_flight, &snap, &mut meta, status);
    resp.body_mut().set_finish(finish);
    resp
}

/// The access-log record of a request, as much as is known when it arrives.
fn access_record(req: &Request<ClientBody>, conn: &Conn, id: &HeaderValue) -> Box<AccessRecord> {
    Box::new(AccessRecord {
        method: req.method().clone(),
        target: req.uri().path_and_query().cloned(),
        version: req.version(),
        referer: req.headers().get(header::REFERER).cloned(),
        user_agent: req.headers().get(header::USER_AGENT).cloned(),
        ..AccessRecord::new(conn.peer.ip(), id.clone())
    })
}

/// The request's site (see `sites`), when `[sites]` is configured.
fn site_of(
    snap: &Snapshot,
    listener: Option<&ListenerInfo>,
    req: &Request<ClientBody>,
) -> Option<Arc<str>> {
    let pinned = listener.and_then(|l| l.site.as_ref());
    let host = routing::request_host(req.uri(), req.headers());
    snap.sites.as_ref().and_then(|s| s.resolve(pinned, host))
}

/// The response filters every answer passes: added headers, then compression.
fn filter(
    mut resp: Response<ProxyBody>,
    snap: &Snapshot,
    meta: &Meta,
    listener: Option<&ListenerInfo>,
    accept: Option<(Option<HeaderValue>, Version)>,
) -> Response<ProxyBody> {
    let route = route_of(snap, meta);
    filters::add_headers(&mut resp, route, listener);
    if let (Some(c), Some((h, version))) = (&snap.compression, &accept)
        && route.is_none_or(|r| r.compress)
    {
        resp = compress::filter(resp, h.as_ref(), *version, c);
    }
    resp
}

/// A request's accounting, opened as it arrives and closed into the response body's
/// [`Finish`], which settles it when the body ends.
struct Accounting {
    started: Instant,
    busy: Busy,
    bytes_in: Arc<AtomicU64>,
    log: Option<Arc<AccessLog>>,
}

impl Accounting {
    fn open(conn: &Conn, shared: &Shared, started: Instant) -> Self {
        Accounting {
            started,
            busy: Busy::new(&conn.busy),
            bytes_in: Arc::new(AtomicU64::new(0)),
            log: shared.access.clone(),
        }
    }

    /// What the end of the response settles: the server's place, metrics, the
    /// access-log record (its status, route, pool and server filled in now), the host slot.
    fn close(
        self,
        record: Option<Box<AccessRecord>>,
        in_flight: Option<InFlight>,
        snap: &Snapshot,
        meta: &mut Meta,
        status: u16,
    ) -> Finish {
        if meta.outcome_unknown {
            snap.metrics.outcome_unknown.inc();
        }
        let class = route_of(snap, meta).and_then(|rt| snap.classes.get(rt.class).cloned());
        let metrics = request_metrics(snap, meta, status);
        let record = record.map(|mut r| {
            r.status = status;
            r.route = meta.route.take().map(|r| r.1);
            r.pool = meta.pool.take().map(|p| p.1);
            r.server = meta.server;
            r.upstream_time = meta.upstream_time;
            r.queue_wait = meta.queue_wait;
            r.class = class;
            r
        });
        Finish {
            record,
            log: self.log,
            bytes_in: self.bytes_in,
            started: self.started,
            in_flight,
            busy: Some(self.busy),
            metrics,
            host_slot: meta.host_slot.take(),
        }
    }
}

/// The request counter (by route, pool and status class) and duration histogram.
fn request_metrics(
    snap: &Snapshot,
    meta: &Meta,
    status: u16,
) -> Option<(Counter, Option<AtomicHistogram>)> {
    let Some((r, _)) = &meta.route else {
        let unrouted = snap.prepared.unrouted.get(class_of(status));
        return unrouted.map(|c| (c.clone(), None));
    };
    // Requests that never reached a pool count under the index past the last pool.
    let pool = meta.pool.as_ref().map_or(snap.pools.len(), |p| p.0);
    let h = snap.prepared.routes.get(*r)?;
    Some((h.requests(pool, status)?.clone(), Some(h.duration.clone())))
}

async fn forward(
    mut req: Request<ClientBody>,
    cx: &Ctx<'_>,
    meta: &mut Meta,
) -> Result<(Response<ProxyBody>, Option<InFlight>), ProxyError> {
    if let Some(resp) = before_routing(&req, cx, meta)? {
        return Ok((resp, None));
    }
    let on_client =
        tunnel::is_websocket(req.version(), req.headers()).then(|| hyper::upgrade::on(&mut req));
    let (mut parts, mut body) = req.into_parts();
    upstream_request::check(&parts)?;
    let path =
        routing::normalize(parts.uri.path()).map_err(|e| ProxyError::BadRequest(e.as_str()))?;
    let (idx, replay) = route::route(&parts, &path, &mut body, cx).await?;
    let route = routed(cx.snap, idx, meta)?;
    if let Some(resp) = action::run(route, &parts, &path, cx).await? {
        return Ok((resp, None));
    }
    refuse_large_body(route, &body, &replay, cx)?;
    let pool = route
        .pool
        .and_then(|p| choose_pool(cx.snap, p))
        .ok_or_else(|| no_pool(cx.snap, route.pool))?;
    meta.pool = Some((pool.index, pool.name.clone()));
    shape(&mut parts, route, cx, on_client.is_some());
    let saved = route.accel_redirect.then(|| accel::Saved::new(&parts));
    // Boxed: held inline, the exchange made this future (and the per-request box hyper's
    // service call allocates) about 11 KB instead of 1 KB; boxed, it is about 5 KB in
    // its own allocation, and the request's state touches half the memory.
    let exchange = attempt::Exchange::new(cx, pool, route, parts, on_client);
    let (mut resp, in_flight) = Box::pin(exchange.run(body, replay, meta)).await?;
    if let Some(saved) = saved
        && resp.headers().contains_key(&accel::X_ACCEL_REDIRECT)
    {
        return Box::pin(accel::serve(resp, &saved, cx))
            .await
            .map(|r| (r, None));
    }
    accel::hide(resp.headers_mut());
    Ok((resp, in_flight))
}

/// What is settled before routing: the target's length, a redirect to https, the
/// listener's `max_requests_per_host`. `Some` is the answer.
fn before_routing(
    req: &Request<ClientBody>,
    cx: &Ctx<'_>,
    meta: &mut Meta,
) -> Result<Option<Response<ProxyBody>>, ProxyError> {
    let target_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target_len > cx.snap.server.max_uri_bytes {
        return Err(ProxyError::UriTooLong);
    }
    if req.extensions().get::<EarlyData>().is_some() && !req.method().is_safe() {
        return Err(ProxyError::TooEarly);
    }
    if cx.listener.is_some_and(|l| l.redirect_https) && cx.conn.scheme == "http" {
        return action::redirect_https(req).map(Some);
    }
    if let Some(limit) = cx.listener.and_then(|l| l.host_limit.as_ref()) {
        let host = routing::request_host(req.uri(), req.headers()).unwrap_or("");
        meta.host_slot = Some(limit.acquire(host).ok_or(ProxyError::HostBusy)?);
    }
    Ok(None)
}

/// The matched route, noted in `meta`; an `internal` route is reachable only through
/// X-Accel-Redirect (nginx `internal`).
fn routed<'s>(snap: &'s Snapshot, idx: usize, meta: &mut Meta) -> Result<&'s Route, ProxyError> {
    let route = snap.routes.get(idx).ok_or(ProxyError::NoRoute)?;
    meta.route = Some((idx, route.name.clone()));
    if route.internal {
        return Err(ProxyError::NotFound);
    }
    Ok(route)
}

/// A body known to be too large is refused before anything goes upstream; one of
/// unknown length is cut off while streaming (`RequestBody::limited`).
fn refuse_large_body(
    route: &Route,
    body: &ClientBody,
    replay: &VecDeque<Frame<Bytes>>,
    cx: &Ctx<'_>,
) -> Result<(), ProxyError> {
    let limit = max_body(route, cx);
    let looked: u64 = replay
        .iter()
        .filter_map(|f| f.data_ref())
        .map(|d| d.len() as u64)
        .sum();
    if http_body::Body::size_hint(body)
        .lower()
        .saturating_add(looked)
        > limit
    {
        return Err(ProxyError::BodyTooLarge(limit));
    }
    Ok(())
}

/// The header section every attempt sends; a WebSocket upgrade asks for one upstream.
fn shape(parts: &mut Parts, route: &Route, cx: &Ctx<'_>, upgrade: bool) {
    upstream_request::head(parts, route, cx);
    if upgrade {
        let h = &mut parts.headers;
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
}

/// The route's pool, or the first pool down its `fallback` chain with a healthy server.
/// Why no pool can take the request: a pool whose names have no address says which
/// and what the resolver answered.
fn no_pool(snap: &Snapshot, first: Option<usize>) -> ProxyError {
    match first.and_then(|i| snap.pools.get(i)?.cfg.unresolved.clone()) {
        Some(why) => ProxyError::Unresolved(why),
        None => ProxyError::NoHealthy,
    }
}

fn choose_pool(snap: &Snapshot, first: usize) -> Option<&Pool> {
    let mut at = Some(first);
    for _ in 0..=snap.pools.len() {
        let pool = snap.pools.get(at?)?;
        if snap.view(pool.index).is_some_and(|v| !v.is_empty()) {
            return Some(pool);
        }
        at = pool.cfg.fallback;
    }
    None
}
