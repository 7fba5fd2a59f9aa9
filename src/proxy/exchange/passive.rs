//! Passive health: each upstream answer or failure is reported to the server's
//! counters, and a server past its pool's limits is reported to the health manager
//! for ejection.

use std::sync::atomic::Ordering;

use http::StatusCode;

use crate::health::Event;
use crate::proxy::error::ProxyError;
use crate::proxy::request::Ctx;
use crate::upstream::{Endpoint, Pool};

pub(crate) fn success(pool: &Pool, e: &Endpoint, status: StatusCode, cx: &Ctx<'_>) {
    let s = &e.stats;
    s.requests.fetch_add(1, Ordering::Relaxed);
    if s.consecutive_failures.load(Ordering::Relaxed) != 0 {
        s.consecutive_failures.store(0, Ordering::Relaxed);
    }
    let limit = pool.cfg.passive.eject_after_5xx;
    if status.is_server_error() {
        s.errors.fetch_add(1, Ordering::Relaxed);
        if limit > 0
            && s.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1 >= limit
            && !s.eject_pending.swap(true, Ordering::AcqRel)
        {
            cx.shared.events.send(Event::Eject {
                pool: pool.name.clone(),
                addr: e.addr,
                reason: "consecutive 5xx",
            });
        }
    } else if s.consecutive_5xx.load(Ordering::Relaxed) != 0 {
        s.consecutive_5xx.store(0, Ordering::Relaxed);
    }
}

pub(crate) fn failure(pool: &Pool, e: &Endpoint, err: &ProxyError, cx: &Ctx<'_>) {
    let s = &e.stats;
    if !pool.cfg.names.is_empty() && matches!(err, ProxyError::Connect(_)) {
        // The name may have moved: resolve it again soon (the resolver rate-limits).
        cx.shared.events.send(Event::Refused {
            pool: pool.name.clone(),
        });
    }
    let n = s.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
    if n >= pool.cfg.passive.eject_after && !s.eject_pending.swap(true, Ordering::AcqRel) {
        let reason = match err {
            ProxyError::Connect(_) => "connect failures",
            ProxyError::Timeout => "timeouts",
            _ => "connection failures",
        };
        cx.shared.events.send(Event::Eject {
            pool: pool.name.clone(),
            addr: e.addr,
            reason,
        });
    }
}
