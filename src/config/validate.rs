//! Semantic checks: `FileConfig` → runtime [`Config`]. Every problem is collected
//! (not just the first) and points at the value that caused it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use ipnet::IpNet;
use regex::Regex;
use toml::Spanned;

use super::file::{FileConfig, FileListener, FileMatch, FilePool, FileRoute, QueryValue, SpanStr};
use super::*;
use crate::routing::{HostMatch, Matcher, Route, ValueMatch};

struct Ctx<'a> {
    path: &'a Path,
    src: &'a str,
    errors: Vec<ConfigError>,
}

impl Ctx<'_> {
    fn err(&mut self, span: Range<usize>, msg: impl Into<String>) {
        self.errors
            .push(ConfigError::at(self.path, self.src, Some(span), msg));
    }

    fn duration(&mut self, v: &Option<SpanStr>, key: &str, default: Duration) -> Duration {
        let Some(v) = v else { return default };
        match humantime::parse_duration(v.get_ref()) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                self.err(v.span(), format!("`{key}` must be greater than zero"));
                default
            }
            Err(e) => {
                self.err(
                    v.span(),
                    format!(
                        "`{key}` = {:?} is not a duration ({e}); write e.g. \"500ms\", \"30s\", \"2m\"",
                        v.get_ref()
                    ),
                );
                default
            }
        }
    }

    fn size(&mut self, v: &Option<Spanned<u64>>, key: &str, default: usize) -> usize {
        match v {
            None => default,
            Some(n) if *n.get_ref() == 0 => {
                self.err(n.span(), format!("`{key}` must be greater than zero"));
                default
            }
            Some(n) => usize::try_from(*n.get_ref()).unwrap_or(usize::MAX),
        }
    }
}

