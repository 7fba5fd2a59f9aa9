//! One QUIC connection ([`Quic::serve`]): the handshake (with 0-RTT where the
//! listener allows it), then its request streams, each a task of its own, until the
//! client closes, the connection idles out, or the listener drains (GOAWAY, then the
//! requests in flight finish).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::super::Live;
use super::super::conn::GaugeGuard;
use super::stream;
use crate::config::Http3;
use crate::proxy::request::{Conn, Shared};

type H3Conn = h3::server::Connection<h3_quinn::Connection, Bytes>;

/// Client streams reset before their answer, per connection, beyond which the
/// connection is closed (a reset flood, as hyper bounds for HTTP/2).
const MAX_RESETS: usize = 1024;
const H3_EXCESSIVE_LOAD: u32 = 0x107;
/// How long a connection idle at the drain waits for its client to close after GOAWAY.
const IDLE_GRACE: Duration = Duration::from_secs(2);

/// What a QUIC connection needs, set up when it arrives.
pub(super) struct Quic {
    pub(super) shared: Arc<Shared>,
    pub(super) local: SocketAddr,
    pub(super) h3: Http3,
    pub(super) handshaking: Arc<AtomicUsize>,
    pub(super) live: Live,
}

impl Quic {
    pub(super) async fn serve(self, connecting: quinn::Connecting, drain: watch::Receiver<bool>) {
        self.handshaking.fetch_add(1, Ordering::Relaxed);
        let server = self.shared.state.load().server.clone();
        let wait = server.header_timeout;
        let (conn, early) = match self.h3.early_data {
            true => match connecting.into_0rtt() {
                Ok((c, accepted)) => (Ok(c), Some(accepted)),
                Err(connecting) => (timed(wait, connecting).await, None),
            },
            false => (timed(wait, connecting).await, None),
        };
        if early.is_none() {
            self.handshaking.fetch_sub(1, Ordering::Relaxed);
        }
        let conn = match conn {
            Ok(c) => c,
            Err(e) => return tracing::debug!(error = %e, "QUIC handshake failed"),
        };
        let built = h3::server::builder()
            .max_field_section_size(server.max_header_bytes as u64)
            .build(h3_quinn::Connection::new(conn.clone()))
            .await;
        let mut session = Session::new(self, conn, early);
        match built {
            Ok(h3) => session.run(h3, drain).await,
            Err(e) => tracing::debug!(error = %e, "HTTP/3 connection set-up failed"),
        }
        session.settle_handshake();
    }
}

/// One QUIC connection being served.
struct Session {
    quic: Quic,
    conn: Arc<Conn>,
    link: quinn::Connection,
    /// Resolves when the handshake completes (0-RTT); until then requests may be
    /// early data.
    early: Option<quinn::ZeroRttAccepted>,
    confirmed: Arc<AtomicBool>,
    resets: Arc<AtomicUsize>,
    tasks: JoinSet<()>,
    _open: GaugeGuard,
}

impl Session {
    fn new(mut quic: Quic, link: quinn::Connection, early: Option<quinn::ZeroRttAccepted>) -> Self {
        let conn = Arc::new(Conn::new(link.remote_address(), quic.local, "https"));
        if let Ok(mut p) = conn.place.lock() {
            *p = quic.live.permit.take();
        }
        let open = GaugeGuard::new(&quic.shared.state.load().metrics.connections_open);
        Session {
            conn,
            link,
            confirmed: Arc::new(AtomicBool::new(early.is_none())),
            early,
            resets: Arc::default(),
            tasks: JoinSet::new(),
            quic,
            _open: open,
        }
    }

    fn settle_handshake(&mut self) {
        if self.early.take().is_some() {
            self.quic.handshaking.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Serve request streams until the connection ends or drains, then let the
    /// requests in flight finish.
    async fn run(&mut self, mut h3: H3Conn, mut drain: watch::Receiver<bool>) {
        self.accept(&mut h3, &mut drain).await;
        let draining = *drain.borrow();
        let idle = self.tasks.is_empty();
        if draining {
            // GOAWAY: no new requests; those accepted finish.
            let _ = h3.shutdown(0).await;
        }
        while self.tasks.join_next().await.is_some() {}
        // A finished response may still sit unacknowledged in quinn's buffers, and
        // closing now would discard it: the client closes once it has everything (after
        // GOAWAY, or when done); else the idle timeout or the drain deadline ends it. A
        // connection idle at the drain gets a short grace.
        match draining && idle {
            true => {
                let _ = tokio::time::timeout(IDLE_GRACE, self.link.closed()).await;
            }
            false => {
                let _ = self.link.closed().await;
            }
        }
    }

    /// Accept request streams, each its own task, until the connection ends, the
    /// listener drains or the client resets too many streams.
    async fn accept(&mut self, h3: &mut H3Conn, drain: &mut watch::Receiver<bool>) {
        loop {
            tokio::select! {
                a = h3.accept() => match a {
                    Ok(Some(resolver)) => {
                        if !self.start(resolver) {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        if !e.is_h3_no_error() {
                            tracing::debug!(client = %self.conn.peer, error = %e, "HTTP/3 connection ended");
                        }
                        return;
                    }
                },
                Some(_) = self.tasks.join_next(), if !self.tasks.is_empty() => {}
                ok = async { self.early.as_mut().expect("guarded by the condition").await }, if self.early.is_some() => {
                    self.settle_handshake();
                    self.confirmed.store(ok, Ordering::Release);
                }
                _ = drain.wait_for(|d| *d) => return,
            }
        }
    }

    /// Start a request's task; `false` when the connection is closed for a reset flood.
    fn start(&mut self, resolver: stream::Resolver) -> bool {
        let req = stream::Request {
            conn: self.conn.clone(),
            shared: self.quic.shared.clone(),
            early: (!self.confirmed.load(Ordering::Acquire)).then(|| self.confirmed.clone()),
            resets: self.resets.clone(),
        };
        self.tasks.spawn(req.serve(resolver));
        if self.resets.load(Ordering::Relaxed) <= MAX_RESETS {
            return true;
        }
        tracing::warn!(client = %self.conn.peer, "HTTP/3 connection closed: too many streams reset by the client");
        self.link.close(
            quinn::VarInt::from_u32(H3_EXCESSIVE_LOAD),
            b"too many resets",
        );
        false
    }
}

async fn timed(
    wait: Duration,
    connecting: quinn::Connecting,
) -> Result<quinn::Connection, Box<dyn std::error::Error + Send + Sync>> {
    match tokio::time::timeout(wait, connecting).await {
        Ok(r) => r.map_err(Into::into),
        Err(_) => Err("QUIC handshake timed out".into()),
    }
}
