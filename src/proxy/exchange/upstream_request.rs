//! The one place an upstream request is shaped, for every client protocol (HTTP/1.0,
//! HTTP/1.1, HTTP/2) and every upstream path (plain or TLS HTTP/1.1, HTTP/2, WebSocket
//! upgrades). Three steps, in request order:
//!
//! 1. [`check`]: refuse what RFC 9112 says a server must refuse (400), before routing.
//! 2. [`head`]: the header section every attempt sends: `Host`, joined cookies,
//!    hop-by-hop fields out, `X-Forwarded-*`, the request id, the route's header rules.
//! 3. `upstream::target`: per attempt, the request target and version the upstream
//!    gets (shared with the health probes, which send origin form too).
//!
//! The rules, with their sources:
//! - Towards an origin server the target is in origin form (RFC 9112 §3.2.1); `OPTIONS *`
//!   stays in asterisk form (§3.2.4). A client's absolute-form target becomes origin form
//!   and its authority becomes `Host` (§3.2.2: a server ignores `Host` then).
//! - `Host` is forwarded byte for byte, port included. An HTTP/2 client's `:authority`
//!   becomes `Host` (RFC 9113 §8.3.1). HTTP/1.0 without `Host` gets the server's address,
//!   as nginx's default `proxy_set_header Host $proxy_host` does.
//! - An HTTP/2 upstream gets `:authority` equal to that `Host` and no `host` field.
//! - HTTP/2 cookie crumbs are joined with `"; "` before HTTP/1.1 (RFC 9113 §8.2.3).
//! - Header names with `_` are dropped, as nginx does by default
//!   (`underscores_in_headers off`): some servers fold `Transfer_Encoding` into
//!   `Transfer-Encoding`, and CGI-style servers cannot tell `X_A` from `X-A`.
//! - A body on any method is forwarded with its framing: a fixed length as
//!   `Content-Length`, anything else chunked (hyper would drop a GET body otherwise).

use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::uri::{Authority, Scheme};
use http::{HeaderMap, Method, Uri, Version};

use super::headers::{self, Peer};
use crate::proxy::error::ProxyError;
use crate::proxy::request::{Ctx, X_REQUEST_ID};
use crate::routing::{self, Route};

/// Refuse a request that RFC 9112 (or plain safety) says not to forward.
pub(crate) fn check(parts: &Parts) -> Result<(), ProxyError> {
    let bad = |why| Err(ProxyError::BadRequest(why));
    if parts.method == Method::CONNECT {
        return bad("CONNECT is not supported");
    }
    if parts.version != Version::HTTP_2 {
        let mut hosts = parts.headers.get_all(header::HOST).iter();
        match (hosts.next(), hosts.next()) {
            (Some(_), Some(_)) => return bad("more than one Host field (RFC 9112 §3.2)"),
            (None, _) if parts.version == Version::HTTP_11 => {
                return bad("HTTP/1.1 request without Host (RFC 9112 §3.2)");
            }
            (Some(h), None) if !valid_host(h.as_bytes()) => return bad("invalid Host"),
            _ => {}
        }
    }
    let asterisk = parts.method == Method::OPTIONS && parts.uri == "*";
    let origin = parts.uri.path().starts_with('/');
    if !asterisk && !(origin && (parts.uri.scheme().is_none() || absolute(&parts.uri))) {
        return bad("request target is neither origin nor absolute form (RFC 9112 §3.2)");
    }
    if climbs_above_root(parts.uri.path()) {
        return bad("path climbs above the root");
    }
    Ok(())
}

fn absolute(uri: &Uri) -> bool {
    let scheme = uri.scheme();
    (scheme == Some(&Scheme::HTTP) || scheme == Some(&Scheme::HTTPS)) && uri.authority().is_some()
}

/// `uri-host [ ":" port ]` (RFC 9110 §7.2), or empty; no user info.
fn valid_host(v: &[u8]) -> bool {
    if v.is_empty() {
        return true;
    }
    let Ok(a) = Authority::try_from(v) else {
        return false;
    };
    let after_host = match a.as_str().rfind(']') {
        Some(i) => &a.as_str()[i + 1..],
        None => a.as_str(),
    };
    let port_ok = after_host
        .rsplit_once(':')
        .is_none_or(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()));
    !v.contains(&b'@') && port_ok
}

/// Whether the path's `..` segments (also as `%2e%2e`) go above `/`, as nginx refuses.
pub(crate) fn climbs_above_root(path: &str) -> bool {
    if !path.contains("..") && !path.contains('%') {
        return false;
    }
    let mut depth = 0i32;
    for seg in path.split('/').skip(1) {
        // A dot is `.` or `%2e`, in any case; compared in place, without decoding.
        let dots = match seg.len() {
            1 | 3 if is_dot(seg) => 1,
            2 | 4 | 6 => (1..seg.len())
                .find(|&k| seg.get(..k).is_some_and(is_dot) && seg.get(k..).is_some_and(is_dot))
                .map_or(0, |_| 2),
            _ => 0,
        };
        match (dots, seg.is_empty()) {
            (2, _) => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            (1, _) | (_, true) => {}
            _ => depth += 1,
        }
    }
    false
}

/// `.` or its percent-encoding `%2e` / `%2E`.
fn is_dot(s: &str) -> bool {
    s == "." || s.eq_ignore_ascii_case("%2e")
}

