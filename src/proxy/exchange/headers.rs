//! Header rules between client and upstream: hop-by-hop removal (RFC 9110 §7.6.1),
//! `X-Forwarded-*` / `X-Real-IP` with trusted-proxy handling. Framing is checked on
//! the wire, before hyper parses (`framing/`).

use std::net::IpAddr;

use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};
use ipnet::IpNet;

use crate::proxy::request::ip_value;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Fields that describe one connection, not the message (RFC 9110 §7.6.1), plus the
/// legacy `Keep-Alive` / `Proxy-Connection`.
fn hop_by_hop() -> [&'static HeaderName; 9] {
    [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
        &header::PROXY_AUTHENTICATE,
        &header::PROXY_AUTHORIZATION,
    ]
}

/// Remove hop-by-hop fields, including every field named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        // The usual `keep-alive` / `close` / `upgrade` name nothing beyond the fixed
        // list below; only other tokens cost a parse and an allocation.
        let fixed = |t: &str| {
            t.eq_ignore_ascii_case("close")
                || hop_by_hop()
                    .iter()
                    .any(|h| t.eq_ignore_ascii_case(h.as_str()))
        };
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty() && !fixed(t))
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for n in named {
            headers.remove(n);
        }
    }
    // One pass over the (few) fields instead of a hashed lookup per hop-by-hop name;
    // removal only for the names actually present.
    let list = hop_by_hop();
    let mut present = [false; 9];
    for k in headers.keys() {
        if let Some(i) = list.iter().position(|h| *h == k) {
            present[i] = true;
        }
    }
    for (h, _) in list.iter().zip(present).filter(|(_, p)| *p) {
        headers.remove(*h);
    }
}

/// What the proxy knows about the client side of one request.
#[derive(Debug, Clone, Copy)]
pub struct Peer<'a> {
    pub ip: IpAddr,
    /// `ip`, canonical, as a header value (formatted once per connection).
    pub ip_value: &'a HeaderValue,
    pub scheme: &'static str,
    pub trusted: &'a [IpNet],
}

impl Peer<'_> {
    fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted.iter().any(|n| n.contains(&ip))
    }
}

/// Set `X-Forwarded-For/-Proto/-Host` and `X-Real-IP`. From an untrusted peer, any
/// client-sent copies are replaced by what the proxy saw (Frappe believes the first XFF
/// entry, so passing it through would let clients fake their IP). From a trusted peer,
/// the peer is appended to XFF, its `-Proto`/`-Host` are kept, and the real client is the
/// rightmost XFF entry that is not itself a trusted proxy.
pub fn set_forwarded(headers: &mut HeaderMap, peer: &Peer<'_>) {
    let peer_ip = peer.ip.to_canonical();
    let trusted = peer.is_trusted(peer_ip);
    let host = headers.get(header::HOST).cloned();
    if !trusted {
        let ip = peer.ip_value.clone();
        headers.insert(&X_FORWARDED_FOR, ip.clone());
        headers.insert(&X_REAL_IP, ip);
        headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(peer.scheme));
        headers.remove(&X_FORWARDED_HOST);
        if let Some(h) = host {
            headers.insert(&X_FORWARDED_HOST, h);
        }
        return;
    }
    let prior: Vec<IpAddr> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .collect();
    let client = prior
        .iter()
        .rev()
        .copied()
        .find(|ip| !peer.is_trusted(*ip))
        .or_else(|| prior.first().copied())
        .unwrap_or(peer_ip);
    let mut xff = String::new();
    for v in headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        xff.push_str(v.trim());
        xff.push_str(", ");
    }
    xff.push_str(&peer_ip.to_string());
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert(&X_FORWARDED_FOR, v);
    }
    headers.insert(&X_REAL_IP, ip_value(client));
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(peer.scheme));
    }
    if let (false, Some(h)) = (headers.contains_key(&X_FORWARDED_HOST), host) {
        headers.insert(&X_FORWARDED_HOST, h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("valid test header"),
                v.parse().expect("valid test header"),
            );
        }
        h
    }

    #[test]
    fn strips_hop_by_hop_and_connection_named() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn untrusted_peer_replaces_forwarded() {
        let mut h = map(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("host", "erp.example.com"),
        ]);
        let peer_value = ip_value([192, 0, 2, 9].into());
        let peer = Peer {
            ip_value: &peer_value,
            ip: [192, 0, 2, 9].into(),
            scheme: "http",
            trusted: &[],
        };
        set_forwarded(&mut h, &peer);
        assert_eq!(h["x-forwarded-for"], "192.0.2.9");
        assert_eq!(h["x-real-ip"], "192.0.2.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "erp.example.com");
    }

    #[test]
    fn trusted_peer_appends_and_finds_real_client() {
        let mut h = map(&[
            ("x-forwarded-for", "203.0.113.7, 10.0.0.2"),
            ("x-forwarded-proto", "https"),
        ]);
        let trusted = ["10.0.0.0/8".parse().expect("valid test header")];
        let peer_value = ip_value([10, 0, 0, 1].into());
        let peer = Peer {
            ip_value: &peer_value,
            ip: [10, 0, 0, 1].into(),
            scheme: "http",
            trusted: &trusted,
        };
        set_forwarded(&mut h, &peer);
        assert_eq!(h["x-forwarded-for"], "203.0.113.7, 10.0.0.2, 10.0.0.1");
        assert_eq!(h["x-real-ip"], "203.0.113.7");
        assert_eq!(h["x-forwarded-proto"], "https");
    }
}
