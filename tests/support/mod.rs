//! Test helpers: real HTTP backends on 127.0.0.1:0, the real proxy started in-process
//! through `switchyard::run`, a pooled HTTP client, a raw-socket client for malformed
//! requests, a bounded `eventually`, and the one config builder (`config.rs`).
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Upper bound for any wait in a test.
pub const WAIT: Duration = Duration::from_secs(10);

/// One request as a backend saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub version: http::Version,
    pub target: String,
    pub headers: HeaderMap,
    pub body_len: u64,
    pub body_digest: u64,
    /// The body, if at most 1 MiB.
    pub body: Option<Bytes>,
}

/// FNV-1a over a byte stream, to compare large bodies without keeping them.
#[derive(Debug, Clone, Copy)]
pub struct Digest(pub u64);

impl Default for Digest {
    fn default() -> Self {
        Digest(0xcbf2_9ce4_8422_2325)
    }
}

impl Digest {
    pub fn update(&mut self, data: &[u8]) {
        for b in data {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x100_0000_01b3);
        }
    }
    pub fn of(data: &[u8]) -> u64 {
        let mut d = Digest::default();
        d.update(data);
        d.0
    }
}

/// A pattern byte stream of `len` bytes, in 64 KiB chunks.
pub fn pattern_chunks(len: usize) -> impl Iterator<Item = Bytes> {
    let chunk: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
    let chunk = Bytes::from(chunk);
    let mut left = len;
    std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        let n = left.min(chunk.len());
        left -= n;
        Some(chunk.slice(..n))
    })
}

/// How a backend behaves; switch at any time with [`Backend::set_mode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    Normal = 0,
    /// Accept and read requests, never answer.
    Frozen = 1,
    /// Answer 500.
    Fail = 2,
    /// Read the whole request, count it, then drop the connection without an answer.
    DieAfterBody = 3,
}

/// An HTTP backend on 127.0.0.1 that answers with its name and records requests.
/// Paths: `/slow?ms=N` waits; `/big?mb=N` streams N MiB; `/status?code=N`; `/sink`
/// answers the body length and digest; `/hang` never answers; anything else answers
/// `name` with header `x-backend: name`. `kill` closes the listener and every open
/// connection; `restart` listens again on the same address.
pub struct Backend {
    pub addr: SocketAddr,
    pub name: String,
    pub hits: Arc<AtomicUsize>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    mode: Arc<std::sync::atomic::AtomicU8>,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    task: Option<JoinHandle<()>>,
}

fn query_num(target: &str, key: &str) -> Option<u64> {
    let q = target.split_once('?')?.1;
    q.split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

type BoxBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

#[derive(Clone)]
struct Shared {
    name: Arc<str>,
    hits: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    mode: Arc<std::sync::atomic::AtomicU8>,
}

async fn answer(sh: Shared, req: Request<Incoming>) -> Result<Response<BoxBody>, std::io::Error> {
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let mode = sh.mode.load(Ordering::SeqCst);
    if target.starts_with("/hang") || mode == Mode::Frozen as u8 {
        std::future::pending::<()>().await;
    }
    let method = req.method().to_string();
    let version = req.version();
    let headers = req.headers().clone();
    let mut body = req.into_body();
    let (mut len, mut digest, mut kept) = (0u64, Digest::default(), Vec::new());
    while let Some(Ok(f)) = body.frame().await {
        if let Some(d) = f.data_ref() {
            len += d.len() as u64;
            digest.update(d);
            if kept.len() <= 1 << 20 {
                kept.extend_from_slice(d);
            }
        }
    }
    sh.hits.fetch_add(1, Ordering::SeqCst);
    sh.seen.lock().unwrap().push(Seen {
        method,
        version,
        target: target.clone(),
        headers,
        body_len: len,
        body_digest: digest.0,
        body: (len <= 1 << 20).then(|| Bytes::from(kept)),
    });
    if mode == Mode::DieAfterBody as u8 {
        return Err(std::io::Error::other("backend died after reading the body"));
    }
    if let Some(ms) = query_num(&target, "ms") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut resp = if let Some(mb) = query_num(&target, "mb") {
        let stream = futures_util::stream::iter(
            pattern_chunks(mb as usize * 1024 * 1024).map(|c| Ok::<_, Infallible>(Frame::data(c))),
        );
        Response::new(BodyExt::boxed(StreamBody::new(stream)))
    } else if target.starts_with("/sink") {
        Response::new(Full::new(Bytes::from(format!("{len} {}", digest.0))).boxed())
    } else {
        Response::new(Full::new(Bytes::from(sh.name.to_string())).boxed())
    };
    if let Some(code) = query_num(&target, "code") {
        *resp.status_mut() = StatusCode::from_u16(code as u16).unwrap();
    }
    if mode == Mode::Fail as u8 {
        *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    }
    resp.headers_mut()
        .insert("x-backend", sh.name.parse().unwrap());
    Ok(resp)
}

impl Backend {
    pub async fn spawn(name: &str) -> Backend {
        Backend::spawn_at(name, "127.0.0.1:0".parse().unwrap()).await
    }

    /// A backend on `addr` (another loopback address, a chosen port).
    pub async fn spawn_at(name: &str, addr: SocketAddr) -> Backend {
        let listener = TcpListener::bind(addr).await.unwrap();
        let sh = Shared {
            name: name.into(),
            hits: Arc::new(AtomicUsize::new(0)),
            seen: Arc::new(Mutex::new(Vec::new())),
            mode: Arc::new(std::sync::atomic::AtomicU8::new(0)),
        };
        let mut b = Backend {
            addr: listener.local_addr().unwrap(),
            name: name.to_owned(),
            hits: sh.hits.clone(),
            seen: sh.seen.clone(),
            mode: sh.mode.clone(),
            stop: None,
            task: None,
        };
        b.serve(listener, sh);
        b
    }

    fn serve(&mut self, listener: TcpListener, sh: Shared) {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut conns = Vec::new();
            let mut stop_accept = stopped.clone();
            loop {
                let (stream, _) = tokio::select! {
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                    _ = stop_accept.wait_for(|s| *s) => break,
                };
                let sh = sh.clone();
                let mut stopped = stopped.clone();
                conns.push(tokio::spawn(async move {
                    let svc = service_fn(move |req| answer(sh.clone(), req));
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection(TokioIo::new(stream), svc);
                    tokio::select! {
                        _ = conn => {}
                        _ = stopped.wait_for(|s| *s) => {}
                    }
                }));
            }
            drop(listener);
            for c in conns {
                let _ = c.await;
            }
        });
        self.stop = Some(stop);
        self.task = Some(task);
    }

    fn shared(&self) -> Shared {
        Shared {
            name: self.name.as_str().into(),
            hits: self.hits.clone(),
            seen: self.seen.clone(),
            mode: self.mode.clone(),
        }
    }

    pub fn set_mode(&self, m: Mode) {
        self.mode.store(m as u8, Ordering::SeqCst);
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("backend saw no request")
    }

    /// Close the listener and every open connection; returns when the port is closed.
    pub async fn kill(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(true);
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }

    /// Listen again on the same address.
    pub async fn restart(&mut self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener, self.shared());
    }

    pub async fn stop(mut self) {
        self.kill().await;
    }
}