pub fn validate(path: &Path, src: &str, file: FileConfig) -> Result<Config, ConfigErrors> {
    let mut cx = Ctx {
        path,
        src,
        errors: Vec::new(),
    };
    let listeners = listeners(&mut cx, &file.listeners);
    let server = ServerSettings {
        tunnel_idle_timeout: cx.duration(
            &file.server.tunnel_idle_timeout,
            "tunnel_idle_timeout",
            DEFAULT_TUNNEL_IDLE_TIMEOUT,
        ),
        header_timeout: cx.duration(
            &file.server.header_timeout,
            "header_timeout",
            DEFAULT_HEADER_TIMEOUT,
        ),
        body_timeout: cx.duration(
            &file.server.body_timeout,
            "body_timeout",
            DEFAULT_BODY_TIMEOUT,
        ),
        drain_timeout: cx.duration(
            &file.server.drain_timeout,
            "drain_timeout",
            DEFAULT_DRAIN_TIMEOUT,
        ),
        max_header_bytes: header_bytes(&mut cx, &file.server.max_header_bytes),
        max_uri_bytes: cx.size(
            &file.server.max_uri_bytes,
            "max_uri_bytes",
            DEFAULT_MAX_URI_BYTES,
        ),
        param_body_limit: cx.size(
            &file.server.param_body_limit,
            "param_body_limit",
            DEFAULT_PARAM_BODY_LIMIT,
        ),
        param_body_timeout: cx.duration(
            &file.server.param_body_timeout,
            "param_body_timeout",
            DEFAULT_PARAM_BODY_TIMEOUT,
        ),
    };
    let log = LogSettings {
        access_log: match file.log.access_log.as_ref().map(|s| s.get_ref().as_str()) {
            None | Some("stdout") => AccessLogTarget::Stdout,
            Some("off") => AccessLogTarget::Off,
            Some(p) => AccessLogTarget::File(p.into()),
        },
        access_format: file.log.access_format.unwrap_or_default(),
    };
    let names: Vec<&str> = file.pools.keys().map(|k| k.get_ref().as_str()).collect();
    let mut pools = Vec::new();
    for (name, p) in &file.pools {
        pools.push(pool(&mut cx, name, p, &names));
    }
    fallback_loops(&mut cx, &file, &pools);
    let routes = routes(&mut cx, &file.routes, &listeners, &pools);
    let admin = admin(&mut cx, &file.admin);
    let workers = match &file.runtime.workers {
        Some(w) if *w.get_ref() == 0 => {
            cx.err(w.span(), "`workers` must be at least 1");
            1
        }
        Some(w) => *w.get_ref(),
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let reload = ReloadSettings {
        watch: file.reload.watch.unwrap_or(true),
        debounce: cx.duration(&file.reload.debounce, "debounce", DEFAULT_RELOAD_DEBOUNCE),
    };
    if cx.errors.is_empty() {
        Ok(Config {
            path: path.to_path_buf(),
            listeners,
            server,
            log,
            pools,
            routes,
            admin,
            reload,
            workers,
        })
    } else {
        cx.errors.sort_by_key(|e| (e.line, e.col));
        Err(ConfigErrors(cx.errors))
    }
}

fn listeners(cx: &mut Ctx<'_>, file: &[Spanned<FileListener>]) -> Vec<Listener> {
    let mut out: Vec<Listener> = Vec::new();
    if file.is_empty() {
        cx.err(
            0..0,
            "no [[listeners]] defined; add one, e.g. [[listeners]] addr = \"127.0.0.1:8080\"",
        );
    }
    for l in file {
        let l = l.get_ref();
        let addr = match l.addr.get_ref().parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                cx.err(
                    l.addr.span(),
                    format!(
                        "listener addr {:?} is not an IP:port address, e.g. \"0.0.0.0:8080\"",
                        l.addr.get_ref()
                    ),
                );
                continue;
            }
        };
        if out.iter().any(|o| o.addr == addr) {
            cx.err(
                l.addr.span(),
                format!("listener address {addr} is used twice"),
            );
        }
        let name: Arc<str> = match &l.name {
            Some(n) => {
                if out.iter().any(|o| *o.name == **n.get_ref()) {
                    cx.err(
                        n.span(),
                        format!("listener name `{}` is used twice", n.get_ref()),
                    );
                }
                n.get_ref().as_str().into()
            }
            None => addr.to_string().into(),
        };
        let mut trusted = Vec::new();
        for t in &l.trusted_proxies {
            let s = t.get_ref();
            match s.parse::<IpNet>().or_else(|_| s.parse::<IpAddr>().map(IpNet::from)) {
                Ok(n) => trusted.push(n),
                Err(_) => cx.err(t.span(), format!("trusted_proxies entry {s:?} is not an IP address or CIDR, e.g. \"10.0.0.0/8\"")),
            }
        }
        let mut pairs = Vec::new();
        for t in &l.tls {
            let t = t.get_ref();
            pairs.push((
                relative(cx.path, t.cert.get_ref()),
                relative(cx.path, t.key.get_ref()),
                t.cert.span(),
            ));
        }
        let tls = if pairs.is_empty() {
            None
        } else {
            let files: Vec<(PathBuf, PathBuf)> = pairs
                .iter()
                .map(|(c, k, _)| (c.clone(), k.clone()))
                .collect();
            match crate::tls::server_config(&files) {
                Ok(c) => Some(c),
                Err(e) => {
                    let span = pairs.first().map_or(0..0, |p| p.2.clone());
                    cx.err(span, format!("TLS: {e}"));
                    None
                }
            }
        };
        let tls_files = pairs
            .iter()
            .flat_map(|(c, k, _)| [c.clone(), k.clone()])
            .collect();
        let redirect_https = l.redirect_https.unwrap_or(false);
        out.push(Listener {
            name,
            addr,
            trusted_proxies: trusted,
            tls,
            tls_files,
            redirect_https,
        });
    }
    out
}

