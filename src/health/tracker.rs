//! What the manager knows of one server of one pool: its active-check threshold,
//! ejection, drain and slow start, and the state and eligibility that follow.

use tokio::time::Instant;

use super::threshold::Threshold;
use crate::upstream::ServerState;

#[derive(Debug)]
pub(super) struct Tracker {
    pub(super) active: Option<Threshold>,
    pub(super) ejected_until: Option<Instant>,
    /// Back from ejection in a pool with active checks: wait for one passing probe.
    pub(super) awaiting_probe: bool,
    pub(super) ejections: u32,
    pub(super) draining: bool,
    /// When the server (re)joined, for slow start.
    pub(super) joined: Option<Instant>,
    /// False for a server added by a reload to a pool with active checks until its
    /// first probe result: its state is "unknown" and it gets no traffic.
    pub(super) probed: bool,
    /// The server's answer count when its last probe result came in.
    pub(super) answers_seen: u64,
    /// When a probe result last found the answer count moved.
    pub(super) answered_at: Option<Instant>,
    /// The last probe failed at connect or closed without an answer: nothing serves
    /// there, so panic mode leaves it out.
    pub(super) dead: bool,
}

impl Tracker {
    pub(super) fn eligible(&self) -> bool {
        !self.draining
            && self.ejected_until.is_none()
            && !self.awaiting_probe
            && self.active.is_none_or(|c| c.is_healthy())
    }

    /// Out of rotation only because active checks fail, and not for a dead server:
    /// what panic mode serves anyway.
    pub(super) fn failing_checks_only(&self) -> bool {
        !self.draining
            && self.ejected_until.is_none()
            && !self.awaiting_probe
            && self.probed
            && !self.dead
            && self.active.is_some_and(|c| !c.is_healthy())
    }

    pub(super) fn state(&self) -> ServerState {
        if self.draining {
            ServerState::Draining
        } else if !self.probed {
            ServerState::Unknown
        } else if self.ejected_until.is_some() {
            ServerState::Ejected
        } else if self.eligible() {
            ServerState::Healthy
        } else {
            ServerState::Unhealthy
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker() -> Tracker {
        Tracker {
            active: Some(Threshold::new(true, 1, 1)),
            ejected_until: None,
            awaiting_probe: false,
            ejections: 0,
            draining: false,
            joined: None,
            probed: true,
            answers_seen: 0,
            answered_at: None,
            dead: false,
        }
    }

    #[test]
    fn states_follow_the_tracker() {
        let mut t = tracker();
        assert_eq!(t.state(), ServerState::Healthy);
        t.probed = false;
        t.awaiting_probe = true;
        assert_eq!(
            t.state(),
            ServerState::Unknown,
            "added by a reload, not probed yet"
        );
        assert!(!t.eligible());
        t.probed = true;
        assert_eq!(
            t.state(),
            ServerState::Unhealthy,
            "probed, waiting for a pass"
        );
        t.awaiting_probe = false;
        t.ejected_until = Some(Instant::now());
        assert_eq!(t.state(), ServerState::Ejected);
        t.draining = true;
        assert_eq!(t.state(), ServerState::Draining);
        assert!(!t.eligible());
    }
}
