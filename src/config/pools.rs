//! Validation of `[pools.NAME]`: servers, balancing, timeouts, active and passive
//! health, retries, fallback chains and upstream TLS. Called from `validate.rs`,
//! sharing its error collector.

use std::net::{SocketAddr, ToSocketAddrs};

use std::time::Duration;

use http::{HeaderName, Method};
use toml::Spanned;

use super::check::Check;
use super::file::{FileConfig, FilePool, SpanStr};
use super::*;

pub(super) fn pool(
    cx: &mut Check<'_>,
    name: &SpanStr,
    p: &Spanned<FilePool>,
    names: &[&str],
) -> PoolConfig {
    let span = p.span();
    let p = p.get_ref();
    if p.servers.is_empty() {
        cx.err(
            span,
            format!(
                "pool `{}` has no servers; add at least one to `servers`",
                name.get_ref()
            ),
        );
    }
    let at_start = at_start(cx, p);
    let (servers, by_name) = servers(cx, name, p, at_start);
    PoolConfig {
        name: name.get_ref().as_str().into(),
        servers,
        names: by_name,
        resolve_interval: cx.duration(
            &p.resolve_interval,
            "resolve_interval",
            DEFAULT_RESOLVE_INTERVAL,
        ),
        unresolved: None,
        balance: p.balance,
        connect_timeout: cx.duration(
            &p.connect_timeout,
            "connect_timeout",
            DEFAULT_CONNECT_TIMEOUT,
        ),
        read_timeout: cx.duration(&p.read_timeout, "read_timeout", DEFAULT_READ_TIMEOUT),
        idle_timeout: cx.duration(&p.idle_timeout, "idle_timeout", DEFAULT_IDLE_TIMEOUT),
        keepalive: p.keepalive.unwrap_or(DEFAULT_KEEPALIVE),
        fallback: fallback(cx, p, names),
        health: p.health.as_ref().map(|h| super::health::health(cx, h)),
        passive: passive(cx, &p.passive),
        retry: retry(cx, &p.retry),
        slow_start: p
            .slow_start
            .as_ref()
            .map(|_| cx.duration(&p.slow_start, "slow_start", Duration::ZERO)),
        hash_key: hash_key(cx, p),
        sticky: p.sticky.as_ref().map(|f| super::sticky::sticky(cx, f)),
        max_connections: max_connections(cx, p),
        queue_timeout: cx.duration(&p.queue_timeout, "queue_timeout", DEFAULT_QUEUE_TIMEOUT),
        tls: p
            .tls
            .as_ref()
            .and_then(|t| super::upstream_tls::upstream_tls(cx, t)),
        upstream_h2: p.upstream_h2.unwrap_or(false),
        queue_size: p.queue_size.unwrap_or(DEFAULT_QUEUE_SIZE),
        adaptive: adaptive(cx, p),
        aging: cx.duration(&p.aging, "aging", DEFAULT_AGING),
        // Filled in once the routes' classes are known (`classes.rs`).
        classes: Vec::new(),
    }
}

/// The pool's `servers`: weights in range, none twice. Addresses are servers at once;
/// names are resolved in the background (`names`), or once here with
/// `resolve = "at_start"`.
fn servers(
    cx: &mut Check<'_>,
    name: &SpanStr,
    p: &FilePool,
    at_start: bool,
) -> (Vec<ServerConfig>, Vec<NameConfig>) {
    let (mut servers, mut names) = (Vec::new(), Vec::new());
    for s in &p.servers {
        let entry = s.get_ref();
        if entry.weight == 0 || entry.weight > MAX_WEIGHT {
            cx.err(
                s.span(),
                format!(
                    "server weight {} is out of range; use 1 to {MAX_WEIGHT}",
                    entry.weight
                ),
            );
        }
        let weight = entry.weight.clamp(1, MAX_WEIGHT);
        let found = match (&entry.addr, &entry.srv) {
            (Some(addr), None) => server(cx, s.span(), addr, weight, at_start),
            (None, Some(srv)) if valid_name(srv) => {
                Some(Err(NameConfig::Srv { name: srv.clone() }))
            }
            (None, Some(srv)) => {
                cx.err(s.span(), format!("srv {srv:?} is not a DNS name (e.g. \"_http._tcp.gunicorn.erp.svc.cluster.local\")"));
                None
            }
            _ => {
                cx.err(s.span(), "a server table needs either `addr` or `srv`");
                None
            }
        };
        match found {
            Some(Ok(sv)) if servers.iter().any(|x: &ServerConfig| x.addr == sv.addr) => cx.err(
                s.span(),
                format!(
                    "server {} is listed twice in pool `{}`; give it a weight instead",
                    sv.addr,
                    name.get_ref()
                ),
            ),
            Some(Ok(sv)) => servers.push(sv),
            Some(Err(n)) if names.contains(&n) => cx.err(
                s.span(),
                format!("{n} is listed twice in pool `{}`", name.get_ref()),
            ),
            Some(Err(n)) => names.push(n),
            None => {}
        }
    }
    (servers, names)
}

