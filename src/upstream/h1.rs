//! Plain HTTP/1.1 upstream connections, kept per server and driven by the request's
//! own task.
//!
//! hyper's legacy `Client` spawns a task per connection and hands every request, every
//! response and every body chunk across tasks, with a mutex-guarded pool keyed by a
//! hashed authority. Here a connection is a `hyper::client::conn::http1` pair whose
//! `Connection` half is polled inline: while the request waits for its head, and then by
//! the response body as the client reads it. One downstream request is one task end to
//! end, as in nginx's event loop or Pingora's connectors.
//!
//! Idle connections wait in a bounded lock-free set per server that hands out the
//! lowest-numbered slot first (`slots`), so the busy set stays as small as the
//! concurrency and the rest age out. Nobody polls them
//! while idle: a checkout first polls the connection once, so one the server closed
//! is noticed and dropped before a request is written to it. A request that hyper
//! hands back unsent (the connection turned out not to be ready) goes to the next
//! connection; nothing that may have been written is ever re-sent here.

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{TrySendError, http1};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use rustls::pki_types::ServerName;

use super::RequestBody;
use super::send_error::{SendError, closed_early};
use super::slots::Slots;
use super::stream::Stream;
use crate::config::UpstreamTls;
use crate::idle::Deadline;

type Io = TokioIo<Stream>;

/// Largest read buffer of an upstream connection (hyper's default is about 400 KiB,
/// which every pooled connection that once carried a large body kept). 128 KiB keeps
/// large bodies streaming at more than twice nginx's rate (64 KiB did not, 256 KiB kept
/// 14 MiB more after the 10 MiB benchmark). It also bounds an upstream response head,
/// like nginx's `proxy_buffer_size` (4-8 KiB).
const UPSTREAM_READ_BUF: usize = 128 * 1024;

/// One upstream connection: the request handle and the connection state machine.
struct Conn {
    tx: http1::SendRequest<RequestBody>,
    drive: http1::Connection<Io, RequestBody>,
    /// When it last went idle.
    since: Instant,
    /// The answer's deadline of the request on it; kept with the connection so that
    /// its timer is registered once per period, not once per request (see `idle`).
    answer_by: Deadline,
}

impl Conn {
    /// Poll the connection once without a waker of interest. `false` if it has ended.
    fn poke(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(&mut self.drive).poll(&mut cx).is_pending()
    }
}

/// What [`Conn::exchange`] got: the answer's head (or the request handed back, or the
/// error), and whether the connection ended meanwhile.
type Exchanged = (
    Result<Response<Incoming>, TrySendError<Request<RequestBody>>>,
    bool,
);

impl Conn {
    /// Send `req` and wait for the answer's head until `deadline`, driving the
    /// connection meanwhile. `None` when the deadline passed first.
    async fn exchange(
        &mut self,
        req: Request<RequestBody>,
        deadline: Instant,
    ) -> Option<Exchanged> {
        self.answer_by.set(deadline);
        let Conn {
            tx,
            drive,
            answer_by,
            ..
        } = self;
        let mut fut = pin!(tx.try_send_request(req));
        let mut ended = false;
        let res = poll_fn(|cx| {
            if !ended && Pin::new(&mut *drive).poll(cx).is_ready() {
                ended = true;
            }
            match fut.as_mut().poll(cx) {
                Poll::Pending if answer_by.expired(cx) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
                Poll::Ready(r) => Poll::Ready(Some(r)),
            }
        })
        .await?;
        answer_by.clear();
        Some((res, ended))
    }
}

/// Idle keep-alive connections to one server.
pub struct H1Pool {
    addr: SocketAddr,
    /// TLS to the server (the pool's trust roots and server name), if configured.
    tls: Option<UpstreamTls>,
    /// Idle connections, a set per worker of the per-worker scheduler (one otherwise),
    /// so a connection stays with the thread whose runtime drives it; none without
    /// keep-alive. `keepalive` applies per set, as nginx's applies per worker process.
    idle: Vec<Slots<Conn>>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    /// The server's own keep-alive timeout in ms, learned from `Keep-Alive: timeout=N`
    /// (0: not announced). Idle connections are retired at three quarters of it.
    announced_ms: AtomicU64,
}

