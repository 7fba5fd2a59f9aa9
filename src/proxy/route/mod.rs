//! The route stage: choose the route for a request (`routing::RouteTable`), looking at
//! the body first when a `param` route asks for it.
//!
//! - `mod.rs`: [`route`], the stage.
//! - `body_params.rs`: the bounded body look, which keeps every frame it reads so the
//!   upstream receives the body byte for byte.

mod body_params;

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use crate::client_body::ClientBody;
use bytes::Bytes;
use http::request::Parts;
use http_body::Frame;

use crate::proxy::error::ProxyError;
use crate::proxy::request::Ctx;
use crate::routing::{self, BodyState, Decision, RequestView};

/// Route the request, looking at the body if a `param` route needs it.
pub(crate) async fn route(
    parts: &Parts,
    path: &str,
    body: &mut ClientBody,
    cx: &Ctx<'_>,
) -> Result<(usize, VecDeque<Frame<Bytes>>), ProxyError> {
    let snap = cx.snap;
    let kind = body_params::body_kind(&parts.headers, body);
    let mut view = RequestView {
        listener: cx.listener_index,
        method: &parts.method,
        host: routing::request_host(&parts.uri, &parts.headers),
        path,
        query: parts.uri.query(),
        headers: &parts.headers,
        body: if kind.is_some() {
            BodyState::Unread
        } else {
            BodyState::Absent
        },
    };
    let mut replay = VecDeque::new();
    let parsed;
    let decision = match (snap.routes.route(&view, 0), &kind) {
        (Decision::NeedBody(from), Some(kind)) => {
            let s = &snap.server;
            // Boxed: a cold path, kept out of every request's future.
            let found = Box::pin(body_params::look(
                body,
                kind,
                s.param_body_limit,
                s.param_body_timeout,
            ))
            .await
            .map_err(|_| ProxyError::ClientBody)?;
            cx.bytes_in.fetch_add(found.bytes, Ordering::Relaxed);
            replay = found.frames;
            parsed = found.params;
            view.body = parsed
                .as_ref()
                .map_or(BodyState::Skipped, BodyState::Parsed);
            snap.routes.route(&view, from)
        }
        (d, _) => d,
    };
    match decision {
        Decision::Route(i) => Ok((i, replay)),
        _ => Err(ProxyError::NoRoute),
    }
}