fn pool(cx: &mut Ctx<'_>, name: &SpanStr, p: &Spanned<FilePool>, names: &[&str]) -> PoolConfig {
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
    let mut servers = Vec::new();
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
        match resolve(&entry.addr) {
            Some(addr) => servers.push(ServerConfig { addr, weight: entry.weight.clamp(1, MAX_WEIGHT) }),
            None => cx.err(s.span(), format!("server address {:?} is not host:port (e.g. \"10.0.0.11:8000\") or does not resolve", entry.addr)),
        }
    }
    PoolConfig {
        name: name.get_ref().as_str().into(),
        servers,
        balance: p.balance,
        connect_timeout: cx.duration(
            &p.connect_timeout,
            "connect_timeout",
            DEFAULT_CONNECT_TIMEOUT,
        ),
        read_timeout: cx.duration(&p.read_timeout, "read_timeout", DEFAULT_READ_TIMEOUT),
        idle_timeout: cx.duration(&p.idle_timeout, "idle_timeout", DEFAULT_IDLE_TIMEOUT),
        keepalive: p.keepalive.unwrap_or(DEFAULT_KEEPALIVE),
        fallback: p.fallback.as_ref().and_then(|f| {
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
        }),
        health: p.health.as_ref().map(|h| health(cx, h)),
        passive: Passive {
            eject_after: p.passive.eject_after.unwrap_or(DEFAULT_EJECT_AFTER),
            eject_after_5xx: p.passive.eject_after_5xx.unwrap_or(0),
            ejection_time: cx.duration(
                &p.passive.ejection_time,
                "ejection_time",
                DEFAULT_EJECTION_TIME,
            ),
            max_ejection_time: cx.duration(
                &p.passive.max_ejection_time,
                "max_ejection_time",
                DEFAULT_MAX_EJECTION_TIME,
            ),
        },
        retry: retry(cx, &p.retry),
        slow_start: p
            .slow_start
            .as_ref()
            .map(|_| cx.duration(&p.slow_start, "slow_start", Duration::ZERO)),
        hash_key: hash_key(cx, p),
        max_connections: p.max_connections.as_ref().and_then(|m| {
            if *m.get_ref() == 0 {
                cx.err(
                    m.span(),
                    "`max_connections` must be at least 1 (leave it out for no limit)",
                );
            }
            Some(*m.get_ref()).filter(|n| *n > 0)
        }),
        queue_timeout: cx.duration(&p.queue_timeout, "queue_timeout", DEFAULT_QUEUE_TIMEOUT),
        tls: p.tls.as_ref().and_then(|t| upstream_tls(cx, t)),
        upstream_h2: p.upstream_h2.unwrap_or(false),
        queue_size: p.queue_size.unwrap_or(DEFAULT_QUEUE_SIZE),
    }
}

fn health(cx: &mut Ctx<'_>, h: &Spanned<super::file::FileHealth>) -> HealthCheck {
    let h = h.get_ref();
    let method = match &h.method {
        None => Method::GET,
        Some(m) => {
            Method::from_bytes(m.get_ref().to_ascii_uppercase().as_bytes()).unwrap_or_else(|_| {
                cx.err(m.span(), format!("{:?} is not an HTTP method", m.get_ref()));
                Method::GET
            })
        }
    };
    let path = match &h.path {
        None => http::uri::PathAndQuery::from_static("/"),
        Some(p) => match p.get_ref().parse::<http::uri::PathAndQuery>() {
            Ok(pq) if p.get_ref().starts_with('/') => pq,
            _ => {
                cx.err(p.span(), format!("health check path {:?} must start with `/` and be a valid path (no spaces, CR or LF)", p.get_ref()));
                http::uri::PathAndQuery::from_static("/")
            }
        },
    };
    let host = h.host.as_ref().and_then(|v| {
        http::HeaderValue::from_str(v.get_ref())
            .map_err(|_| {
                cx.err(
                    v.span(),
                    format!("{:?} is not a valid Host value", v.get_ref()),
                )
            })
            .ok()
    });
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
    let count = |cx: &mut Ctx<'_>, v: &Option<Spanned<u32>>, key: &str, d: u32| match v {
        Some(n) if *n.get_ref() == 0 => {
            cx.err(n.span(), format!("`{key}` must be at least 1"));
            d
        }
        Some(n) => *n.get_ref(),
        None => d,
    };
    HealthCheck {
        method,
        path,
        host,
        interval: cx.duration(&h.interval, "interval", DEFAULT_HEALTH_INTERVAL),
        timeout: cx.duration(&h.timeout, "timeout", DEFAULT_HEALTH_TIMEOUT),
        healthy_after: count(cx, &h.healthy_after, "healthy_after", DEFAULT_HEALTHY_AFTER),
        unhealthy_after: count(
            cx,
            &h.unhealthy_after,
            "unhealthy_after",
            DEFAULT_UNHEALTHY_AFTER,
        ),
        expect_status,
        body_contains: h.body_contains.clone(),
    }
}