/// The proxy, running in-process on its own listeners.
pub struct Proxy {
    pub addrs: Vec<SocketAddr>,
    pub admin: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Proxy {
    /// Start with `toml`, in which `{listen}` (or `{listen0}`, `{listen1}`, …) is
    /// replaced by a freshly bound 127.0.0.1 port and `{admin}` by an admin port. The
    /// access log is off unless the config sets `[log]`, and the file watcher is off
    /// (there is no file) unless `[reload]` is given.
    pub async fn start(toml: &str) -> Proxy {
        Self::launch(toml, None).await
    }

    /// Like [`Proxy::start`], but the rendered config is written to `file` and loaded
    /// from there, so it can be edited and reloaded. Returns the rendered text too.
    pub async fn start_file(toml: &str, file: &Path) -> (Proxy, String) {
        let p = Self::launch(toml, Some(file)).await;
        let text = std::fs::read_to_string(file).unwrap();
        (p, text)
    }

    async fn launch(toml: &str, file: Option<&Path>) -> Proxy {
        let n = (0..8)
            .take_while(|i| toml.contains(&format!("{{listen{i}}}")))
            .count()
            .max(1);
        let mut listeners = Vec::new();
        let mut text = toml.to_owned();
        for i in 0..n {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let a = l.local_addr().unwrap().to_string();
            text = text.replace(&format!("{{listen{i}}}"), &a);
            if i == 0 {
                text = text.replace("{listen}", &a);
            }
            listeners.push(l);
        }
        if !text.contains("[log]") {
            text.push_str("\n[log]\naccess_log = \"off\"\n");
        }
        if !text.contains("[reload]") && file.is_none() {
            text.push_str("\n[reload]\nwatch = false\n");
        }
        let mut admin = None;
        if text.contains("{admin}") {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            text = text.replace("{admin}", &l.local_addr().unwrap().to_string());
            admin = Some(l);
        } else if !text.contains("[admin]") {
            text.push_str("\n[admin]\nenabled = false\n");
        }
        let admin_addr = admin.as_ref().map(|l| l.local_addr().unwrap());
        let config = match file {
            Some(f) => {
                std::fs::write(f, &text).unwrap();
                switchyard::config::load(f).unwrap_or_else(|e| panic!("{e}\n{text}"))
            }
            None => switchyard::config::parse(Path::new("test.toml"), &text)
                .unwrap_or_else(|e| panic!("{e}\n{text}")),
        };
        let addrs = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = oneshot::channel::<()>();
        let listeners = switchyard::Listeners {
            proxy: listeners,
            admin,
            took_over: false,
            udp: Vec::new(),
        };
        let shutdown = async move {
            let _ = stopped.await;
        };
        let task = tokio::spawn(switchyard::run_with_ready(
            listeners,
            config,
            shutdown,
            move || {
                let _ = ready_tx.send(());
            },
        ));
        tokio::time::timeout(WAIT, ready_rx)
            .await
            .expect("proxy not ready in time")
            .expect("proxy failed to start");
        Proxy {
            addrs,
            admin: admin_addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!(
            "http://{}{path}",
            self.admin.expect("config has no {admin}")
        )
    }

    /// Signal shutdown and wait (bounded) for `run` to return.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(WAIT, t)
                .await
                .expect("proxy did not stop")
                .unwrap()
                .unwrap();
        }
    }
}

