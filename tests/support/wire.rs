//! A wire-level test backend: a raw TCP peer that records each request's exact bytes
//! (request line, header lines in order, body with its framing) and answers with
//! scripted bytes. hyper-based backends normalise what they parse; this one does not.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::WAIT;

/// One request exactly as it arrived.
#[derive(Debug, Clone, Default)]
pub struct WireRequest {
    /// The request line, without CRLF.
    pub line: String,
    /// Header lines as sent, in order, without CRLF.
    pub headers: Vec<String>,
    /// The body bytes as sent, chunk framing included.
    pub body: Vec<u8>,
    /// Which connection (counted from 0) it came on.
    pub conn: usize,
}

impl WireRequest {
    /// Values of every field named `name` (case-insensitive), in order.
    pub fn values(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter_map(|l| l.split_once(':'))
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
            .collect()
    }

    /// Header names in order, lower-cased.
    pub fn names(&self) -> Vec<String> {
        self.headers
            .iter()
            .map(|l| l.split(':').next().unwrap_or("").to_ascii_lowercase())
            .collect()
    }
}

/// What the backend does in answer to a request.
#[derive(Debug, Clone)]
pub enum Step {
    Send(Vec<u8>),
    Sleep(Duration),
    /// Close the connection.
    Close,
    /// Never answer; read until the peer closes (counted in `closed`).
    Hang,
    /// Echo every byte that follows back (a tunnel after `101`).
    Echo,
}

pub type Script = Arc<dyn Fn(&WireRequest) -> Vec<Step> + Send + Sync>;

/// A `200 OK` with a short body, keep-alive.
pub fn ok() -> Vec<Step> {
    vec![Step::Send(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
    )]
}

pub struct WireBackend {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<WireRequest>>>,
    conns: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for WireBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WireBackend {
    /// Answers every request with `200 ok` on a keep-alive connection.
    pub async fn spawn() -> WireBackend {
        Self::scripted(|_| ok()).await
    }

    pub async fn scripted(
        script: impl Fn(&WireRequest) -> Vec<Step> + Send + Sync + 'static,
    ) -> WireBackend {
        Self::start(None, script).await
    }

    /// Like [`WireBackend::scripted`], behind TLS (what it records is the plaintext).
    pub async fn tls(
        config: Arc<rustls::ServerConfig>,
        script: impl Fn(&WireRequest) -> Vec<Step> + Send + Sync + 'static,
    ) -> WireBackend {
        Self::start(Some(tokio_rustls::TlsAcceptor::from(config)), script).await
    }

    async fn start(
        tls: Option<tokio_rustls::TlsAcceptor>,
        script: impl Fn(&WireRequest) -> Vec<Step> + Send + Sync + 'static,
    ) -> WireBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let conns = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let script: Script = Arc::new(script);
        let (r, c, d) = (requests.clone(), conns.clone(), closed.clone());
        let task = tokio::spawn(async move {
            let mut peers = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                let n = c.fetch_add(1, Ordering::SeqCst);
                let (r, script, d, tls) = (r.clone(), script.clone(), d.clone(), tls.clone());
                peers.push(tokio::spawn(async move {
                    match tls {
                        None => serve(s, n, r, script).await,
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(s).await {
                                serve(s, n, r, script).await;
                            }
                        }
                    }
                    d.fetch_add(1, Ordering::SeqCst);
                }));
            }
        });
        WireBackend {
            addr,
            requests,
            conns,
            closed,
            task,
        }
    }

    pub fn requests(&self) -> Vec<WireRequest> {
        self.requests.lock().unwrap().clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }

    /// Connections that ended (closed by the peer, or by a script step).
    pub fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }

    /// Wait (bounded) until `n` requests have arrived; returns the `n`th.
    pub async fn nth(&self, n: usize) -> WireRequest {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(r) = self.requests.lock().unwrap().get(n - 1) {
                return r.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "backend saw {} requests, waited for {n}",
                self.requests.lock().unwrap().len()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

async fn serve<S: Io>(mut s: S, conn: usize, seen: Arc<Mutex<Vec<WireRequest>>>, script: Script) {
    let mut buf = Vec::new();
    loop {
        let Some(mut req) = read_request(&mut s, &mut buf).await else {
            return;
        };
        req.conn = conn;
        seen.lock().unwrap().push(req.clone());
        for step in script(&req) {
            match step {
                Step::Send(b) => {
                    if s.write_all(&b).await.is_err() {
                        return;
                    }
                }
                Step::Sleep(d) => tokio::time::sleep(d).await,
                Step::Close => return,
                Step::Hang => {
                    let mut sink = [0u8; 4096];
                    while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
                    return;
                }
                Step::Echo => {
                    let (mut r, mut w) = tokio::io::split(s);
                    let _ = w.write_all(&buf).await;
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    return;
                }
            }
        }
    }
}

/// A stream the backend serves: plain TCP or TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// Read more bytes into `buf`; false at end of input.
async fn fill<S: Io>(s: &mut S, buf: &mut Vec<u8>) -> bool {
    let mut tmp = [0u8; 8192];
    match s.read(&mut tmp).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&tmp[..n]);
            true
        }
    }
}

