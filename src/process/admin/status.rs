//! The JSON the admin API shows: every pool and server (`GET /upstreams`) and the
//! config's generation and last reload error (`GET /config`).

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::process::trigger::Reloads;
use crate::state::Snapshot;
use crate::upstream::{Endpoint, Pool};

/// `GET /config`: the file, its generation and the last reload error.
pub(super) fn config_status(reloads: &Reloads) -> Value {
    let Some(st) = reloads.status() else {
        return json!({"error": "status unavailable"});
    };
    json!({
        "path": st.path.display().to_string(),
        "pid": std::process::id(),
        "generation": st.generation,
        "loaded_at": rfc3339(st.loaded_at),
        "last_error": st.last_error,
        "last_error_at": st.last_error_at.map(rfc3339),
        "reload_failures": st.failures,
    })
}

/// A time as RFC 3339 in UTC with milliseconds (`2026-11-30T18:54:35.123Z`), as log
/// tools and people read it.
fn rfc3339(t: SystemTime) -> String {
    let ms = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    at.format(time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    ))
    .unwrap_or_default()
}

/// A server name: its current addresses, TTL, last resolution and last error.
fn name(n: &crate::config::NameConfig, st: Option<&crate::resolve::NameStatus>) -> Value {
    let rfc = |t: std::time::SystemTime| humantime::format_rfc3339_millis(t).to_string();
    json!({
        "name": n.to_string(),
        "addresses": st.map(|s| s.addrs.iter().map(|a| a.addr.to_string()).collect::<Vec<_>>()).unwrap_or_default(),
        "ttl_secs": st.and_then(|s| s.ttl).map(|t| t.as_secs()),
        "resolved_at": st.and_then(|s| s.resolved_at).map(rfc),
        "last_error": st.and_then(|s| s.last_error.clone()),
    })
}

/// `GET /upstreams`: every pool and server.
pub(super) fn upstreams(snap: &Snapshot, names: &crate::resolve::Table) -> Value {
    let names = names.lock().map(|t| t.clone()).unwrap_or_default();
    let pools: Vec<Value> = snap
        .pools
        .iter()
        .map(|p| {
            let view = snap.view(p.index);
            let servers: Vec<Value> = p
                .endpoints
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let in_rotation = view.is_some_and(|v| v.eligible.contains(&i));
                    server(snap, p, e, in_rotation)
                })
                .collect();
            json!({
                "pool": &*p.name,
                "balance": p.cfg.balance.as_str(),
                "active_checks": p.cfg.health.is_some(),
                "panic": view.is_some_and(|v| v.panic),
                "fallback": p.cfg.fallback.and_then(|f| snap.pools.get(f)).map(|f| &*f.name),
                "max_connections": p.cfg.max_connections,
                "limit": if p.cfg.adaptive { "adaptive" } else { "static" },
                "queued": p.admission.waiting(),
                "classes": classes(snap, p),
                "names": p.cfg.names.iter().map(|n| name(n, names.get(&(p.name.clone(), n.clone())))).collect::<Vec<_>>(),
                "servers": servers,
            })
        })
        .collect();
    json!({"generation": snap.generation, "pools": pools})
}

/// One server of `GET /upstreams`: its health, probes, ejections and counters.
fn server(snap: &Snapshot, p: &Pool, e: &Endpoint, in_rotation: bool) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let st = e.stats.status();
    let s = &e.stats;
    json!({
        "server": e.addr.to_string(),
        "weight": e.weight,
        "state": st.state.as_str(),
        "in_rotation": in_rotation,
        "last_probe": st.last_probe.as_ref().map(|pr| json!({
            "at": rfc3339(pr.at), "ok": pr.ok, "latency_ms": pr.latency.as_secs_f64() * 1e3, "detail": pr.detail,
        })),
        "consecutive_successes": st.probe_successes,
        "consecutive_failures": st.probe_failures,
        "passive_consecutive_failures": s.consecutive_failures.load(Relaxed),
        "ejections": st.ejections,
        "ejected_until": st.ejected_until.map(rfc3339),
        "in_flight": e.in_flight(),
        "limit": p.admission.limit(e),
        "class_in_flight": snap.classes.iter().zip(e.class_in_flight.iter())
            .map(|(c, n)| (c.to_string(), json!(n.load(Relaxed))))
            .collect::<serde_json::Map<String, Value>>(),
        "requests": s.requests.load(Relaxed),
        "errors": s.errors.load(Relaxed),
        "latency_ewma_ms": s.ewma_us() / 1e3,
    })
}

/// Per class of a pool: priority, cap per server, waiting now, refused so far.
fn classes(snap: &Snapshot, p: &Pool) -> Vec<Value> {
    use std::sync::atomic::Ordering::Relaxed;
    snap.classes
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({
                "class": &**c,
                "priority": p.cfg.classes.get(i).map_or(0, |r| r.priority),
                "cap": p.admission.cap(i),
                "queued": p.admission.queued.get(i).map_or(0, |n| n.load(Relaxed)),
                "rejected": p.admission.rejected.get(i).map_or(0, |n| n.load(Relaxed)),
            })
        })
        .collect()
}
