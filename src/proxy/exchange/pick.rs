//! Choosing the server for an attempt: the pool's balancer over the servers not yet
//! tried with room for the request's class, and, when they are full, a place in the
//! pool's queue.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header;
use http::request::Parts;

use crate::config::HashKey;
use crate::proxy::error::ProxyError;
use crate::proxy::request::Meta;
use crate::upstream::{Endpoint, InFlight, PickKey, Pool, PoolView, Refusal};

/// Reserve a server for an attempt: the balancer's choice among the servers with room
/// for the request's class. The first attempt may wait in the pool's queue when
/// servers or the class are full (see `upstream::admit`); it queues at once, behind
/// the others, when others already wait. `Ok(None)`: no server can take it.
pub(crate) async fn admit(
    pool: &Pool,
    view: &PoolView,
    (key, class): (PickKey, usize),
    tried: &[usize],
    may_wait: bool,
    meta: &mut Meta,
) -> Result<Option<InFlight>, ProxyError> {
    let adm = &pool.admission;
    if !(may_wait && adm.must_queue()) {
        // A server picked may fill up before it is reserved; pick again then.
        for _ in 0..3 {
            let Some(e) = pool.pick(view, key, tried, class) else {
                break;
            };
            if let Some(g) = adm.try_admit(e, class) {
                return Ok(Some(g));
            }
        }
    }
    if !may_wait || !adm.limited() || view.is_empty() {
        return Ok(None);
    }
    let servers: Vec<Arc<Endpoint>> = view
        .eligible
        .iter()
        .filter(|i| !tried.contains(i))
        .filter_map(|&i| pool.endpoints.get(i).cloned())
        .collect();
    match Box::pin(adm.wait(class, &servers)).await {
        Ok((grant, waited)) => {
            meta.queue_wait = Some(waited);
            if waited >= LONG_WAIT {
                tracing::info!(pool = %pool.name, class, waited = ?waited, "request waited long for a place on a server");
            }
            Ok(Some(grant))
        }
        Err(why) => {
            let what = match why {
                Refusal::QueueFull => "the queue is full",
                Refusal::Timeout => "waited queue_timeout for a place",
            };
            tracing::warn!(pool = %pool.name, class, reason = what, "request refused by the pool's limits");
            Err(ProxyError::Limited { why })
        }
    }
}

/// A wait at least this long is logged.
const LONG_WAIT: Duration = Duration::from_secs(1);

/// What steers the pick: a valid sticky cookie, else the hash key of `balance = "hash"`.
pub(crate) fn pick_key(pool: &Pool, parts: &Parts, peer: SocketAddr) -> PickKey {
    if let Some(i) = pool.sticky_server(&parts.headers) {
        return PickKey::Server(i);
    }
    if pool.cfg.balance != crate::config::Balance::Hash {
        return PickKey::None;
    }
    let ip = crate::upstream::hash_of(peer.ip().to_canonical());
    PickKey::Hash(match &pool.cfg.hash_key {
        HashKey::ClientIp => ip,
        HashKey::Header(h) => parts
            .headers
            .get(h)
            .map_or(ip, |v| crate::upstream::hash_of(v.as_bytes())),
        HashKey::Cookie(name) => parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| k == name)
            .map_or(ip, |(_, v)| crate::upstream::hash_of(v)),
    })
}

/// The `Set-Cookie` of a sticky pool for an answer from server `chosen`, unless the
/// request's cookie already names it.
pub(crate) fn sticky_cookie(
    pool: &Pool,
    key: PickKey,
    chosen: usize,
    https: bool,
) -> Option<http::HeaderValue> {
    if key == PickKey::Server(chosen) {
        return None;
    }
    let c = pool.endpoints.get(chosen)?.sticky.as_ref()?;
    Some(c.header(https).clone())
}
