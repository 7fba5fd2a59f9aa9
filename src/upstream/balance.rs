//! Balancing over the eligible servers of a published [`PoolView`]. Picks are lock-free:
//! round robin walks a precomputed smooth weighted schedule with one atomic counter;
//! least_conn and random_two read in-flight counters (random_two also the latency EWMA,
//! the "peak EWMA" idea); hash walks a consistent-hash ring, so a server leaving moves
//! only its own share of keys. The random source is injected so tests are seeded.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use super::Endpoint;
use crate::config::Balance;

/// Ring points per unit of weight.
const VNODES: u32 = 40;

/// What `balance = "hash"` hashes for this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PickKey {
    None,
    Hash(u64),
    /// The server a sticky cookie names: taken while eligible and with room, else
    /// the balancer chooses.
    Server(usize),
}

/// Which servers of a pool may take traffic now, with their effective weights.
#[derive(Debug, Clone, Default)]
pub struct PoolView {
    /// Indices of eligible endpoints.
    pub eligible: Vec<usize>,
    /// Effective weight of each eligible endpoint (same order; slow start lowers it).
    weights: Vec<u32>,
    /// One period of smooth weighted round robin, as endpoint indices.
    schedule: Vec<usize>,
    /// (point, endpoint index), sorted by point.
    ring: Vec<(u64, usize)>,
    /// Panic mode: servers failing their checks are in `eligible` too.
    pub panic: bool,
}

