//! The process's descriptor limit and the client connection cap it implies. At start
//! the soft `RLIMIT_NOFILE` is raised to the hard limit (as Go and HAProxy do): under
//! systemd the soft limit is 1024, about 500 proxied connections. Each proxied client
//! connection may hold two descriptors (its own and one to an app server), and the
//! process needs some for listeners, health checks, resolution and logs: the default
//! `[server] max_connections` is what is left, halved.

use rustix::process::{Resource, getrlimit, setrlimit};

/// Descriptors kept for everything that is not a client connection or its upstream.
pub const RESERVED: u64 = 64;

/// The soft descriptor limit after raising it to the hard one: (before, now).
pub fn raise_nofile() -> (u64, u64) {
    let mut lim = getrlimit(Resource::Nofile);
    let before = lim.current.unwrap_or(u64::MAX);
    if lim.current != lim.maximum {
        lim.current = lim.maximum;
        if setrlimit(Resource::Nofile, lim).is_err() {
            return (before, before);
        }
    }
    (
        before,
        getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX),
    )
}

/// The soft descriptor limit now.
pub fn nofile() -> u64 {
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// The client connections `nofile` descriptors can carry with their upstream ones.
pub fn capacity(nofile: u64) -> usize {
    let n = nofile.saturating_sub(RESERVED) / 2;
    usize::try_from(n).unwrap_or(usize::MAX).max(1)
}

/// The cap in force: the configured one, else the capacity of the limit.
pub fn connection_cap(configured: Option<usize>) -> usize {
    configured.unwrap_or_else(|| capacity(nofile()))
}

/// `--check`: the limit, the capacity it implies, and a warning when the config asks
/// for more than fits.
pub fn check_lines(configured: Option<usize>, upstream_idle: usize) -> Vec<String> {
    let (_, n) = raise_nofile();
    let cap = capacity(n);
    let mut out = vec![format!(
        "descriptors: {n} (the soft limit raised to the hard one) -> about {cap} client connections with their upstream connections"
    )];
    if let Some(m) = configured.filter(|m| *m > cap) {
        out.push(format!("warning: [server] max_connections {m} does not fit {n} descriptors (about {cap}); raise LimitNOFILE (systemd) or ulimit -n"));
    }
    if u64::try_from(upstream_idle).unwrap_or(u64::MAX) > n / 2 {
        out.push(format!("warning: the pools may keep {upstream_idle} idle upstream connections (keepalive x servers), more than half of {n} descriptors"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_room_for_upstreams_and_the_process() {
        assert_eq!(capacity(1024), 480);
        assert_eq!(capacity(65_536), 32_736);
        assert_eq!(capacity(10), 1);
        assert_eq!(connection_cap(Some(7)), 7);
    }
}
