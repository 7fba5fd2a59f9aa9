//! `ProxyError`: every way a proxied request can fail, who is to blame, and the one
//! place that maps it to a status code.

use http::StatusCode;

use crate::upstream::{BodyError, SendError};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
    /// The proxy itself ran short (descriptors, ports, memory) connecting upstream.
    #[error("{}; try again shortly", .0.message())]
    Shortage(crate::shortage::Shortage),
    /// The pool's servers are given by name and none has an address yet.
    #[error("{0}; try again shortly")]
    Unresolved(std::sync::Arc<str>),
    #[error("request target too long")]
    UriTooLong,
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// An unsafe method in 0-RTT early data (RFC 8470): the client sends it again
    /// once the handshake is complete.
    #[error("request sent in early data; send it again after the handshake")]
    TooEarly,
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
            | ProxyError::TooEarly
            | ProxyError::ClientBody
            | ProxyError::ClientBodyTimeout
            | ProxyError::BodyTooLarge(_) => Blame::Client,
            ProxyError::NoHealthy
            | ProxyError::Unresolved(_)
            | ProxyError::Shortage(_)
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
            SendError::Connect(io) => match crate::shortage::Shortage::of(&io) {
                Some(kind) => {
                    crate::shortage::note(kind, crate::shortage::At::Upstream, &io);
                    ProxyError::Shortage(kind)
                }
                None => Self::classify(io.into(), true),
            },
            SendError::NotSent(h) => Self::classify(h.into(), true),
            SendError::Failed(h) => Self::classify(h.into(), false),
            SendError::Stale(h) => ProxyError::Stale(h.into()),
            SendError::TimedOut => ProxyError::Timeout,
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
            ProxyError::NoHealthy
            | ProxyError::Unresolved(_)
            | ProxyError::Shortage(_)
            | ProxyError::HostBusy
            | ProxyError::Limited { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::UriTooLong => StatusCode::URI_TOO_LONG,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::TooEarly => StatusCode::TOO_EARLY,
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
