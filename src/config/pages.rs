//! `error_pages`: files served, in place of the proxy's own short text, for errors the
//! proxy itself generates (nginx `error_page`, like bench's `502.html`). Read at load
//! time, so a missing file is a config error and the request path never touches disk.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};

use super::check::{Check, relative};
use super::file::SpanStr;
use crate::routing::ErrorPage;

/// Validate and load `{ "502" = "path", ... }`; paths are relative to the config file.
pub(super) fn load(cx: &mut Check<'_>, pages: &BTreeMap<SpanStr, SpanStr>) -> Vec<ErrorPage> {
    let mut out = Vec::new();
    for (code, file) in pages {
        let status = code
            .get_ref()
            .parse::<u16>()
            .ok()
            .filter(|c| (400..600).contains(c))
            .and_then(|c| StatusCode::from_u16(c).ok());
        let Some(status) = status else {
            cx.err(
                code.span(),
                format!(
                    "error_pages key {:?} is not an error status (400-599), e.g. \"502\"",
                    code.get_ref()
                ),
            );
            continue;
        };
        let path = relative(cx.path, file.get_ref());
        match std::fs::read(&path) {
            Ok(body) => out.push(ErrorPage {
                status,
                body: Bytes::from(body),
                content_type: content_type(&path),
                path,
            }),
            Err(e) => cx.err(
                file.span(),
                format!("cannot read error page {}: {e}", path.display()),
            ),
        }
    }
    out
}

fn content_type(path: &std::path::Path) -> HeaderValue {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html" | "htm") => HeaderValue::from_static("text/html; charset=utf-8"),
        Some("json") => HeaderValue::from_static("application/json"),
        _ => HeaderValue::from_static("text/plain; charset=utf-8"),
    }
}
