//! The rise/fall threshold FSM of active checks (HAProxy's `rise`/`fall`): a server
//! flips only after `healthy_after` consecutive passes or `unhealthy_after`
//! consecutive failures.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threshold {
    healthy: bool,
    streak: u32,
    rise: u32,
    fall: u32,
}

impl Threshold {
    pub fn new(healthy: bool, rise: u32, fall: u32) -> Self {
        Threshold {
            healthy,
            streak: 0,
            rise: rise.max(1),
            fall: fall.max(1),
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy
    }

    /// Consecutive results that disagree with the current state.
    pub fn streak(&self) -> u32 {
        self.streak
    }

    /// Record one probe result; `Some(new_state)` on a flip.
    pub fn observe(&mut self, ok: bool) -> Option<bool> {
        if ok == self.healthy {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if ok { self.rise } else { self.fall };
        if self.streak >= needed {
            self.healthy = ok;
            self.streak = 0;
            return Some(ok);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flips_only_after_consecutive_results() {
        let mut c = Threshold::new(true, 2, 3);
        assert_eq!(c.observe(false), None);
        assert_eq!(c.observe(true), None, "a pass resets the failure streak");
        assert_eq!(c.observe(false), None);
        assert_eq!(c.observe(false), None);
        assert_eq!(c.observe(false), Some(false));
        assert!(!c.is_healthy());
        assert_eq!(c.observe(true), None);
        assert_eq!(c.observe(true), Some(true));
    }
}