pub fn hash_of(v: impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

impl PoolView {
    /// `eligible`: (endpoint index, effective weight ≥ 1).
    pub fn new(balance: Balance, eligible: Vec<(usize, u32)>, eps: &[Arc<Endpoint>]) -> Self {
        let weights: Vec<u32> = eligible.iter().map(|e| e.1.max(1)).collect();
        let idx: Vec<usize> = eligible.iter().map(|e| e.0).collect();
        let schedule = match balance {
            Balance::RoundRobin => smooth_schedule(&weights)
                .into_iter()
                .filter_map(|k| idx.get(k).copied())
                .collect(),
            _ => Vec::new(),
        };
        let mut ring = Vec::new();
        if balance == Balance::Hash {
            for (&i, &w) in idx.iter().zip(&weights) {
                let Some(e) = eps.get(i) else { continue };
                for v in 0..VNODES * w.min(100) {
                    ring.push((hash_of((e.addr, v)), i));
                }
            }
            ring.sort_unstable();
        }
        PoolView {
            eligible: idx,
            weights,
            schedule,
            ring,
            panic: false,
        }
    }

    /// Mark the view as built in panic mode.
    pub fn in_panic(mut self, panic: bool) -> Self {
        self.panic = panic;
        self
    }

    pub fn is_empty(&self) -> bool {
        self.eligible.is_empty()
    }

    fn weight_of(&self, i: usize) -> f64 {
        let w = self
            .eligible
            .iter()
            .position(|&e| e == i)
            .and_then(|k| self.weights.get(k))
            .copied()
            .unwrap_or(1);
        f64::from(w.max(1))
    }

    /// Index of the chosen endpoint among those `ok` accepts. `rotate` is a per-pool
    /// counter; `rand(n)` returns a number in `0..n`.
    pub fn pick(
        &self,
        balance: Balance,
        eps: &[Arc<Endpoint>],
        rotate: usize,
        key: PickKey,
        ok: &dyn Fn(usize) -> bool,
        rand: &mut dyn FnMut(usize) -> usize,
    ) -> Option<usize> {
        if self.eligible.is_empty() {
            return None;
        }
        let load = |i: usize| {
            eps.get(i)
                .map_or(f64::MAX, |e| e.in_flight() as f64 / self.weight_of(i))
        };
        if let PickKey::Server(i) = key
            && self.eligible.contains(&i)
            && ok(i)
        {
            return Some(i);
        }
        match (balance, key) {
            (Balance::RoundRobin, _) => {
                let n = self.schedule.len();
                (0..n)
                    .map(|k| self.schedule[(rotate + k) % n])
                    .find(|&i| ok(i))
            }
            (Balance::Hash, PickKey::Hash(h)) if !self.ring.is_empty() => {
                let start = self.ring.partition_point(|p| p.0 < h);
                let n = self.ring.len();
                (0..n)
                    .map(|k| self.ring[(start + k) % n].1)
                    .find(|&i| ok(i))
            }
            (Balance::RandomTwo, _) => self.random_two(eps, ok, rand),
            // least_conn, and hash without a key: fewest in flight per weight, ties rotate.
            _ => {
                let n = self.eligible.len();
                (0..n)
                    .map(|k| self.eligible[(rotate + k) % n])
                    .filter(|&i| ok(i))
                    .min_by(|&a, &b| load(a).total_cmp(&load(b)))
            }
        }
    }

    /// Power of two choices over (in-flight + 1) × latency EWMA per weight.
    fn random_two(
        &self,
        eps: &[Arc<Endpoint>],
        ok: &dyn Fn(usize) -> bool,
        rand: &mut dyn FnMut(usize) -> usize,
    ) -> Option<usize> {
        let cands: Vec<usize> = self.eligible.iter().copied().filter(|&i| ok(i)).collect();
        // Latency weighs in only when both servers have been measured: an
        // unmeasured one (new, or all its requests still in flight) must not look
        // infinitely fast.
        let lat = |i: usize| eps.get(i).map_or(0.0, |e| e.stats.ewma_us());
        let score = |i: usize, latency: bool| {
            eps.get(i).map_or(f64::MAX, |e| {
                let l = if latency { lat(i) } else { 1.0 };
                (e.in_flight() as f64 + 1.0) * l / self.weight_of(i)
            })
        };
        match cands.len() {
            0 => None,
            1 => Some(cands[0]),
            n => {
                let a = rand(n);
                let b = (a + 1 + rand(n - 1)) % n;
                let (a, b) = (cands[a], cands[b]);
                let both = lat(a) > 0.0 && lat(b) > 0.0;
                Some(if score(b, both) < score(a, both) {
                    b
                } else {
                    a
                })
            }
        }
    }
}

/// One period of smooth weighted round robin (weights reduced by their gcd), as
/// positions into `weights`.
fn smooth_schedule(weights: &[u32]) -> Vec<usize> {
    let g = weights.iter().copied().fold(0, gcd).max(1);
    let w: Vec<i64> = weights.iter().map(|&x| i64::from(x / g)).collect();
    let total: i64 = w.iter().sum();
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        for (c, wi) in current.iter_mut().zip(&w) {
            *c += wi;
        }
        let best = (0..w.len()).max_by_key(|&i| (current[i], std::cmp::Reverse(i)));
        if let Some(best) = best {
            current[best] -= total;
            out.push(best);
        }
    }
    out
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::EndpointStats;

    fn eps(n: usize) -> Vec<Arc<Endpoint>> {
        (0..n)
            .map(|i| {
                Arc::new(Endpoint::new(
                    ([127, 0, 0, 1], 1000 + i as u16).into(),
                    1,
                    Arc::new(EndpointStats::default()),
                ))
            })
            .collect()
    }

    fn all(_: usize) -> bool {
        true
    }

    #[test]
    fn smooth_schedule_interleaves_like_nginx() {
        // nginx's documented example: weights 5,1,1 → a a b a c a a.
        assert_eq!(smooth_schedule(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_schedule(&[2, 2]), vec![0, 1]);
    }

    #[test]
    fn round_robin_spreads_by_weight_over_eligible_only() {
        let e = eps(3);
        let v = PoolView::new(Balance::RoundRobin, vec![(0, 1), (2, 2)], &e);
        let mut hits = [0; 3];
        for r in 0..300 {
            hits[v
                .pick(Balance::RoundRobin, &e, r, PickKey::None, &all, &mut |_| 0)
                .expect("an eligible endpoint")] += 1;
        }
        assert_eq!(hits, [100, 0, 200]);
        let none = PoolView::new(Balance::RoundRobin, vec![], &e);
        assert_eq!(
            none.pick(Balance::RoundRobin, &e, 0, PickKey::None, &all, &mut |_| 0),
            None
        );
    }

    #[test]
    fn exclusions_are_skipped() {
        let e = eps(3);
        let v = PoolView::new(Balance::RoundRobin, vec![(0, 1), (1, 1), (2, 1)], &e);
        for r in 0..10 {
            let got = v
                .pick(
                    Balance::RoundRobin,
                    &e,
                    r,
                    PickKey::None,
                    &|i| i != 1,
                    &mut |_| 0,
                )
                .expect("an eligible endpoint");
            assert_ne!(got, 1);
        }
    }

    #[test]
    fn least_conn_prefers_idle() {
        let e = eps(3);
        e[0].stats
            .in_flight
            .store(2, std::sync::atomic::Ordering::Relaxed);
        e[1].stats
            .in_flight
            .store(1, std::sync::atomic::Ordering::Relaxed);
        let v = PoolView::new(Balance::LeastConn, vec![(0, 1), (1, 1), (2, 1)], &e);
        for r in 0..5 {
            assert_eq!(
                v.pick(Balance::LeastConn, &e, r, PickKey::None, &all, &mut |_| 0),
                Some(2)
            );
        }
    }

    #[test]
    fn random_two_is_seeded_and_prefers_less_loaded() {
        let e = eps(2);
        e[0].stats
            .in_flight
            .store(3, std::sync::atomic::Ordering::Relaxed);
        let v = PoolView::new(Balance::RandomTwo, vec![(0, 1), (1, 1)], &e);
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20 {
            assert_eq!(
                v.pick(Balance::RandomTwo, &e, 0, PickKey::None, &all, &mut |n| rng
                    .usize(..n)),
                Some(1)
            );
        }
    }

    #[test]
    fn hash_is_sticky_and_moves_only_the_leaving_share() {
        let e = eps(4);
        let full = PoolView::new(Balance::Hash, (0..4).map(|i| (i, 1)).collect(), &e);
        let less = PoolView::new(Balance::Hash, vec![(0, 1), (1, 1), (2, 1)], &e);
        let (mut moved, mut on3) = (0, 0);
        for k in 0..2000u64 {
            let key = PickKey::Hash(hash_of(k));
            let a = full
                .pick(Balance::Hash, &e, 0, key, &all, &mut |_| 0)
                .expect("an eligible endpoint");
            assert_eq!(
                full.pick(Balance::Hash, &e, 99, key, &all, &mut |_| 0),
                Some(a),
                "sticky"
            );
            let b = less
                .pick(Balance::Hash, &e, 0, key, &all, &mut |_| 0)
                .expect("an eligible endpoint");
            if a == 3 {
                on3 += 1;
            } else if a != b {
                moved += 1;
            }
        }
        assert_eq!(moved, 0, "keys of servers that stayed must not move");
        assert!((300..700).contains(&on3), "{on3}");
    }
}
