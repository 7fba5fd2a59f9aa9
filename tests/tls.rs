//! TLS, HTTP/2 and WebSockets through the real proxy: SNI and ALPN, certificate
//! renewal on disk, HTTP→HTTPS redirect, WebSocket echo over plain and TLS listeners,
//! tunnel idle timeout, header templates, and a long-poll held for 30 s.

mod support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::Request;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use support::tlsclient::{Record, cert, tls_connect};
use support::*;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{CloseFrame, Frame};

fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("switchyard-tls-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// One GET over an established connection, HTTP/1.1 or HTTP/2.
async fn get_over<S>(io: S, h2: bool, host: &str, path: &str) -> (u16, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let req = Request::get(format!("https://{host}{path}"))
        .header("host", host)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = if h2 {
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            TokioIo::new(io),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let mut req = req;
        req.headers_mut().remove("host");
        send.send_request(req).await.unwrap()
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut req = req;
        *req.uri_mut() = path.parse().unwrap();
        send.send_request(req).await.unwrap()
    };
    let status = resp.status().as_u16();
    (
        status,
        String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned(),
    )
}

/// An https listener with two certificates (`erp`, `wild`) from `certs`, and pool `p`.
fn tls_config(backend: &Backend, certs: &Path) -> Config {
    let d = certs.display();
    Config::bare()
        .listener("{listen}", r#"name = "https""#)
        .toml(&format!(
            r#"
            [[listeners.tls]]
            cert = "{d}/erp.pem"
            key = "{d}/erp.key"
            [[listeners.tls]]
            cert = "{d}/wild.pem"
            key = "{d}/wild.key"
            "#
        ))
        .pool("p", [backend.addr], "")
        .route("all", "p", "")
}

#[tokio::test]
async fn sni_picks_the_certificate_and_alpn_offers_h2_and_http1() {
    let b = Backend::spawn("b").await;
    let d = dir("sni");
    let erp = cert(&d, "erp", &["erp.example.com"]);
    let wild = cert(&d, "wild", &["*.shop.example"]);
    let proxy = Proxy::start(&tls_config(&b, &d)).await;
    let (s, served, alpn) =
        tls_connect(proxy.addr(), "erp.example.com", &[b"h2", b"http/1.1"]).await;
    assert_eq!(served, erp);
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(
        get_over(s, true, "erp.example.com", "/h2").await,
        (200, "b".into())
    );
    assert_eq!(b.last().headers["x-forwarded-proto"], "https");
    let (s, served, alpn) = tls_connect(proxy.addr(), "a.shop.example", &[b"http/1.1"]).await;
    assert_eq!(served, wild, "wildcard SAN");
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(
        get_over(s, false, "a.shop.example", "/h1").await,
        (200, "b".into())
    );
    let (_, served, _) = tls_connect(proxy.addr(), "unknown.example.org", &[b"http/1.1"]).await;
    assert_eq!(served, erp, "first certificate is the default");
    proxy.stop().await;
}

#[tokio::test]
async fn renewed_certificate_is_served_next_while_old_connections_stay_up() {
    let b = Backend::spawn("b").await;
    let d = dir("renew");
    let old = cert(&d, "erp", &["erp.example.com"]);
    cert(&d, "wild", &["*.shop.example"]);
    let file = d.join("switchyard.toml");
    let (proxy, _) = Proxy::start_file(
        &tls_config(&b, &d).toml("[reload]\ndebounce = \"20ms\""),
        &file,
    )
    .await;
    let (s, served, _) = tls_connect(proxy.addr(), "erp.example.com", &[b"http/1.1"]).await;
    assert_eq!(served, old);
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = || {
        Request::get("/x")
            .header("host", "erp.example.com")
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    assert_eq!(send.send_request(req()).await.unwrap().status(), 200);
    let new = cert(&d, "erp", &["erp.example.com"]);
    assert_ne!(new, old);
    let addr = proxy.addr();
    eventually("renewed certificate served", || {
        let new = new.clone();
        async move { tls_connect(addr, "erp.example.com", &[b"http/1.1"]).await.1 == new }
    })
    .await;
    assert_eq!(
        send.send_request(req()).await.unwrap().status(),
        200,
        "old connection still up"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn bad_certificate_is_a_config_error_naming_the_file() {
    let d = dir("bad");
    std::fs::write(d.join("bad.pem"), "not a certificate").unwrap();
    let text = format!(
        r#"[[listeners]]
addr = "127.0.0.1:0"
[[listeners.tls]]
cert = "{}/bad.pem"
key = "{}/bad.key"
"#,
        d.display(),
        d.display()
    );
    let err = switchyard::config::parse(Path::new("t.toml"), &text)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("t.toml:4:8: TLS:") && err.contains("bad.pem"),
        "{err}"
    );
}

#[tokio::test]
async fn plain_listener_redirects_to_https() {
    let b = Backend::spawn("b").await;
    let proxy = Proxy::start(
        &Config::bare()
            .listener("{listen}", "redirect_https = true")
            .pool("p", [b.addr], "")
            .route("all", "p", ""),
    )
    .await;
    let got = send(
        Request::get(proxy.url("/app/stock?x=1"))
            .header("host", "ERP.example.com:8080")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(got.status, 301);
    assert_eq!(
        got.headers["location"],
        "https://erp.example.com/app/stock?x=1"
    );
    assert_eq!(b.hits(), 0);
    proxy.stop().await;
}

/// A WebSocket echo server (tungstenite answers the upgrade handshake itself).
async fn ws_echo() -> (std::net::SocketAddr, Arc<Mutex<Vec<http::HeaderMap>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let seen = s2.clone();
            tokio::spawn(async move {
                // The callback's Result type is fixed by tungstenite.
                #[allow(clippy::result_large_err)]
                let cb = |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
                          resp| {
                    seen.lock().unwrap().push(req.headers().clone());
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(s, cb).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, seen)
}

async fn ws_session<S>(stream: S, url: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let req = Request::get(url)
        .header("host", "erp.example.com")
        .header("origin", "https://evil.example")
        .header(
            "sec-websocket-key",
            tokio_tungstenite::tungstenite::handshake::client::generate_key(),
        )
        .header("sec-websocket-version", "13")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .body(())
        .unwrap();
    let (ws, resp) = tokio_tungstenite::client_async(req, stream).await.unwrap();
    assert_eq!(resp.status(), 101);
    let (mut tx, mut rx) = ws.split();
    // Both directions at once: a writer task and a reader here.
    let big = vec![7u8; 1 << 20];
    let big2 = big.clone();
    let writer = tokio::spawn(async move {
        for i in 0..50 {
            tx.send(Message::text(format!("msg {i}"))).await.unwrap();
        }
        tx.send(Message::binary(big2)).await.unwrap();
        // A fragmented text message: three frames.
        tx.send(Message::Frame(Frame::message(
            Bytes::from_static(b"frag-"),
            OpCode::Data(Data::Text),
            false,
        )))
        .await
        .unwrap();
        tx.send(Message::Frame(Frame::message(
            Bytes::from_static(b"ment"),
            OpCode::Data(Data::Continue),
            false,
        )))
        .await
        .unwrap();
        tx.send(Message::Frame(Frame::message(
            Bytes::from_static(b"ed"),
            OpCode::Data(Data::Continue),
            true,
        )))
        .await
        .unwrap();
        tx.send(Message::Ping(Bytes::from_static(b"are you there")))
            .await
            .unwrap();
        tx
    });
    for i in 0..50 {
        assert_eq!(
            rx.next().await.unwrap().unwrap(),
            Message::text(format!("msg {i}"))
        );
    }
    assert_eq!(rx.next().await.unwrap().unwrap(), Message::binary(big));
    assert_eq!(
        rx.next().await.unwrap().unwrap(),
        Message::text("frag-mented")
    );
    assert_eq!(
        rx.next().await.unwrap().unwrap(),
        Message::Pong(Bytes::from_static(b"are you there"))
    );
    let mut tx = writer.await.unwrap();
    tx.send(Message::Close(Some(CloseFrame {
        code: CloseCode::Library(4001),
        reason: "bye".into(),
    })))
    .await
    .unwrap();
    match rx.next().await {
        Some(Ok(Message::Close(Some(f)))) => assert_eq!(f.code, CloseCode::Library(4001)),
        other => panic!("expected the close code echoed, got {other:?}"),
    }
}

/// The socket.io route of a Frappe bench to the `ws` server; `listener` adds to the
/// listener (TLS), `server` to `[server]`.
fn ws_config(ws: std::net::SocketAddr, listener: &str, server: &str) -> Config {
    Config::new()
        .toml(listener)
        .toml(&format!("[server]\n{server}"))
        .pool("socketio", [ws], "")
        .route(
            "socketio",
            "socketio",
            r#"
            match.path_prefix = "/socket.io"
            set_request_headers = { "Origin" = "{scheme}://{http_host}", "X-Frappe-Site-Name" = "{host}" }
            "#,
        )
}

#[tokio::test]
async fn websocket_echo_over_plain_and_tls() {
    let (ws, seen) = ws_echo().await;
    let proxy = Proxy::start(&ws_config(ws, "", "").toml(ADMIN)).await;
    ws_session(
        TcpStream::connect(proxy.addr()).await.unwrap(),
        &format!("ws://{}/socket.io/?EIO=4&transport=websocket", proxy.addr()),
    )
    .await;
    let h = seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        h["origin"], "http://erp.example.com",
        "Origin rewritten from the Host, client value dropped"
    );
    assert_eq!(h["x-frappe-site-name"], "erp.example.com");
    let url = proxy.admin_url("/metrics");
    eventually("tunnel bytes counted once the tunnel closed", || {
        let url = url.clone();
        async move {
            let m = get(&url).await.body;
            m.lines().any(|l| {
                l.starts_with("switchyard_tunnel_bytes_upstream_to_client_total ")
                    && l.split(' ')
                        .nth(1)
                        .and_then(|v| v.parse::<f64>().ok())
                        .is_some_and(|v| v > 1_048_576.0)
            }) && m.contains("switchyard_tunnels_open 0")
        }
    })
    .await;
    proxy.stop().await;

    let d = dir("ws");
    cert(&d, "erp", &["erp.example.com"]);
    let tls = format!(
        "[[listeners.tls]]\ncert = \"{0}/erp.pem\"\nkey = \"{0}/erp.key\"",
        d.display()
    );
    let proxy = Proxy::start(&ws_config(ws, &tls, "")).await;
    let (s, _, _) = tls_connect(proxy.addr(), "erp.example.com", &[b"http/1.1"]).await;
    ws_session(
        s,
        "wss://erp.example.com/socket.io/?EIO=4&transport=websocket",
    )
    .await;
    let h = seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(h["origin"], "https://erp.example.com");
    proxy.stop().await;
}

#[tokio::test]
async fn silent_tunnel_is_closed_after_the_idle_timeout() {
    let (ws, _) = ws_echo().await;
    let proxy = Proxy::start(&ws_config(ws, "", "tunnel_idle_timeout = \"300ms\"")).await;
    let req = format!("ws://{}/socket.io/", proxy.addr());
    let (mut ws, _) =
        tokio_tungstenite::client_async(req, TcpStream::connect(proxy.addr()).await.unwrap())
            .await
            .unwrap();
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hi"));
    let started = tokio::time::Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("silent tunnel was not closed");
    assert!(!matches!(end, Some(Ok(Message::Text(_)))), "{end:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "closed too early: {:?}",
        started.elapsed()
    );
    proxy.stop().await;
}

#[tokio::test]
async fn h2c_upgrade_is_never_tunnelled() {
    let b = Backend::spawn("b").await;
    let proxy = Proxy::start(&Config::one_pool([b.addr], "")).await;
    let resp = raw(proxy.addr(), b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nConnection: close\r\n\r\n").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let h = b.last().headers;
    assert!(
        !h.contains_key("upgrade") && !h.contains_key("http2-settings"),
        "{h:?}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn long_poll_held_30_seconds_passes() {
    let b = Backend::spawn("b").await;
    let proxy = Proxy::start(
        &Config::new()
            .pool("p", [b.addr], r#"read_timeout = "60s""#)
            .route("socketio", "p", ""),
    )
    .await;
    let started = tokio::time::Instant::now();
    let resp = tokio::time::timeout(
        Duration::from_secs(45),
        client().request(
            Request::get(proxy.url("/socket.io/?EIO=4&transport=polling&ms=30000"))
                .body(Full::default())
                .unwrap(),
        ),
    )
    .await
    .expect("long poll cut short")
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(started.elapsed() >= Duration::from_secs(30));
    proxy.stop().await;
}

#[tokio::test]
async fn upstream_tls_with_ca_file_and_server_name_and_upstream_h2() {
    // A TLS backend for "app.internal", trusted through its own certificate as CA file.
    let d = dir("upstream");
    cert(&d, "app", &["app.internal"]);
    let pairs = [(d.join("app.pem"), d.join("app.key"))];
    let server_cfg = switchyard::tls::server_config(&pairs).unwrap();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let acceptor = tokio_rustls::TlsAcceptor::from(server_cfg);
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else {
                    return;
                };
                let svc =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let body = format!("tls-backend {:?} {}", req.version(), req.uri().path());
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from(body),
                        )))
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(TokioIo::new(tls), svc)
                .await;
            });
        }
    });
    let plain = Backend::spawn("plain").await;
    let secure = format!(
        r#"
        [pools.secure.tls]
        ca = "{}"
        server_name = "app.internal"
        [pools.secure.health]
        path = "/hc"
        interval = "100ms"
        healthy_after = 1
        unhealthy_after = 1
        "#,
        d.join("app.pem").display()
    );
    let proxy = Proxy::start(
        &Config::new()
            .toml(ADMIN)
            .pool("secure", [addr], "")
            .toml(&secure)
            .pool("h2", [plain.addr], "upstream_h2 = true")
            .route("h2", "h2", r#"match.path_prefix = "/h2""#)
            .route("secure", "secure", ""),
    )
    .await;
    let got = get(&proxy.url("/x")).await;
    assert_eq!(
        (got.status.as_u16(), got.body.as_str()),
        (200, "tls-backend HTTP/1.1 /x")
    );
    // The TLS pool's probes pass over TLS, so the server stays in rotation.
    let url = proxy.admin_url("/upstreams");
    eventually("TLS probe recorded", || {
        let url = url.clone();
        async move { get(&url).await.body.contains("\"detail\": \"status 200\"") }
    })
    .await;
    assert_eq!(get(&proxy.url("/y")).await.status, 200);
    // HTTP/2 (prior knowledge) to the upstream.
    assert_eq!(get(&proxy.url("/h2/z")).await.body, "plain");
    assert_eq!(plain.last().version, http::Version::HTTP_2);
    proxy.stop().await;

    // The wrong server name fails verification: 502, never a plaintext fallback.
    let tls = format!(
        r#"
        [pools.secure.tls]
        ca = "{}"
        server_name = "other.internal"
        "#,
        d.join("app.pem").display()
    );
    let proxy = Proxy::start(
        &Config::new()
            .pool("secure", [addr], "")
            .toml(&tls)
            .route("secure", "secure", ""),
    )
    .await;
    assert_eq!(get(&proxy.url("/x")).await.status, 502);
    proxy.stop().await;
}

#[tokio::test]
async fn tls_sessions_resume() {
    let b = Backend::spawn("b").await;
    let d = dir("resume");
    cert(&d, "erp", &["erp.example.com"]);
    cert(&d, "wild", &["*.shop.example"]);
    let proxy = Proxy::start(&tls_config(&b, &d)).await;
    let rec = Arc::new(Record::default());
    let cfg = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(rec)
        .with_no_client_auth(),
    );
    let mut kinds = Vec::new();
    for _ in 0..2 {
        let tcp = TcpStream::connect(proxy.addr()).await.unwrap();
        let s = tokio_rustls::TlsConnector::from(cfg.clone())
            .connect(ServerName::try_from("erp.example.com").unwrap(), tcp)
            .await
            .unwrap();
        kinds.push(s.get_ref().1.handshake_kind());
        // Complete one exchange so the server's session tickets are read.
        assert_eq!(get_over(s, false, "erp.example.com", "/r").await.0, 200);
    }
    assert_eq!(
        kinds,
        vec![
            Some(rustls::HandshakeKind::Full),
            Some(rustls::HandshakeKind::Resumed)
        ]
    );
    proxy.stop().await;
}
