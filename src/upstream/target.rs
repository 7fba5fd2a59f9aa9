//! The request target an upstream gets, for forwarded requests (`proxy::exchange::upstream_request`) and
//! health probes alike: origin form towards HTTP/1.1 (RFC 9112 §3.2.1), scheme and
//! `:authority` towards HTTP/2 (RFC 9113 §8.3.1).

use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Uri, Version};

/// The upstream's request target and version for one attempt. HTTP/1.1: origin form
/// (or `*`), and a `Host` of the server's address if the client (HTTP/1.0) sent none.
/// HTTP/2: scheme and `:authority` from `Host`, which then leaves the field section.
pub fn target(
    uri: &Uri,
    headers: &mut HeaderMap,
    server: &Authority,
    h2: Option<Scheme>,
) -> (Uri, Version) {
    let pq = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    if !headers.contains_key(header::HOST)
        && let Ok(v) = HeaderValue::from_str(server.as_str())
    {
        headers.insert(header::HOST, v);
    }
    let Some(scheme) = h2 else {
        return (Uri::from(pq), Version::HTTP_11);
    };
    let authority = headers
        .remove(header::HOST)
        .and_then(|h| Authority::try_from(h.as_bytes()).ok())
        .unwrap_or_else(|| server.clone());
    let mut up = http::uri::Parts::default();
    up.scheme = Some(scheme);
    up.authority = Some(authority);
    up.path_and_query = Some(pq);
    let uri = Uri::from_parts(up).unwrap_or_else(|_| Uri::from_static("/"));
    (uri, Version::HTTP_2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_origin_form_and_h2_authority_is_the_host() {
        let server = Authority::from_static("127.0.0.1:9");
        let mut h = HeaderMap::new();
        let (u, v) = target(
            &"http://a.test/x?y=1".parse().expect("uri"),
            &mut h,
            &server,
            None,
        );
        assert_eq!((u.to_string(), v), ("/x?y=1".to_owned(), Version::HTTP_11));
        assert_eq!(h[header::HOST], "127.0.0.1:9", "HTTP/1.0 without Host");
        let (u, _) = target(&"*".parse().expect("uri"), &mut h, &server, None);
        assert_eq!(u.to_string(), "*");
        h.insert(header::HOST, HeaderValue::from_static("erp.test:8443"));
        let (u, v) = target(
            &"/p".parse().expect("uri"),
            &mut h,
            &server,
            Some(Scheme::HTTPS),
        );
        assert_eq!(
            (u.to_string(), v),
            ("https://erp.test:8443/p".to_owned(), Version::HTTP_2)
        );
        assert!(!h.contains_key(header::HOST));
    }
}
