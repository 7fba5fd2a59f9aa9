//! One client connection in rounds ([`serve_io`]): HTTP/1.1 rounds on hyper's HTTP/1
//! server that end when the connection idles, with the connection parked in between,
//! or one full round on hyper-util's auto builder for h2 (TLS or prior knowledge) and
//! upgrades. Each request goes to [`forward::handle`](crate::proxy::forward::handle).

use std::convert::Infallible;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;
use tracing::Instrument;

use super::framing;
use super::refused;
use crate::access::AccessLog;
use crate::config::ServerSettings;
use crate::proxy::forward;
use crate::proxy::request::{Conn, Shared};
use crate::proxy::respond::body::ProxyBody;

/// The boxed future of one request (see `serve_io`).
type RequestFuture =
    std::pin::Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>;

/// What every HTTP/1.1 builder shares; cloning it shares the timer, allocating nothing.
static H1_TEMPLATE: std::sync::LazyLock<http1::Builder> = std::sync::LazyLock::new(|| {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .keep_alive(true)
        .half_close(false);
    b
});

/// The HTTP/1.1 builder of a connection's rounds (see `serve_io`): the head timeout
/// and bound of `[server]`. Half-close is not allowed: a client that closes while its
/// request is in flight aborts it (and the upstream exchange), as in nginx. The end
/// of input the guard reports to park a connection comes only between requests.
/// Made per round (a clone of a template), so a parked connection keeps none.
///
/// hyper's head timer is off: a round begins with a whole head already arrived, and
/// the framing guard times a later head that arrives in pieces (`header_timeout`).
/// hyper's timer cost an allocation, a clock read and a timer registration per
/// request (see `idle`).
pub fn h1_builder(s: &ServerSettings) -> http1::Builder {
    let mut b = H1_TEMPLATE.clone();
    b.header_read_timeout(None).max_buf_size(s.max_header_bytes);
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
pub(super) fn serve_io<S>(
    io: S,
    conn: Conn,
    shared: Arc<Shared>,
    drain: watch::Receiver<bool>,
    mut live: super::Live,
) -> impl Future<Output = ()> + Send + 'static
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    if let Ok(mut p) = conn.place.lock() {
        *p = live.permit.take();
    }
    let snap = shared.state.load();
    let s = &snap.server;
    let mut io = framing::Guarded::new(io, s.max_header_bytes, s.send_timeout)
        .with_max_uri(s.max_uri_bytes)
        .with_head_timeout(s.header_timeout);
    io.set_busy(conn.busy.clone());
    let conn = Arc::new(conn);
    let rounds = Rounds {
        tls: conn.scheme == "https",
        refused: RefusedLog {
            access: shared.access.clone(),
            conn: conn.clone(),
        },
        svc: RequestService { conn, shared },
        settings: snap.server.clone(),
        parked: snap.metrics.connections_parked.clone(),
        _open: GaugeGuard::new(&snap.metrics.connections_open),
        _live: live,
    };
    drop(snap);
    rounds.run(io, drain)
}

/// The per-request service of a connection: each request goes to `forward::handle`.
#[derive(Clone)]
struct RequestService {
    conn: Arc<Conn>,
    shared: Arc<Shared>,
}

impl hyper::service::Service<Request<Incoming>> for RequestService {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = RequestFuture;

    fn call(&self, req: Request<Incoming>) -> RequestFuture {
        let (conn, shared) = (self.conn.clone(), self.shared.clone());
        // A span per request only when debug logging is on: the wrapper costs a move of
        // the whole request future even when the span is disabled.
        let span = tracing::enabled!(tracing::Level::DEBUG).then(
            || tracing::debug_span!("request", method = %req.method(), path = %req.uri().path()),
        );
        let fut = async move {
            Ok::<_, Infallible>(forward::handle(req.map(Into::into), &conn, &shared).await)
        };
        // Boxed per request: hyper keeps a slot the size of the service future for every
        // connection and moves the future into it. A box makes that slot one pointer,
        // and the request's state is freed as soon as its response is sent.
        match span {
            Some(span) => Box::pin(fut.instrument(span)),
            None => Box::pin(fut),
        }
    }
}

/// Access-log lines for requests hyper refuses itself: two pointers, not the address.
struct RefusedLog {
    access: Option<Arc<AccessLog>>,
    conn: Arc<Conn>,
}

impl RefusedLog {
    fn log(&self, status: u16, head: &[u8]) {
        refused::log(self.access.as_deref(), self.conn.peer.ip(), status, head);
    }
}

/// What a connection's rounds need, set up once when it arrives.
struct Rounds {
    svc: RequestService,
    refused: RefusedLog,
    tls: bool,
    /// How this connection is served: the `[server]` settings current when it arrived.
    settings: Arc<ServerSettings>,
    /// Counts the connection while it is parked (between rounds).
    parked: Gauge,
    _open: GaugeGuard,
    /// Held until the connection ends (the accept loop's drain waits for it).
    _live: super::Live,
}

