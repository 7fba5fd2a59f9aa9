//! One request, start to finish: check framing, route (with the body look when a
//! `param` route asks for it), pick a server, rewrite headers, send, and stream the
//! response back. Errors become a short plain-text answer and a log event.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

use http::header::{self, HeaderValue};
use http::uri::{self, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::body::{Finish, ProxyBody, RequestBody};
use super::error::{Blame, ProxyError};
use super::headers::{self, Peer};
use super::look;
use super::{Conn, Shared};
use crate::access::AccessRecord;
use crate::routing::{self, BodyState, Decision, RequestView};
use crate::state::Snapshot;
use crate::upstream::InFlight;

/// What is known about where a request went, for logs and error bodies.
#[derive(Debug, Default)]
struct Meta {
    route: Option<Arc<str>>,
    pool: Option<Arc<str>>,
    server: Option<SocketAddr>,
    upstream_time: Option<Duration>,
}

/// Serve one request; never fails (errors become responses).
pub async fn handle(req: Request<Incoming>, conn: &Conn, shared: &Shared) -> Response<ProxyBody> {
    let started = Instant::now();
    let snap = shared.state.load();
    let record = shared.access.as_ref().map(|_| AccessRecord {
        time: SystemTime::now(),
        client: conn.peer.ip().to_canonical(),
        method: req.method().clone(),
        target: req.uri().path_and_query().cloned(),
        version: req.version(),
        status: 0,
        bytes_in: 0,
        bytes_out: 0,
        referer: req.headers().get(header::REFERER).cloned(),
        user_agent: req.headers().get(header::USER_AGENT).cloned(),
        route: None,
        pool: None,
        server: None,
        upstream_time: None,
        total_time: Duration::ZERO,
    });
    let bytes_in = Arc::new(AtomicU64::new(0));
    let mut meta = Meta::default();
    let (mut resp, in_flight) = match forward(req, conn, &snap, &mut meta, &bytes_in, started).await
    {
        Ok(ok) => ok,
        Err(e) => (error_response(&e, &meta, conn), None),
    };
    let record = record.map(|mut r| {
        r.status = resp.status().as_u16();
        r.route = meta.route;
        r.pool = meta.pool;
        r.server = meta.server;
        r.upstream_time = meta.upstream_time;
        r
    });
    resp.body_mut().set_finish(Finish {
        record,
        log: shared.access.clone(),
        bytes_in,
        started,
        in_flight,
    });
    resp
}

async fn forward(
    req: Request<Incoming>,
    conn: &Conn,
    snap: &Snapshot,
    meta: &mut Meta,
    bytes_in: &Arc<AtomicU64>,
    started: Instant,
) -> Result<(Response<ProxyBody>, Option<InFlight>), ProxyError> {
    headers::check_framing(req.headers()).map_err(ProxyError::BadRequest)?;
    let target_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target_len > snap.server.max_uri_bytes {
        return Err(ProxyError::UriTooLong);
    }
    let (mut parts, mut body) = req.into_parts();
    let kind = look::body_kind(&parts.headers, &body);
    let path = routing::decode_path(parts.uri.path());
    let mut view = RequestView {
        listener: conn.listener,
        method: &parts.method,
        host: routing::request_host(&parts.uri, &parts.headers),
        path: &path,
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
            let found = look::look(&mut body, kind, s.param_body_limit, s.param_body_timeout)
                .await
                .map_err(|_| ProxyError::ClientBody)?;
            bytes_in.fetch_add(found.bytes, std::sync::atomic::Ordering::Relaxed);
            replay = found.frames;
            parsed = found.params;
            view.body = parsed
                .as_ref()
                .map_or(BodyState::Skipped, BodyState::Parsed);
            snap.routes.route(&view, from)
        }
        (d, _) => d,
    };
    let Decision::Route(idx) = decision else {
        return Err(ProxyError::NoRoute);
    };
    let route = snap.routes.get(idx).ok_or(ProxyError::NoRoute)?;
    meta.route = Some(route.name.clone());
    let pool = snap.pools.get(route.pool).ok_or(ProxyError::NoServer)?;
    meta.pool = Some(pool.name.clone());
    let endpoint = pool.pick().ok_or(ProxyError::NoServer)?;
    meta.server = Some(endpoint.addr);
    let in_flight = endpoint.acquire();
    tracing::debug!(route = %route.name, pool = %pool.name, upstream = %endpoint.addr, "routed");

    // An HTTP/2 request has no Host field; HTTP/1.1 upstreams need one.
    if !parts.headers.contains_key(header::HOST)
        && let Some(v) = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        parts.headers.insert(header::HOST, v);
    }
    headers::strip_hop_by_hop(&mut parts.headers);
    // We answer `Expect: 100-continue` ourselves when the body is first read (RFC 9110 §10.1.1).
    parts.headers.remove(header::EXPECT);
    let trusted = snap
        .listeners
        .get(conn.listener)
        .map_or(&[][..], |l| &l.trusted_proxies[..]);
    headers::set_forwarded(
        &mut parts.headers,
        &Peer {
            ip: conn.peer.ip(),
            scheme: conn.scheme,
            trusted,
        },
    );
    for h in &route.remove_request_headers {
        parts.headers.remove(h);
    }
    for (k, v) in &route.add_request_headers {
        parts.headers.insert(k, v.clone());
    }
    let mut up = uri::Parts::default();
    up.scheme = Some(Scheme::HTTP);
    up.authority = Some(endpoint.authority.clone());
    up.path_and_query = Some(
        parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    );
    parts.uri = Uri::from_parts(up)
        .map_err(|_| ProxyError::BadRequest("request target cannot be forwarded"))?;
    parts.version = Version::HTTP_11;
    let body = RequestBody::new(
        replay,
        Some(body),
        snap.server.body_timeout,
        bytes_in.clone(),
    );
    let upstream_req = Request::from_parts(parts, body);

    let deadline = route.timeout.map(|t| started + t);
    let sent = Instant::now();
    let head_deadline = deadline.map_or(sent + pool.read_timeout, |d| {
        d.min(sent + pool.read_timeout)
    });
    let resp = match tokio::time::timeout_at(head_deadline, pool.client.request(upstream_req)).await
    {
        Err(_) => return Err(ProxyError::Timeout),
        Ok(Err(e)) => return Err(ProxyError::from_client(e)),
        Ok(Ok(r)) => r,
    };
    meta.upstream_time = Some(sent.elapsed());
    let (mut rp, rb) = resp.into_parts();
    headers::strip_hop_by_hop(&mut rp.headers);
    for (k, v) in &route.add_response_headers {
        rp.headers.append(k, v.clone());
    }
    Ok((
        Response::from_parts(rp, ProxyBody::upstream(rb, deadline)),
        Some(in_flight),
    ))
}

/// The short plain-text answer for a failure, plus its log event.
fn error_response(e: &ProxyError, meta: &Meta, conn: &Conn) -> Response<ProxyBody> {
    let status = StatusCode::from(e);
    let route = meta.route.as_deref().unwrap_or("-");
    let pool = meta.pool.as_deref().unwrap_or("-");
    let server = meta
        .server
        .map_or_else(|| "-".to_owned(), |s| s.to_string());
    let detail = chain(e);
    match e.blame() {
        Blame::Upstream | Blame::Internal => {
            tracing::warn!(route, pool, upstream = %server, status = status.as_u16(), error = %detail, "upstream request failed")
        }
        Blame::Client => {
            tracing::debug!(peer = %conn.peer, status = status.as_u16(), error = %detail, "request refused")
        }
    }
    let mut text = format!(
        "{} {}: {e}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    if meta.route.is_some() {
        text.push_str(&format!(" (route {route}, pool {pool})"));
    }
    text.push('\n');
    let mut resp = Response::new(ProxyBody::fixed(text));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if e.blame() == Blame::Client && status != StatusCode::NOT_FOUND {
        // The rest of a refused request cannot be trusted to be framed right.
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// `error: cause: cause` for logs.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}
