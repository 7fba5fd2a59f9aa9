//! X-Accel-Redirect, as nginx does it (`ngx_http_upstream_process_headers`): an
//! upstream answer on an `accel_redirect` route that carries `X-Accel-Redirect: /uri`
//! is replaced by the file an `internal` route serves for that URI.
//!
//! - the value is cut at `?` and percent-decoded once; `..` segments and NUL are
//!   refused (404, and a log event);
//! - the method becomes GET (HEAD stays HEAD); the client's range and conditional
//!   headers still apply, so 206 and 304 work;
//! - of the upstream answer only `Content-Type`, `Set-Cookie`, `Content-Disposition`,
//!   `Cache-Control`, `Expires` and `Accept-Ranges` survive; its body is dropped;
//! - `X-Accel-*` fields never reach a client, on any route ([`hide`]).

use http::header::{self, HeaderMap, HeaderName};
use http::request::Parts;
use http::{Method, Response};

use super::files;
use crate::proxy::error::ProxyError;
use crate::proxy::request::Ctx;
use crate::proxy::respond::body::ProxyBody;
use crate::routing::{Action, BodyState, Decision, RequestView};

pub(crate) static X_ACCEL_REDIRECT: HeaderName = HeaderName::from_static("x-accel-redirect");

/// The upstream fields an internal redirect keeps.
const KEPT: [HeaderName; 6] = [
    header::CONTENT_TYPE,
    header::SET_COOKIE,
    header::CONTENT_DISPOSITION,
    header::CACHE_CONTROL,
    header::EXPIRES,
    header::ACCEPT_RANGES,
];

/// What of the client's request an internal redirect needs, kept before the request
/// goes upstream (only on `accel_redirect` routes; no allocation without such fields).
pub(crate) struct Saved {
    head: bool,
    host: Option<String>,
    headers: HeaderMap,
}

impl Saved {
    pub(crate) fn new(parts: &Parts) -> Self {
        let mut headers = HeaderMap::new();
        for h in &files::CONDITIONAL {
            for v in parts.headers.get_all(h) {
                headers.append(h, v.clone());
            }
        }
        Saved {
            head: parts.method == Method::HEAD,
            host: crate::routing::request_host(&parts.uri, &parts.headers).map(str::to_owned),
            headers,
        }
    }
}

/// Remove every `X-Accel-*` field (nginx's `proxy_hide_header` defaults).
pub(crate) fn hide(h: &mut HeaderMap) {
    let any = h.keys().any(|k| k.as_str().starts_with("x-accel-"));
    if any {
        let names: Vec<HeaderName> = h
            .keys()
            .filter(|k| k.as_str().starts_with("x-accel-"))
            .cloned()
            .collect();
        for n in names {
            h.remove(n);
        }
    }
}

/// The URI of an `X-Accel-Redirect` value: cut at `?`, decoded once; `None` if it is
/// not a path, or has a `..` segment or a NUL.
pub(crate) fn target(v: &[u8]) -> Option<String> {
    let cut = v.split(|&b| b == b'?').next().unwrap_or(v);
    let decoded = percent_encoding::percent_decode(cut).decode_utf8().ok()?;
    let bad = !decoded.starts_with('/')
        || decoded.contains('\0')
        || decoded.split('/').any(|s| s == "..");
    (!bad).then(|| decoded.into_owned())
}

/// Serve the internal redirect the upstream answer `resp` asks for.
pub(crate) async fn serve(
    resp: Response<ProxyBody>,
    saved: &Saved,
    cx: &Ctx<'_>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let raw = resp
        .headers()
        .get(&X_ACCEL_REDIRECT)
        .map(|v| v.as_bytes().to_vec())
        .unwrap_or_default();
    let Some(path) = target(&raw) else {
        tracing::warn!(value = %String::from_utf8_lossy(&raw), "refused an X-Accel-Redirect target (not a path, `..` or NUL)");
        return Err(ProxyError::NotFound);
    };
    let method = if saved.head {
        Method::HEAD
    } else {
        Method::GET
    };
    let Some(root) = internal_root(&path, &method, saved, cx) else {
        tracing::warn!(target = %path, "X-Accel-Redirect target matches no internal file route");
        return Err(ProxyError::NotFound);
    };
    let site = cx.site.as_deref();
    let served = files::serve(&root, &path, &saved.headers, &method, site).await?;
    let Some(mut file) = served else {
        return Err(ProxyError::NotFound);
    };
    let (upstream, _body) = resp.into_parts();
    for k in &KEPT {
        let mut values = upstream.headers.get_all(k).iter().peekable();
        if values.peek().is_some() {
            file.headers_mut().remove(k);
            for v in values {
                file.headers_mut().append(k, v.clone());
            }
        }
    }
    Ok(file)
}

/// The file root of the first `internal` route, in file order, that matches `path`.
fn internal_root(
    path: &str,
    method: &Method,
    saved: &Saved,
    cx: &Ctx<'_>,
) -> Option<std::sync::Arc<crate::routing::FileRoot>> {
    let view = RequestView {
        listener: cx.listener_index,
        method,
        host: saved.host.as_deref(),
        path,
        query: None,
        headers: &saved.headers,
        body: BodyState::Absent,
    };
    let mut from = 0;
    while let Decision::Route(i) | Decision::NeedBody(i) = cx.snap.routes.route(&view, from) {
        let route = cx.snap.routes.get(i)?;
        if let (true, Action::Files(root)) = (route.internal, &route.action) {
            return Some(root.clone());
        }
        from = i + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_like_nginx() {
        assert_eq!(
            target(b"/protected/private/files/a%20b.pdf?x=1").as_deref(),
            Some("/protected/private/files/a b.pdf")
        );
        assert_eq!(target(b"/protected/../site_config.json"), None);
        assert_eq!(target(b"/protected/%2e%2e/site_config.json"), None);
        assert_eq!(target(b"/protected/a%00b"), None);
        assert_eq!(target(b"relative"), None);
        assert_eq!(
            target(b"/protected/%252e%252e/x").as_deref(),
            Some("/protected/%2e%2e/x")
        );
    }

    #[test]
    fn hides_every_x_accel_field() {
        let mut h = HeaderMap::new();
        h.insert("x-accel-redirect", "/p".parse().expect("valid"));
        h.insert("x-accel-buffering", "no".parse().expect("valid"));
        h.insert("content-type", "text/plain".parse().expect("valid"));
        hide(&mut h);
        assert_eq!(h.len(), 1);
    }
}
