//! The downstream side: accept loops, one per listener, serving HTTP/1.1 and h2c
//! (prior knowledge) through hyper-util's auto builder, with graceful drain. Each
//! request goes to [`forward::handle`].

mod attempt;
mod body;
mod error;
mod forward;
mod framing;
mod headers;
mod look;
mod tunnel;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::Instrument;

pub use body::{ProxyBody, RequestBody};
pub use error::{BodyError, ProxyError};

use crate::access::AccessLog;
use crate::config::ServerSettings;
use crate::state::SharedState;

/// The boxed future of one request (see `serve_io`).
type RequestFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<http::Response<ProxyBody>, Infallible>> + Send>,
>;

/// Time between closing a listener and closing its idle connections, so a client that
/// connected just before the close can still send its request.
const SETTLE: Duration = Duration::from_millis(500);

/// Process-wide handles every request needs.
#[derive(Debug)]
pub struct Shared {
    pub state: Arc<SharedState>,
    pub access: Option<Arc<AccessLog>>,
    /// Passive-health reports to the health manager.
    pub events: crate::health::Events,
}

/// One client connection.
#[derive(Debug)]
pub struct Conn {
    pub peer: SocketAddr,
    /// Address of the listener the connection came in on (listeners are matched to
    /// config entries, and to the `listener` route condition, by address).
    pub local: SocketAddr,
    pub scheme: &'static str,
    /// The peer's address as a header value, formatted once per connection.
    pub peer_ip: http::HeaderValue,
}

impl Conn {
    pub fn new(peer: SocketAddr, local: SocketAddr, scheme: &'static str) -> Self {
        Conn {
            peer,
            local,
            scheme,
            peer_ip: headers::ip_value(peer.ip().to_canonical()),
        }
    }
}

/// The connection builder: HTTP/1.1 with header and keep-alive timeouts and a bounded
/// header section, or HTTP/2 with prior knowledge.
pub fn builder(s: &ServerSettings) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(s.header_timeout)
        .max_buf_size(s.max_header_bytes)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(s.max_header_bytes).unwrap_or(u32::MAX));
    b
}

/// Serve HTTP/1.1 (with upgrades) or HTTP/2 on one client connection, plain or TLS.
async fn serve_io<S>(
    io: S,
    conn: Conn,
    shared: Arc<Shared>,
    watcher: hyper_util::server::graceful::Watcher,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let snap = shared.state.load();
    let conn = Arc::new(conn);
    let svc = service_fn(move |req| {
        let conn = conn.clone();
        let shared = shared.clone();
        // A span per request only when debug logging is on: the wrapper costs a move of
        // the whole request future even when the span is disabled.
        let span = tracing::enabled!(tracing::Level::DEBUG).then(
            || tracing::debug_span!("request", method = %req.method(), path = %req.uri().path()),
        );
        let fut = async move { Ok::<_, Infallible>(forward::handle(req, &conn, &shared).await) };
        // Boxed per request: hyper keeps a slot the size of the service future for every
        // connection, busy or idle, and moves the future into it. A box makes that slot
        // one pointer, and the request's state is freed as soon as its response is sent.
        let fut: RequestFuture = match span {
            Some(span) => Box::pin(fut.instrument(span)),
            None => Box::pin(fut),
        };
        fut
    });
    let io = TokioIo::new(framing::Guarded::new(io, snap.server.max_header_bytes));
    let served = watcher.watch(
        snap.builder
            .serve_connection_with_upgrades(io, svc)
            .into_owned(),
    );
    if let Err(e) = served.await {
        tracing::debug!(error = %e, "connection ended with error");
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
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed; backing off");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let snap = shared.state.load();
        let tls = snap
            .listeners
            .get(snap.listener_index(local))
            .and_then(|l| l.tls.clone())
            .map(tokio_rustls::TlsAcceptor::from);
        let (shared, watcher) = (shared.clone(), graceful.watcher());
        let wait = snap.server.header_timeout;
        // The TLS path is boxed so a plain connection's task is only as large as its
        // own state: every open connection keeps its task's future allocated.
        let served = async move {
            match tls {
                None => serve_io(stream, Conn::new(peer, local, "http"), shared, watcher).await,
                Some(acceptor) => {
                    Box::pin(async move {
                        match tokio::time::timeout(wait, acceptor.accept(stream)).await {
                            Ok(Ok(tls)) => {
                                serve_io(tls, Conn::new(peer, local, "https"), shared, watcher)
                                    .await
                            }
                            Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                            Err(_) => tracing::debug!("TLS handshake timed out"),
                        }
                    })
                    .await
                }
            }
        };
        if tracing::enabled!(tracing::Level::DEBUG) {
            tokio::spawn(served.instrument(tracing::debug_span!("conn", %peer)));
        } else {
            tokio::spawn(served);
        }
    }
    drop(listener);
    let drain = shared.state.load().server.drain_timeout;
    // A connection accepted just now may not have sent its request yet, and a
    // graceful shutdown closes such connections at once. Give them a moment first.
    tokio::time::sleep(SETTLE.min(drain)).await;
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(?drain, listener = %local, "drain deadline passed; closing remaining connections");
    }
}
