//! HTTP/3: the QUIC side of a TLS listener (`http3 = true`), on the same port over UDP.
//! Each request goes to the same [`forward::handle`](crate::proxy::forward::handle) as
//! an HTTP/1.1 or HTTP/2 request.
//!
//! - `mod.rs`: the endpoint's accept loop ([`serve`]): the connection cap, address
//!   validation (Retry), the listener's current QUIC config, and the drain.
//! - `conn.rs`: one QUIC connection: its request streams, 0-RTT, graceful close.
//! - `stream.rs`: one request stream: head, body, the pipeline, the response.
//! - `steer.rs`: the UDP socket shared with the process before or after a handover.

mod conn;
pub mod steer;
mod stream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, watch};

use super::Live;
use crate::config::QuicRetry;
use crate::proxy::request::Shared;

/// Handshakes in progress above which "auto" asks new clients to prove their address
/// first (HAProxy's `tune.quic.retry-threshold`).
const RETRY_THRESHOLD: usize = 100;

/// HTTP/3's "no error" code (RFC 9114 §8.1).
const H3_NO_ERROR: u32 = 0x100;

/// Serve HTTP/3 on `socket` until `stop` flips, then drain: every connection is told
/// to go away (GOAWAY), its requests finish within the drain time, and the rest close.
pub async fn serve(
    socket: Arc<steer::Steered>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let Some((endpoint, local)) = endpoint(socket, &shared) else {
        return;
    };
    let (drain_tx, drain_rx) = watch::channel(false);
    let live = Arc::new(());
    let handshaking = Arc::new(AtomicUsize::new(0));
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => i,
            _ = stop.wait_for(|s| *s) => break,
        };
        let Some(incoming) = incoming else { break };
        let Some((connecting, h3, permit)) = admit(incoming, &shared, local, &handshaking) else {
            continue;
        };
        let live = Live {
            _drain: live.clone(),
            permit: Some(permit),
        };
        let served = conn::Quic {
            shared: shared.clone(),
            local,
            h3,
            handshaking: handshaking.clone(),
            live,
        };
        tokio::spawn(served.serve(connecting, drain_rx.clone()));
    }
    drain(&shared, &endpoint, drain_tx, live, local).await;
}

/// Whether and how a new connection is taken: the listener's current HTTP/3 config
/// (refused if a reload turned it off), address validation (Retry) when asked or
/// under a handshake flood, and a place under the connection cap (refused without).
fn admit(
    incoming: quinn::Incoming,
    shared: &Shared,
    local: SocketAddr,
    handshaking: &AtomicUsize,
) -> Option<(
    quinn::Connecting,
    crate::config::Http3,
    OwnedSemaphorePermit,
)> {
    let Some(h3) = http3_of(shared, local) else {
        incoming.refuse();
        return None;
    };
    let busy = handshaking.load(Ordering::Relaxed) >= RETRY_THRESHOLD;
    if (h3.retry == QuicRetry::Always || busy) && !incoming.remote_address_validated() {
        if let Err(e) = incoming.retry() {
            tracing::debug!(error = %e, "QUIC retry not possible");
        }
        return None;
    }
    let Some(permit) = shared.cap.try_admit() else {
        tracing::warn!(client = %incoming.remote_address(), "QUIC connection refused: at the connection cap");
        incoming.refuse();
        return None;
    };
    match incoming.accept_with(h3.quic.clone()) {
        Ok(c) => Some((c, h3, permit)),
        Err(e) => {
            tracing::debug!(error = %e, "QUIC connection failed before its handshake");
            None
        }
    }
}

/// The current HTTP/3 settings of the listener on `local`; `None` once a reload
/// removed the listener or turned HTTP/3 off.
fn http3_of(shared: &Shared, local: SocketAddr) -> Option<crate::config::Http3> {
    let snap = shared.state.load();
    snap.listeners
        .get(snap.listener_index(local))?
        .http3
        .clone()
}

/// The QUIC endpoint on `socket`, with the listener's current config.
fn endpoint(socket: Arc<steer::Steered>, shared: &Shared) -> Option<(quinn::Endpoint, SocketAddr)> {
    use quinn::AsyncUdpSocket;
    let local = match socket.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "QUIC socket has no local address");
            return None;
        }
    };
    let quic = http3_of(shared, local).map(|h| (*h.quic).clone());
    let made = quinn::Endpoint::new_with_abstract_socket(
        steer::endpoint_config(),
        quic,
        socket,
        Arc::new(quinn::TokioRuntime),
    );
    match made {
        Ok(e) => {
            tracing::info!(addr = %local, "listening for HTTP/3 (QUIC)");
            Some((e, local))
        }
        Err(e) => {
            tracing::error!(addr = %local, error = %e, "cannot serve QUIC");
            None
        }
    }
}

/// Tell every connection to go away, wait for their requests for at most the drain
/// time of the config current now, then close what is left.
async fn drain(
    shared: &Shared,
    endpoint: &quinn::Endpoint,
    drain_tx: watch::Sender<bool>,
    live: Arc<()>,
    local: SocketAddr,
) {
    // New connections are refused from here on.
    endpoint.set_server_config(None);
    let _ = drain_tx.send(true);
    let drain = shared.state.load().server.drain_timeout;
    let deadline = tokio::time::Instant::now() + drain;
    while Arc::strong_count(&live) > 1 {
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(?drain, listener = %local, "drain deadline passed; closing remaining QUIC connections");
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    endpoint.close(quinn::VarInt::from_u32(H3_NO_ERROR), b"");
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
}
