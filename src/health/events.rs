//! The health manager's inbox: every change of server state arrives as an [`Event`]
//! (probe results, passive ejections, configs to apply, admin drains), queued through
//! the cheap [`Events`] handle.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

/// What changes server state.
#[derive(Debug)]
pub enum Event {
    Probe {
        pool: Arc<str>,
        addr: SocketAddr,
        /// `None` when the probe passed.
        failure: Option<ProbeFailure>,
        latency: Duration,
        detail: String,
    },
    /// An address of a pool with server names refused a connection: resolve its names
    /// again soon (the name may have moved).
    Refused { pool: Arc<str> },
    /// Live traffic failed `eject_after` times in a row (or `eject_after_5xx`).
    Eject {
        pool: Arc<str>,
        addr: SocketAddr,
        reason: &'static str,
    },
    /// A validated config to build and publish as the next generation; the reply is
    /// the new generation number.
    Apply {
        config: Box<crate::config::Config>,
        reply: oneshot::Sender<u64>,
    },
    /// Admin drain (`drain = true`) or enable; the reply says what happened.
    Admin {
        pool: String,
        addr: SocketAddr,
        drain: bool,
        reply: oneshot::Sender<Result<&'static str, String>>,
    },
}

/// How a probe failed. A refused connect or a connection closed without an answer
/// means nothing listens or answers there; a timeout may only mean the server is busy
/// with the requests the proxy sent it; a wrong answer is an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeFailure {
    /// The TCP (or TLS) connection could not be made.
    Connect,
    /// The connection closed or reset before an answer.
    Closed,
    /// No answer within the probe timeout.
    Timeout,
    /// An answer with the wrong status or body.
    Answer,
}

impl ProbeFailure {
    /// A failure no busy server would cause: the server is gone.
    pub fn is_dead(self) -> bool {
        matches!(self, ProbeFailure::Connect | ProbeFailure::Closed)
    }
}

/// Cheap handle to queue events; never blocks.
#[derive(Debug, Clone)]
pub struct Events(pub(super) mpsc::Sender<Event>);

impl Events {
    pub fn send(&self, e: Event) {
        if self.0.try_send(e).is_err() {
            tracing::debug!("health event queue full; event dropped");
        }
    }

    pub async fn send_wait(&self, e: Event) -> bool {
        self.0.send(e).await.is_ok()
    }
}
