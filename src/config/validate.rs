//! Semantic checks: `FileConfig` → runtime [`Config`]. Every problem is collected
//! (not just the first) and points at the value that caused it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use ipnet::IpNet;
use regex::Regex;
use toml::Spanned;

use super::file::{FileConfig, FileListener, FileMatch, FileRoute, QueryValue, SpanStr};
use super::*;
use crate::routing::{HostMatch, Matcher, Route, ValueMatch};

pub(super) struct Ctx<'a> {
    pub(super) path: &'a Path,
    pub(super) src: &'a str,
    errors: Vec<ConfigError>,
}

impl Ctx<'_> {
    pub(super) fn err(&mut self, span: Range<usize>, msg: impl Into<String>) {
        self.errors
            .push(ConfigError::at(self.path, self.src, Some(span), msg));
    }

    /// A size like nginx's `client_max_body_size`: bytes, or with `k`, `m` or `g`
    /// (KiB, MiB, GiB; `KB`/`MB`/`GB` and `KiB`/`MiB`/`GiB` too). `"0"` means no limit.
    pub(super) fn body_size(&mut self, v: &Option<SpanStr>, key: &str) -> Option<u64> {
        let v = v.as_ref()?;
        match parse_size(v.get_ref()) {
            Some(0) => None,
            Some(n) => Some(n),
            None => {
                self.err(
                    v.span(),
                    format!(
                        "`{key}` = {:?} is not a size; write e.g. \"1m\", \"50MB\", \"512k\" or \"0\" for no limit",
                        v.get_ref()
                    ),
                );
                None
            }
        }
    }

    pub(super) fn duration(
        &mut self,
        v: &Option<SpanStr>,
        key: &str,
        default: Duration,
    ) -> Duration {
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

    pub(super) fn size(&mut self, v: &Option<Spanned<u64>>, key: &str, default: usize) -> usize {
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
        send_timeout: cx.duration(
            &file.server.send_timeout,
            "send_timeout",
            DEFAULT_SEND_TIMEOUT,
        ),
        drain_timeout: cx.duration(
            &file.server.drain_timeout,
            "drain_timeout",
            DEFAULT_DRAIN_TIMEOUT,
        ),
        lame_duck: cx.duration(&file.server.lame_duck, "lame_duck", Duration::ZERO),
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
    // Like `nginx -t`, the access log is opened (and created) now, so a path that
    // cannot be written is a config error naming it, not a failed start.
    if let Some(a) = &file.log.access_log
        && !matches!(a.get_ref().as_str(), "stdout" | "off")
        && let Err(e) = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(a.get_ref())
    {
        cx.err(
            a.span(),
            format!(
                "access log {:?} cannot be opened for writing: {e}",
                a.get_ref()
            ),
        );
    }
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
        pools.push(super::pools::pool(&mut cx, name, p, &names));
    }
    super::pools::fallback_loops(&mut cx, &file, &pools);
    let mut routes = routes(&mut cx, &file.routes, &listeners, &pools);
    let (classes, warnings) = super::classes::resolve(&mut cx, &file, &mut pools, &mut routes);
    let sites = super::web::sites(&mut cx, file.sites.as_ref());
    let compression = super::web::compression(&mut cx, file.compression.as_ref());
    let admin = admin(&mut cx, &file.admin);
    let workers = match &file.runtime.workers {
        Some(w) if *w.get_ref() == 0 => {
            cx.err(w.span(), "`workers` must be at least 1");
            1
        }
        Some(w) => *w.get_ref(),
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let control_socket = match &file.runtime.control_socket {
        Some(p) if p.get_ref().is_empty() => None,
        Some(p) => Some(PathBuf::from(p.get_ref())),
        None => {
            std::env::var_os("RUNTIME_DIRECTORY").map(|d| PathBuf::from(d).join("control.sock"))
        }
    };
    let reload = ReloadSettings {
        watch: file.reload.watch.unwrap_or(true),
        debounce: cx.duration(&file.reload.debounce, "debounce", DEFAULT_RELOAD_DEBOUNCE),
    };
    if cx.errors.is_empty() {
        Ok(Config {
            classes,
            warnings,
            sites,
            compression,
            path: path.to_path_buf(),
            listeners,
            server,
            log,
            pools,
            routes,
            admin,
            reload,
            workers,
            control_socket,
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
                let a = l.addr.get_ref();
                let hint = match a.rsplit_once(':') {
                    Some(("*", p)) => format!(
                        "; for every address write \"0.0.0.0:{p}\" (and \"[::]:{p}\" for IPv6)"
                    ),
                    Some(("localhost", p)) => {
                        format!("; write \"127.0.0.1:{p}\" (a listener takes an IP, not a name)")
                    }
                    _ => String::new(),
                };
                cx.err(
                    l.addr.span(),
                    format!(
                        "listener addr {a:?} is not an IP:port address, e.g. \"0.0.0.0:8080\"{hint}"
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
                (t.cert.span(), t.key.span()),
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
                    // The caret goes to the file at fault: the key or the certificate.
                    let span = pairs.get(e.pair).map_or(0..0, |(_, _, (c, k))| {
                        if e.in_key { k.clone() } else { c.clone() }
                    });
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
        let max_body_size = cx.body_size(&l.max_body_size, "max_body_size");
        let error_pages = super::pages::load(cx, &l.error_pages);
        let add_response_headers = header_pairs(cx, &l.add_response_headers);
        out.push(Listener {
            name,
            addr,
            trusted_proxies: trusted,
            tls,
            tls_files,
            redirect_https,
            max_body_size,
            error_pages,
            add_response_headers,
            response_headers_always: l.response_headers_always.unwrap_or(true),
            site: super::web::pinned_site(cx, &l.site),
            max_requests_per_host: l.max_requests_per_host.filter(|n| *n > 0),
            freebind: l.freebind.unwrap_or(false),
        });
    }
    out
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
        let matcher = route
            .matcher
            .as_ref()
            .map(|m| matcher(cx, m.get_ref(), listeners))
            .unwrap_or_default();
        if matcher.is_catch_all() && catch_all.is_none() {
            catch_all = Some((name, line));
        }
        let (pool, action) = super::web::action(cx, route, pools, &matcher);
        out.push(Route {
            name: name.into(),
            pool,
            action,
            internal: route.internal.unwrap_or(false),
            accel_redirect: route.accel_redirect.unwrap_or(false),
            compress: route.compress.unwrap_or(true),
            // Numbered once every route is known (`classes.rs`).
            class: 0,
            error_pages: super::pages::load(cx, &route.error_pages),
            response_headers_always: route.response_headers_always.unwrap_or(true),
            max_body_size: route.max_body_size.as_ref().map(|_| {
                cx.body_size(&route.max_body_size, "max_body_size")
                    .unwrap_or(u64::MAX)
            }),
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
pub(super) fn relative(config: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    match config.parent() {
        Some(dir) if p.is_relative() => dir.join(p),
        _ => p.to_path_buf(),
    }
}

/// `"50m"` → 52,428,800; see [`Ctx::body_size`].
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(digits);
    let n: u64 = n.parse().ok()?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return None,
    };
    n.checked_mul(1 << shift)
}

#[cfg(test)]
mod size_tests {
    #[test]
    fn sizes_parse_like_nginx() {
        for (s, want) in [
            ("0", Some(0)),
            ("1m", Some(1 << 20)),
            ("50MB", Some(50 << 20)),
            ("512k", Some(512 << 10)),
            ("2 GiB", Some(2 << 30)),
            ("1024", Some(1024)),
        ] {
            assert_eq!(super::parse_size(s), want, "{s}");
        }
        for s in ["", "m", "1x", "-1", "1.5m"] {
            assert_eq!(super::parse_size(s), None, "{s}");
        }
    }
}
