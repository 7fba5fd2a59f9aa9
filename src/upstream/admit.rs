//! Admission to a pool's servers: the server's limit (`max_connections`, fixed or
//! adaptive), each request class's cap, and one queue per pool where requests wait,
//! highest priority first and first come, first served within a priority.
//!
//! The common path is atomic counters only: a request reserves a place on a server
//! (compare-and-swap under the limit) and its class (add, undone over the cap). The
//! queue, its lock and its allocations are touched only when a request must wait.
//!
//! A place that frees is handed to the best waiter that may take it, never left for
//! whoever comes next, and a newcomer queues behind waiters instead of overtaking
//! them (today's `max_connections` wait let a newcomer take a freed place and sent a
//! waiter that lost the race to the back). Waiting never starves: a waiter gains one
//! priority step per `aging` waited, so `report` at -10 beats a fresh `default` after
//! ten steps.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::Endpoint;
use crate::config::{ClassRule, PoolConfig};

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    QueueFull,
    Timeout,
}

/// One pool's admission state.
#[derive(Debug)]
pub struct Admission {
    rules: Vec<ClassRule>,
    max: Option<usize>,
    adaptive: bool,
    aging: Duration,
    pool_queue: usize,
    waiting: AtomicUsize,
    queue: Mutex<Vec<Waiter>>,
    seq: AtomicU64,
    /// Per class: waiting now, and refused so far.
    pub queued: Box<[AtomicUsize]>,
    pub rejected: Box<[AtomicU64]>,
}

#[derive(Debug)]
struct Waiter {
    class: usize,
    priority: i32,
    seq: u64,
    since: Instant,
    tx: oneshot::Sender<InFlight>,
}

/// A request counted against its server and class until dropped.
#[derive(Debug)]
pub struct InFlight {
    endpoint: Arc<Endpoint>,
    class: usize,
    admission: Arc<Admission>,
}

impl InFlight {
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let e = &self.endpoint;
        e.stats.in_flight.fetch_sub(1, Ordering::SeqCst);
        if let Some(c) = e.class_in_flight.get(self.class) {
            c.fetch_sub(1, Ordering::SeqCst);
        }
        if self.admission.waiting.load(Ordering::SeqCst) > 0 {
            self.admission.dispatch(std::slice::from_ref(e));
        }
    }
}

/// The adaptive limit's state of one server.
#[derive(Debug, Default)]
pub struct Adapt {
    /// Lowest recent latency, µs (0: none yet).
    min_us: AtomicU64,
    /// Answers since the limit last moved.
    good: AtomicU32,
    /// Smoothed latency, µs.
    ewma_us: AtomicU64,
    samples: AtomicU32,
}