/// One `addr`: `Ok` a server by address (or resolved now, `at_start`), `Err` a name
/// to resolve live; `None` after an error.
fn server(
    cx: &mut Check<'_>,
    span: std::ops::Range<usize>,
    addr: &str,
    weight: u32,
    at_start: bool,
) -> Option<Result<ServerConfig, NameConfig>> {
    if let Ok(a) = addr.parse::<SocketAddr>() {
        return Some(Ok(ServerConfig { addr: a, weight }));
    }
    let hint = match addr.split_once("://") {
        Some((_, rest)) => format!(
            "; write it without the scheme: {:?}",
            rest.trim_end_matches('/')
        ),
        None => String::new(),
    };
    let parsed = addr
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
        .filter(|(h, _)| valid_name(h));
    let Some((host, port)) = parsed else {
        cx.err(span, format!("server address {addr:?} is not host:port (e.g. \"10.0.0.11:8000\" or \"backend:8000\"){hint}"));
        return None;
    };
    if !at_start {
        return Some(Err(NameConfig::Host {
            host: host.to_owned(),
            port,
            weight,
        }));
    }
    match resolve(addr) {
        Some(a) => Some(Ok(ServerConfig { addr: a, weight })),
        None => {
            cx.err(
                span,
                format!("server address {addr:?} does not resolve (resolve = \"at_start\")"),
            );
            None
        }
    }
}

