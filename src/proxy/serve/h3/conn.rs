//! One QUIC connection ([`Quic::serve`]): the handshake (with 0-RTT where the
//! listener allows it), then its request streams, each a task of its own, until the
//! client closes, the connection idles out, or the listener drains (GOAWAY, then the
//! requests in flight finish).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::super::Live;
use super::stream;
use crate::config::Http3;
use crate::proxy::request::{Conn, Shared};

type H3Conn = h3::server::Connection<h3_quinn::Connection, Bytes>;

/// Client streams reset before their answer, per connection, beyond which the
/// connection is closed (a reset flood, as hyper bounds for HTTP/2).
const MAX_RESETS: usize = 1024;

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
        let wait = self.shared.state.load().server.header_timeout;
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
            Err(e) => {
                tracing::debug!(error = %e, "QUIC handshake failed");
                return;
            }
        };
        let server = self.shared.state.load().server.clone();
        let built = h3::server::builder()
            .max_field_section_size(server.max_header_bytes as u64)
            .build(h3_quinn::Connection::new(conn.clone()))
            .await;
        match built {
            Ok(h3) => self.requests(h3, conn, early, drain).await,
            Err(e) => {
                self.settle_handshake(early.is_some());
                tracing::debug!(error = %e, "HTTP/3 connection set-up failed");
            }
        }
    }

    fn settle_handshake(&self, pending: bool) {
        if pending {
            self.handshaking.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Accept request streams until the connection ends; on drain, send GOAWAY and
    /// let the requests in flight finish.
    async fn requests(
        self,
        mut h3: H3Conn,
        quic: quinn::Connection,
        mut early: Option<quinn::ZeroRttAccepted>,
        mut drain: watch::Receiver<bool>,
    ) {
        let mut place = self.live;
        let conn = Arc::new(Conn::new(quic.remote_address(), self.local, "https"));
        if let Ok(mut p) = conn.place.lock() {
            *p = place.permit.take();
        }
        // Until the handshake completes, requests may be 0-RTT early data (replayable).
        let confirmed = Arc::new(AtomicBool::new(early.is_none()));
        let resets = Arc::new(AtomicUsize::new(0));
        let mut tasks = JoinSet::new();
        loop {
            tokio::select! {
                a = h3.accept() => match a {
                    Ok(Some(resolver)) => {
                        let req = stream::Request {
                            conn: conn.clone(),
                            shared: self.shared.clone(),
                            early: (!confirmed.load(Ordering::Acquire)).then(|| confirmed.clone()),
                            resets: resets.clone(),
                        };
                        tasks.spawn(req.serve(resolver));
                        if resets.load(Ordering::Relaxed) > MAX_RESETS {
                            tracing::warn!(client = %conn.peer, "HTTP/3 connection closed: too many streams reset by the client");
                            quic.close(quinn::VarInt::from_u32(H3_EXCESSIVE_LOAD), b"too many resets");
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        if !e.is_h3_no_error() {
                            tracing::debug!(client = %conn.peer, error = %e, "HTTP/3 connection ended");
                        }
                        break;
                    }
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                ok = async { early.as_mut().expect("guarded by the condition").await }, if early.is_some() => {
                    early = None;
                    self.handshaking.fetch_sub(1, Ordering::Relaxed);
                    confirmed.store(ok, Ordering::Release);
                }
                _ = drain.wait_for(|d| *d) => break,
            }
        }
        if *drain.borrow() {
            // GOAWAY: no new requests; those accepted finish.
            let _ = h3.shutdown(0).await;
        }
        if early.is_some() {
            self.handshaking.fetch_sub(1, Ordering::Relaxed);
        }
        while tasks.join_next().await.is_some() {}
        // A finished response may still sit unacknowledged in quinn's buffers, and
        // closing now would discard it: the client closes once it has everything (after
        // GOAWAY, or when done), else the idle timeout or the drain deadline ends it.
        let _ = quic.closed().await;
        drop(place);
    }
}

const H3_EXCESSIVE_LOAD: u32 = 0x107;

async fn timed(
    wait: std::time::Duration,
    connecting: quinn::Connecting,
) -> Result<quinn::Connection, Box<dyn std::error::Error + Send + Sync>> {
    match tokio::time::timeout(wait, connecting).await {
        Ok(r) => r.map_err(Into::into),
        Err(_) => Err("QUIC handshake timed out".into()),
    }
}
