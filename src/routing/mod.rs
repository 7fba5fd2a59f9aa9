//! The route table: an ordered list of routes, first match wins.
//!
//! Built once per config generation (in `config::validate`), held immutably in the
//! runtime [`Snapshot`](crate::state::Snapshot), and consulted by the proxy for every
//! request. Routing never allocates for plain requests and never locks.

mod matcher;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Uri};

pub use matcher::{
    BodyParams, BodyState, HostMatch, Matcher, RequestView, ValueMatch, Verdict, decode_path,
    prefix_matches,
};

/// One `[[routes]]` entry, compiled.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: Arc<str>,
    /// Index into the snapshot's pool list.
    pub pool: usize,
    pub matcher: Matcher,
    /// Total time for the exchange, response body included; `None` = only the pool's
    /// own timeouts apply.
    pub timeout: Option<Duration>,
    pub add_request_headers: Vec<(HeaderName, HeaderValue)>,
    pub remove_request_headers: Vec<HeaderName>,
    pub add_response_headers: Vec<(HeaderName, HeaderValue)>,
}

/// What the table says about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Route(usize),
    /// Route `n` matches but for its `param` conditions: look at the body, then call
    /// [`RouteTable::route`] again from `n`.
    NeedBody(usize),
    NoRoute,
}

#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    pub fn new(routes: Vec<Route>) -> Self {
        RouteTable { routes }
    }

    pub fn get(&self, idx: usize) -> Option<&Route> {
        self.routes.get(idx)
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// First matching route at or after `from`.
    pub fn route(&self, req: &RequestView<'_>, from: usize) -> Decision {
        for (i, r) in self.routes.iter().enumerate().skip(from) {
            match r.matcher.check(req) {
                Verdict::Yes => return Decision::Route(i),
                Verdict::NeedBody => return Decision::NeedBody(i),
                Verdict::No => {}
            }
        }
        Decision::NoRoute
    }
}

/// The request's host without port: the `Host` header, else the URI authority (HTTP/2).
pub fn request_host<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> Option<&'a str> {
    let raw = match headers.get(http::header::HOST) {
        Some(v) => v.to_str().ok()?,
        None => uri.authority()?.as_str(),
    };
    Some(strip_port(raw))
}

/// `example.com:8080` → `example.com`; `[::1]:80` → `[::1]`.
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    host.split_once(':').map_or(host, |(h, _)| h)
}
