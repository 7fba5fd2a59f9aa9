//! HTTP/3 against HTTP/2 on the same switchyard listener (`http3 = true`): requests per
//! CPU-second of the proxy at a fixed concurrency, and a 10 MiB download.
//!
//!     cargo bench --bench h3 -- [seconds=5] [rounds=3] [streams=16]
//!
//! The release binary runs as its own process, one worker, pinned to core 0 (taskset);
//! this process (the clients and a 1 KiB / 10 MiB HTTP/1.1 backend) runs on core 1.
//! Each round runs HTTP/2 then HTTP/3, so drift hits both. One connection per
//! protocol with `streams` requests in flight; the proxy's CPU comes from
//! /proc/PID/task/*/schedstat. Every load loop is bounded by `seconds`; the download
//! column is five downloads in a row on the same connection.
//! nginx 1.22 and HAProxy 2.6 as Debian builds them have no HTTP/3, so there is no
//! third column.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use http::Request;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
const BIG: usize = 10 << 20;
const DOWNLOADS: u32 = 5;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() -> Res<()> {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (secs, rounds, streams) = (
        args.first().copied().unwrap_or(5),
        args.get(1).copied().unwrap_or(3),
        args.get(2).copied().unwrap_or(16) as usize,
    );
    let _ = Command::new("taskset")
        .args(["-p", "-c", "1", &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(Duration::from_secs(secs), rounds, streams))
}

async fn run(secs: Duration, rounds: u64, streams: usize) -> Res<()> {
    let backend = backend().await?;
    let dir = std::env::temp_dir().join(format!("switchyard-h3-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let addr = free_port()?;
    let mut proxy = Proxy::start(&dir, addr, backend)?;
    wait_ready(addr).await?;
    println!(
        "| round | protocol | req/s | proxy CPU µs/req | 10 MiB download MB/s | proxy CPU ms per download |"
    );
    println!("|---|---|---|---|---|---|");
    for round in 1..=rounds {
        for h3 in [false, true] {
            let name = if h3 { "HTTP/3" } else { "HTTP/2" };
            let mut c = Client::connect(addr, h3).await?;
            let (n, cpu) = proxy.measure(c.load(secs, streams)).await?;
            let rate = n as f64 / secs.as_secs_f64();
            let per = cpu.as_secs_f64() * 1e6 / n.max(1) as f64;
            let (took, dcpu) = proxy.measure(c.download()).await?;
            let mbps = BIG as f64 / took.as_secs_f64() / 1e6;
            println!(
                "| {round} | {name} | {rate:.0} | {per:.1} | {mbps:.0} | {:.1} |",
                dcpu.as_secs_f64() * 1e3 / f64::from(DOWNLOADS)
            );
        }
    }
    proxy.stop();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn free_port() -> Res<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// A keep-alive HTTP/1.1 backend: `/big` streams 10 MiB, anything else 1 KiB.
async fn backend() -> Res<SocketAddr> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let svc =
                hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let body = if req.uri().path() == "/big" {
                        let chunks = (0..BIG / 65536).map(|_| {
                            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(vec![
                                b'x';
                                65536
                            ])))
                        });
                        StreamBody::new(futures_util::stream::iter(chunks)).boxed()
                    } else {
                        Full::new(Bytes::from(vec![b'x'; 1024])).boxed()
                    };
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(body))
                });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc),
            );
        }
    });
    Ok(addr)
}

struct Proxy {
    child: Child,
}

impl Proxy {
    fn start(dir: &std::path::Path, addr: SocketAddr, backend: SocketAddr) -> Res<Proxy> {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
        std::fs::write(dir.join("cert.pem"), ck.cert.pem())?;
        std::fs::write(dir.join("key.pem"), ck.signing_key.serialize_pem())?;
        let d = dir.display();
        let cfg = format!(
            "[[listeners]]\naddr = \"{addr}\"\nhttp3 = true\n[[listeners.tls]]\ncert = \"{d}/cert.pem\"\nkey = \"{d}/key.pem\"\n\
             [runtime]\nworkers = 1\n[admin]\nenabled = false\n[log]\naccess_log = \"off\"\n\
             [pools.app]\nservers = [\"{backend}\"]\nread_timeout = \"30s\"\n[[routes]]\nname = \"all\"\npool = \"app\"\n"
        );
        std::fs::write(dir.join("sy.toml"), cfg)?;
        let child = Command::new("taskset")
            .args(["-c", "0", BIN, "--config"])
            .arg(dir.join("sy.toml"))
            .args(["--log-level", "error"])
            .spawn()?;
        Ok(Proxy { child })
    }

