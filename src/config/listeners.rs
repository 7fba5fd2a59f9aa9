//! `[[listeners]]`: addresses, names, trusted proxies, TLS certificates (loaded now, so a
//! bad file is a config error with its line), and the per-listener limits and pages.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use ipnet::IpNet;
use toml::Spanned;

use super::check::{Check, relative};
use super::file::{FileListener, SpanStr};
use super::*;

pub(super) fn listeners(cx: &mut Check<'_>, file: &[Spanned<FileListener>]) -> Vec<Listener> {
    let mut out: Vec<Listener> = Vec::new();
    if file.is_empty() {
        cx.err(
            0..0,
            "no [[listeners]] defined; add one, e.g. [[listeners]] addr = \"127.0.0.1:8080\"",
        );
    }
    for l in file {
        if let Some(l) = listener(cx, l.get_ref(), &out) {
            out.push(l);
        }
    }
    out
}

/// One listener; `None` when its address is not one (`earlier`: those before it).
fn listener(cx: &mut Check<'_>, l: &FileListener, earlier: &[Listener]) -> Option<Listener> {
    let addr = addr(cx, &l.addr)?;
    if earlier.iter().any(|o| o.addr == addr) {
        cx.err(
            l.addr.span(),
            format!("listener address {addr} is used twice"),
        );
    }
    let (tls, tls_files) = tls(cx, l);
    let http3 = super::http3::http3(cx, l, tls.as_ref());
    Some(Listener {
        name: name(cx, l, addr, earlier),
        addr,
        trusted_proxies: trusted(cx, l),
        tls,
        tls_files,
        redirect_https: l.redirect_https.unwrap_or(false),
        max_body_size: cx.body_size(&l.max_body_size, "max_body_size"),
        error_pages: super::pages::load(cx, &l.error_pages),
        add_response_headers: super::check::header_pairs(cx, &l.add_response_headers),
        response_headers_always: l.response_headers_always.unwrap_or(true),
        site: super::web::pinned_site(cx, &l.site),
        max_requests_per_host: l.max_requests_per_host.filter(|n| *n > 0),
        freebind: l.freebind.unwrap_or(false),
        http3,
    })
}

/// The listener's IP:port, with a hint for the usual mistakes (`*:80`, `localhost:80`).
fn addr(cx: &mut Check<'_>, a: &SpanStr) -> Option<SocketAddr> {
    if let Ok(addr) = a.get_ref().parse::<SocketAddr>() {
        return Some(addr);
    }
    let s = a.get_ref();
    let hint = match s.rsplit_once(':') {
        Some(("*", p)) => {
            format!("; for every address write \"0.0.0.0:{p}\" (and \"[::]:{p}\" for IPv6)")
        }
        Some(("localhost", p)) => {
            format!("; write \"127.0.0.1:{p}\" (a listener takes an IP, not a name)")
        }
        _ => String::new(),
    };
    cx.err(
        a.span(),
        format!("listener addr {s:?} is not an IP:port address, e.g. \"0.0.0.0:8080\"{hint}"),
    );
    None
}

/// The listener's name (its address unless named), unique among listeners.
fn name(cx: &mut Check<'_>, l: &FileListener, addr: SocketAddr, earlier: &[Listener]) -> Arc<str> {
    let Some(n) = &l.name else {
        return addr.to_string().into();
    };
    if earlier.iter().any(|o| *o.name == **n.get_ref()) {
        cx.err(
            n.span(),
            format!("listener name `{}` is used twice", n.get_ref()),
        );
    }
    n.get_ref().as_str().into()
}

fn trusted(cx: &mut Check<'_>, l: &FileListener) -> Vec<IpNet> {
    let mut trusted = Vec::new();
    for t in &l.trusted_proxies {
        let s = t.get_ref();
        match s
            .parse::<IpNet>()
            .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        {
            Ok(n) => trusted.push(n),
            Err(_) => cx.err(
                t.span(),
                format!(
                    "trusted_proxies entry {s:?} is not an IP address or CIDR, e.g. \"10.0.0.0/8\""
                ),
            ),
        }
    }
    trusted
}

/// The listener's TLS termination, built from its certificate and key files (also
/// returned, to be watched for changes).
fn tls(cx: &mut Check<'_>, l: &FileListener) -> (Option<Arc<rustls::ServerConfig>>, Vec<PathBuf>) {
    let mut files: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut spans: Vec<(Range<usize>, Range<usize>)> = Vec::new();
    for t in &l.tls {
        let t = t.get_ref();
        files.push((
            relative(cx.path, t.cert.get_ref()),
            relative(cx.path, t.key.get_ref()),
        ));
        spans.push((t.cert.span(), t.key.span()));
    }
    let watched = files
        .iter()
        .flat_map(|(c, k)| [c.clone(), k.clone()])
        .collect();
    if files.is_empty() {
        return (None, watched);
    }
    match crate::tls::server_config(&files) {
        Ok(c) => (Some(c), watched),
        Err(e) => {
            // The caret goes to the file at fault: the key or the certificate.
            let span = spans.get(e.pair).map_or(
                0..0,
                |(c, k)| {
                    if e.in_key { k.clone() } else { c.clone() }
                },
            );
            cx.err(span, format!("TLS: {e}"));
            (None, watched)
        }
    }
}
