//! The web-serving parts of the config: route actions (`pool`, `root`, `redirect`),
//! `[sites]` and `[compression]`.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, StatusCode};

use super::PoolConfig;
use super::check::Check;
use super::file::{FileCompression, FileRoute, FileSites};
use crate::routing::{Action, FileRoot, Matcher};
use crate::sites::{Sites, valid_name};

/// `[compression]`, compiled.
#[derive(Debug, Clone)]
pub struct CompressionSettings {
    /// Media types (lower-case, no parameters) that are compressed.
    pub types: Vec<String>,
    pub level: u32,
    pub min_length: u64,
    pub gzip: bool,
    pub brotli: bool,
    pub zstd: bool,
}

/// The types of Frappe's nginx template (`gzip_types`), plus `text/html` and the
/// `text/javascript` that modern tables give `.js`.
pub const DEFAULT_TYPES: &[&str] = &[
    "text/html",
    "text/css",
    "text/plain",
    "text/javascript",
    "text/x-component",
    "application/javascript",
    "application/json",
    "application/atom+xml",
    "application/rss+xml",
    "application/xml",
    "application/xhtml+xml",
    "application/vnd.ms-fontobject",
    "application/x-font-ttf",
    "application/font-woff",
    "application/x-web-app-manifest+json",
    "font/opentype",
    "image/svg+xml",
    "image/x-icon",
];

pub(super) fn compression(
    cx: &mut Check<'_>,
    c: Option<&FileCompression>,
) -> Option<Arc<CompressionSettings>> {
    let c = c?;
    if c.enabled == Some(false) {
        return None;
    }
    let level = match &c.level {
        Some(l) if !(1..=9).contains(l.get_ref()) => {
            cx.err(
                l.span(),
                "compression `level` is 1 (fastest) to 9 (smallest)",
            );
            5
        }
        Some(l) => *l.get_ref(),
        None => 5,
    };
    let mut types: Vec<String> = match &c.types {
        Some(t) => t.iter().map(|s| s.get_ref().to_ascii_lowercase()).collect(),
        None => DEFAULT_TYPES.iter().map(|s| (*s).to_owned()).collect(),
    };
    if !types.iter().any(|t| t == "text/html") {
        types.push("text/html".into());
    }
    Some(Arc::new(CompressionSettings {
        types,
        level,
        min_length: c.min_length.unwrap_or(256),
        gzip: c.gzip.unwrap_or(true),
        brotli: c.brotli.unwrap_or(true),
        zstd: c.zstd.unwrap_or(true),
    }))
}

pub(super) fn sites(cx: &mut Check<'_>, s: Option<&FileSites>) -> Option<Arc<Sites>> {
    let s = s?;
    let header = match &s.header {
        None => HeaderName::from_static("x-frappe-site-name"),
        Some(h) => match HeaderName::from_bytes(h.get_ref().as_bytes()) {
            Ok(n) => n,
            Err(_) => {
                cx.err(
                    h.span(),
                    format!("{:?} is not a valid header name", h.get_ref()),
                );
                HeaderName::from_static("x-frappe-site-name")
            }
        },
    };
    let mut domains = std::collections::HashMap::new();
    for (domain, site) in &s.domains {
        if !valid_name(site.get_ref()) {
            cx.err(site.span(), format!("site {:?} is not a folder name (letters, digits, `.`, `-`, `_`; no leading dot)", site.get_ref()));
        }
        domains.insert(
            domain.get_ref().to_ascii_lowercase().into_boxed_str(),
            Arc::from(site.get_ref().as_str()),
        );
    }
    Some(Arc::new(Sites { header, domains }))
}

/// A listener's pinned `site`.
pub(super) fn pinned_site(
    cx: &mut Check<'_>,
    s: &Option<super::file::SpanStr>,
) -> Option<Arc<str>> {
    let s = s.as_ref()?;
    if !valid_name(s.get_ref()) {
        cx.err(
            s.span(),
            format!(
                "site {:?} is not a folder name (letters, digits, `.`, `-`, `_`; no leading dot)",
                s.get_ref()
            ),
        );
    }
    Some(Arc::from(s.get_ref().as_str()))
}

