//! One request, start to finish: check framing, route (with the body look when a
//! `param` route asks for it), choose a pool (following `fallback` when a pool has no
//! healthy server), pick a server, send, retry when that is safe, and stream the
//! response back. Errors become a short plain-text answer and a log event.
//!
//! Sending, with the retry rule, lives in `attempt.rs`. A request that fails after it
//! may have been written, and is not idempotent, is answered 502/504 with
//! `X-Switchyard-Outcome: unknown` and logged with its id.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Request, Response};
use http_body::Frame;
use hyper::body::Incoming;
use tokio::time::Instant;

use super::accel;
use super::action;
use super::attempt;
use super::body::{Busy, Finish, ProxyBody};
use super::compress;
use super::error::{self, ProxyError};
use super::filters;
use super::look;
use super::shape;
use super::tunnel;
use super::{Conn, Shared};
use crate::access::AccessRecord;
use crate::routing::{self, BodyState, Decision, RequestView};
use crate::state::Snapshot;
use crate::upstream::{InFlight, Pool};

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What is known about where a request went, for logs, metrics and error bodies.
#[derive(Debug, Default)]
pub(super) struct Meta {
    pub(super) route: Option<(usize, Arc<str>)>,
    pub(super) pool: Option<(usize, Arc<str>)>,
    pub(super) server: Option<SocketAddr>,
    pub(super) upstream_time: Option<Duration>,
    /// A write failed after it may have reached the server.
    pub(super) outcome_unknown: bool,
    /// The request's place under `max_requests_per_host`, held until its response ends.
    pub(super) host_slot: Option<super::HostSlot>,
    /// Time spent in the pool's queue.
    pub(super) queue_wait: Option<Duration>,
}

/// Serve one request; never fails (errors become responses).
pub async fn handle(req: Request<Incoming>, conn: &Conn, shared: &Shared) -> Response<ProxyBody> {
    let started = Instant::now();
    let busy = Busy::new(&conn.busy);
    let snap = shared.state.load();
    // The listener is looked up once; every stage reads it from the context.
    let listener_index = snap.listener_index(conn.local);
    let listener = snap.listeners.get(listener_index);
    let trusted = listener.map_or(&[][..], |l| &l.trusted_proxies[..]);
    let request_id = request_id(req.headers(), conn.peer, trusted);
    let record = shared.access.as_ref().map(|_| {
        Box::new(AccessRecord {
            method: req.method().clone(),
            target: req.uri().path_and_query().cloned(),
            version: req.version(),
            referer: req.headers().get(header::REFERER).cloned(),
            user_agent: req.headers().get(header::USER_AGENT).cloned(),
            ..AccessRecord::new(conn.peer.ip(), request_id.clone())
        })
    });
    let (method, uri) = (req.method().clone(), req.uri().clone());
    let site = snap.sites.as_ref().and_then(|s| {
        s.resolve(
            listener.and_then(|l| l.site.as_ref()),
            routing::request_host(req.uri(), req.headers()),
        )
    });
    // Only what the compression filter reads, and only when it is on.
    let accept = snap.compression.as_ref().map(|_| {
        let v = req.headers().get(header::ACCEPT_ENCODING).cloned();
        (v, req.version())
    });
    let bytes_in = Arc::new(AtomicU64::new(0));
    let mut meta = Meta::default();
    let ctx = Ctx {
        conn,
        snap: &snap,
        shared,
        bytes_in: &bytes_in,
        started,
        request_id: &request_id,
        listener,
        listener_index,
        site,
    };
    let (mut resp, in_flight) = match forward(req, &ctx, &mut meta).await {
        Ok(ok) => ok,
        Err(e) => {
            let mut resp = error::respond(&e, &meta, conn, &request_id, &method, uri.path());
            filters::error_page(&mut resp, route_of(&snap, &meta), listener);
            (resp, None)
        }
    };
    filters::add_headers(&mut resp, route_of(&snap, &meta), listener);
    if let (Some(c), Some((h, version))) = (&snap.compression, &accept)
        && route_of(&snap, &meta).is_none_or(|r| r.compress)
    {
        resp = compress::filter(resp, h.as_ref(), *version, c);
    }
    resp.headers_mut().insert(&X_REQUEST_ID, request_id);
    if meta.outcome_unknown {
        snap.metrics.outcome_unknown.inc();
    }
    let status = resp.status().as_u16();
    let metrics = match (&meta.route, &meta.pool) {
        (Some((r, _)), Some((p, _))) => snap
            .prepared
            .routes
            .get(*r)
            .and_then(|h| Some((h.requests(*p, status)?.clone(), Some(h.duration.clone())))),
        (Some((r, _)), None) => snap.prepared.routes.get(*r).and_then(|h| {
            let no_pool = snap.pools.len();
            Some((
                h.requests(no_pool, status)?.clone(),
                Some(h.duration.clone()),
            ))
        }),
        _ => snap
            .prepared
            .unrouted
            .get(crate::metrics::class_of(status))
            .map(|c| (c.clone(), None)),
    };
    let class = route_of(&snap, &meta).and_then(|rt| snap.classes.get(rt.class).cloned());
    let host_slot = meta.host_slot.take();
    let record = record.map(|mut r| {
        r.status = status;
        r.route = meta.route.map(|r| r.1);
        r.pool = meta.pool.map(|p| p.1);
        r.server = meta.server;
        r.upstream_time = meta.upstream_time;
        r.queue_wait = meta.queue_wait;
        r.class = class;
        r
    });
    resp.body_mut().set_finish(Finish {
        record,
        log: shared.access.clone(),
        bytes_in,
        started,
        in_flight,
        busy: Some(busy),
        metrics,
        host_slot,
    });
    resp
}

