//! Semantic checks: `FileConfig` → runtime [`Config`]. Every problem is collected
//! (not just the first) and points at the value that caused it.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use http::Method;
use regex::Regex;
use toml::Spanned;

use super::check::{Check, header_name, header_pairs};
use super::file::{FileConfig, FileMatch, FileRoute, QueryValue};
use super::settings;
use super::*;
use crate::routing::{HostMatch, Matcher, Route, ValueMatch};

pub fn validate(path: &Path, src: &str, file: FileConfig) -> Result<Config, ConfigErrors> {
    let mut cx = Check::new(path, src);
    let listeners = super::listeners::listeners(&mut cx, &file.listeners);
    let server = settings::server(&mut cx, &file.server);
    let log = settings::log(&mut cx, &file.log);
    let names: Vec<&str> = file.pools.keys().map(|k| k.get_ref().as_str()).collect();
    let mut pools: Vec<PoolConfig> = (file.pools.iter())
        .map(|(name, p)| super::pools::pool(&mut cx, name, p, &names))
        .collect();
    super::pools::fallback_loops(&mut cx, &file, &pools);
    let mut routes = routes(&mut cx, &file.routes, &listeners, &pools);
    let (classes, warnings) = super::classes::resolve(&mut cx, &file, &mut pools, &mut routes);
    let sites = super::web::sites(&mut cx, file.sites.as_ref());
    let compression = super::web::compression(&mut cx, file.compression.as_ref());
    let admin = settings::admin(&mut cx, &file.admin);
    let workers = settings::workers(&mut cx, &file.runtime);
    let scheduler = settings::scheduler(&mut cx, &file.runtime);
    let control_socket = settings::control_socket(&file.runtime);
    let reload = settings::reload(&mut cx, &file.reload);
    let resolver = settings::resolver(&mut cx, &file.resolver);
    if !cx.is_clean() {
        return Err(cx.into_errors());
    }
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
        scheduler,
        control_socket,
        resolver,
    })
}

fn routes(
    cx: &mut Check<'_>,
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
        out.push(self::route(cx, route, matcher, pools));
    }
    out
}

/// One route, its matcher already built; its class is numbered later (`classes.rs`).
fn route(cx: &mut Check<'_>, route: &FileRoute, matcher: Matcher, pools: &[PoolConfig]) -> Route {
    let (pool, action) = super::web::action(cx, route, pools, &matcher);
    Route {
        name: route.name.get_ref().as_str().into(),
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
        set_request_headers: templates(cx, route),
        add_request_headers: header_pairs(cx, &route.add_request_headers),
        remove_request_headers: route
            .remove_request_headers
            .iter()
            .filter_map(|h| header_name(cx, h))
            .collect(),
        add_response_headers: header_pairs(cx, &route.add_response_headers),
    }
}

/// `set_request_headers`: values with `{placeholders}` filled per request.
fn templates(
    cx: &mut Check<'_>,
    route: &FileRoute,
) -> Vec<(http::HeaderName, crate::routing::HeaderTemplate)> {
    route
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
        .collect()
}

/// `match.*`: the conditions of a route, each checked where it can be.
fn matcher(cx: &mut Check<'_>, m: &FileMatch, listeners: &[Listener]) -> Matcher {
    let mut out = Matcher::default();
    if let Some((span, names)) = list(&m.listener) {
        out.listeners = listener_indexes(cx, span, &names, listeners);
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
    fields(cx, m, &mut out);
    out
}

/// A string or list of strings, with its span.
fn list(v: &Option<Spanned<super::file::StringList>>) -> Option<(Range<usize>, Vec<String>)> {
    v.as_ref().map(|s| (s.span(), s.get_ref().0.clone()))
}

/// `match.listener`: listener names, as indexes into the listeners.
fn listener_indexes(
    cx: &mut Check<'_>,
    span: Range<usize>,
    names: &[String],
    listeners: &[Listener],
) -> Vec<usize> {
    let mut out = Vec::new();
    for n in names {
        match listeners.iter().position(|l| *l.name == **n) {
            Some(i) => out.push(i),
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
    out
}

/// `match.query`, `match.header` and `match.param`: named fields and their values.
fn fields(cx: &mut Check<'_>, m: &FileMatch, out: &mut Matcher) {
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
}

/// Each pattern must match the whole path; all compile into one anchored alternation.
fn path_regex(cx: &mut Check<'_>, span: Range<usize>, res: &[String]) -> Option<Regex> {
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