fn retry(cx: &mut Ctx<'_>, r: &super::file::FileRetry) -> RetryPolicy {
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
    let idempotent = match &r.idempotent_methods {
        None => DEFAULT_IDEMPOTENT
            .iter()
            .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
            .collect(),
        Some(list) => {
            let mut out = Vec::new();
            for m in &list.get_ref().0 {
                let upper = m.to_ascii_uppercase();
                if !DEFAULT_IDEMPOTENT.contains(&upper.as_str()) {
                    cx.err(
                        list.span(),
                        format!(
                            "{m:?} is not idempotent (RFC 9110 §9.2.2); only {} may be re-sent",
                            DEFAULT_IDEMPOTENT.join(", ")
                        ),
                    );
                } else if let Ok(me) = Method::from_bytes(upper.as_bytes()) {
                    out.push(me);
                }
            }
            out
        }
    };
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
        body_limit: usize::try_from(r.body_limit.unwrap_or(0)).unwrap_or(usize::MAX),
        budget_ratio,
        budget_min_per_sec: r
            .budget_min_per_sec
            .unwrap_or(DEFAULT_RETRY_BUDGET_MIN_PER_SEC),
    }
}

/// `client_ip` (default), `header:NAME` or `cookie:NAME`.
fn hash_key(cx: &mut Ctx<'_>, p: &FilePool) -> HashKey {
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
fn fallback_loops(cx: &mut Ctx<'_>, file: &FileConfig, pools: &[PoolConfig]) {
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

fn admin(cx: &mut Ctx<'_>, a: &super::file::FileAdmin) -> AdminSettings {
    let token = match (&a.token, &a.token_env) {
        (Some(t), _) if t.get_ref().is_empty() => {
            cx.err(
                t.span(),
                "admin token must not be empty (leave it out to refuse changes)",
            );
            None
        }
        (Some(t), _) => Some(t.get_ref().clone()),
        (None, Some(env)) => std::env::var(env.get_ref()).ok().filter(|t| !t.is_empty()),
        (None, None) => None,
    };
    if a.enabled == Some(false) {
        return AdminSettings { addr: None, token };
    }
    let addr = match &a.addr {
        None => DEFAULT_ADMIN_ADDR.parse().ok(),
        Some(s) => match s.get_ref().parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                cx.err(
                    s.span(),
                    format!("admin addr {:?} is not an IP:port address", s.get_ref()),
                );
                None
            }
        },
    };
    AdminSettings { addr, token }
}

/// `IP:port`, or `name:port` resolved once here (never on the request path).
fn resolve(addr: &str) -> Option<SocketAddr> {
    if let Ok(a) = addr.parse() {
        return Some(a);
    }
    addr.rsplit_once(':')?.1.parse::<u16>().ok()?;
    addr.to_socket_addrs().ok()?.next()
}

