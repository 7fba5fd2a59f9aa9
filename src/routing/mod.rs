//! The route table: an ordered list of routes, first match wins.
//!
//! Built once per config generation (in `config::validate`), held immutably in the
//! runtime [`Snapshot`](crate::state::Snapshot), and consulted by the proxy for every
//! request. Routing never allocates for plain requests and never locks.
//!
//! - `mod.rs`: [`RouteTable`], [`Route`] and the request view routes are tested against.
//! - `matcher.rs`: one route's conditions; `hosts.rs`: the host index.
//! - `normalize.rs`: the path as routes see it.

mod hosts;
mod matcher;
mod normalize;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Uri};

use hosts::HostIndex;

pub use matcher::{
    BodyParams, BodyState, HostMatch, Matcher, RequestView, ValueMatch, Verdict, decode_path,
    prefix_matches,
};
pub use normalize::{PathError, normalize};

/// One `[[routes]]` entry, compiled.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: Arc<str>,
    /// Index into the snapshot's pool list: where `Proxy` sends, and where `Files`
    /// falls back to when no file exists (nginx `try_files $uri @pool`).
    pub pool: Option<usize>,
    pub action: Action,
    /// Reachable only through an `X-Accel-Redirect` answer; a client asking gets 404.
    pub internal: bool,
    /// Send `X-Use-X-Accel-Redirect: True` upstream and serve the `X-Accel-Redirect`
    /// answers from the `internal` routes.
    pub accel_redirect: bool,
    /// Responses may be compressed (when `[compression]` is on).
    pub compress: bool,
    /// Request class (index into the config's class names; 0 is `default`).
    pub class: usize,
    pub matcher: Matcher,
    /// Total time for the exchange, response body included; `None` = only the pool's
    /// own timeouts apply.
    pub timeout: Option<Duration>,
    pub add_request_headers: Vec<(HeaderName, HeaderValue)>,
    /// Overwrite these headers with values built from the request (placeholders).
    pub set_request_headers: Vec<(HeaderName, HeaderTemplate)>,
    pub remove_request_headers: Vec<HeaderName>,
    pub add_response_headers: Vec<(HeaderName, HeaderValue)>,
    /// Largest request body here, overriding the listener's (`u64::MAX`: no limit).
    pub max_body_size: Option<u64>,
    /// Pages for errors the proxy generates on this route, before the listener's.
    pub error_pages: Vec<ErrorPage>,
    /// `add_response_headers` on every status, or only nginx's success/redirect list.
    pub response_headers_always: bool,
}

/// One error page, loaded at config time (`error_pages`, nginx `error_page`): served in
/// place of the proxy's own short text for errors the proxy itself generates.
#[derive(Debug, Clone)]
pub struct ErrorPage {
    pub status: http::StatusCode,
    pub body: bytes::Bytes,
    pub content_type: http::HeaderValue,
    /// The file, watched so an edit is picked up.
    pub path: std::path::PathBuf,
}

/// What a matched route does (carried out by `proxy::action`).
#[derive(Debug, Clone)]
pub enum Action {
    /// Send the request to the route's pool.
    Proxy,
    /// Serve a file; when none exists, the route's pool if it has one, else 404.
    Files(Arc<FileRoot>),
    /// Answer with a redirect to `to`, where `$1`… are the `path_regex` captures and
    /// the query string is kept (nginx `rewrite … permanent|redirect`).
    Redirect {
        to: Arc<str>,
        status: http::StatusCode,
    },
}

/// Where a `Files` route finds its files.
#[derive(Debug, Clone)]
pub struct FileRoot {
    /// Directory the (normalised) path is looked up under; `{site}` is replaced by the
    /// request's site.
    pub root: String,
    /// Removed from the front of the path first (nginx `alias`-like).
    pub strip_prefix: Option<String>,
    /// Follow symlinks that lead out of the root (`false`: such a file is not served).
    pub follow_symlinks: bool,
    /// Serve `x.gz` / `x.br` / `x.zst` siblings to clients that accept them.
    pub precompressed: bool,
    /// `Cache-Control` and `Expires` (a duration from now) on files served.
    pub cache_control: Option<HeaderValue>,
    pub expires: Option<Duration>,
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
    /// Which routes can match a host (see `hosts.rs`).
    hosts: HostIndex,
}