impl std::fmt::Debug for H1Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1Pool")
            .field("addr", &self.addr)
            .field("idle", &self.idle_count())
            .finish()
    }
}

impl H1Pool {
    /// Keeps at most `keepalive` idle connections (0: none), each for `idle_timeout`.
    pub fn new(
        addr: SocketAddr,
        keepalive: usize,
        connect_timeout: Duration,
        idle_timeout: Duration,
        tls: Option<UpstreamTls>,
    ) -> Self {
        H1Pool {
            addr,
            tls,
            idle: match keepalive {
                0 => Vec::new(),
                n => (0..crate::worker::count()).map(|_| Slots::new(n)).collect(),
            },
            connect_timeout,
            idle_timeout,
            announced_ms: AtomicU64::new(0),
        }
    }

    /// How long a connection may idle before it is retired: `idle_timeout`, or less
    /// when the server announced a shorter keep-alive.
    fn max_idle(&self) -> Duration {
        match self.announced_ms.load(Ordering::Relaxed) {
            0 => self.idle_timeout,
            ms => self.idle_timeout.min(Duration::from_millis(ms * 3 / 4)),
        }
    }

    /// Note a `Keep-Alive: timeout=N` (seconds) from the server.
    fn learn(&self, headers: &http::HeaderMap) {
        static KEEP_ALIVE: http::HeaderName = http::HeaderName::from_static("keep-alive");
        let Some(v) = headers.get(&KEEP_ALIVE).and_then(|v| v.to_str().ok()) else {
            return;
        };
        let secs = v
            .split(',')
            .filter_map(|p| p.trim().strip_prefix("timeout="))
            .find_map(|n| n.trim().parse::<u64>().ok());
        if let Some(s) = secs {
            self.announced_ms
                .store(s.saturating_mul(1000).max(1), Ordering::Relaxed);
        }
    }

    /// Whether this pool was built with these settings (so a reload can keep it).
    pub fn same_settings(&self, keepalive: usize, connect: Duration, idle: Duration) -> bool {
        self.idle.first().map_or(0, |q| q.capacity()) == keepalive
            && self.connect_timeout == connect
            && self.idle_timeout == idle
    }

    pub fn idle_count(&self) -> usize {
        self.idle.iter().map(|q| q.len()).sum()
    }

    /// The idle set of the current worker.
    fn own_set(&self) -> Option<&Slots<Conn>> {
        match self.idle.len() {
            0 => None,
            n => self.idle.get(crate::worker::current() % n),
        }
    }

    /// A pooled connection ready for a request, dropping expired and closed ones.
    fn checkout(&self) -> Option<Box<Conn>> {
        let q = self.own_set()?;
        let max_idle = self.max_idle();
        while let Some(mut c) = q.pop() {
            if c.since.elapsed() < max_idle && c.poke() && c.tx.is_ready() {
                return Some(c);
            }
        }
        None
    }

    fn checkin(&self, mut c: Box<Conn>) {
        let Some(q) = self.own_set() else { return };
        if c.poke() && c.tx.is_ready() {
            c.since = Instant::now();
            // A full set drops (closes) the extra connection.
            let _ = q.push(c);
        }
    }

    /// Close idle connections that expired or that the server closed.
    pub fn sweep(&self) {
        let max_idle = self.max_idle();
        for q in &self.idle {
            q.retain(|c| c.since.elapsed() < max_idle && c.poke());
        }
    }