impl Admission {
    pub fn new(cfg: &PoolConfig) -> Arc<Self> {
        let n = cfg.classes.len().max(1);
        Arc::new(Admission {
            rules: cfg.classes.clone(),
            max: cfg.max_connections,
            adaptive: cfg.adaptive,
            aging: cfg.aging,
            pool_queue: cfg.queue_size,
            waiting: AtomicUsize::new(0),
            queue: Mutex::new(Vec::new()),
            seq: AtomicU64::new(0),
            queued: (0..n).map(|_| AtomicUsize::new(0)).collect(),
            rejected: (0..n).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    /// Whether requests can ever wait here (a server limit or a class cap).
    pub fn limited(&self) -> bool {
        self.max.is_some() || self.rules.iter().any(|r| r.cap.is_some())
    }

    /// Requests waiting in the queue now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// The cap of `class` per server, if any.
    pub fn cap(&self, class: usize) -> Option<usize> {
        self.rules.get(class).and_then(|r| r.cap)
    }

    /// The server's current limit (`None`: unlimited).
    pub fn limit(&self, e: &Endpoint) -> Option<usize> {
        match (self.adaptive, self.max) {
            (true, Some(_)) => Some(e.limit.load(Ordering::Relaxed).max(1)),
            (_, m) => m,
        }
    }

    /// Whether `e` has room for one more request of `class` (a hint for picking).
    pub fn room(&self, e: &Endpoint, class: usize) -> bool {
        self.limit(e).is_none_or(|m| e.in_flight() < m)
            && self.cap(class).is_none_or(|c| {
                e.class_in_flight
                    .get(class)
                    .is_none_or(|n| n.load(Ordering::SeqCst) < c)
            })
    }

    /// Reserve a place on `e` for `class`, or `None` if it is full.
    pub fn try_admit(self: &Arc<Self>, e: &Arc<Endpoint>, class: usize) -> Option<InFlight> {
        let total = &e.stats.in_flight;
        match self.limit(e) {
            None => {
                total.fetch_add(1, Ordering::SeqCst);
            }
            Some(m) => {
                total
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                        (n < m).then_some(n + 1)
                    })
                    .ok()?;
            }
        }
        let counted = e.class_in_flight.get(class);
        let before = counted.map_or(0, |c| c.fetch_add(1, Ordering::SeqCst));
        if self.cap(class).is_some_and(|c| before >= c) {
            if let Some(c) = counted {
                c.fetch_sub(1, Ordering::SeqCst);
            }
            total.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(InFlight {
            endpoint: Arc::clone(e),
            class,
            admission: Arc::clone(self),
        })
    }

    /// Whether a newcomer must queue behind requests already waiting.
    pub fn must_queue(&self) -> bool {
        self.waiting.load(Ordering::SeqCst) > 0
    }

    /// Wait for a place on one of `servers` (in the balancer's order of preference).
    pub async fn wait(
        self: &Arc<Self>,
        class: usize,
        servers: &[Arc<Endpoint>],
    ) -> Result<(InFlight, Duration), Refusal> {
        let started = Instant::now();
        let rule = self.rules.get(class).cloned().unwrap_or(ClassRule {
            cap: None,
            priority: 0,
            queue_size: self.pool_queue,
            queue_timeout: Duration::from_secs(5),
        });
        let (tx, mut rx) = oneshot::channel();
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        {
            let mut q = self.lock();
            let of_class = self
                .queued
                .get(class)
                .map_or(0, |n| n.load(Ordering::SeqCst));
            if q.len() >= self.pool_queue || of_class >= rule.queue_size {
                drop(q);
                self.refuse(class);
                return Err(Refusal::QueueFull);
            }
            q.push(Waiter {
                class,
                priority: rule.priority,
                seq,
                since: started,
                tx,
            });
            self.waiting.fetch_add(1, Ordering::SeqCst);
            if let Some(n) = self.queued.get(class) {
                n.fetch_add(1, Ordering::SeqCst);
            }
        }
        let _leave = Leave {
            admission: self,
            seq,
        };
        // A place may have freed between the failed pick and joining the queue.
        self.dispatch(servers);
        let deadline = started + rule.queue_timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let tick = tokio::time::sleep(Duration::from_millis(100).min(left));
            tokio::select! {
                got = &mut rx => match got {
                    Ok(g) => return Ok((g, started.elapsed())),
                    Err(_) => break,
                },
                _ = tick => {
                    if Instant::now() >= deadline {
                        break;
                    }
                    // Room that came without a release (a server back, a higher limit).
                    self.dispatch(servers);
                }
            }
        }
        if let Ok(g) = rx.try_recv() {
            return Ok((g, started.elapsed()));
        }
        self.refuse(class);
        Err(Refusal::Timeout)
    }

    fn refuse(&self, class: usize) {
        if let Some(n) = self.rejected.get(class) {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Waiter>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hand free places on `servers` to waiters: highest priority (plus one step per
    /// `aging` waited) first, oldest first within it. A waiter whose class is at its
    /// cap does not block the ones behind it.
    fn dispatch(self: &Arc<Self>, servers: &[Arc<Endpoint>]) {
        let mut undelivered = Vec::new();
        {
            let mut q = self.lock();
            let now = Instant::now();
            let step = self.aging.as_millis().max(1);
            let rank = |w: &Waiter| {
                let aged = (now.duration_since(w.since).as_millis() / step) as i64;
                (std::cmp::Reverse(i64::from(w.priority) + aged), w.seq)
            };
            q.sort_by_key(rank);
            let mut i = 0;
            while i < q.len() {
                let class = q[i].class;
                let grant = servers.iter().find_map(|e| self.try_admit(e, class));
                let Some(grant) = grant else {
                    i += 1;
                    continue;
                };
                let w = q.remove(i);
                self.left(w.class);
                if let Err(g) = w.tx.send(grant) {
                    undelivered.push(g);
                }
            }
        }
        // Released outside the lock: a release dispatches again.
        drop(undelivered);
    }

    fn left(&self, class: usize) {
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        if let Some(n) = self.queued.get(class) {
            n.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Adaptive limit: AIMD on smoothed latency. While the latency average (EWMA, 1/8)
    /// stays within twice the lowest recent latency plus 2 ms, the limit rises by one
    /// per limit's worth of answers; above it, the limit falls by a tenth (at least
    /// one), at most once per limit's worth of answers. Always within 1..=max.
    pub fn observe(&self, e: &Endpoint, took: Duration) {
        let (true, Some(max)) = (self.adaptive, self.max) else {
            return;
        };
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        let a = &e.adapt;
        let min = a.min_us.load(Ordering::Relaxed);
        // The floor drifts up slowly, so a server that got slower for good is re-learned.
        let samples = a.samples.fetch_add(1, Ordering::Relaxed);
        if min == 0 || us < min {
            a.min_us.store(us, Ordering::Relaxed);
        } else if samples % 1000 == 999 {
            a.min_us.store(min + min / 10, Ordering::Relaxed);
        }
        let old = a.ewma_us.load(Ordering::Relaxed);
        let ewma = if old == 0 { us } else { old - old / 8 + us / 8 };
        a.ewma_us.store(ewma, Ordering::Relaxed);
        let floor = a.min_us.load(Ordering::Relaxed);
        let limit = e.limit.load(Ordering::Relaxed).max(1);
        let count = a.good.fetch_add(1, Ordering::Relaxed) + 1;
        if (count as usize) < limit {
            return;
        }
        a.good.store(0, Ordering::Relaxed);
        let next = if ewma <= 2 * floor + 2000 {
            (limit + 1).min(max)
        } else {
            limit.saturating_sub((limit / 10).max(1)).max(1)
        };
        e.limit.store(next, Ordering::Relaxed);
    }
}

/// Takes a waiter that gives up (timeout, or its client went away) out of the queue.
struct Leave<'a> {
    admission: &'a Admission,
    seq: u64,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        let mut q = self.admission.lock();
        if let Some(i) = q.iter().position(|w| w.seq == self.seq) {
            let w = q.remove(i);
            drop(q);
            self.admission.left(w.class);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(
        aging: Duration,
        timeout: Duration,
        queue: usize,
    ) -> (Arc<Admission>, Arc<Endpoint>) {
        let rule = |priority| ClassRule {
            cap: None,
            priority,
            queue_size: queue,
            queue_timeout: timeout,
        };
        let adm = Arc::new(Admission {
            rules: vec![rule(0), rule(-10)],
            max: Some(1),
            adaptive: false,
            aging,
            pool_queue: 10,
            waiting: AtomicUsize::new(0),
            queue: Mutex::new(Vec::new()),
            seq: AtomicU64::new(0),
            queued: (0..2).map(|_| AtomicUsize::new(0)).collect(),
            rejected: (0..2).map(|_| AtomicU64::new(0)).collect(),
        });
        let e = Endpoint::new(([127, 0, 0, 1], 1).into(), 1, Arc::default()).with_classes(2, 1);
        (adm, Arc::new(e))
    }

    #[tokio::test]
    async fn a_low_class_ages_past_newcomers_instead_of_starving() {
        let (adm, e) = admission(Duration::from_millis(10), Duration::from_secs(5), 10);
        let held = adm.try_admit(&e, 0).expect("the one place");
        assert!(adm.try_admit(&e, 0).is_none(), "full");
        let servers = vec![e.clone()];
        let (a, s) = (adm.clone(), servers.clone());
        let report = tokio::spawn(async move { a.wait(1, &s).await.map(|(g, _)| g) });
        // The report waits 150 ms: fifteen steps of aging lift it from -10 to +5.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let (a, s) = (adm.clone(), servers.clone());
        let fresh = tokio::spawn(async move { a.wait(0, &s).await.map(|(g, _)| g) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(held);
        let grant = report
            .await
            .expect("joined")
            .expect("the report is admitted first");
        assert!(!fresh.is_finished(), "the newcomer still waits");
        drop(grant);
        let fresh = tokio::time::timeout(Duration::from_secs(1), fresh).await;
        assert!(
            fresh.expect("bounded").expect("joined").is_ok(),
            "then the newcomer"
        );
    }

    #[tokio::test]
    async fn a_full_queue_and_a_timeout_are_refusals() {
        let (adm, e) = admission(Duration::from_secs(1), Duration::from_millis(30), 1);
        let _held = adm.try_admit(&e, 0).expect("the one place");
        let servers = vec![e.clone()];
        let (a, s) = (adm.clone(), servers.clone());
        let first = tokio::spawn(async move { a.wait(0, &s).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(adm.wait(0, &servers).await.err(), Some(Refusal::QueueFull));
        let first = tokio::time::timeout(Duration::from_secs(2), first).await;
        assert_eq!(
            first.expect("bounded").expect("joined"),
            Err(Refusal::Timeout)
        );
        assert_eq!(adm.rejected[0].load(Ordering::Relaxed), 2);
        assert_eq!(adm.waiting(), 0, "a waiter that gave up left the queue");
    }
}