fn routes(
    cx: &mut Ctx<'_>,
    file: &[Spanned<FileRoute>],
    listeners: &[Listener],
    pools: &[PoolConfig],
) -> Vec<Route> {
    let mut out = Vec::new();
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut catch_all: Option<(&str, usize)> = None;
    for r in file {
        let route = r.get_ref();
        let name = route.name.get_ref().as_str();
        if let Some(line) = names.get(name) {
            cx.err(route.name.span(), format!("duplicate route name `{name}` (first defined on line {line}); route names must be unique"));
        }
        let line = ConfigError::at(cx.path, cx.src, Some(route.name.span()), "").line;
        names.entry(name).or_insert(line);
        if let Some((first, at)) = catch_all {
            cx.err(route.name.span(), format!("route `{name}` can never match: route `{first}` (line {at}) before it matches every request; move it above `{first}` or remove it"));
        }
        let pool = pools.iter().position(|p| *p.name == **route.pool.get_ref());
        if pool.is_none() {
            let defined: Vec<&str> = pools.iter().map(|p| &*p.name).collect();
            cx.err(
                route.pool.span(),
                format!(
                    "route `{name}` uses pool `{}`, which is not defined; defined pools: {}",
                    route.pool.get_ref(),
                    if defined.is_empty() {
                        "(none)".to_owned()
                    } else {
                        defined.join(", ")
                    }
                ),
            );
        }
        let matcher = route
            .matcher
            .as_ref()
            .map(|m| matcher(cx, m.get_ref(), listeners))
            .unwrap_or_default();
        if matcher.is_catch_all() && catch_all.is_none() {
            catch_all = Some((name, line));
        }
        out.push(Route {
            name: name.into(),
            pool: pool.unwrap_or(0),
            matcher,
            timeout: route
                .timeout
                .as_ref()
                .map(|_| cx.duration(&route.timeout, "timeout", Duration::ZERO)),
            set_request_headers: route
                .set_request_headers
                .iter()
                .filter_map(|(k, v)| {
                    let name = header_name(cx, k)?;
                    match crate::routing::HeaderTemplate::parse(v.get_ref()) {
                        Ok(t) => Some((name, t)),
                        Err(e) => {
                            cx.err(v.span(), e);
                            None
                        }
                    }
                })
                .collect(),
            add_request_headers: header_pairs(cx, &route.add_request_headers),
            remove_request_headers: route
                .remove_request_headers
                .iter()
                .filter_map(|h| header_name(cx, h))
                .collect(),
            add_response_headers: header_pairs(cx, &route.add_response_headers),
        });
    }
    out
}

fn matcher(cx: &mut Ctx<'_>, m: &FileMatch, listeners: &[Listener]) -> Matcher {
    let list = |v: &Option<Spanned<super::file::StringList>>| {
        v.as_ref().map(|s| (s.span(), s.get_ref().0.clone()))
    };
    let mut out = Matcher::default();
    if let Some((span, names)) = list(&m.listener) {
        for n in names {
            match listeners.iter().position(|l| *l.name == *n) {
                Some(i) => out.listeners.push(i),
                None => {
                    let known: Vec<&str> = listeners.iter().map(|l| &*l.name).collect();
                    cx.err(
                        span.clone(),
                        format!(
                            "listener `{n}` is not defined; defined listeners: {}",
                            known.join(", ")
                        ),
                    );
                }
            }
        }
    }
    if let Some((_, hosts)) = list(&m.host) {
        out.hosts = hosts.iter().map(|h| HostMatch::parse(h)).collect();
    }
    for (key, v, dst) in [
        ("path", &m.path, &mut out.paths),
        ("path_prefix", &m.path_prefix, &mut out.prefixes),
    ] {
        if let Some((span, paths)) = list(v) {
            if let Some(bad) = paths.iter().find(|p| !p.starts_with('/')) {
                cx.err(span, format!("`{key}` value {bad:?} must start with `/`"));
            }
            *dst = paths;
        }
    }
    if let Some((span, res)) = list(&m.path_regex) {
        out.regex = path_regex(cx, span, &res);
    }
    if let Some((span, methods)) = list(&m.method) {
        for s in methods {
            match Method::from_bytes(s.to_ascii_uppercase().as_bytes()) {
                Ok(me) => out.methods.push(me),
                Err(_) => cx.err(span.clone(), format!("{s:?} is not an HTTP method")),
            }
        }
    }
    for (name, v) in &m.query {
        let vm = match v.get_ref() {
            QueryValue::Present => ValueMatch::Present,
            QueryValue::Values(vs) => ValueMatch::AnyOf(vs.clone()),
        };
        out.query.push((name.get_ref().clone(), vm));
    }
    for (name, v) in &m.header {
        if let Some(h) = header_name(cx, name) {
            out.headers.push((h, v.get_ref().0.clone()));
        }
    }
    for (name, v) in &m.param {
        out.params
            .push((name.get_ref().clone(), v.get_ref().0.clone()));
    }
    out
}

