//! The process-wide sections: `[server]` (timeouts and limits of client connections),
//! `[log]`, `[admin]` and `[runtime]`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::check::Check;
use super::file::{FileAdmin, FileLog, FileRuntime, FileServer};
use super::*;

/// `[server]`: timeouts and limits of client connections.
pub(super) fn server(cx: &mut Check<'_>, s: &FileServer) -> ServerSettings {
    ServerSettings {
        tunnel_idle_timeout: cx.duration(
            &s.tunnel_idle_timeout,
            "tunnel_idle_timeout",
            DEFAULT_TUNNEL_IDLE_TIMEOUT,
        ),
        header_timeout: cx.duration(&s.header_timeout, "header_timeout", DEFAULT_HEADER_TIMEOUT),
        body_timeout: cx.duration(&s.body_timeout, "body_timeout", DEFAULT_BODY_TIMEOUT),
        send_timeout: cx.duration(&s.send_timeout, "send_timeout", DEFAULT_SEND_TIMEOUT),
        drain_timeout: cx.duration(&s.drain_timeout, "drain_timeout", DEFAULT_DRAIN_TIMEOUT),
        lame_duck: cx.duration(&s.lame_duck, "lame_duck", Duration::ZERO),
        max_header_bytes: header_bytes(cx, &s.max_header_bytes),
        max_uri_bytes: cx.size(&s.max_uri_bytes, "max_uri_bytes", DEFAULT_MAX_URI_BYTES),
        param_body_limit: cx.size(
            &s.param_body_limit,
            "param_body_limit",
            DEFAULT_PARAM_BODY_LIMIT,
        ),
        param_body_timeout: cx.duration(
            &s.param_body_timeout,
            "param_body_timeout",
            DEFAULT_PARAM_BODY_TIMEOUT,
        ),
        max_connections: s.max_connections.as_ref().and_then(|m| {
            if *m.get_ref() == 0 {
                cx.err(m.span(), "`max_connections` must be at least 1 (leave it out for the default, derived from the descriptor limit)");
            }
            Some(*m.get_ref()).filter(|n| *n > 0)
        }),
    }
}

/// `[log]`. Like `nginx -t`, the access log is opened (and created) now, so a path that
/// cannot be written is a config error naming it, not a failed start.
pub(super) fn log(cx: &mut Check<'_>, l: &FileLog) -> LogSettings {
    if let Some(a) = &l.access_log
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
    LogSettings {
        access_log: match l.access_log.as_ref().map(|s| s.get_ref().as_str()) {
            None | Some("stdout") => AccessLogTarget::Stdout,
            Some("off") => AccessLogTarget::Off,
            Some(p) => AccessLogTarget::File(p.into()),
        },
        access_format: l.access_format.unwrap_or_default(),
    }
}

/// `[admin]`: the API's address (off with `enabled = false`) and its bearer token.
pub(super) fn admin(cx: &mut Check<'_>, a: &FileAdmin) -> AdminSettings {
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

/// `[runtime] workers`: the machine's cores unless set.
pub(super) fn workers(cx: &mut Check<'_>, r: &FileRuntime) -> usize {
    match &r.workers {
        Some(w) if *w.get_ref() == 0 => {
            cx.err(w.span(), "`workers` must be at least 1");
            1
        }
        Some(w) => *w.get_ref(),
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

/// `[runtime] scheduler`: `"per-worker"` (the default) or `"work-stealing"`.
pub(super) fn scheduler(cx: &mut Check<'_>, r: &FileRuntime) -> Scheduler {
    match r.scheduler.as_ref().map(|s| (s, s.get_ref().as_str())) {
        Some((_, "work-stealing")) => Scheduler::WorkStealing,
        None | Some((_, "per-worker")) => Scheduler::PerWorker,
        Some((s, other)) => {
            cx.err(
                s.span(),
                format!("`scheduler` is \"work-stealing\" or \"per-worker\", not {other:?}"),
            );
            Scheduler::PerWorker
        }
    }
}

/// `[runtime] control_socket` (for `--takeover`): under systemd, in its runtime directory
/// unless set; `""` turns it off.
pub(super) fn control_socket(r: &FileRuntime) -> Option<PathBuf> {
    match &r.control_socket {
        Some(p) if p.get_ref().is_empty() => None,
        Some(p) => Some(PathBuf::from(p.get_ref())),
        None => {
            std::env::var_os("RUNTIME_DIRECTORY").map(|d| PathBuf::from(d).join("control.sock"))
        }
    }
}

/// hyper needs room for at least 8 KiB of request head.
fn header_bytes(cx: &mut Check<'_>, v: &Option<Spanned<u64>>) -> usize {
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

/// `[reload]`: watch the config file (on by default), and the debounce after a change.
pub(super) fn reload(cx: &mut Check<'_>, r: &super::file::FileReload) -> ReloadSettings {
    ReloadSettings {
        watch: r.watch.unwrap_or(true),
        debounce: cx.duration(&r.debounce, "debounce", DEFAULT_RELOAD_DEBOUNCE),
    }
}

/// `[resolver]`: DNS servers as `IP` or `IP:port` (port 53), timeout, attempts.
pub(super) fn resolver(cx: &mut Check<'_>, r: &super::file::FileResolver) -> ResolverSettings {
    let nameservers = r.nameservers.as_ref().map(|list| {
        list.iter()
            .filter_map(|n| {
                let v = n.get_ref();
                let parsed = v.parse::<SocketAddr>().ok().or_else(|| {
                    v.parse::<std::net::IpAddr>()
                        .ok()
                        .map(|ip| SocketAddr::new(ip, 53))
                });
                if parsed.is_none() {
                    cx.err(
                        n.span(),
                        format!("nameserver {v:?} is not an IP address or IP:port"),
                    );
                }
                parsed
            })
            .collect::<Vec<_>>()
    });
    let attempts = match &r.attempts {
        Some(a) if *a.get_ref() == 0 => {
            cx.err(a.span(), "`attempts` must be at least 1");
            DEFAULT_RESOLVER_ATTEMPTS
        }
        Some(a) => *a.get_ref(),
        None => DEFAULT_RESOLVER_ATTEMPTS,
    };
    ResolverSettings {
        nameservers,
        timeout: cx.duration(&r.timeout, "timeout", DEFAULT_RESOLVER_TIMEOUT),
        attempts,
    }
}
