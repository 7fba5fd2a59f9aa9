//! `ProxyError`: every way a proxied request can fail, who is to blame, and the one
//! place that maps it to a status code.

use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use super::body::ProxyBody;

use crate::upstream::{BodyError, SendError};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

static X_OUTCOME: HeaderName = HeaderName::from_static("x-switchyard-outcome");
/// Seconds a client is told to wait when nothing can take its request.
const RETRY_AFTER_SECS: &str = "5";

/// Who caused a failure (pingora's `ErrorSource`): decides log level and status class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    Client,
    Upstream,
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route matches this request")]
    NoRoute,
    #[error("not found")]
    NotFound,
    #[error("too many requests in flight for this host (max_requests_per_host)")]
    HostBusy,
    /// The pool's limits (server `max_connections`, the class's cap) kept it out.
    #[error("{}", match why { crate::upstream::Refusal::QueueFull => "every server is at its limit for this request's class and the queue is full (max_connections, queue_size)", crate::upstream::Refusal::Timeout => "every server stayed at its limit for this request's class for queue_timeout (max_connections)" })]
    Limited { why: crate::upstream::Refusal },
    #[error("method not allowed here (files are served to GET and HEAD)")]
    MethodNotAllowed,
    #[error("file could not be read")]
    File(#[source] std::io::Error),
    #[error("no healthy server can take this request; try again shortly")]
    NoHealthy,
    #[error("request target too long")]
    UriTooLong,
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("client request body was malformed or cut off")]
    ClientBody,
    #[error("client sent its request body too slowly")]
    ClientBodyTimeout,
    #[error("request body larger than max_body_size ({0} bytes)")]
    BodyTooLarge(u64),
    #[error("cannot connect to upstream")]
    Connect(#[source] BoxError),
    #[error("timed out connecting to upstream")]
    ConnectTimeout,
    #[error("upstream timed out")]
    Timeout,
    #[error("upstream connection failed")]
    Upstream(#[source] BoxError),
    /// A reused keep-alive connection ended before any answer (see `SendError::Stale`).
    #[error("upstream closed a reused connection")]
    Stale(#[source] BoxError),
}

impl ProxyError {
    pub fn blame(&self) -> Blame {
        match self {
            ProxyError::NoRoute
            | ProxyError::NotFound
            | ProxyError::MethodNotAllowed
            | ProxyError::UriTooLong
            | ProxyError::BadRequest(_)
            | ProxyError::ClientBody
            | ProxyError::ClientBodyTimeout
            | ProxyError::BodyTooLarge(_) => Blame::Client,
            ProxyError::NoHealthy
            | ProxyError::File(_)
            | ProxyError::HostBusy
            | ProxyError::Limited { .. } => Blame::Internal,
            ProxyError::Connect(_)
            | ProxyError::ConnectTimeout
            | ProxyError::Timeout
            | ProxyError::Upstream(_)
            | ProxyError::Stale(_) => Blame::Upstream,
        }
    }

    /// Classify a client error from hyper-util: a failed connect (refused, or timed out
    /// → 504), a body error of ours (the client's fault), or an upstream failure.
    pub fn from_client(e: hyper_util::client::legacy::Error) -> Self {
        let connect = e.is_connect();
        Self::classify(e.into(), connect)
    }

    /// Classify a failed send on a per-server HTTP/1.1 connection. A request that
    /// never left counts as a connect failure (safe to send elsewhere).
    pub fn from_send(e: SendError) -> Self {
        match e {
            SendError::Connect(io) => Self::classify(io.into(), true),
            SendError::NotSent(h) => Self::classify(h.into(), true),
            SendError::Failed(h) => Self::classify(h.into(), false),
            SendError::Stale(h) => ProxyError::Stale(h.into()),
        }
    }

    /// Whether the upstream's answer could not be parsed.
    pub fn is_bad_response(&self) -> bool {
        let ProxyError::Upstream(e) = self else {
            return false;
        };
        e.downcast_ref::<hyper::Error>()
            .is_some_and(|h| h.is_parse() || h.is_parse_status())
    }

    fn classify(e: BoxError, connect: bool) -> Self {
        let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&*e);
        let mut timed_out = false;
        while let Some(s) = src {
            if let Some(b) = s.downcast_ref::<BodyError>() {
                match b {
                    BodyError::Client(_) => return ProxyError::ClientBody,
                    BodyError::ClientTimeout => return ProxyError::ClientBodyTimeout,
                    BodyError::TooLarge(n) => return ProxyError::BodyTooLarge(*n),
                    _ => {}
                }
            }
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                timed_out |= io.kind() == std::io::ErrorKind::TimedOut;
            }
            src = s.source();
        }
        if timed_out && connect {
            ProxyError::ConnectTimeout
        } else if timed_out {
            ProxyError::Timeout
        } else if connect {
            ProxyError::Connect(e)
        } else {
            ProxyError::Upstream(e)
        }
    }
}

impl From<&ProxyError> for StatusCode {
    fn from(e: &ProxyError) -> Self {
        match e {
            ProxyError::NoRoute | ProxyError::NotFound => StatusCode::NOT_FOUND,
            ProxyError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::File(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::NoHealthy | ProxyError::HostBusy | ProxyError::Limited { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::UriTooLong => StatusCode::URI_TOO_LONG,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::ClientBodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::ClientBody => StatusCode::BAD_REQUEST,
            ProxyError::Connect(_) | ProxyError::Upstream(_) | ProxyError::Stale(_) => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::Timeout | ProxyError::ConnectTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }
}

/// The short plain-text answer for a failure, plus its log event.
pub(super) fn respond(
    e: &ProxyError,
    meta: &super::forward::Meta,
    conn: &super::Conn,
    id: &HeaderValue,
    method: &http::Method,
    path: &str,
) -> Response<ProxyBody> {
    let status = StatusCode::from(e);
    let route = meta.route.as_ref().map_or("-", |r| &r.1);
    let pool = meta.pool.as_ref().map_or("-", |p| &p.1);
    let server = meta
        .server
        .map_or_else(|| "-".to_owned(), |s| s.to_string());
    let request_id = id.to_str().unwrap_or("-");
    let detail = chain(e);
    match e.blame() {
        Blame::Upstream | Blame::Internal => {
            tracing::warn!(request_id, route, pool, upstream = %server, status = status.as_u16(), error = %detail, "upstream request failed")
        }
        Blame::Client => {
            tracing::debug!(request_id, peer = %conn.peer, status = status.as_u16(), error = %detail, "request refused")
        }
    }
    if meta.outcome_unknown {
        tracing::warn!(request_id, %method, path, upstream = %server, "write may or may not have been applied upstream; not retried; reconcile by request id");
    }
    let mut text = format!(
        "{} {}: {e}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    if meta.route.is_some() {
        text.push_str(&format!(" (route {route}, pool {pool})"));
    }
    if meta.outcome_unknown {
        text.push_str(&format!(
            "; the request may have been applied: not retried (request id {request_id})"
        ));
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
