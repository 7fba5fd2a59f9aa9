//! `max_requests_per_host`: at most N requests in flight per Host on a listener (nginx
//! `limit_conn` keyed by `$host`, as bench's `allow_rate_limiting` sets it to 8); the
//! rest get 503.
//!
//! Counters live in a fixed table of slots indexed by a hash of the host, so the check
//! is one atomic add, without a lock or an allocation. Two hosts that share a slot
//! (1 in 4096 per pair) share its limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

const SLOTS: usize = 4096;

/// One listener's table.
#[derive(Debug)]
pub struct HostLimit {
    max: u32,
    slots: Box<[AtomicU32]>,
}

/// A request counted against its host; released when dropped.
#[derive(Debug)]
pub struct HostSlot {
    table: Arc<HostLimit>,
    index: usize,
}

impl Drop for HostSlot {
    fn drop(&mut self) {
        if let Some(s) = self.table.slots.get(self.index) {
            s.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl HostLimit {
    pub fn new(max: u32) -> Arc<Self> {
        Arc::new(HostLimit {
            max,
            slots: (0..SLOTS).map(|_| AtomicU32::new(0)).collect(),
        })
    }

    /// Count one more request for `host`, or `None` when the host is at its limit.
    pub fn acquire(self: &Arc<Self>, host: &str) -> Option<HostSlot> {
        let index = slot_of(host);
        let slot = self.slots.get(index)?;
        if slot.fetch_add(1, Ordering::AcqRel) >= self.max {
            slot.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(HostSlot {
            table: Arc::clone(self),
            index,
        })
    }
}

/// FNV-1a of the lower-cased host.
fn slot_of(host: &str) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in host.bytes() {
        h ^= u64::from(b.to_ascii_lowercase());
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    (h % SLOTS as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_host_and_releases() {
        let t = HostLimit::new(2);
        let a1 = t.acquire("a.test");
        let a2 = t.acquire("A.test");
        assert!(a1.is_some() && a2.is_some());
        assert!(t.acquire("a.test").is_none());
        drop(a1);
        assert!(t.acquire("a.test").is_some());
    }
}