/// The header section every attempt sends.
pub(crate) fn head(parts: &mut Parts, route: &Route, cx: &Ctx<'_>) {
    // Absolute form (HTTP/1) and `:authority` (HTTP/2): the target's authority is the Host.
    if let Some(v) = parts
        .uri
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        parts.headers.insert(header::HOST, v);
    }
    join_cookies(&mut parts.headers);
    drop_underscored(&mut parts.headers);
    strip_hop_by_hop(&mut parts.headers);
    let trusted = cx.listener.map_or(&[][..], |l| &l.trusted_proxies[..]);
    headers::set_forwarded(
        &mut parts.headers,
        &Peer {
            ip: cx.conn.peer.ip(),
            ip_value: &cx.conn.peer_ip,
            scheme: cx.conn.scheme,
            trusted,
        },
    );
    parts.headers.insert(&X_REQUEST_ID, cx.request_id.clone());
    route_rules(&mut parts.headers, route, cx);
    if !route.set_request_headers.is_empty() {
        set_templates(parts, route, cx);
    }
}

/// Hop-by-hop fields out (RFC 9110 §7.6.1), keeping chunked framing, and `Expect`.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let chunked = h
        .get(header::TRANSFER_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"));
    headers::strip_hop_by_hop(h);
    if chunked {
        // Hop-by-hop, but hyper drops a GET/HEAD body unless it is asked to chunk it.
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
    }
    // We answer `Expect: 100-continue` ourselves when the body is first read (RFC 9110 §10.1.1).
    h.remove(header::EXPECT);
}

/// The route's header rules: removed and added fields, the site header, and whether
/// Frappe may answer with `X-Accel-Redirect`.
fn route_rules(h: &mut HeaderMap, route: &Route, cx: &Ctx<'_>) {
    for name in &route.remove_request_headers {
        h.remove(name);
    }
    for (k, v) in &route.add_request_headers {
        h.insert(k, v.clone());
    }
    if let Some(sites) = &cx.snap.sites {
        // The site header is the proxy's word, never the client's.
        match cx
            .site
            .as_deref()
            .and_then(|s| HeaderValue::from_str(s).ok())
        {
            Some(v) => h.insert(&sites.header, v),
            None => h.remove(&sites.header),
        };
    }
    if route.accel_redirect {
        h.insert(&X_USE_ACCEL, HeaderValue::from_static("True"));
    } else {
        h.remove(&X_USE_ACCEL);
    }
}

/// Frappe streams private files itself unless this asks for `X-Accel-Redirect`.
static X_USE_ACCEL: HeaderName = HeaderName::from_static("x-use-x-accel-redirect");

/// Several `Cookie` fields (HTTP/2 crumbs) become one, joined by `"; "`.
fn join_cookies(h: &mut HeaderMap) {
    let mut all = h.get_all(header::COOKIE).iter();
    if all.next().is_none() || all.next().is_none() {
        return;
    }
    let mut joined = Vec::new();
    for v in h.get_all(header::COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(v.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        h.insert(header::COOKIE, v);
    }
}

fn drop_underscored(h: &mut HeaderMap) {
    if !h.keys().any(|k| k.as_str().contains('_')) {
        return;
    }
    let names: Vec<HeaderName> = h
        .keys()
        .filter(|k| k.as_str().contains('_'))
        .cloned()
        .collect();
    for n in names {
        tracing::debug!(header = %n, "dropped a header name with an underscore");
        h.remove(n);
    }
}

/// `set_request_headers`: overwrite (never append), so a client cannot smuggle in a
/// header the route sets.
fn set_templates(parts: &mut Parts, route: &Route, cx: &Ctx<'_>) {
    let host = routing::request_host(&parts.uri, &parts.headers)
        .unwrap_or("")
        .to_owned();
    let http_host = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let client_ip = parts
        .headers
        .get("x-real-ip")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| cx.conn.peer.ip().to_canonical());
    let vars = routing::TemplateVars {
        host: &host,
        http_host: &http_host,
        scheme: cx.conn.scheme,
        client_ip,
        site: cx.site.as_deref(),
    };
    for (k, t) in &route.set_request_headers {
        match t.render(&vars) {
            Some(v) => {
                parts.headers.insert(k, v);
            }
            None => {
                parts.headers.remove(k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_climb_above_the_root_are_found() {
        for p in [
            "/..",
            "/../etc/passwd",
            "/a/../../b",
            "/%2e%2e/x",
            "/%2E./x",
            "/a/./../..",
        ] {
            assert!(climbs_above_root(p), "{p}");
        }
        for p in [
            "/", "/a/../b", "/a/b/..", "/..a/b", "/a..b", "/%41", "/a/./b",
        ] {
            assert!(!climbs_above_root(p), "{p}");
        }
    }

    #[test]
    fn hosts_are_checked() {
        for ok in [
            &b""[..],
            b"example.com",
            b"example.com:8080",
            b"[::1]:80",
            b"1.2.3.4",
        ] {
            assert!(valid_host(ok), "{ok:?}");
        }
        for bad in [&b"[::1"[..], b"a b", b"user@host", b"host:port"] {
            assert!(!valid_host(bad), "{bad:?}");
        }
    }

    #[test]
    fn cookie_crumbs_are_joined() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        h.append(header::COOKIE, HeaderValue::from_static("sid=x"));
        join_cookies(&mut h);
        assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(h[header::COOKIE], "a=1; sid=x");
    }
}
