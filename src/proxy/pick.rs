//! Choosing the server for an attempt: the pool's balancer over the servers not yet
//! tried, and, with `max_connections`, a bounded wait for a server with room.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::header;
use http::request::Parts;
use tokio::time::Instant;

use crate::config::HashKey;
use crate::upstream::{PickKey, Pool};

/// Pick a server; with `max_connections`, the first attempt may wait in a bounded queue.
pub(super) async fn wait_pick(
    pool: &Pool,
    view: &crate::upstream::PoolView,
    key: PickKey,
    tried: &[usize],
    may_wait: bool,
) -> Option<usize> {
    let find = |p: &Pool| {
        p.pick(view, key, tried)
            .and_then(|e| p.endpoints.iter().position(|x| Arc::ptr_eq(x, e)))
    };
    if let Some(i) = find(pool) {
        return Some(i);
    }
    if !may_wait || pool.cfg.max_connections.is_none() || view.is_empty() {
        return None;
    }
    Box::pin(queue(pool, find)).await
}

/// Wait in the pool's bounded queue for a server with room.
async fn queue(pool: &Pool, find: impl Fn(&Pool) -> Option<usize>) -> Option<usize> {
    if pool.queued.fetch_add(1, Ordering::AcqRel) >= pool.cfg.queue_size {
        pool.queued.fetch_sub(1, Ordering::AcqRel);
        return None;
    }
    let deadline = Instant::now() + pool.cfg.queue_timeout;
    let found = loop {
        let freed = pool.freed.notified();
        tokio::pin!(freed);
        freed.as_mut().enable();
        if let Some(i) = find(pool) {
            break Some(i);
        }
        if tokio::time::timeout_at(deadline, freed).await.is_err() {
            break None;
        }
    };
    pool.queued.fetch_sub(1, Ordering::AcqRel);
    found
}

pub(super) fn pick_key(pool: &Pool, parts: &Parts, peer: SocketAddr) -> PickKey {
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
