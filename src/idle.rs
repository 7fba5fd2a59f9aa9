//! A re-armable "nothing happened for this long" deadline, used wherever the request
//! path bounds a wait: a client body's pauses, an upstream body's pauses, a client that
//! stops reading, a connection idling before it parks. The timer is allocated the
//! first time a wait begins and then reused, so progress costs no allocation.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

#[derive(Debug, Default)]
pub struct IdleTimer {
    sleep: Option<Pin<Box<Sleep>>>,
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
            match &mut self.sleep {
                Some(s) => s.as_mut().reset(at),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
            }
            self.armed = true;
        }
        self.sleep
            .as_mut()
            .is_some_and(|s| s.as_mut().poll(cx).is_ready())
    }

    /// Free the timer (a connection that parks keeps no allocation).
    pub fn release(&mut self) {
        self.sleep = None;
        self.armed = false;
    }
}
