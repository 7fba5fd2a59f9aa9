//! The answer to a failed request: the short plain-text body, its headers
//! (`Retry-After`, `Connection: close`, the unknown-outcome mark) and the log event.
//! The status comes from the one mapping in `proxy::error`.

use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use super::body::ProxyBody;
use crate::proxy::error::{Blame, ProxyError};
use crate::proxy::request::{Conn, Meta};

static X_OUTCOME: HeaderName = HeaderName::from_static("x-switchyard-outcome");
/// Seconds a client is told to wait when nothing can take its request.
const RETRY_AFTER_SECS: &str = "5";

/// The short plain-text answer for a failure, plus its log event.
pub(crate) fn respond(
    e: &ProxyError,
    meta: &Meta,
    conn: &Conn,
    id: &HeaderValue,
    method: &http::Method,
    path: &str,
) -> Response<ProxyBody> {
    let status = StatusCode::from(e);
    let request_id = id.to_str().unwrap_or("-");
    log(e, meta, conn, request_id, status);
    if meta.outcome_unknown {
        let server = meta
            .server
            .map_or_else(|| "-".to_owned(), |s| s.to_string());
        tracing::warn!(request_id, %method, path, upstream = %server, "write may or may not have been applied upstream; not retried; reconcile by request id");
    }
    let mut resp = Response::new(ProxyBody::fixed(text(e, meta, status, request_id)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        h.insert(
            header::RETRY_AFTER,
            HeaderValue::from_static(RETRY_AFTER_SECS),
        );
    }
    if meta.outcome_unknown {
        h.insert(&X_OUTCOME, HeaderValue::from_static("unknown"));
    }
    if status == StatusCode::METHOD_NOT_ALLOWED {
        h.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    if e.blame() == Blame::Client && status != StatusCode::NOT_FOUND {
        // The rest of a refused request cannot be trusted to be framed right.
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// The failure's log event: a warning when the upstream or the proxy is to blame.
fn log(e: &ProxyError, meta: &Meta, conn: &Conn, request_id: &str, status: StatusCode) {
    let detail = chain(e);
    if matches!(e, ProxyError::Shortage(_)) {
        // Logged once a second per kind with a count (`crate::shortage::note`).
        tracing::debug!(request_id, status = status.as_u16(), error = %detail, "proxy short of resources");
        return;
    }
    match e.blame() {
        Blame::Upstream | Blame::Internal => {
            let route = meta.route.as_ref().map_or("-", |r| &r.1);
            let pool = meta.pool.as_ref().map_or("-", |p| &p.1);
            let server = meta
                .server
                .map_or_else(|| "-".to_owned(), |s| s.to_string());
            tracing::warn!(request_id, route, pool, upstream = %server, status = status.as_u16(), error = %detail, "upstream request failed")
        }
        Blame::Client => {
            tracing::debug!(request_id, peer = %conn.peer, status = status.as_u16(), error = %detail, "request refused")
        }
    }
}

/// `502 Bad Gateway: why (route R, pool P)`, and what to do about an unknown outcome.
fn text(e: &ProxyError, meta: &Meta, status: StatusCode, request_id: &str) -> String {
    let mut text = format!(
        "{} {}: {e}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    if meta.route.is_some() {
        let route = meta.route.as_ref().map_or("-", |r| &r.1);
        let pool = meta.pool.as_ref().map_or("-", |p| &p.1);
        text.push_str(&format!(" (route {route}, pool {pool})"));
    }
    if meta.outcome_unknown {
        text.push_str(&format!(
            "; the request may have been applied: not retried (request id {request_id})"
        ));
    }
    text.push('\n');
    text
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
