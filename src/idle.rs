//! Deadlines on the request path that cost little when they are moved: [`Deadline`]
//! (an instant) and [`IdleTimer`] ("nothing happened for this long"), used wherever the
//! request path bounds a wait: a request head arriving in pieces, an upstream's answer,
//! a client body's pauses, an upstream body's pauses, a client that stops reading, a
//! connection idling before it parks.
//!
//! Registering a timer with tokio takes its driver's lock and a wheel insert, and
//! dropping one does the same again: measured, the three timers of a proxied request
//! cost about 6% of its CPU. A deadline that moves later leaves its registered timer as
//! it is instead: that timer fires early once, is found early and moves then. So a busy
//! connection registers a timer once per period (50 ms to park, seconds for the rest)
//! rather than once per request, at the price of one early wake-up per period. The
//! timer is allocated the first time a wait begins and then reused.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

pin_project_lite::pin_project! {
    /// The timer and the deadline it stands for (the timer may be set earlier).
    #[derive(Debug)]
    struct Timed {
        #[pin]
        sleep: Sleep,
        at: Option<Instant>,
    }
}

/// A deadline (an instant) that is cheap to set again, later. One pointer until a wait
/// begins: every open connection keeps a couple of these.
#[derive(Debug, Default)]
pub struct Deadline(Option<Pin<Box<Timed>>>);

impl Deadline {
    /// Expire at `at` (and no longer at an earlier deadline). A timer still pending at
    /// or before `at` is left registered: it wakes early once and moves then.
    pub fn set(&mut self, at: Instant) {
        let Some(t) = self.0.as_mut() else {
            self.0 = Some(Box::pin(Timed {
                sleep: tokio::time::sleep_until(at),
                at: Some(at),
            }));
            return;
        };
        let t = t.as_mut().project();
        *t.at = Some(at);
        if t.sleep.deadline() > at || t.sleep.is_elapsed() {
            t.sleep.reset(at);
        }
    }

    /// No deadline (the registered timer, if any, stays for the next one).
    pub fn clear(&mut self) {
        if let Some(t) = self.0.as_mut() {
            *t.as_mut().project().at = None;
        }
    }

    /// Call while waiting: whether the deadline has passed. Registers the task to be
    /// woken when it does (or, once, earlier).
    pub fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(t) = self.0.as_mut() else {
            return false;
        };
        let mut t = t.as_mut().project();
        let Some(at) = *t.at else {
            return false;
        };
        loop {
            if t.sleep.as_mut().poll(cx).is_pending() {
                return false;
            }
            if t.sleep.deadline() >= at {
                return true;
            }
            // Fired for an earlier deadline: move it to this one.
            t.sleep.as_mut().reset(at);
        }
    }

    /// Free the timer.
    pub fn release(&mut self) {
        self.0 = None;
    }
}

/// A re-armable "nothing happened for this long" deadline.
#[derive(Debug, Default)]
pub struct IdleTimer {
    deadline: Deadline,
    /// Whether a wait is under way (its deadline set).
    armed: bool,
}

impl IdleTimer {
    /// Progress was made: the next wait starts a new period.
    pub fn reset(&mut self) {
        self.armed = false;
    }

    /// Call while waiting: whether `period` has passed since this wait began. Registers
    /// the task to be woken when it does. A period too large to represent never passes.
    pub fn expired(&mut self, cx: &mut Context<'_>, period: Duration) -> bool {
        if !self.armed {
            let Some(at) = Instant::now().checked_add(period) else {
                return false;
            };
            self.deadline.set(at);
            self.armed = true;
        }
        self.deadline.expired(cx)
    }

    /// Free the timer (a connection that parks keeps no allocation).
    pub fn release(&mut self) {
        self.deadline.release();
        self.armed = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expired(d: &mut Deadline) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        d.expired(&mut cx)
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_moved_later_expires_at_the_later_one_only() {
        let start = Instant::now();
        let mut d = Deadline::default();
        d.set(start + Duration::from_millis(100));
        assert!(!expired(&mut d));
        d.set(start + Duration::from_millis(300));
        tokio::time::sleep_until(start + Duration::from_millis(150)).await;
        assert!(!expired(&mut d), "expired at the old deadline");
        tokio::time::sleep_until(start + Duration::from_millis(299)).await;
        assert!(!expired(&mut d));
        tokio::time::sleep_until(start + Duration::from_millis(300)).await;
        assert!(expired(&mut d));
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_moved_earlier_expires_at_the_earlier_one() {
        let start = Instant::now();
        let mut d = Deadline::default();
        d.set(start + Duration::from_millis(300));
        assert!(!expired(&mut d));
        d.set(start + Duration::from_millis(100));
        tokio::time::sleep_until(start + Duration::from_millis(100)).await;
        assert!(expired(&mut d));
        d.clear();
        assert!(!expired(&mut d), "a cleared deadline expired");
    }

    #[tokio::test(start_paused = true)]
    async fn an_early_wake_up_moves_the_timer_and_wakes_again_at_the_deadline() {
        let start = Instant::now();
        let mut d = Deadline::default();
        d.set(start + Duration::from_millis(50));
        assert!(!expired(&mut d));
        d.set(start + Duration::from_millis(120));
        // A real wait: woken early (50 ms), moved, woken again at 120 ms.
        std::future::poll_fn(|cx| match d.expired(cx) {
            true => std::task::Poll::Ready(()),
            false => std::task::Poll::Pending,
        })
        .await;
        assert_eq!(Instant::now() - start, Duration::from_millis(120));
    }
}
