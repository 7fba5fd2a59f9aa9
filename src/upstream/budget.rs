//! Retry budget (Finagle/linkerd style): retries may add at most `ratio` of a pool's
//! requests over the last 10 s, plus `min_per_sec`, so a sick pool is not hammered
//! twice. Ten one-second buckets of atomics; no locks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

const BUCKETS: usize = 10;

#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    min_per_sec: u32,
    start: Instant,
    /// Per bucket: (second the bucket belongs to, requests, retries).
    epochs: [AtomicU64; BUCKETS],
    requests: [AtomicU64; BUCKETS],
    retries: [AtomicU64; BUCKETS],
}

impl RetryBudget {
    pub fn new(ratio: f64, min_per_sec: u32) -> Self {
        RetryBudget {
            ratio,
            min_per_sec,
            start: Instant::now(),
            epochs: Default::default(),
            requests: Default::default(),
            retries: Default::default(),
        }
    }

    fn bucket(&self) -> usize {
        let sec = self.start.elapsed().as_secs() + 1;
        let i = (sec % BUCKETS as u64) as usize;
        let old = self.epochs[i].load(Ordering::Relaxed);
        if old != sec
            && self.epochs[i]
                .compare_exchange(old, sec, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.requests[i].store(0, Ordering::Relaxed);
            self.retries[i].store(0, Ordering::Relaxed);
        }
        i
    }

    /// Count one first attempt.
    pub fn record_request(&self) {
        let i = self.bucket();
        self.requests[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Take one retry from the budget, if there is room.
    pub fn try_retry(&self) -> bool {
        let cur = self.bucket();
        let now = self.epochs[cur].load(Ordering::Relaxed);
        let live =
            |j: usize| now.saturating_sub(self.epochs[j].load(Ordering::Relaxed)) < BUCKETS as u64;
        let (mut reqs, mut rets) = (0u64, 0u64);
        for j in 0..BUCKETS {
            if live(j) {
                reqs += self.requests[j].load(Ordering::Relaxed);
                rets += self.retries[j].load(Ordering::Relaxed);
            }
        }
        let allowed = reqs as f64 * self.ratio + f64::from(self.min_per_sec) * BUCKETS as f64;
        if (rets as f64) < allowed {
            self.retries[cur].fetch_add(1, Ordering::Relaxed);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_allows_ratio_plus_minimum() {
        let b = RetryBudget::new(0.2, 1);
        for _ in 0..100 {
            b.record_request();
        }
        // 100 × 0.2 + 1/s × 10 s = 30 retries.
        let granted = (0..100).filter(|_| b.try_retry()).count();
        assert_eq!(granted, 30);
        let none = RetryBudget::new(0.0, 0);
        assert!(!none.try_retry());
    }
}
