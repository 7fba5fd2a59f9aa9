//! `[pools.NAME.health]`: the active probe's request, what counts as a pass, and how
//! busy servers and panic mode are treated. Called from `pools.rs`.

use http::Method;
use toml::Spanned;

use super::check::Check;
use super::file::FileHealth;
use super::*;

/// Panic only when no server passes (Envoy's default is 50).
const DEFAULT_PANIC_THRESHOLD: u8 = 0;

/// `[pools.NAME.health]`: the probe's request and what counts as a pass.
pub(super) fn health(cx: &mut Check<'_>, h: &Spanned<FileHealth>) -> HealthCheck {
    let h = h.get_ref();
    HealthCheck {
        method: probe_method(cx, h),
        path: probe_path(cx, h),
        host: probe_host(cx, h),
        interval: cx.duration(&h.interval, "interval", DEFAULT_HEALTH_INTERVAL),
        timeout: cx.duration(&h.timeout, "timeout", DEFAULT_HEALTH_TIMEOUT),
        healthy_after: cx.count(&h.healthy_after, "healthy_after", DEFAULT_HEALTHY_AFTER),
        unhealthy_after: cx.count(
            &h.unhealthy_after,
            "unhealthy_after",
            DEFAULT_UNHEALTHY_AFTER,
        ),
        expect_status: expect_status(cx, h),
        body_contains: h.body_contains.clone(),
        busy_fails: busy_fails(cx, h),
        panic: h.panic.unwrap_or(true),
        panic_threshold: panic_threshold(cx, h),
    }
}

/// `busy = "alive" | "fail"`.
fn busy_fails(cx: &mut Check<'_>, h: &FileHealth) -> bool {
    match h.busy.as_ref().map(|b| (b, b.get_ref().as_str())) {
        None | Some((_, "alive")) => false,
        Some((_, "fail")) => true,
        Some((b, other)) => {
            cx.err(
                b.span(),
                format!("busy = {other:?}: expected \"alive\" (a probe timeout while the server answers proxied requests does not count) or \"fail\""),
            );
            false
        }
    }
}

/// `panic_threshold`: a percentage.
fn panic_threshold(cx: &mut Check<'_>, h: &FileHealth) -> u8 {
    match &h.panic_threshold {
        None => DEFAULT_PANIC_THRESHOLD,
        Some(p) if *p.get_ref() > 100 => {
            cx.err(p.span(), "panic_threshold is a percentage: 0 to 100");
            DEFAULT_PANIC_THRESHOLD
        }
        Some(p) => *p.get_ref(),
    }
}

fn probe_method(cx: &mut Check<'_>, h: &FileHealth) -> Method {
    match &h.method {
        None => Method::GET,
        Some(m) => {
            Method::from_bytes(m.get_ref().to_ascii_uppercase().as_bytes()).unwrap_or_else(|_| {
                cx.err(m.span(), format!("{:?} is not an HTTP method", m.get_ref()));
                Method::GET
            })
        }
    }
}

fn probe_path(cx: &mut Check<'_>, h: &FileHealth) -> http::uri::PathAndQuery {
    match &h.path {
        None => http::uri::PathAndQuery::from_static("/"),
        Some(p) => match p.get_ref().parse::<http::uri::PathAndQuery>() {
            Ok(pq) if p.get_ref().starts_with('/') => pq,
            _ => {
                cx.err(p.span(), format!("health check path {:?} must start with `/` and be a valid path (no spaces, CR or LF)", p.get_ref()));
                http::uri::PathAndQuery::from_static("/")
            }
        },
    }
}

fn probe_host(cx: &mut Check<'_>, h: &FileHealth) -> Option<http::HeaderValue> {
    h.host.as_ref().and_then(|v| {
        http::HeaderValue::from_str(v.get_ref())
            .map_err(|_| {
                cx.err(
                    v.span(),
                    format!("{:?} is not a valid Host value", v.get_ref()),
                )
            })
            .ok()
    })
}

/// `expect_status`: statuses and ranges like `"200-399"` (the default).
fn expect_status(cx: &mut Check<'_>, h: &FileHealth) -> Vec<(u16, u16)> {
    let mut expect_status = Vec::new();
    match &h.expect_status {
        None => expect_status.push((200, 399)),
        Some(list) => {
            for item in &list.get_ref().0 {
                let (a, b) = item.split_once('-').unwrap_or((item, item));
                match (a.trim().parse::<u16>(), b.trim().parse::<u16>()) {
                    (Ok(a), Ok(b)) if (100..=599).contains(&a) && a <= b && b <= 599 => {
                        expect_status.push((a, b))
                    }
                    _ => cx.err(
                        list.span(),
                        format!("expect_status {item:?} is not a status or range like \"200-399\""),
                    ),
                }
            }
        }
    }
    expect_status
}
