//! The conditions of one route and how a request is tested against them.
//!
//! Everything here is synchronous and allocation-free for requests without
//! percent-encoding; the body look (`param`) happens in the proxy, which hands the
//! parsed fields back through [`BodyState::Parsed`].

use std::borrow::Cow;

use http::{HeaderMap, HeaderName, Method};
use regex::Regex;

/// `host` condition, compared case-insensitively and without the port.
#[derive(Debug, Clone)]
pub enum HostMatch {
    Exact(String),
    /// `*.example.com` stored as `.example.com`: any subdomain, not the bare domain.
    Suffix(String),
}

impl HostMatch {
    pub fn parse(pattern: &str) -> Self {
        match pattern.strip_prefix('*') {
            Some(rest) if rest.starts_with('.') => HostMatch::Suffix(rest.to_ascii_lowercase()),
            _ => HostMatch::Exact(pattern.to_ascii_lowercase()),
        }
    }

    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Exact(h) => host.eq_ignore_ascii_case(h),
            HostMatch::Suffix(s) => {
                host.len() > s.len()
                    && host.is_char_boundary(host.len() - s.len())
                    && host[host.len() - s.len()..].eq_ignore_ascii_case(s)
            }
        }
    }
}

/// `query.<name>` condition.
#[derive(Debug, Clone)]
pub enum ValueMatch {
    /// `true`: present with any value (also empty).
    Present,
    AnyOf(Vec<String>),
}

impl ValueMatch {
    fn accepts(&self, value: &str) -> bool {
        match self {
            ValueMatch::Present => true,
            ValueMatch::AnyOf(vs) => vs.iter().any(|v| v == value),
        }
    }
}

/// Body fields found by the bounded body look.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BodyParams {
    /// A JSON body replaces the query string as Frappe's `form_dict`; a form body only
    /// overrides the fields it has.
    pub json: bool,
    pub fields: Vec<(String, String)>,
}

/// What the router knows about the request body.
#[derive(Debug, Clone, Copy)]
pub enum BodyState<'a> {
    /// No body, or one whose type carries no parameters: params come from the query.
    Absent,
    /// A form or JSON body not looked at yet; a `param` route needs it.
    Unread,
    /// Too large or too slow to look at: params fall back to the query.
    Skipped,
    Parsed(&'a BodyParams),
}

/// The parts of a request the matcher reads.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub listener: usize,
    pub method: &'a Method,
    /// Host without port, as sent (compared case-insensitively).
    pub host: Option<&'a str>,
    /// Percent-decoded path.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: BodyState<'a>,
}

/// All conditions of one route. Empty lists are "no condition".
#[derive(Debug, Default, Clone)]
pub struct Matcher {
    pub listeners: Vec<usize>,
    pub hosts: Vec<HostMatch>,
    pub paths: Vec<String>,
    pub prefixes: Vec<String>,
    /// All `path_regex` patterns, each anchored, joined into one alternation.
    pub regex: Option<Regex>,
    pub methods: Vec<Method>,
    pub query: Vec<(String, ValueMatch)>,
    pub headers: Vec<(HeaderName, Vec<String>)>,
    pub params: Vec<(String, Vec<String>)>,
}

/// Outcome of testing one route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Yes,
    No,
    /// Everything else holds; the `param` conditions need the body.
    NeedBody,
}

impl Matcher {
    /// A route without conditions matches every request.
    pub fn is_catch_all(&self) -> bool {
        self.listeners.is_empty()
            && self.hosts.is_empty()
            && self.paths.is_empty()
            && self.prefixes.is_empty()
            && self.regex.is_none()
            && self.methods.is_empty()
            && self.query.is_empty()
            && self.headers.is_empty()
            && self.params.is_empty()
    }

    pub fn check(&self, req: &RequestView<'_>) -> Verdict {
        if !self.matches_head(req) {
            return Verdict::No;
        }
        if self.params.is_empty() {
            return Verdict::Yes;
        }
        if matches!(req.body, BodyState::Unread) {
            return Verdict::NeedBody;
        }
        let all = self
            .params
            .iter()
            .all(|(name, values)| param_matches(req, name, values));
        if all { Verdict::Yes } else { Verdict::No }
    }

    fn matches_head(&self, req: &RequestView<'_>) -> bool {
        (self.listeners.is_empty() || self.listeners.contains(&req.listener))
            && (self.methods.is_empty() || self.methods.contains(req.method))
            && (self.hosts.is_empty()
                || req
                    .host
                    .is_some_and(|h| self.hosts.iter().any(|m| m.matches(h))))
            && (self.paths.is_empty() || self.paths.iter().any(|p| p == req.path))
            && (self.prefixes.is_empty()
                || self.prefixes.iter().any(|p| prefix_matches(p, req.path)))
            && self.regex.as_ref().is_none_or(|r| r.is_match(req.path))
            && self
                .query
                .iter()
                .all(|(name, m)| query_values(req.query, name).any(|v| m.accepts(&v)))
            && self.headers.iter().all(|(name, values)| {
                req.headers
                    .get_all(name)
                    .iter()
                    .any(|v| values.iter().any(|x| v.as_bytes() == x.as_bytes()))
            })
    }
}

/// Segment-aware prefix: `/api` matches `/api` and `/api/x`, not `/apix`.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || prefix.ends_with('/'),
        None => false,
    }
}

/// Percent-decoded values of every occurrence of `name` in a query string.
fn query_values<'q>(query: Option<&'q str>, name: &'q str) -> impl Iterator<Item = Cow<'q, str>> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .filter(move |(k, _)| k == name)
        .map(|(_, v)| v)
}

/// Frappe's `form_dict` rule: a JSON body replaces the query; form fields override
/// query fields of the same name; a skipped body falls back to the query.
fn param_matches(req: &RequestView<'_>, name: &str, values: &[String]) -> bool {
    let accepts = |v: &str| values.iter().any(|x| x == v);
    if let BodyState::Parsed(body) = req.body {
        let mut in_body = body.fields.iter().filter(|(k, _)| k == name).peekable();
        if body.json || in_body.peek().is_some() {
            return in_body.any(|(_, v)| accepts(v));
        }
    }
    query_values(req.query, name).any(|v| accepts(&v))
}

/// The path as matched: percent-decoded (lossily) only when it contains a `%`.
pub fn decode_path(path: &str) -> Cow<'_, str> {
    if path.contains('%') {
        percent_encoding::percent_decode_str(path).decode_utf8_lossy()
    } else {
        Cow::Borrowed(path)
    }
}
