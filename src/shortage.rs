//! The proxy's own shortages: out of file descriptors (`EMFILE`, `ENFILE`), of local
//! ports (`EADDRNOTAVAIL`), or of kernel memory (`ENOBUFS`, `ENOMEM`). An upstream
//! connect or an accept that fails for one of these says nothing about the app server
//! or the client: it is answered 503 with `Retry-After`, never fed to passive health,
//! never retried on another server (which would spread the failure), counted
//! (`switchyard_shortages_total{kind,at}`) and logged once a second per kind with how
//! many times it happened, not once per request.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// What the proxy ran out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shortage {
    Descriptors,
    Ports,
    Memory,
}

impl Shortage {
    /// The shortage an I/O error stands for, if it is one.
    pub fn of(e: &std::io::Error) -> Option<Shortage> {
        match e.raw_os_error()? {
            libc_errno::EMFILE | libc_errno::ENFILE => Some(Shortage::Descriptors),
            libc_errno::EADDRNOTAVAIL => Some(Shortage::Ports),
            libc_errno::ENOBUFS | libc_errno::ENOMEM => Some(Shortage::Memory),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Shortage::Descriptors => "descriptors",
            Shortage::Ports => "ports",
            Shortage::Memory => "memory",
        }
    }

    /// What the client is told.
    pub fn message(self) -> &'static str {
        match self {
            Shortage::Descriptors => "the proxy is out of file descriptors",
            Shortage::Ports => "the proxy is out of local ports for upstream connections",
            Shortage::Memory => "the proxy is out of kernel memory for sockets",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Linux's numbers (the only platform switchyard ships for).
mod libc_errno {
    pub const ENOMEM: i32 = 12;
    pub const ENFILE: i32 = 23;
    pub const EMFILE: i32 = 24;
    pub const EADDRNOTAVAIL: i32 = 99;
    pub const ENOBUFS: i32 = 105;
}

/// Where a shortage struck.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// Connecting to an app server.
    Upstream,
    /// Accepting a client connection.
    Accept,
}

impl At {
    pub fn as_str(self) -> &'static str {
        match self {
            At::Upstream => "upstream_connect",
            At::Accept => "accept",
        }
    }
}

/// Per kind: the second of the last log line, and the count since.
static LAST: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];
static SINCE: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];
/// Per place and kind, since start (the metric).
static TOTAL: [[AtomicU64; 3]; 2] = [const { [const { AtomicU64::new(0) }; 3] }; 2];

/// Every (place, kind, count since start), for `/metrics`.
pub fn totals() -> Vec<(At, Shortage, u64)> {
    let mut out = Vec::new();
    for at in [At::Upstream, At::Accept] {
        for kind in [Shortage::Descriptors, Shortage::Ports, Shortage::Memory] {
            let n = TOTAL[at as usize][kind.index()].load(Ordering::Relaxed);
            out.push((at, kind, n));
        }
    }
    out
}

fn seconds() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs() + 1
}

/// Note one shortage `at` a place: a warning at most once a
/// second per kind, with the count since the last one.
pub fn note(kind: Shortage, at: At, error: &std::io::Error) {
    let i = kind.index();
    SINCE[i].fetch_add(1, Ordering::Relaxed);
    TOTAL[at as usize][i].fetch_add(1, Ordering::Relaxed);
    let now = seconds();
    let last = LAST[i].load(Ordering::Relaxed);
    if now > last
        && LAST[i]
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        let count = SINCE[i].swap(0, Ordering::Relaxed).max(1);
        tracing::warn!(kind = kind.as_str(), at = at.as_str(), count, %error, "the proxy itself is short of resources: answering 503, not blaming the app servers");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_proxys_own_shortages_count() {
        let e = |n| std::io::Error::from_raw_os_error(n);
        assert_eq!(Shortage::of(&e(24)), Some(Shortage::Descriptors));
        assert_eq!(Shortage::of(&e(23)), Some(Shortage::Descriptors));
        assert_eq!(Shortage::of(&e(99)), Some(Shortage::Ports));
        assert_eq!(Shortage::of(&e(105)), Some(Shortage::Memory));
        assert_eq!(
            Shortage::of(&e(111)),
            None,
            "connection refused is the server's"
        );
        assert_eq!(Shortage::of(&std::io::Error::other("x")), None);
    }
}
