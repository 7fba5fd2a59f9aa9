//! The `Files` action: serve a file from a route's root (nginx `root` + `try_files`).
//!
//! tower-http's `ServeDir` does the mechanics (ETag and Last-Modified with 304,
//! Range/206/416, HEAD, precompressed siblings). Around it, this module:
//! - refuses what must never reach the disk: encoded slashes and backslashes, double
//!   encoding (a `%XX` left after the one decoding), a backslash; `..` and NUL were
//!   already refused when the path was normalised (`routing::normalize`);
//! - confines the file to the root: unless the route follows symlinks, the kernel
//!   resolves the path beneath the root (`openat2` with `RESOLVE_BENEATH`), so a
//!   symlink leading out of it, even one swapped in meanwhile, counts as missing;
//! - does the file system calls inline, as nginx does, one `openat2` and one `fstat`
//!   per answer (see `confined`);
//! - sets nginx's Content-Type table and the route's `Cache-Control`/`Expires`.
//!
//! `Ok(None)` means no file: the caller falls back to the route's pool, or answers 404.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};
use tower_http::services::ServeDir;

use super::confined::Confined;
use super::mime;
use crate::proxy::error::ProxyError;
use crate::proxy::respond::body::ProxyBody;
use crate::routing::FileRoot;

/// Request headers the file server reads: the range and conditional ones (which an
/// X-Accel-Redirect keeps too), and `Accept-Encoding` for precompressed files.
pub(crate) const CONDITIONAL: [header::HeaderName; 6] = [
    header::RANGE,
    header::IF_RANGE,
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
];

/// Everything but unreserved characters and `/` is encoded for `ServeDir`, which
/// decodes the path exactly once.
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Whether the raw target has what a file path must not: an encoded `/` or `\`, or
/// (after the one decoding) an encoded character left over, i.e. double encoding.
pub(crate) fn refused(raw: &str, decoded: &str) -> Option<&'static str> {
    let lower = raw.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") {
        return Some("an encoded slash in a file path");
    }
    if decoded.contains('\\') {
        return Some("a backslash in a file path");
    }
    let b = decoded.as_bytes();
    let double = b
        .windows(3)
        .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit());
    double.then_some("double percent-encoding in a file path")
}

/// Serve `path` (normalised) from `root`, for a GET or HEAD request with these
/// conditional and range headers.
pub(crate) async fn serve(
    root: &FileRoot,
    path: &str,
    headers: &http::HeaderMap,
    method: &Method,
    site: Option<&str>,
) -> Result<Option<Response<ProxyBody>>, ProxyError> {
    let rel = match &root.strip_prefix {
        Some(p) => match path.strip_prefix(p.as_str()) {
            Some(r) if r.is_empty() || r.starts_with('/') => r,
            _ => return Ok(None),
        },
        None => path,
    };
    if rel.is_empty() || rel.ends_with('/') {
        return Ok(None);
    }
    // One allocation for the directory, shared by `ServeDir` and the confinement.
    let dir: Arc<Path> = match (root.root.contains("{site}"), site) {
        (false, _) => Path::new(&root.root).into(),
        (true, Some(s)) => Path::new(&root.root.replace("{site}", s)).into(),
        (true, None) => return Ok(None),
    };
    let confine = (!root.follow_symlinks).then(|| dir.clone());
    let mut inner = Request::new(http_body_util::Empty::<bytes::Bytes>::new());
    *inner.method_mut() = method.clone();
    *inner.uri_mut() = percent_encoding::utf8_percent_encode(rel, ENCODE)
        .to_string()
        .parse()
        .map_err(|_| ProxyError::BadRequest("path cannot be served"))?;
    let encoding = root.precompressed.then_some(&header::ACCEPT_ENCODING);
    for h in CONDITIONAL.iter().chain(encoding) {
        for v in headers.get_all(h) {
            inner.headers_mut().append(h, v.clone());
        }
    }
    let mut svc = ServeDir::with_backend(&*dir, Confined::new(confine))
        .append_index_html_on_directories(false)
        .redirect_to_trailing_slash(false);
    if root.precompressed {
        svc = svc
            .precompressed_gzip()
            .precompressed_br()
            .precompressed_zstd();
    }
    let resp = match svc.try_call(inner).await {
        Ok(r) => r,
        Err(e) if missing(&e) => return Ok(None),
        Err(e) => return Err(ProxyError::File(e)),
    };
    if resp.status() == StatusCode::NOT_FOUND {
        return Ok(None);
    }
    let (mut parts, body) = resp.into_parts();
    finish_head(&mut parts, root, rel);
    let body =
        ProxyBody::boxed(body.map_err(|e| Box::new(e) as crate::proxy::respond::body::BoxError));
    Ok(Some(Response::from_parts(parts, body)))
}

/// nginx's Content-Type and the route's caching headers.
fn finish_head(parts: &mut http::response::Parts, root: &FileRoot, rel: &str) {
    if parts.headers.contains_key(header::CONTENT_TYPE) || parts.status.is_success() {
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(mime::content_type(rel)),
        );
    }
    let ok = matches!(parts.status.as_u16(), 200 | 206 | 304);
    if !ok {
        return;
    }
    if let Some(d) = root.expires {
        let at = SystemTime::now() + d;
        if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(at)) {
            parts.headers.insert(header::EXPIRES, v);
        }
        if root.cache_control.is_none()
            && let Ok(v) = HeaderValue::from_str(&format!("max-age={}", d.as_secs()))
        {
            parts.headers.insert(header::CACHE_CONTROL, v);
        }
    }
    if let Some(cc) = &root.cache_control {
        parts.headers.insert(header::CACHE_CONTROL, cc.clone());
    }
}

/// Errors that mean "no such file here" (nginx's `try_files` moves on).
fn missing(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied | io::ErrorKind::NotADirectory
    ) || matches!(e.raw_os_error(), Some(20 | 36 | 40))
}

#[cfg(test)]
mod tests {
    use super::refused;

    #[test]
    fn refuses_encoded_slashes_and_double_encoding() {
        assert!(refused("/files/a%2fb", "/files/a/b").is_some());
        assert!(refused("/files/a%5Cb", "/files/a\\b").is_some());
        assert!(refused("/files/a\\b", "/files/a\\b").is_some());
        assert!(refused("/files/%252e%252e/x", "/files/%2e%2e/x").is_some());
        assert!(refused("/files/a%20b.pdf", "/files/a b.pdf").is_none());
        assert!(refused("/files/100%", "/files/100%").is_none());
    }
}