/// Each pattern must match the whole path; all compile into one anchored alternation.
fn path_regex(cx: &mut Ctx<'_>, span: Range<usize>, res: &[String]) -> Option<Regex> {
    let mut ok = true;
    for r in res {
        if let Err(e) = Regex::new(r) {
            ok = false;
            let detail = e.to_string().lines().last().unwrap_or("").trim().to_owned();
            cx.err(
                span.clone(),
                format!("path_regex {r:?} does not compile: {detail}"),
            );
        }
    }
    let joined: Vec<String> = res.iter().map(|r| format!("(?:{r})")).collect();
    ok.then(|| Regex::new(&format!("^(?:{})$", joined.join("|"))).ok())
        .flatten()
}

fn header_name(cx: &mut Ctx<'_>, n: &SpanStr) -> Option<HeaderName> {
    match HeaderName::from_bytes(n.get_ref().as_bytes()) {
        Ok(h) => Some(h),
        Err(_) => {
            cx.err(
                n.span(),
                format!("{:?} is not a valid header name", n.get_ref()),
            );
            None
        }
    }
}

fn header_pairs(
    cx: &mut Ctx<'_>,
    map: &std::collections::BTreeMap<SpanStr, SpanStr>,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    for (k, v) in map {
        let Some(name) = header_name(cx, k) else {
            continue;
        };
        match HeaderValue::from_str(v.get_ref()) {
            Ok(val) => out.push((name, val)),
            Err(_) => cx.err(
                v.span(),
                format!(
                    "{:?} is not a valid header value (control characters are not allowed)",
                    v.get_ref()
                ),
            ),
        }
    }
    out
}

/// hyper needs room for at least 8 KiB of request head.
fn header_bytes(cx: &mut Ctx<'_>, v: &Option<Spanned<u64>>) -> usize {
    let n = cx.size(v, "max_header_bytes", DEFAULT_MAX_HEADER_BYTES);
    if n < MIN_HEADER_BYTES {
        if let Some(v) = v {
            cx.err(
                v.span(),
                format!("`max_header_bytes` must be at least {MIN_HEADER_BYTES}"),
            );
        }
        return DEFAULT_MAX_HEADER_BYTES;
    }
    n
}

/// A path from the config, relative to the config file's directory.
fn relative(config: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    match config.parent() {
        Some(dir) if p.is_relative() => dir.join(p),
        _ => p.to_path_buf(),
    }
}

/// `[pools.NAME.tls]`: trust roots (a CA file or the system's) and an optional SNI name.
fn upstream_tls(
    cx: &mut Ctx<'_>,
    t: &Spanned<super::file::FileUpstreamTls>,
) -> Option<UpstreamTls> {
    let span = t.span();
    let t = t.get_ref();
    let mut roots = rustls::RootCertStore::empty();
    match &t.ca {
        Some(ca) => {
            let path = relative(cx.path, ca.get_ref());
            let loaded = std::fs::read(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))
                .and_then(|pem| {
                    rustls_pemfile::certs(&mut pem.as_slice())
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| format!("{}: not a PEM certificate file: {e}", path.display()))
                });
            match loaded {
                Ok(certs) if !certs.is_empty() => {
                    for c in certs {
                        if let Err(e) = roots.add(c) {
                            cx.err(
                                ca.span(),
                                format!("{}: unusable CA certificate: {e}", path.display()),
                            );
                        }
                    }
                }
                Ok(_) => cx.err(
                    ca.span(),
                    format!("{}: no certificate found", path.display()),
                ),
                Err(e) => cx.err(ca.span(), e),
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
            if roots.is_empty() {
                cx.err(
                    span.clone(),
                    "no system CA certificates found; set `ca` to a PEM file",
                );
            }
        }
    }
    let server_name = match &t.server_name {
        None => None,
        Some(n) => match rustls::pki_types::ServerName::try_from(n.get_ref().clone()) {
            Ok(s) => Some(s),
            Err(_) => {
                cx.err(
                    n.span(),
                    format!("{:?} is not a valid TLS server name", n.get_ref()),
                );
                None
            }
        },
    };
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .ok()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Some(UpstreamTls {
        client: Arc::new(client),
        server_name,
    })
}