/// The next CRLF-terminated line (without CRLF), taken from `buf`.
async fn line<S: Io>(s: &mut S, buf: &mut Vec<u8>, raw: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
            let l = String::from_utf8_lossy(&buf[..i]).into_owned();
            raw.extend(buf.drain(..i + 2));
            return Some(l);
        }
        if !fill(s, buf).await {
            return None;
        }
    }
}

async fn take<S: Io>(s: &mut S, buf: &mut Vec<u8>, n: usize, raw: &mut Vec<u8>) -> Option<()> {
    while buf.len() < n {
        if !fill(s, buf).await {
            return None;
        }
    }
    raw.extend(buf.drain(..n));
    Some(())
}

async fn read_request<S: Io>(s: &mut S, buf: &mut Vec<u8>) -> Option<WireRequest> {
    let mut head = Vec::new();
    let first = line(s, buf, &mut head).await?;
    let mut req = WireRequest {
        line: first,
        ..Default::default()
    };
    loop {
        let l = line(s, buf, &mut head).await?;
        if l.is_empty() {
            break;
        }
        req.headers.push(l);
    }
    let chunked = req
        .values("transfer-encoding")
        .iter()
        .any(|v| v.eq_ignore_ascii_case("chunked"));
    let length = req
        .values("content-length")
        .first()
        .and_then(|v| v.parse::<usize>().ok());
    let mut body = Vec::new();
    if chunked {
        loop {
            let size = line(s, buf, &mut body).await?;
            let n = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
            if n == 0 {
                while !line(s, buf, &mut body).await?.is_empty() {}
                break;
            }
            take(s, buf, n + 2, &mut body).await?;
        }
    } else if let Some(n) = length {
        take(s, buf, n, &mut body).await?;
    }
    req.body = body;
    Some(req)
}

/// Send `bytes` to `addr` on a new connection and read one response head and its
/// `Content-Length` body (bounded); returns the connection for more.
pub async fn exchange(addr: SocketAddr, bytes: &[u8]) -> (String, TcpStream) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut pending = Vec::new();
    let got = super::read_message(&mut s, &mut pending)
        .await
        .map(|(h, b)| format!("{h}\r\n\r\n{}", String::from_utf8_lossy(&b)))
        .unwrap_or_default();
    (got, s)
}

/// One request on a new connection: its status (0 if none) and how long it took.
pub async fn timed(addr: SocketAddr, req: &[u8]) -> (u16, std::time::Duration) {
    let t = std::time::Instant::now();
    let (got, _) = exchange(addr, req).await;
    let status = got
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, t.elapsed())
}

/// The 99th percentile of sorted latencies (zero for none).
pub fn p99(lat: &[std::time::Duration]) -> std::time::Duration {
    lat.get((lat.len() * 99 / 100).min(lat.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}