/// A response read whole.
#[derive(Debug)]
pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

pub async fn send(req: Request<Full<Bytes>>) -> Got {
    let resp = tokio::time::timeout(WAIT, client().request(req))
        .await
        .expect("request timed out")
        .expect("request failed");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body failed").to_bytes();
    Got {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

pub async fn get(url: &str) -> Got {
    send(Request::get(url).body(Full::default()).unwrap()).await
}

pub async fn post(url: &str, content_type: &str, body: impl Into<Bytes>) -> Got {
    send(
        Request::post(url)
            .header("content-type", content_type)
            .body(Full::new(body.into()))
            .unwrap(),
    )
    .await
}

/// One HTTP/2 request (prior knowledge) on a new connection to `addr`, whatever the
/// URI's authority (it becomes `:authority`); returns the status.
pub async fn h2_send(addr: SocketAddr, req: Request<Full<Bytes>>) -> u16 {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let resp = tokio::time::timeout(WAIT, tx.send_request(req))
        .await
        .unwrap()
        .unwrap();
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    status
}

/// Write raw bytes, then read until the proxy closes the connection (bounded).
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Poll `f` until it returns true, for at most `WAIT`.
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("not reached within {WAIT:?}: {what}");
}

/// Client loops sending GETs over keep-alive connections until stopped (at most 60 s),
/// counting 200s and everything else.
pub struct Load {
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    running: Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Load {
    pub fn start(url: String, clients: usize) -> Load {
        Load::each(clients, Duration::from_secs(60), move || {
            let url = url.clone();
            let c = client();
            async move {
                let req = Request::get(url.as_str())
                    .body(Full::<Bytes>::default())
                    .unwrap();
                match tokio::time::timeout(WAIT, c.request(req)).await {
                    Ok(Ok(r)) if r.status() == 200 => true,
                    Ok(Ok(r)) => {
                        let status = r.status();
                        let body = r.into_body().collect().await.map(|b| b.to_bytes());
                        eprintln!("load: {status} {body:?}");
                        false
                    }
                    other => {
                        eprintln!("load: {:?}", other.map(|r| r.map(|r| r.status())));
                        false
                    }
                }
            }
        })
    }

    /// `clients` loops each calling `one` (a request: true when it succeeded) until
    /// stopped, for at most `limit`.
    pub fn each<F, Fut>(clients: usize, limit: Duration, one: F) -> Load
    where
        F: Fn() -> Fut + Clone + Send + 'static,
        Fut: std::future::Future<Output = bool> + Send,
    {
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let tasks = (0..clients)
            .map(|_| {
                let (ok, failed, running, one) =
                    (ok.clone(), failed.clone(), running.clone(), one.clone());
                tokio::spawn(async move {
                    let deadline = tokio::time::Instant::now() + limit;
                    while running.load(Ordering::SeqCst) && tokio::time::Instant::now() < deadline {
                        let c = if one().await { &ok } else { &failed };
                        c.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        Load {
            ok,
            failed,
            running,
            tasks,
        }
    }

    /// Wait (bounded) until `n` more requests have succeeded.
    pub async fn wait_for_more(&self, n: usize) {
        let at = self.ok();
        eventually("load progresses", || async { self.ok() > at + n }).await;
    }

    pub fn ok(&self) -> usize {
        self.ok.load(Ordering::SeqCst)
    }

    /// Stop the clients; returns (ok, failed).
    pub async fn stop(self) -> (usize, usize) {
        self.running.store(false, Ordering::SeqCst);
        for t in self.tasks {
            t.await.unwrap();
        }
        (
            self.ok.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
        )
    }
}

/// A free 127.0.0.1 port (bound and released; for configs that need the address up front).
pub fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Read one `Content-Length`-framed HTTP/1 message from `s` within `WAIT`: its head
/// (start line and fields) and body. Bytes read past it stay in `pending` for the next
/// call (pipelining). `None` if the connection closes or errs first.
pub async fn read_message(
    s: &mut tokio::net::TcpStream,
    pending: &mut Vec<u8>,
) -> Option<(String, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).into_owned();
            let len = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if pending.len() >= end + 4 + len {
                let body = pending[end + 4..end + 4 + len].to_vec();
                pending.drain(..end + 4 + len);
                return Some((head, body));
            }
        }
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        pending.extend_from_slice(&buf[..n]);
    }
}
pub mod bench;
pub mod config;
pub mod dns;
pub mod engineio;
pub mod h3client;
pub mod tlsclient;
pub mod wire;
pub mod workers;

#[allow(unused_imports)] // not every test file uses both
pub use config::{ADMIN, Config};