impl Rounds {
    /// Serve the connection until it ends: parked between rounds. Each round is boxed:
    /// its hyper connection lives on the heap only while the round runs, and a parked
    /// connection's task stays small.
    ///
    /// Not an `async fn`: its arguments would be stored twice in the connection's task
    /// (rust-lang/rust#62958), which every open connection keeps allocated.
    #[allow(clippy::manual_async_fn)] // see above: `size_guard` below keeps it honest
    fn run<S>(
        self,
        mut io: framing::Guarded<S>,
        mut drain: watch::Receiver<bool>,
    ) -> impl Future<Output = ()> + Send + 'static
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        async move {
            let mut _parked: Option<GaugeGuard> = None;
            loop {
                let round = self
                    .next_round(&mut io, &mut drain, _parked.is_some())
                    .await;
                _parked = None;
                match round {
                    Some(framing::Round::Full) => {
                        return Box::pin(self.full(io, &mut drain)).await;
                    }
                    Some(_) => {}
                    None => return,
                }
                match Box::pin(self.h1(io, &mut drain)).await {
                    Some(back) => io = back,
                    None => return,
                }
                _parked = Some(GaugeGuard::new(&self.parked));
            }
        }
    }

    /// Wait, parked, for the next whole request head; `None`: the connection is done.
    /// An `idle` connection (it has served a request) closes to make room at the
    /// connection cap; a new one waits for its first request.
    async fn next_round<S>(
        &self,
        io: &mut framing::Guarded<S>,
        drain: &mut watch::Receiver<bool>,
        idle: bool,
    ) -> Option<framing::Round>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let next = std::future::poll_fn(|cx| io.poll_next_round(cx));
        let round = tokio::select! {
            r = tokio::time::timeout(self.settings.header_timeout, next) => r,
            // Draining: a parked connection has no request in flight; close it.
            _ = drain.wait_for(|d| *d) => return None,
            // At the connection cap: an idle connection makes room.
            _ = self.svc.shared.cap.reclaimed(), if idle => return None,
        };
        match round {
            Ok(Ok(Some(r))) => Some(r),
            Err(_) => {
                if let Some(head) = io.partial_head() {
                    self.refused.log(408, head);
                }
                None
            }
            Ok(Ok(None)) | Ok(Err(_)) => None,
        }
    }

    /// One full round (HTTP/2, an upgrade, anything odd): hyper-util's auto builder,
    /// until the connection closes.
    async fn full<S>(&self, mut io: framing::Guarded<S>, drain: &mut watch::Receiver<bool>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        io.set_park(false);
        let full = builder(&self.settings);
        let c = full.serve_connection_with_upgrades(TokioIo::new(io), self.svc.clone());
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
                self.refused.log(status, b"");
            }
        }
    }

    /// One HTTP/1.1 round: requests until the connection idles (`Some`: the socket,
    /// to park again) or ends (`None`).
    async fn h1<S>(
        &self,
        mut io: framing::Guarded<S>,
        drain: &mut watch::Receiver<bool>,
    ) -> Option<framing::Guarded<S>>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        io.set_park(true);
        let mut c = h1_builder(&self.settings).serve_connection(TokioIo::new(io), self.svc.clone());
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
                self.refused.log(status, &parts.read_buf);
            }
        }
        if ended.is_err() || draining || !io.parked() {
            // Closed by either side, or failed. A TLS stream gets its close_notify; a
            // plain socket is just closed (its FIN follows the queued response, as a
            // shutdown would send it; nginx does the same), saving a syscall.
            if io.body_unread() {
                Box::pin(linger(io.socket())).await;
            } else if self.tls {
                let _ = tokio::io::AsyncWriteExt::shutdown(&mut io).await;
            }
            return None;
        }
        io.unread(&parts.read_buf);
        io.set_park(false);
        Some(io)
    }
}

/// nginx's lingering close (`lingering_time` 30 s, `lingering_timeout` 5 s): after an
/// answer that left a request body unread (a 413), the write side closes and whatever
/// the client still sends is read and dropped until it closes, stays silent for
/// [`LINGER_IDLE`] or [`LINGER`] has passed. Closing at once would reset the connection
/// with the client's data unread, and the client could lose the answer to the reset.
async fn linger<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(io: &mut S) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if io.shutdown().await.is_err() {
        return;
    }
    let mut sink = vec![0u8; 16 * 1024];
    let end = tokio::time::Instant::now() + LINGER;
    loop {
        let until = end.min(tokio::time::Instant::now() + LINGER_IDLE);
        match tokio::time::timeout_at(until, io.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return,
        }
    }
}

/// Longest a lingering close reads (nginx's `lingering_time`).
const LINGER: std::time::Duration = std::time::Duration::from_secs(30);
/// Longest a lingering close waits for more (nginx's `lingering_timeout`).
const LINGER_IDLE: std::time::Duration = std::time::Duration::from_secs(5);

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
pub(super) struct GaugeGuard(Gauge);

impl GaugeGuard {
    pub(super) fn new(g: &Gauge) -> Self {
        g.inc();
        GaugeGuard(g.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Every open connection keeps its task allocated, parked ones too, so the size of
/// [`serve_io`]'s future is memory per idle connection: a guard against a change that
/// quietly grows it (784 bytes today, test build; 792 before the framing guard kept its
/// timeouts in milliseconds and its timer's deadline behind its pointer; 912 while each
/// connection kept its own copy of the `[server]` settings and HTTP/1.1 builder; 1,464
/// when `Rounds::run` was an `async fn` storing its arguments twice).
#[cfg(test)]
mod size_guard {
    fn output_size<F: FnOnce(A, B, C, D, E) -> R, A, B, C, D, E, R>(_: &F) -> usize {
        std::mem::size_of::<R>()
    }

    #[test]
    fn a_connection_task_stays_small() {
        let n = output_size(&super::serve_io::<tokio::net::TcpStream>);
        assert!(n <= 860, "a connection's task grew to {n} bytes");
    }
}