    /// A TCP (and, for TLS pools, TLS) connection to the server within the connect timeout.
    async fn open(&self) -> Result<Stream, SendError> {
        let timed_out = || {
            SendError::Connect(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connect timed out",
            ))
        };
        let deadline = Instant::now() + self.connect_timeout;
        let tcp = match tokio::time::timeout_at(deadline, TcpStream::connect(self.addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(SendError::Connect(e)),
            Err(_) => return Err(timed_out()),
        };
        tcp.set_nodelay(true).map_err(SendError::Connect)?;
        let Some(tls) = &self.tls else {
            return Ok(Stream::Plain(tcp));
        };
        let name = tls
            .server_name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(self.addr.ip().into()));
        let connector = tokio_rustls::TlsConnector::from(tls.client.clone());
        match tokio::time::timeout_at(deadline, connector.connect(name, tcp)).await {
            Ok(Ok(s)) => Ok(Stream::Tls(Box::new(s))),
            Ok(Err(e)) => Err(SendError::Connect(e)),
            Err(_) => Err(timed_out()),
        }
    }

    async fn connect(&self) -> Result<Box<Conn>, SendError> {
        let io = self.open().await?;
        // A pooled connection keeps its read buffer at the largest size it grew to;
        // bounded here so idle connections that once carried a large body stay small.
        let (tx, drive) = http1::Builder::new()
            .max_buf_size(UPSTREAM_READ_BUF)
            .handshake(TokioIo::new(io))
            .await
            .map_err(SendError::NotSent)?;
        Ok(Box::new(Conn {
            tx,
            drive,
            since: Instant::now(),
            answer_by: Deadline::default(),
        }))
    }

    /// Send an upgrade request (WebSocket) on a new connection of its own, driven by a
    /// task of its own so that a `101` hands the connection to `hyper::upgrade::on`.
    pub async fn send_upgrade(
        &self,
        req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, SendError> {
        let io = Box::pin(self.open()).await?;
        let (mut tx, drive) = http1::Builder::new()
            .max_buf_size(UPSTREAM_READ_BUF)
            .handshake(TokioIo::new(io))
            .await
            .map_err(SendError::NotSent)?;
        tokio::spawn(async move {
            if let Err(e) = drive.with_upgrades().await {
                tracing::debug!(error = %e, "upgrade connection ended with error");
            }
        });
        tx.send_request(req).await.map_err(SendError::Failed)
    }

    /// Send `req` and wait for the response head until `deadline`: on a pooled
    /// connection when `reuse`, otherwise (and when none is idle) on a new one. The
    /// returned lease must travel with the response body, which drives it.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<RequestBody>,
        reuse: bool,
        deadline: Instant,
    ) -> Result<(Response<Incoming>, Lease), SendError> {
        loop {
            let (mut conn, reused) = match reuse.then(|| self.checkout()).flatten() {
                Some(c) => (c, true),
                // Boxed: connecting is the rare path; keep it out of every request's future.
                None => match tokio::time::timeout_at(deadline, Box::pin(self.connect())).await {
                    Ok(c) => (c?, false),
                    Err(_) => return Err(SendError::TimedOut),
                },
            };
            // Timed out: the connection closes (dropped here), its request unanswered.
            let Some((res, ended)) = conn.exchange(req, deadline).await else {
                return Err(SendError::TimedOut);
            };
            match res {
                Ok(resp) => {
                    self.learn(resp.headers());
                    let conn = (!ended).then_some(conn);
                    let lease = Lease {
                        conn,
                        pool: Arc::clone(self),
                    };
                    return Ok((resp, lease));
                }
                Err(mut e) => match e.take_message() {
                    // Handed back unsent: a reused connection gets another try.
                    Some(back) if reused => req = back,
                    Some(_) => return Err(SendError::NotSent(e.into_error())),
                    None if reused && closed_early(e.error()) => {
                        return Err(SendError::Stale(e.into_error()));
                    }
                    None => return Err(SendError::Failed(e.into_error())),
                },
            }
        }
    }
}

/// The connection a response body is read from; returned to the pool when the body
/// ended cleanly, closed otherwise.
pub struct Lease {
    /// Boxed: the lease travels inside the response body, which moves several times.
    conn: Option<Box<Conn>>,
    pool: Arc<H1Pool>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("open", &self.conn.is_some())
            .finish()
    }
}

impl Lease {
    /// Let the connection read and deliver the body (call before polling the body).
    pub fn drive(&mut self, cx: &mut Context<'_>) {
        if let Some(c) = self.conn.as_mut()
            && Pin::new(&mut c.drive).poll(cx).is_ready()
        {
            self.conn = None;
        }
    }

    /// The body ended cleanly: the connection may serve the next request.
    pub fn release(mut self) {
        if let Some(c) = self.conn.take() {
            self.pool.checkin(c);
        }
    }
}