    /// utime + stime of the proxy process.
    fn cpu(&self) -> Res<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        let rest = stat.rsplit_once(") ").ok_or("odd stat")?.1;
        let f: Vec<&str> = rest.split(' ').collect();
        let ticks: u64 = f.get(11).ok_or("odd stat")?.parse::<u64>()?
            + f.get(12).ok_or("odd stat")?.parse::<u64>()?;
        Ok(Duration::from_millis(ticks * 10))
    }

    async fn measure<T>(&self, work: impl Future<Output = Res<T>>) -> Res<(T, Duration)> {
        let before = self.cpu()?;
        let out = work.await?;
        Ok((out, self.cpu()? - before))
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_ready(addr: SocketAddr) -> Res<()> {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err("the proxy did not start".into())
}

/// Any certificate is accepted (loopback, a throwaway self-signed one).
#[derive(Debug)]
struct AnyCert;

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn tls(alpn: &[u8]) -> Res<rustls::ClientConfig> {
    let mut c = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AnyCert))
    .with_no_client_auth();
    c.alpn_protocols = vec![alpn.to_vec()];
    Ok(c)
}

/// One connection, HTTP/2 over TLS or HTTP/3.
enum Client {
    H2(
        hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
        String,
    ),
    H3(
        h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
        String,
        quinn::Endpoint,
    ),
}

impl Client {
    async fn connect(addr: SocketAddr, h3: bool) -> Res<Client> {
        let base = format!("https://localhost:{}", addr.port());
        if h3 {
            let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls(b"h3")?)?;
            let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
            ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
            let conn = ep.connect(addr, "localhost")?.await?;
            let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn)).await?;
            tokio::spawn(async move {
                let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
            });
            return Ok(Client::H3(send, base, ep));
        }
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let name = rustls::pki_types::ServerName::try_from("localhost")?;
        let s = tokio_rustls::TlsConnector::from(Arc::new(tls(b"h2")?))
            .connect(name, tcp)
            .await?;
        let (send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(s),
        )
        .await?;
        tokio::spawn(conn);
        Ok(Client::H2(send, base))
    }

    /// GET `path`; the body's length.
    async fn get(&self, path: &str) -> Res<usize> {
        match self {
            Client::H2(send, base) => {
                let resp = send
                    .clone()
                    .send_request(Request::get(format!("{base}{path}")).body(Empty::new())?)
                    .await?;
                Ok(resp.into_body().collect().await?.to_bytes().len())
            }
            Client::H3(send, base, _) => {
                let mut s = send
                    .clone()
                    .send_request(Request::get(format!("{base}{path}")).body(())?)
                    .await?;
                s.finish().await?;
                s.recv_response().await?;
                let mut n = 0;
                while let Some(d) = s.recv_data().await? {
                    n += d.remaining();
                }
                Ok(n)
            }
        }
    }

    /// `streams` requests in flight for `secs`; how many completed.
    async fn load(&mut self, secs: Duration, streams: usize) -> Res<u64> {
        let done = AtomicU64::new(0);
        let until = Instant::now() + secs;
        let one = async || -> Res<()> {
            while Instant::now() < until {
                if self.get("/").await? != 1024 {
                    return Err("short answer".into());
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        };
        let all: Vec<_> = (0..streams).map(|_| one()).collect();
        for r in futures_util::future::join_all(all).await {
            r?;
        }
        Ok(done.load(Ordering::Relaxed))
    }

    /// [`DOWNLOADS`] downloads of 10 MiB one after the other; the time of one.
    async fn download(&mut self) -> Res<Duration> {
        let t = Instant::now();
        for _ in 0..DOWNLOADS {
            if self.get("/big").await? != BIG {
                return Err("short download".into());
            }
        }
        Ok(t.elapsed() / DOWNLOADS)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Client::H3(_, _, ep) = self {
            ep.close(0u32.into(), b"");
        }
    }
}
