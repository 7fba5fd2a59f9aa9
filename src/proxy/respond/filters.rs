//! Response filters: they run on every response after the action that made it, whether
//! it came from an upstream or from the proxy itself, as nginx's output filters do.
//!
//! - [`error_page`]: an error the proxy generated gets the configured page (the route's,
//!   then the listener's); an upstream's own errors never come here.
//! - [`add_headers`]: the route's, then the listener's `add_response_headers`, on every
//!   status by default (`response_headers_always`, as frappe_docker chose), or only on
//!   the statuses nginx's `add_header` uses without `always`; and `Alt-Svc` on a
//!   listener that also serves HTTP/3 (unless the response has its own).

use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use super::body::ProxyBody;
use crate::routing::Route;
use crate::state::ListenerInfo;

/// The statuses nginx's `add_header` applies to without `always`.
fn nginx_default_status(s: StatusCode) -> bool {
    matches!(
        s.as_u16(),
        200 | 201 | 204 | 206 | 301 | 302 | 303 | 304 | 307 | 308
    )
}

/// Serve the configured page for an error the proxy generated.
pub(crate) fn error_page(
    resp: &mut Response<ProxyBody>,
    route: Option<&Route>,
    listener: Option<&ListenerInfo>,
) {
    let status = resp.status();
    let pages = route
        .map(|r| &r.error_pages[..])
        .into_iter()
        .chain(listener.map(|l| &l.error_pages[..]));
    let Some(page) = pages.flatten().find(|p| p.status == status) else {
        return;
    };
    *resp.body_mut() = ProxyBody::fixed(page.body.clone());
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, page.content_type.clone());
}

/// Append the route's, then the listener's response headers (not on a `101`, whose
/// connection is no longer HTTP).
pub(crate) fn add_headers(
    resp: &mut Response<ProxyBody>,
    route: Option<&Route>,
    listener: Option<&ListenerInfo>,
) {
    let status = resp.status();
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return;
    }
    let add = |resp: &mut Response<ProxyBody>, always: bool, list: &[(HeaderName, HeaderValue)]| {
        if always || nginx_default_status(status) {
            for (k, v) in list {
                resp.headers_mut().append(k, v.clone());
            }
        }
    };
    if let Some(r) = route {
        add(resp, r.response_headers_always, &r.add_response_headers);
    }
    if let Some(l) = listener {
        add(resp, l.response_headers_always, &l.add_response_headers);
        if let Some(v) = &l.alt_svc
            && !resp.headers().contains_key(header::ALT_SVC)
        {
            resp.headers_mut().insert(header::ALT_SVC, v.clone());
        }
    }
}
