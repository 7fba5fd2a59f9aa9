//! Compression filter (nginx `gzip`): gzip, brotli or zstd, chosen by the client's
//! `Accept-Encoding`, for proxied and static responses alike, streaming (one chunk in,
//! compressed chunks out; never the whole body).
//!
//! The cheap checks come first and decide most responses without touching the
//! encoder: `[compression]` on and the route allowing it, an HTTP/1.1 or later client
//! that accepts one of the encodings, a status with a body, no `Content-Encoding` or
//! `Content-Range` yet, a listed type, and a length (when known) of at least
//! `min_length`. tower-http's compression then negotiates and wraps the body; it sets
//! `Content-Encoding`, `Vary: Accept-Encoding` and drops `Content-Length` and
//! `Accept-Ranges`. An `ETag` becomes weak, as nginx makes it. A response that could
//! have been compressed but was not (the client does not accept any) still gets
//! `Vary: Accept-Encoding` (nginx `gzip_vary on`).

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::task::{Context, Poll};

use futures_util::FutureExt;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body::Body;
use tower_http::CompressionLevel;
use tower_http::compression::Compression;

use super::body::ProxyBody;
use crate::config::CompressionSettings;

/// Compress `resp` if the request and the response allow it.
pub(crate) fn filter(
    resp: Response<ProxyBody>,
    accept_encoding: Option<&HeaderValue>,
    version: Version,
    settings: &CompressionSettings,
) -> Response<ProxyBody> {
    if version < Version::HTTP_11 || !eligible(&resp, settings) {
        return resp;
    }
    let Some(accept) = accept_encoding.and_then(|v| accepts(v, settings)) else {
        // Sent as it is, but a cache must still know it depends on the encoding.
        let mut resp = resp;
        add_vary(resp.headers_mut());
        return resp;
    };
    let mut svc = Compression::new(Once(Some(resp)))
        .quality(CompressionLevel::Precise(settings.level as i32))
        .gzip(settings.gzip)
        .br(settings.brotli)
        .zstd(settings.zstd)
        .compress_when(|_, _, _: &HeaderMap, _: &http::Extensions| true);
    let mut req = Request::new(());
    req.headers_mut().insert(header::ACCEPT_ENCODING, accept);
    let out = tower_service::Service::call(&mut svc, req).now_or_never();
    let Some(Ok(out)) = out else {
        // The inner future is ready at once; nothing else can happen.
        return Response::new(ProxyBody::fixed(""));
    };
    let (mut parts, body) = out.into_parts();
    if parts.headers.contains_key(header::CONTENT_ENCODING) {
        weaken_etag(&mut parts.headers);
    }
    Response::from_parts(parts, ProxyBody::boxed(body))
}

/// The client's `Accept-Encoding` if it names an encoding we may use (and does not
/// refuse it with `q=0`, which is left to the uncompressed answer).
fn accepts(v: &HeaderValue, s: &CompressionSettings) -> Option<HeaderValue> {
    let t = v.to_str().ok()?;
    let named = (s.gzip && t.contains("gzip"))
        || (s.brotli && t.contains("br"))
        || (s.zstd && t.contains("zstd"));
    (named && !t.contains("q=0,") && !t.ends_with("q=0")).then(|| v.clone())
}

/// Status, existing encoding, type and length.
fn eligible(resp: &Response<ProxyBody>, s: &CompressionSettings) -> bool {
    let st = resp.status();
    if st.is_informational()
        || st == StatusCode::NO_CONTENT
        || st == StatusCode::NOT_MODIFIED
        || st == StatusCode::PARTIAL_CONTENT
    {
        return false;
    }
    let h = resp.headers();
    if h.contains_key(header::CONTENT_ENCODING) || h.contains_key(header::CONTENT_RANGE) {
        return false;
    }
    let Some(ct) = h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let media = ct.split(';').next().unwrap_or("").trim();
    if !s.types.iter().any(|t| t.eq_ignore_ascii_case(media)) {
        return false;
    }
    let length = h
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .or_else(|| resp.body().size_hint().exact());
    length.is_none_or(|n| n >= s.min_length)
}

/// `Vary: Accept-Encoding`, unless a `Vary` names it already.
fn add_vary(h: &mut HeaderMap) {
    let named = h.get_all(header::VARY).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("accept-encoding") || t.trim() == "*")
        })
    });
    if !named {
        h.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
}

/// `"x"` → `W/"x"`: the compressed bytes are not the identity's.
fn weaken_etag(h: &mut HeaderMap) {
    let Some(v) = h.get(header::ETAG) else { return };
    if v.as_bytes().starts_with(b"W/") {
        return;
    }
    let mut weak = b"W/".to_vec();
    weak.extend_from_slice(v.as_bytes());
    if let Ok(v) = HeaderValue::from_bytes(&weak) {
        h.insert(header::ETAG, v);
    }
}

/// The inner "service" of tower-http's compression: it hands over the response that
/// the action already produced.
struct Once(Option<Response<ProxyBody>>);

impl tower_service::Service<Request<()>> for Once {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Ready<Result<Response<ProxyBody>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<()>) -> Self::Future {
        ready(Ok(self
            .0
            .take()
            .unwrap_or_else(|| Response::new(ProxyBody::fixed("")))))
    }
}
