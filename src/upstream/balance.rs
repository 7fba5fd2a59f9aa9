//! Balancing policies. `pick` is lock-free: round robin walks a precomputed smooth
//! weighted schedule with one atomic counter; least_conn and random_two read the
//! endpoints' in-flight counters. The random source is injected so tests are seeded.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::Endpoint;
use crate::config::Balance;

#[derive(Debug)]
pub enum Balancer {
    /// nginx's smooth weighted round robin, unrolled once into `schedule` (indices into
    /// the endpoint list) so a pick is one `fetch_add`.
    RoundRobin {
        schedule: Vec<usize>,
        next: AtomicUsize,
    },
    /// Fewest in-flight requests per unit of weight; ties rotate.
    LeastConn { next: AtomicUsize },
    /// Two random endpoints, the one with fewer in-flight requests per weight wins.
    RandomTwo,
}

impl Balancer {
    pub fn new(policy: Balance, weights: &[u32]) -> Self {
        match policy {
            Balance::RoundRobin => Balancer::RoundRobin {
                schedule: smooth_schedule(weights),
                next: AtomicUsize::new(0),
            },
            Balance::LeastConn => Balancer::LeastConn {
                next: AtomicUsize::new(0),
            },
            Balance::RandomTwo => Balancer::RandomTwo,
        }
    }

    /// Index of the chosen endpoint, `None` for an empty pool. `rand(n)` returns a
    /// number in `0..n`.
    pub fn pick(
        &self,
        eps: &[Arc<Endpoint>],
        rand: &mut dyn FnMut(usize) -> usize,
    ) -> Option<usize> {
        if eps.is_empty() {
            return None;
        }
        match self {
            Balancer::RoundRobin { schedule, next } => {
                let n = next.fetch_add(1, Ordering::Relaxed);
                schedule.get(n % schedule.len().max(1)).copied()
            }
            Balancer::LeastConn { next } => {
                let start = next.fetch_add(1, Ordering::Relaxed);
                (0..eps.len())
                    .map(|k| (start + k) % eps.len())
                    .min_by(|&a, &b| load(&eps[a]).total_cmp(&load(&eps[b])))
            }
            Balancer::RandomTwo => {
                if eps.len() == 1 {
                    return Some(0);
                }
                let a = rand(eps.len());
                let b = (a + 1 + rand(eps.len() - 1)) % eps.len();
                Some(if load(&eps[b]) < load(&eps[a]) { b } else { a })
            }
        }
    }
}

/// In-flight requests per unit of weight.
fn load(e: &Endpoint) -> f64 {
    e.in_flight() as f64 / f64::from(e.weight.max(1))
}

/// One period of smooth weighted round robin (weights reduced by their gcd).
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

    fn eps(weights: &[u32]) -> Vec<Arc<Endpoint>> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Arc::new(Endpoint::new(([127, 0, 0, 1], 1000 + i as u16).into(), w)))
            .collect()
    }

    #[test]
    fn smooth_schedule_interleaves_like_nginx() {
        // nginx's documented example: weights 5,1,1 → a a b a c a a.
        assert_eq!(smooth_schedule(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_schedule(&[2, 2]), vec![0, 1]);
    }

    #[test]
    fn round_robin_spreads_by_weight() {
        let e = eps(&[1, 2]);
        let b = Balancer::new(Balance::RoundRobin, &[1, 2]);
        let mut hits = [0; 2];
        for _ in 0..300 {
            hits[b.pick(&e, &mut |_| 0).unwrap()] += 1;
        }
        assert_eq!(hits, [100, 200]);
    }

    #[test]
    fn least_conn_prefers_idle() {
        let e = eps(&[1, 1, 1]);
        let _busy0 = e[0].acquire();
        let _busy1 = e[1].acquire();
        let b = Balancer::new(Balance::LeastConn, &[1, 1, 1]);
        for _ in 0..5 {
            assert_eq!(b.pick(&e, &mut |_| 0), Some(2));
        }
    }

    #[test]
    fn random_two_is_seeded_and_prefers_less_loaded() {
        let e = eps(&[1, 1]);
        let _busy = e[0].acquire();
        let b = Balancer::RandomTwo;
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20 {
            assert_eq!(b.pick(&e, &mut |n| rng.usize(..n)), Some(1));
        }
        assert_eq!(b.pick(&[], &mut |n| rng.usize(..n)), None);
    }
}