fn route_of<'a>(snap: &'a Snapshot, meta: &Meta) -> Option<&'a crate::routing::Route> {
    meta.route.as_ref().and_then(|(i, _)| snap.routes.get(*i))
}

/// Keep a request id from a trusted proxy; otherwise make one.
fn request_id(
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

/// Per-request context that does not change between attempts.
pub(super) struct Ctx<'a> {
    pub(super) conn: &'a Conn,
    pub(super) snap: &'a Snapshot,
    pub(super) shared: &'a Shared,
    pub(super) bytes_in: &'a Arc<AtomicU64>,
    pub(super) started: Instant,
    pub(super) request_id: &'a HeaderValue,
    /// The listener the request came in on (`None` if a reload removed it), and its index.
    pub(super) listener: Option<&'a crate::state::ListenerInfo>,
    pub(super) listener_index: usize,
    /// The request's site (see `sites`), when `[sites]` is configured.
    pub(super) site: Option<Arc<str>>,
}

async fn forward(
    mut req: Request<Incoming>,
    cx: &Ctx<'_>,
    meta: &mut Meta,
) -> Result<(Response<ProxyBody>, Option<InFlight>), ProxyError> {
    let snap = cx.snap;
    let target_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target_len > snap.server.max_uri_bytes {
        return Err(ProxyError::UriTooLong);
    }
    if cx.listener.is_some_and(|l| l.redirect_https) && cx.conn.scheme == "http" {
        return action::redirect_https(&req).map(|r| (r, None));
    }
    if let Some(limit) = cx.listener.and_then(|l| l.host_limit.as_ref()) {
        let host = routing::request_host(req.uri(), req.headers()).unwrap_or("");
        meta.host_slot = Some(limit.acquire(host).ok_or(ProxyError::HostBusy)?);
    }
    let on_client =
        tunnel::is_websocket(req.version(), req.headers()).then(|| hyper::upgrade::on(&mut req));
    let (mut parts, mut body) = req.into_parts();
    shape::check(&parts)?;
    let path =
        routing::normalize(parts.uri.path()).map_err(|e| ProxyError::BadRequest(e.as_str()))?;
    let (idx, replay) = route(&parts, &path, &mut body, cx).await?;
    let route = snap.routes.get(idx).ok_or(ProxyError::NoRoute)?;
    meta.route = Some((idx, route.name.clone()));
    if route.internal {
        // Reachable only through X-Accel-Redirect (nginx `internal`).
        return Err(ProxyError::NotFound);
    }
    if let Some(resp) = action::run(route, &parts, &path, cx).await? {
        return Ok((resp, None));
    }
    // A body known to be too large is refused before anything goes upstream; one of
    // unknown length is cut off while streaming (`RequestBody::limited`).
    let limit = max_body(route, cx);
    let looked: u64 = replay
        .iter()
        .filter_map(|f| f.data_ref())
        .map(|d| d.len() as u64)
        .sum();
    if http_body::Body::size_hint(&body)
        .lower()
        .saturating_add(looked)
        > limit
    {
        return Err(ProxyError::BodyTooLarge(limit));
    }
    let pool = route
        .pool
        .and_then(|p| choose_pool(snap, p))
        .ok_or(ProxyError::NoHealthy)?;
    meta.pool = Some((pool.index, pool.name.clone()));
    shape::head(&mut parts, route, cx);
    if on_client.is_some() {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts
            .headers
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }

    // Boxed: held inline, the exchange made this future (and the per-request box hyper's
    // service call allocates) about 11 KB instead of 1 KB; boxed, it is about 5 KB in
    // its own allocation, and the request's state touches half the memory.
    let saved = route.accel_redirect.then(|| accel::Saved::new(&parts));
    let (mut resp, in_flight) = Box::pin(attempt::exchange(
        parts, body, replay, pool, route, on_client, cx, meta,
    ))
    .await?;
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

/// Route the request, looking at the body if a `param` route needs it.
async fn route(
    parts: &Parts,
    path: &str,
    body: &mut Incoming,
    cx: &Ctx<'_>,
) -> Result<(usize, VecDeque<Frame<Bytes>>), ProxyError> {
    let snap = cx.snap;
    let kind = look::body_kind(&parts.headers, body);
    let mut view = RequestView {
        listener: cx.listener_index,
        method: &parts.method,
        host: routing::request_host(&parts.uri, &parts.headers),
        path,
        query: parts.uri.query(),
        headers: &parts.headers,
        body: if kind.is_some() {
            BodyState::Unread
        } else {
            BodyState::Absent
        },
    };
    let mut replay = VecDeque::new();
    let parsed;
    let decision = match (snap.routes.route(&view, 0), &kind) {
        (Decision::NeedBody(from), Some(kind)) => {
            let s = &snap.server;
            // Boxed: a cold path, kept out of every request's future.
            let found = Box::pin(look::look(
                body,
                kind,
                s.param_body_limit,
                s.param_body_timeout,
            ))
            .await
            .map_err(|_| ProxyError::ClientBody)?;
            cx.bytes_in.fetch_add(found.bytes, Ordering::Relaxed);
            replay = found.frames;
            parsed = found.params;
            view.body = parsed
                .as_ref()
                .map_or(BodyState::Skipped, BodyState::Parsed);
            snap.routes.route(&view, from)
        }
        (d, _) => d,
    };
    match decision {
        Decision::Route(i) => Ok((i, replay)),
        _ => Err(ProxyError::NoRoute),
    }
}

/// `max_body_size` for this request: the route's, else the listener's; `u64::MAX` for none.
pub(super) fn max_body(route: &crate::routing::Route, cx: &Ctx<'_>) -> u64 {
    route
        .max_body_size
        .or_else(|| cx.listener?.max_body_size)
        .unwrap_or(u64::MAX)
}

/// The route's pool, or the first pool down its `fallback` chain with a healthy server.
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
