//! The downstream side, where a request enters: accept loops, one per listener, the
//! client connection served in rounds, and graceful drain on shutdown.
//!
//! - `mod.rs`: the accept loop ([`serve`]) and the start of each connection (TLS first).
//! - `conn.rs`: one connection in rounds, parked between requests.
//! - `framing/`: the framing guard under hyper, on the raw bytes.
//! - `refused.rs`: access-log lines for requests hyper refuses itself (400/408/414/431).
//! - `h3/`: HTTP/3 over QUIC on a TLS listener's port (`http3 = true`).

mod conn;
pub mod framing;
pub mod h3;
mod refused;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::Instrument;

use self::conn::serve_io;
use crate::proxy::request::{Conn, Shared};

/// Time between closing a listener and closing its idle connections, so a client that
/// connected just before the close can still send its request.
const SETTLE: Duration = Duration::from_millis(500);

/// Run a client connection as its own task, in a span when debug logging is on.
fn spawn_conn(served: impl Future<Output = ()> + Send + 'static, peer: SocketAddr) {
    if tracing::enabled!(tracing::Level::DEBUG) {
        tokio::spawn(served.instrument(tracing::debug_span!("conn", %peer)));
    } else {
        tokio::spawn(served);
    }
}

/// What a connection holds until it ends: a count the drain waits on, and its place
/// under the connection cap (moved into its `Conn`, where a tunnel can take it).
pub(crate) struct Live {
    _drain: Arc<()>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Start serving one accepted connection (TLS handshake first on a TLS listener).
fn accept(
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    shared: Arc<Shared>,
    drain: watch::Receiver<bool>,
    live: Live,
) {
    // Linux: inherited from the listener (see `listen`).
    #[cfg(not(target_os = "linux"))]
    let _ = stream.set_nodelay(true);
    let snap = shared.state.load();
    let tls = snap
        .listeners
        .get(snap.listener_index(local))
        .and_then(|l| l.tls.clone())
        .map(tokio_rustls::TlsAcceptor::from);
    let wait = snap.server.header_timeout;
    drop(snap);
    // A plain connection's task is its `serve_io` future and nothing more: every open
    // connection keeps its task allocated, parked ones too. The TLS path is boxed.
    match tls {
        None => spawn_conn(
            serve_io(stream, Conn::new(peer, local, "http"), shared, drain, live),
            peer,
        ),
        Some(acceptor) => spawn_conn(
            Box::pin(async move {
                match tokio::time::timeout(wait, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let conn = Conn::new(peer, local, "https");
                        serve_io(tls, conn, shared, drain, live).await
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                }
            }),
            peer,
        ),
    }
}

/// Accept on `listener` until `stop` flips, then drain its open connections for at
/// most the drain time of the config current at that moment. Settings (limits,
/// timeouts, routes) come from the snapshot current when a connection or request arrives.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let local = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "listener has no local address");
            return;
        }
    };
    // Connections watch `drain`; each holds a clone of `live` until it ends.
    let (drain_tx, drain_rx) = watch::channel(false);
    let live = Arc::new(());
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                // At the connection cap this client waits for a place (an idle
                // connection is asked to make room only now that one is wanted), and
                // nothing more is accepted: the kernel's backlog holds the rest. A stop
                // meanwhile does not drop it: it is served and drains like the clients
                // still queued (below), with a place if one is free.
                let permit = tokio::select! {
                    biased;
                    p = shared.cap.admit() => Some(p),
                    _ = stop.wait_for(|s| *s) => None,
                };
                let stopping = permit.is_none();
                let live = Live {
                    _drain: live.clone(),
                    permit: permit.or_else(|| shared.cap.try_admit()),
                };
                accept(stream, peer, local, shared.clone(), drain_rx.clone(), live);
                if stopping {
                    break;
                }
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning (the kernel's
                // backlog holds the clients meanwhile).
                match crate::shortage::Shortage::of(&e) {
                    Some(kind) => crate::shortage::note(kind, crate::shortage::At::Accept, &e),
                    None => tracing::warn!(error = %e, "accept failed; backing off"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
        }
    }
    // The kernel already completed the handshakes of queued connections: closing the
    // socket now would reset them. Serve them (they drain like the rest); anything
    // arriving after the close is refused.
    while let Some(Ok((stream, peer))) = std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match listener.poll_accept(cx) {
            std::task::Poll::Ready(r) => Some(r),
            std::task::Poll::Pending => None,
        })
    })
    .await
    {
        let permit = shared.cap.try_admit();
        let live = Live {
            _drain: live.clone(),
            permit,
        };
        accept(stream, peer, local, shared.clone(), drain_rx.clone(), live);
    }
    drop(listener);
    drain(&shared, drain_tx, live, local).await;
}

/// Close the listener's connections: parked ones at once, busy ones after their request,
/// for at most the drain time of the config current now.
async fn drain(shared: &Shared, drain_tx: watch::Sender<bool>, live: Arc<()>, local: SocketAddr) {
    let drain = shared.state.load().server.drain_timeout;
    // A connection accepted just now may not have sent its request yet, and a
    // graceful shutdown closes such connections at once. Give them a moment first.
    tokio::time::sleep(SETTLE.min(drain)).await;
    let _ = drain_tx.send(true);
    // Parked connections close at once; busy ones finish their request first.
    let deadline = tokio::time::Instant::now() + drain;
    while Arc::strong_count(&live) > 1 {
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(?drain, listener = %local, "drain deadline passed; closing remaining connections");
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
