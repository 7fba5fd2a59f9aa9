//! The `--check` summary (like `nginx -t`, but saying what the config does): listeners
//! with TLS and redirects, the admin API, the access log, pools with their health
//! checks, fallback and upstream TLS, routes in order, request classes, warnings.

use std::fmt::Write;

use super::{AccessLogTarget, Config, Listener, PoolConfig};
use crate::routing::{Action, Route};

impl Config {
    /// How the process runs its workers (applied at start).
    fn runtime_line(&self) -> String {
        let sched = match (self.workers, self.scheduler) {
            (1, _) => "one thread",
            (_, super::Scheduler::PerWorker) => "per-worker scheduler",
            (_, super::Scheduler::WorkStealing) => "work-stealing scheduler",
        };
        let n = self.workers;
        format!("{n} worker{}, {sched}", if n == 1 { "" } else { "s" })
    }

    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{}: ok", self.path.display());
        for l in &self.listeners {
            let _ = writeln!(s, "{}", listener(l));
        }
        let _ = match self.admin.addr {
            Some(a) => writeln!(s, "admin API on {a}"),
            None => writeln!(s, "admin API off"),
        };
        let _ = match &self.log.access_log {
            AccessLogTarget::Off => writeln!(s, "access log off"),
            AccessLogTarget::Stdout => writeln!(s, "access log to stdout"),
            AccessLogTarget::File(p) => writeln!(s, "access log {}", p.display()),
        };
        let _ = writeln!(s, "{}", self.runtime_line());
        if let Some(c) = &self.control_socket {
            let _ = writeln!(s, "takeover control socket {}", c.display());
        }
        for p in &self.pools {
            let _ = writeln!(s, "{}", self.pool(p));
        }
        for (i, r) in self.routes.iter().enumerate() {
            let _ = writeln!(s, "route {} {}", i + 1, self.route(r));
        }
        self.classes_summary(&mut s);
        for w in &self.warnings {
            let _ = writeln!(s, "warning: {w}");
        }
        s
    }

    fn pool(&self, p: &PoolConfig) -> String {
        let servers: Vec<String> = p
            .servers
            .iter()
            .map(|sv| format!("{} (weight {})", sv.addr, sv.weight))
            .collect();
        let mut line = format!(
            "pool {} [{}]: {}",
            p.name,
            p.balance.as_str(),
            servers.join(", ")
        );
        if !p.names.is_empty() {
            let names: Vec<String> = p.names.iter().map(ToString::to_string).collect();
            let _ = write!(line, "; names {} (resolved live)", names.join(", "));
        }
        if p.tls.is_some() {
            line.push_str("; TLS to servers");
        }
        match &p.health {
            Some(h) => {
                let _ = write!(
                    line,
                    "; health check {} {} every {:?}",
                    h.method, h.path, h.interval
                );
            }
            None => line.push_str("; passive checks only"),
        }
        if let Some(f) = p.fallback.and_then(|i| self.pools.get(i)) {
            let _ = write!(line, "; falls back to {}", f.name);
        }
        if let Some(st) = &p.sticky {
            let _ = write!(line, "; sticky by cookie {}", st.cookie);
        }
        line
    }

    fn route(&self, r: &Route) -> String {
        let pool = r
            .pool
            .and_then(|i| self.pools.get(i))
            .map_or("-", |p| &p.name);
        let what = if r.matcher.is_catch_all() {
            "every request"
        } else {
            "matching requests"
        };
        let action = match &r.action {
            Action::Proxy => format!("pool {pool}"),
            Action::Files(f) if r.pool.is_some() => format!("files {} else pool {pool}", f.root),
            Action::Files(f) => format!("files {}", f.root),
            Action::Redirect { to, status } => format!("redirect {} {to}", status.as_u16()),
        };
        let internal = if r.internal { ", internal" } else { "" };
        let class = match self.classes.get(r.class) {
            Some(c) if r.class != 0 => format!(", class {c}"),
            _ => String::new(),
        };
        format!("{} -> {action} ({what}{internal}{class})", r.name)
    }

    fn classes_summary(&self, s: &mut String) {
        for pool in &self.pools {
            for (c, rule) in self.classes.iter().zip(&pool.classes) {
                if rule.cap.is_some() || rule.priority != 0 {
                    let cap = rule
                        .cap
                        .map_or("no cap".to_owned(), |n| format!("{n} per server"));
                    let _ = writeln!(
                        s,
                        "pool {} class {c}: {cap}, priority {}",
                        pool.name, rule.priority
                    );
                }
            }
        }
    }
}

fn listener(l: &Listener) -> String {
    let mut line = format!("listener {} on {}", l.name, l.addr);
    if l.tls.is_some() {
        let files: Vec<String> = l
            .tls_files
            .iter()
            .map(|f| f.display().to_string())
            .collect();
        let _ = write!(line, " with TLS ({})", files.join(", "));
    }
    if l.redirect_https {
        line.push_str(", redirecting to https");
    }
    if let Some(site) = &l.site {
        let _ = write!(line, ", site {site}");
    }
    if l.freebind {
        line.push_str(", freebind");
    }
    if let Some(h) = &l.http3 {
        let _ = write!(
            line,
            ", HTTP/3 on udp {} (Alt-Svc ma={}s, 0-RTT {}, retry {}, {} streams)",
            l.addr,
            h.alt_svc_max_age.as_secs(),
            if h.early_data { "on" } else { "off" },
            match h.retry {
                super::QuicRetry::Auto => "auto",
                super::QuicRetry::Always => "always",
            },
            h.max_streams
        );
    }
    line
}