/// The route's pool and action: `pool` alone proxies, `root` serves files (falling
/// back to `pool` if given), `redirect` answers with a redirect.
pub(super) fn action(
    cx: &mut Check<'_>,
    r: &FileRoute,
    pools: &[PoolConfig],
    matcher: &Matcher,
) -> (Option<usize>, Action) {
    let name = r.name.get_ref();
    let pool = r.pool.as_ref().and_then(|p| pool_index(cx, name, p, pools));
    if let Some(to) = &r.redirect {
        if r.root.is_some() || r.pool.is_some() {
            cx.err(to.span(), format!("route `{name}` has `redirect` and also `root` or `pool`; a route does one thing"));
        }
        let status = redirect_status(cx, r);
        if to.get_ref().contains('$') && matcher.regex.is_none() {
            cx.err(to.span(), format!("route `{name}`: `redirect` uses `$` captures but the route has no `match.path_regex`"));
        }
        return (
            None,
            Action::Redirect {
                to: to.get_ref().as_str().into(),
                status,
            },
        );
    }
    if let Some(root) = &r.root {
        return (pool, Action::Files(Arc::new(file_root(cx, r, root))));
    }
    if r.pool.is_none() && !r.internal.unwrap_or(false) {
        cx.err(r.name.span(), format!("route `{name}` says neither where to send requests (`pool`), nor what to serve (`root`), nor where to redirect (`redirect`)"));
    }
    (pool, Action::Proxy)
}

fn pool_index(
    cx: &mut Check<'_>,
    route: &str,
    p: &super::file::SpanStr,
    pools: &[PoolConfig],
) -> Option<usize> {
    let i = pools.iter().position(|q| *q.name == **p.get_ref());
    if i.is_none() {
        let defined: Vec<&str> = pools.iter().map(|p| &*p.name).collect();
        let defined = if defined.is_empty() {
            "(none)".to_owned()
        } else {
            defined.join(", ")
        };
        cx.err(
            p.span(),
            format!(
                "route `{route}` uses pool `{}`, which is not defined; defined pools: {defined}",
                p.get_ref()
            ),
        );
    }
    i
}

fn redirect_status(cx: &mut Check<'_>, r: &FileRoute) -> StatusCode {
    let Some(s) = &r.redirect_status else {
        return StatusCode::MOVED_PERMANENTLY;
    };
    match *s.get_ref() {
        c @ (301 | 302 | 303 | 307 | 308) => {
            StatusCode::from_u16(c).unwrap_or(StatusCode::MOVED_PERMANENTLY)
        }
        _ => {
            cx.err(
                s.span(),
                "`redirect_status` must be 301, 302, 303, 307 or 308",
            );
            StatusCode::MOVED_PERMANENTLY
        }
    }
}

fn file_root(cx: &mut Check<'_>, r: &FileRoute, root: &super::file::SpanStr) -> FileRoot {
    let dir = root.get_ref();
    let plain = dir.replace("{site}", "");
    if !std::path::Path::new(dir).is_absolute() {
        cx.err(
            root.span(),
            format!("`root` {dir:?} must be an absolute path"),
        );
    }
    // Like nginx, a root that does not exist (yet) is not an error: its files are 404.
    if plain.contains('{') {
        cx.err(root.span(), "`root` knows one placeholder: {site}");
    }
    let cache_control =
        r.cache_control
            .as_ref()
            .and_then(|v| match HeaderValue::from_str(v.get_ref()) {
                Ok(h) => Some(h),
                Err(_) => {
                    cx.err(v.span(), "`cache_control` is not a valid header value");
                    None
                }
            });
    let expires: Option<Duration> = r
        .expires
        .as_ref()
        .map(|_| cx.duration(&r.expires, "expires", Duration::ZERO));
    FileRoot {
        root: dir.trim_end_matches('/').to_owned(),
        strip_prefix: r
            .strip_prefix
            .as_ref()
            .map(|p| p.get_ref().trim_end_matches('/').to_owned()),
        follow_symlinks: r.follow_symlinks.unwrap_or(false),
        precompressed: r.precompressed.unwrap_or(true),
        cache_control,
        expires,
    }
}
