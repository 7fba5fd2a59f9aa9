//! What a matched route does, nginx's content handlers: proxy to its pool, serve a file
//! (falling back to the pool when there is none, `try_files $uri @pool`), or answer
//! with a redirect (`rewrite … permanent`). Routing only chooses the route; the work
//! is here, and the response filters run after it whatever it was.
//!
//! - `mod.rs`: [`run`], the stage, and the redirects.
//! - `files.rs` (+ `mime.rs`): static files from a route's root.
//! - `accel.rs`: X-Accel-Redirect, an upstream answer replaced by an internal route's file.

pub mod accel;
mod confined;
pub mod files;
mod mime;

use crate::client_body::ClientBody;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use percent_encoding::{AsciiSet, CONTROLS};

use crate::proxy::error::ProxyError;
use crate::proxy::request::Ctx;
use crate::proxy::respond::body::ProxyBody;
use crate::routing::{self, Action, Route};

/// Run the route's own action; `path` is the normalised path. `Some` is the answer;
/// `None` sends the request to the route's pool.
pub(crate) async fn run(
    route: &Route,
    parts: &Parts,
    path: &str,
    cx: &Ctx<'_>,
) -> Result<Option<Response<ProxyBody>>, ProxyError> {
    match &route.action {
        Action::Proxy => Ok(None),
        Action::Redirect { to, status } => {
            let host = routing::request_host(&parts.uri, &parts.headers);
            redirect(route, to, *status, path, parts.uri.query(), host).map(Some)
        }
        Action::Files(root) => {
            let get = parts.method == Method::GET || parts.method == Method::HEAD;
            if !get {
                return match route.pool {
                    Some(_) => Ok(None),
                    None => Err(ProxyError::MethodNotAllowed),
                };
            }
            if let Some(why) = files::refused(parts.uri.path(), path) {
                return Err(ProxyError::BadRequest(why));
            }
            let site = cx.site.as_deref();
            match files::serve(root, path, &parts.headers, &parts.method, site).await? {
                Some(resp) => Ok(Some(resp)),
                None if route.pool.is_some() => Ok(None),
                None => Err(ProxyError::NotFound),
            }
        }
    }
}

/// Characters of a redirect target's path that must be encoded in `Location`.
const LOCATION: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'%');

/// `to` with `$1`… from the route's `path_regex` and `{host}` (lower-case, no port),
/// then the request's query string (after `&` if `to` has its own), as `Location`.
fn redirect(
    route: &Route,
    to: &str,
    status: StatusCode,
    path: &str,
    query: Option<&str>,
    host: Option<&str>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let to = with_host(to, host)?;
    let to = to.as_str();
    let mut expanded = String::new();
    match (&route.matcher.regex, to.contains('$')) {
        (Some(re), true) => re
            .captures(path)
            .ok_or(ProxyError::NoRoute)?
            .expand(to, &mut expanded),
        _ => expanded.push_str(to),
    }
    let location = location(to, &expanded, query);
    let value = HeaderValue::from_str(&location)
        .map_err(|_| ProxyError::BadRequest("redirect target is not a valid header value"))?;
    let mut resp = Response::new(ProxyBody::fixed(format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::LOCATION, value);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(resp)
}

/// `to` with `{host}` replaced by the request's host, lower-cased; a redirect that needs
/// a host the request does not validly have is refused.
fn with_host(to: &str, host: Option<&str>) -> Result<String, ProxyError> {
    match (to.split_once("{host}"), host) {
        (None, _) => Ok(to.to_owned()),
        (Some((before, after)), Some(h)) if crate::sites::valid_name(&h.to_ascii_lowercase()) => {
            Ok(format!("{before}{}{after}", h.to_ascii_lowercase()))
        }
        (Some(_), _) => Err(ProxyError::BadRequest("no valid Host to redirect to")),
    }
}

/// The `Location` value: the expanded target percent-encoded, then its own query and
/// the request's (nginx: a replacement ending in `?` drops the request's arguments).
fn location(to: &str, expanded: &str, query: Option<&str>) -> String {
    let (target_path, own_query) = match to.split_once('?') {
        Some(_) => expanded
            .split_once('?')
            .map_or((expanded, None), |(p, q)| (p, Some(q))),
        None => (expanded, None),
    };
    let mut location: String =
        percent_encoding::utf8_percent_encode(target_path, LOCATION).to_string();
    let keep = !to.ends_with('?');
    let queries = own_query
        .into_iter()
        .chain(query.filter(|_| keep))
        .filter(|q| !q.is_empty());
    for (i, q) in queries.enumerate() {
        location.push(if i == 0 { '?' } else { '&' });
        location.push_str(q);
    }
    location
}

/// `redirect_https`: 301 to the same host (without port) and target over https.
pub(crate) fn redirect_https(req: &Request<ClientBody>) -> Result<Response<ProxyBody>, ProxyError> {
    let host = routing::request_host(req.uri(), req.headers())
        .ok_or(ProxyError::BadRequest("no Host to redirect to"))?;
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = HeaderValue::from_str(&format!("https://{}{target}", host.to_ascii_lowercase()))
        .map_err(|_| ProxyError::BadRequest("Host cannot be redirected"))?;
    let mut resp = Response::new(ProxyBody::fixed("301 Moved Permanently: use https\n"));
    *resp.status_mut() = StatusCode::MOVED_PERMANENTLY;
    resp.headers_mut().insert(header::LOCATION, location);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(resp)
}
