//! The downstream side: accept loops, one per listener, and each client connection in
//! rounds (`serve_io`): HTTP/1.1 rounds on hyper's HTTP/1 server that end when the
//! connection idles, with the connection parked in between, or one full round on
//! hyper-util's auto builder for h2 (TLS or prior knowledge) and upgrades. Graceful
//! drain on shutdown. Each request goes to [`forward::handle`].

mod accel;
mod action;
mod attempt;
mod body;
mod compress;
mod error;
mod files;
mod filters;
mod forward;
pub mod framing;
mod headers;
mod limit;
mod look;
mod mime;
mod passive;
mod pick;
mod refused;
mod retry;
mod shape;
mod tunnel;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::Instrument;

pub use body::ProxyBody;
pub use error::ProxyError;
pub use limit::{HostLimit, HostSlot};

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
    /// Requests of this connection whose response has not ended: while there are any,
    /// the connection is not idle (the framing guard must not park it, so an end of
    /// input hyper sees is the client's, and aborts the request).
    pub busy: Arc<AtomicUsize>,
}

impl Conn {
    pub fn new(peer: SocketAddr, local: SocketAddr, scheme: &'static str) -> Self {
        Conn {
            peer,
            local,
            scheme,
            peer_ip: headers::ip_value(peer.ip().to_canonical()),
            busy: Arc::default(),
        }
    }
}

/// The HTTP/1.1 builder of a connection's rounds (see `serve_io`): the head timeout
/// and bound of `[server]`. Half-close is not allowed: a client that closes while its
/// request is in flight aborts it (and the upstream exchange), as in nginx. The end
/// of input the guard reports to park a connection comes only between requests.
pub fn h1_builder(s: &ServerSettings) -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(s.header_timeout)
        .max_buf_size(s.max_header_bytes)
        .keep_alive(true)
        .half_close(false);
    b
}

/// The full connection builder: HTTP/1.1 with header and keep-alive timeouts and a
/// bounded header section, or HTTP/2 with prior knowledge.
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