impl RouteTable {
    pub fn new(routes: Vec<Route>) -> Self {
        let hosts = HostIndex::new(&routes);
        RouteTable { routes, hosts }
    }

    /// A table that uses its host index whatever its size (tests).
    #[cfg(test)]
    fn indexed(routes: Vec<Route>) -> Self {
        let hosts = HostIndex::from(&routes, 0);
        RouteTable { routes, hosts }
    }

    pub fn get(&self, idx: usize) -> Option<&Route> {
        self.routes.get(idx)
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// First matching route at or after `from`, in file order. Only the routes the
    /// host index names for the request's host are tested.
    pub fn route(&self, req: &RequestView<'_>, from: usize) -> Decision {
        let lists = match self.hosts.is_trivial() {
            true => None,
            false => self.hosts.candidates(req.host),
        };
        let Some(lists) = lists else {
            return self.scan(req, from..self.routes.len());
        };
        let mut at = from;
        while let Some(i) = lists.next_at(at) {
            if let Some(d) = self.test(req, i) {
                return d;
            }
            at = i + 1;
        }
        Decision::NoRoute
    }

    fn scan(&self, req: &RequestView<'_>, range: std::ops::Range<usize>) -> Decision {
        range
            .filter_map(|i| self.test(req, i))
            .next()
            .unwrap_or(Decision::NoRoute)
    }

    fn test(&self, req: &RequestView<'_>, i: usize) -> Option<Decision> {
        match self.routes.get(i)?.matcher.check(req) {
            Verdict::Yes => Some(Decision::Route(i)),
            Verdict::NeedBody => Some(Decision::NeedBody(i)),
            Verdict::No => None,
        }
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

/// One piece of a `set_request_headers` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePart {
    Literal(String),
    /// `{host}`: the request host, lower-case, without port.
    Host,
    /// `{http_host}`: the Host header as sent (with port).
    HttpHost,
    /// `{scheme}`: `http` or `https`, as the client connected.
    Scheme,
    /// `{client_ip}`: the client address as the proxy determined it.
    ClientIp,
    /// `{site}`: the request's site (see `sites`); a header needing it is removed when
    /// the request has none.
    Site,
}

/// A header value with placeholders, parsed at load time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderTemplate(pub Vec<TemplatePart>);

/// What placeholders expand to for one request.
#[derive(Debug, Clone, Copy)]
pub struct TemplateVars<'a> {
    pub host: &'a str,
    pub http_host: &'a str,
    pub scheme: &'a str,
    pub client_ip: std::net::IpAddr,
    pub site: Option<&'a str>,
}

impl HeaderTemplate {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(TemplatePart::Literal(rest[..open].to_owned()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("unclosed `{{` in {s:?}"))?
                + open;
            parts.push(match &rest[open + 1..close] {
                "host" => TemplatePart::Host,
                "http_host" => TemplatePart::HttpHost,
                "scheme" => TemplatePart::Scheme,
                "client_ip" => TemplatePart::ClientIp,
                "site" => TemplatePart::Site,
                other => return Err(format!("unknown placeholder {{{other}}}; use {{host}}, {{http_host}}, {{scheme}}, {{client_ip}} or {{site}}")),
            });
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(TemplatePart::Literal(rest.to_owned()));
        }
        let probe = HeaderTemplate(parts.clone());
        let vars = TemplateVars {
            host: "h",
            http_host: "h",
            scheme: "http",
            client_ip: std::net::IpAddr::from([127, 0, 0, 1]),
            site: Some("s"),
        };
        probe
            .render(&vars)
            .ok_or_else(|| format!("{s:?} is not a valid header value"))?;
        Ok(probe)
    }

    /// The value for one request; `None` if the request's own parts make it invalid.
    pub fn render(&self, v: &TemplateVars<'_>) -> Option<HeaderValue> {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                TemplatePart::Literal(s) => out.push_str(s),
                TemplatePart::Host => out.push_str(&v.host.to_ascii_lowercase()),
                TemplatePart::HttpHost => out.push_str(v.http_host),
                TemplatePart::Scheme => out.push_str(v.scheme),
                TemplatePart::ClientIp => out.push_str(&v.client_ip.to_string()),
                TemplatePart::Site => out.push_str(v.site?),
            }
        }
        HeaderValue::from_str(&out).ok()
    }
}