/// A DNS name: labels of letters, digits, `-` and `_`, dot-separated.
fn valid_name(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.trim_end_matches('.').split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// `resolve = "live" | "at_start"`: true for `at_start`.
fn at_start(cx: &mut Check<'_>, p: &FilePool) -> bool {
    match p.resolve.as_ref().map(|r| (r, r.get_ref().as_str())) {
        None | Some((_, "live")) => false,
        Some((_, "at_start")) => true,
        Some((r, other)) => {
            cx.err(r.span(), format!("resolve = {other:?}: expected \"live\" (names re-resolved in the background) or \"at_start\""));
            false
        }
    }
}

/// The index of the pool's `fallback`, which must be defined.
fn fallback(cx: &mut Check<'_>, p: &FilePool, names: &[&str]) -> Option<usize> {
    let f = p.fallback.as_ref()?;
    let idx = names.iter().position(|n| *n == f.get_ref());
    if idx.is_none() {
        cx.err(
            f.span(),
            format!(
                "fallback pool `{}` is not defined; defined pools: {}",
                f.get_ref(),
                names.join(", ")
            ),
        );
    }
    idx
}

/// `[pools.NAME.passive]`: ejection on consecutive failures or 5xx answers.
fn passive(cx: &mut Check<'_>, p: &super::file::FilePassive) -> Passive {
    Passive {
        eject_after: p.eject_after.unwrap_or(DEFAULT_EJECT_AFTER),
        eject_after_5xx: p.eject_after_5xx.unwrap_or(0),
        ejection_time: cx.duration(&p.ejection_time, "ejection_time", DEFAULT_EJECTION_TIME),
        max_ejection_time: cx.duration(
            &p.max_ejection_time,
            "max_ejection_time",
            DEFAULT_MAX_EJECTION_TIME,
        ),
    }
}

/// `max_connections` per server: at least 1, or left out for no limit.
fn max_connections(cx: &mut Check<'_>, p: &FilePool) -> Option<usize> {
    let m = p.max_connections.as_ref()?;
    if *m.get_ref() == 0 {
        cx.err(
            m.span(),
            "`max_connections` must be at least 1 (leave it out for no limit)",
        );
    }
    Some(*m.get_ref()).filter(|n| *n > 0)
}

fn retry(cx: &mut Check<'_>, r: &super::file::FileRetry) -> RetryPolicy {
    let attempts = match &r.attempts {
        Some(a) if *a.get_ref() == 0 => {
            cx.err(
                a.span(),
                "`attempts` counts the first try too; it must be at least 1",
            );
            1
        }
        Some(a) => *a.get_ref(),
        None => DEFAULT_RETRY_ATTEMPTS,
    };
    let idempotent = idempotent_methods(cx, r);
    let budget_ratio = match &r.budget_ratio {
        Some(v) if !(0.0..=1.0).contains(v.get_ref()) => {
            cx.err(
                v.span(),
                "`budget_ratio` is a share of requests between 0.0 and 1.0",
            );
            DEFAULT_RETRY_BUDGET_RATIO
        }
        Some(v) => *v.get_ref(),
        None => DEFAULT_RETRY_BUDGET_RATIO,
    };
    RetryPolicy {
        attempts,
        idempotent,
        on_timeout: r.on_timeout.unwrap_or(false),
        body_limit: usize::try_from(r.body_limit.unwrap_or(0)).unwrap_or(usize::MAX),
        budget_ratio,
        budget_min_per_sec: r
            .budget_min_per_sec
            .unwrap_or(DEFAULT_RETRY_BUDGET_MIN_PER_SEC),
    }
}

/// `idempotent_methods`: only methods RFC 9110 §9.2.2 calls idempotent may be re-sent.
fn idempotent_methods(cx: &mut Check<'_>, r: &super::file::FileRetry) -> Vec<Method> {
    match &r.idempotent_methods {
        None => DEFAULT_IDEMPOTENT
            .iter()
            .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
            .collect(),
        Some(list) => {
            let mut out = Vec::new();
            for m in &list.get_ref().0 {
                let upper = m.to_ascii_uppercase();
                if !IDEMPOTENT.contains(&upper.as_str()) {
                    cx.err(
                        list.span(),
                        format!(
                            "{m:?} is not idempotent (RFC 9110 §9.2.2); only {} may be re-sent",
                            IDEMPOTENT.join(", ")
                        ),
                    );
                } else if let Ok(me) = Method::from_bytes(upper.as_bytes()) {
                    out.push(me);
                }
            }
            out
        }
    }
}

/// `client_ip` (default), `header:NAME` or `cookie:NAME`.
fn hash_key(cx: &mut Check<'_>, p: &FilePool) -> HashKey {
    let Some(k) = &p.hash_key else {
        return HashKey::ClientIp;
    };
    if p.balance != Balance::Hash {
        cx.err(k.span(), "`hash_key` only applies with balance = \"hash\"");
    }
    let v = k.get_ref();
    if v == "client_ip" {
        return HashKey::ClientIp;
    }
    if let Some(h) = v.strip_prefix("header:")
        && let Ok(name) = HeaderName::from_bytes(h.as_bytes())
    {
        return HashKey::Header(name);
    }
    if let Some(c) = v.strip_prefix("cookie:").filter(|c| !c.is_empty()) {
        return HashKey::Cookie(c.to_owned());
    }
    cx.err(
        k.span(),
        format!("hash_key {v:?} must be \"client_ip\", \"header:NAME\" or \"cookie:NAME\""),
    );
    HashKey::ClientIp
}

/// A fallback chain must end; a loop would bounce requests forever.
pub(super) fn fallback_loops(cx: &mut Check<'_>, file: &FileConfig, pools: &[PoolConfig]) {
    for (start, (_, fp)) in file.pools.iter().enumerate() {
        let Some(span) = fp.get_ref().fallback.as_ref().map(|f| f.span()) else {
            continue;
        };
        let mut seen = vec![start];
        let mut at = pools.get(start).and_then(|p| p.fallback);
        while let Some(i) = at {
            if seen.contains(&i) {
                let chain: Vec<&str> = seen
                    .iter()
                    .chain([&i])
                    .filter_map(|j| pools.get(*j))
                    .map(|p| &*p.name)
                    .collect();
                cx.err(
                    span.clone(),
                    format!("fallback pools form a loop: {}", chain.join(" -> ")),
                );
                break;
            }
            seen.push(i);
            at = pools.get(i).and_then(|p| p.fallback);
        }
    }
}

/// `name:port` resolved once here, for `resolve = "at_start"` (never on the request path).
fn resolve(addr: &str) -> Option<SocketAddr> {
    addr.to_socket_addrs().ok()?.next()
}

/// `limit = "static" | "adaptive"`; adaptive needs `max_connections` as its bound.
fn adaptive(cx: &mut Check<'_>, p: &super::file::FilePool) -> bool {
    let Some(l) = &p.limit else { return false };
    match l.get_ref().as_str() {
        "static" => false,
        "adaptive" if p.max_connections.is_some() => true,
        "adaptive" => {
            cx.err(
                l.span(),
                "`limit = \"adaptive\"` needs `max_connections` as its upper bound",
            );
            false
        }
        other => {
            cx.err(
                l.span(),
                format!("`limit` is \"static\" or \"adaptive\", not {other:?}"),
            );
            false
        }
    }
}