/// Serve one client connection, plain or TLS, in rounds.
///
/// Between requests a connection is *parked*: only the socket and a small future,
/// no hyper connection and no buffers, until the next request head has arrived whole.
/// Then an HTTP/1.1 round serves requests until the connection goes idle again (the
/// framing guard reports end of input to hyper at that point, hyper's connection ends
/// cleanly and hands the socket back). An HTTP/2 preface, an upgrade or anything odd
/// gets a full round instead: hyper-util's auto builder, until the connection closes.
///
/// Set-up happens before the returned future exists, so the connection's task holds
/// only what the rounds need, not the arguments as well.
fn serve_io<S>(
    io: S,
    conn: Conn,
    shared: Arc<Shared>,
    mut drain: watch::Receiver<bool>,
    live: Arc<()>,
) -> impl Future<Output = ()> + Send + 'static
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let snap = shared.state.load();
    let tls = conn.scheme == "https";
    let busy = conn.busy.clone();
    let conn = Arc::new(conn);
    // For refused requests' log lines: two pointers, not the address itself.
    let (access, me) = (shared.access.clone(), conn.clone());
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
        // connection and moves the future into it. A box makes that slot one pointer,
        // and the request's state is freed as soon as its response is sent.
        let fut: RequestFuture = match span {
            Some(span) => Box::pin(fut.instrument(span)),
            None => Box::pin(fut),
        };
        fut
    });
    let mut io = framing::Guarded::new(io, snap.server.max_header_bytes, snap.server.send_timeout);
    io.set_busy(busy);
    let idle = snap.server.header_timeout;
    // How this connection is served: the `[server]` settings current when it arrived.
    let settings = snap.server.clone();
    let h1 = h1_builder(&settings);
    let open = GaugeGuard::new(&snap.metrics.connections_open);
    let parked_gauge = snap.metrics.connections_parked.clone();
    drop(snap);
    async move {
        let _live = live;
        let _open = open;
        // Held while the connection is parked (between rounds).
        let mut _parked: Option<GaugeGuard> = None;
        let h1 = &h1;
        loop {
            let next = std::future::poll_fn(|cx| io.poll_next_round(cx));
            let round = tokio::select! {
                r = tokio::time::timeout(idle, next) => r,
                // Draining: a parked connection has no request in flight; close it.
                _ = drain.wait_for(|d| *d) => return,
            };
            _parked = None;
            let round = match round {
                Ok(Ok(Some(r))) => r,
                Err(_) => {
                    if let Some(head) = io.partial_head() {
                        refused::log(access.as_deref(), me.peer.ip(), 408, head);
                    }
                    return;
                }
                Ok(Ok(None)) | Ok(Err(_)) => return,
            };
            let drain = &mut drain;
            // Each round is boxed: its hyper connection lives on the heap only while the
            // round runs, and a parked connection's task stays small.
            if round == framing::Round::Full {
                io.set_park(false);
                let svc = svc.clone();
                let full = builder(&settings);
                let (access, me) = (access.clone(), me.clone());
                return Box::pin(async move {
                    let c = full.serve_connection_with_upgrades(TokioIo::new(io), svc);
                    tokio::pin!(c);
                    let (r, _) = until_done(drain, |cx, shut| {
                        if shut {
                            c.as_mut().graceful_shutdown();
                        }
                        c.as_mut().poll(cx)
                    })
                    .await;
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "connection ended with error");
                        if let Some(status) = refused::status(&*e) {
                            refused::log(access.as_deref(), me.peer.ip(), status, b"");
                        }
                    }
                })
                .await;
            }
            io.set_park(true);
            let svc = svc.clone();
            let (access, client) = (access.as_deref(), me.peer.ip());
            let back = Box::pin(async move {
                let mut c = h1.serve_connection(TokioIo::new(io), svc);
                let (ended, draining) = until_done(drain, |cx, shut| {
                    if shut {
                        std::pin::Pin::new(&mut c).graceful_shutdown();
                    }
                    c.poll_without_shutdown(cx)
                })
                .await;
                let parts = c.into_parts();
                let mut io = parts.io.into_inner();
                if let Err(e) = &ended {
                    tracing::debug!(error = %e, "connection ended with error");
                    if let Some(status) = refused::status(e) {
                        refused::log(access, client, status, &parts.read_buf);
                    }
                }
                if ended.is_err() || draining || !io.parked() {
                    // Closed by either side, or failed. A TLS stream gets its close_notify;
                    // a plain socket is just closed (its FIN follows the queued response, as
                    // a shutdown would send it; nginx does the same), saving a syscall.
                    if tls {
                        let _ = tokio::io::AsyncWriteExt::shutdown(&mut io).await;
                    }
                    return None;
                }
                io.unread(&parts.read_buf);
                io.set_park(false);
                Some(io)
            })
            .await;
            match back {
                Some(back) => {
                    io = back;
                    _parked = Some(GaugeGuard::new(&parked_gauge));
                }
                None => return,
            }
        }
    }
}

/// Run a client connection as its own task, in a span when debug logging is on.
fn spawn_conn(served: impl Future<Output = ()> + Send + 'static, peer: SocketAddr) {
    if tracing::enabled!(tracing::Level::DEBUG) {
        tokio::spawn(served.instrument(tracing::debug_span!("conn", %peer)));
    } else {
        tokio::spawn(served);
    }
}

/// Poll a connection (`step`) to its end. When `drain` flips, the next step is asked
/// to shut down gracefully first (`shut`). Returns the result and whether it drained.
async fn until_done<T>(
    drain: &mut watch::Receiver<bool>,
    mut step: impl FnMut(&mut std::task::Context<'_>, bool) -> std::task::Poll<T>,
) -> (T, bool) {
    let (mut draining, mut shut) = (false, false);
    loop {
        let done = tokio::select! {
            r = std::future::poll_fn(|cx| step(cx, std::mem::take(&mut shut))) => Some(r),
            _ = drain.wait_for(|d| *d), if !draining => None,
        };
        match done {
            Some(r) => return (r, draining),
            None => (draining, shut) = (true, true),
        }
    }
}

/// Counts one in a gauge while it lives.
struct GaugeGuard(prometheus_client::metrics::gauge::Gauge);

impl GaugeGuard {
    fn new(g: &prometheus_client::metrics::gauge::Gauge) -> Self {
        g.inc();
        GaugeGuard(g.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Start serving one accepted connection (TLS handshake first on a TLS listener).
fn accept(
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    shared: Arc<Shared>,
    drain: watch::Receiver<bool>,
    live: Arc<()>,
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
                let (shared, drain, live) = (shared.clone(), drain_rx.clone(), live.clone());
                accept(stream, peer, local, shared, drain, live);
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed; backing off");
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
        accept(
            stream,
            peer,
            local,
            shared.clone(),
            drain_rx.clone(),
            live.clone(),
        );
    }
    drop(listener);
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
