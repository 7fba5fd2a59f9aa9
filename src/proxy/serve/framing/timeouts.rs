//! The framing guard's timeouts: what its read timer runs for, timeouts kept in
//! milliseconds (every open connection holds them), and the head timeout's error.

/// What a round's read timer runs for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wait {
    Nothing,
    /// Idling between requests: parks the connection after [`PARK_AFTER`].
    Idle,
    /// A request head began and waits for the rest: fails after `head_timeout`.
    Head,
}

/// A timeout in whole milliseconds (at least 1 when not zero; about 49 days at most,
/// which never passes in practice).
#[derive(Debug, Clone, Copy)]
pub(super) struct Millis(pub(super) u32);

impl Millis {
    pub(super) fn of(d: std::time::Duration) -> Self {
        let ms = d.as_micros().div_ceil(1000);
        Millis(u32::try_from(ms).unwrap_or(u32::MAX))
    }

    pub(super) fn get(self) -> std::time::Duration {
        std::time::Duration::from_millis(u64::from(self.0))
    }
}

/// Why a read failed: a request head did not arrive whole within `header_timeout`
/// (see [`Guarded::with_head_timeout`]; logged as 408, like hyper's own head timeout).
#[derive(Debug)]
pub struct HeadTimeout;

impl std::fmt::Display for HeadTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request head not received within header_timeout")
    }
}

impl std::error::Error for HeadTimeout {}
