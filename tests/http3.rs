//! HTTP/3 (`http3 = true` on a TLS listener): QUIC on the same port over UDP, through
//! the same pipeline as HTTP/2. The wire columns: what reaches a raw-socket backend
//! from an HTTP/3 client is the same bytes as from an HTTP/2 client on the same
//! listener (request line, header lines in order, body framing).

mod support;

use std::path::PathBuf;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use support::h3client::H3Client;
use support::tlsclient::{cert, tls_connect};
use support::wire::*;
use support::*;

fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("switchyard-h3-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A TLS listener serving HTTP/3 too, with `extra` listener keys, and pool `p` of `servers`.
fn h3_config(certs: &std::path::Path, servers: &[std::net::SocketAddr], extra: &str) -> Config {
    let d = certs.display();
    cert(certs, "erp", &["erp.test"]);
    Config::bare()
        .listener("{listen0}", &format!("http3 = true\n{extra}"))
        .toml(&format!(
            "[[listeners.tls]]\ncert = \"{d}/erp.pem\"\nkey = \"{d}/erp.key\"\n"
        ))
        .pool("p", servers.iter().copied(), r#"read_timeout = "5s""#)
        .route("all", "p", "")
}

/// An HTTP/2 connection over TLS (ALPN h2) to `addr`.
async fn h2_conn<B>(addr: std::net::SocketAddr) -> hyper::client::conn::http2::SendRequest<B>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (tls, _, alpn) = tls_connect(addr, "erp.test", &[b"h2"]).await;
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    send
}

/// Send `req` over HTTP/2 on TLS; returns the status and body.
async fn h2_tls(addr: std::net::SocketAddr, req: Request<Full<Bytes>>) -> (u16, Bytes) {
    let resp = h2_conn(addr).await.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

/// The header lines a backend got, with the request id's value blanked.
fn lines(r: &WireRequest) -> Vec<String> {
    r.headers
        .iter()
        .map(|l| match l.starts_with("x-request-id:") {
            true => "x-request-id: *".to_owned(),
            false => l.clone(),
        })
        .collect()
}

#[tokio::test]
async fn a_get_over_http3_reaches_the_backend_like_one_over_http2() {
    let d = dir("get");
    let b = WireBackend::spawn().await;
    let p = Proxy::start(&h3_config(&d, &[b.addr], "")).await;
    let url = format!("https://erp.test:{}/app/sales-order?x=1", p.addr().port());
    // Spoofed forwarding fields are replaced for an untrusted peer, from either client.
    let req = || {
        Request::get(&url)
            .header("x-frappe-csrf-token", "t")
            .header("cookie", "sid=abc")
            .header("x-forwarded-for", "6.6.6.6")
            .header("x-real-ip", "6.6.6.6")
            .header("x-forwarded-proto", "http")
    };
    let (status, _) = h2_tls(p.addr(), req().body(Full::default()).unwrap()).await;
    assert_eq!(status, 200);
    let mut c = H3Client::connect(p.addr(), "erp.test")
        .await
        .expect("an HTTP/3 connection");
    let got = c
        .request(req().body(()).unwrap(), b"", 0)
        .await
        .expect("an HTTP/3 answer");
    assert_eq!(got.head.status(), 200);
    assert_eq!(got.head.version(), http::Version::HTTP_3);
    let (h2, h3) = (b.nth(1).await, b.nth(2).await);
    assert_eq!(h2.line, "GET /app/sales-order?x=1 HTTP/1.1");
    assert_eq!(h3.line, h2.line);
    assert_eq!(lines(&h3), lines(&h2), "HTTP/2 and HTTP/3 clients");
    for (k, v) in [
        ("x-forwarded-for", "127.0.0.1"),
        ("x-real-ip", "127.0.0.1"),
        ("x-forwarded-proto", "https"),
    ] {
        assert_eq!(h3.values(k), [v], "{k}: {:?}", h3.headers);
    }
    assert!(
        h3.body.is_empty(),
        "a GET goes out without a body: {:?}",
        h3.body
    );
    c.close().await;
    p.stop().await;
}

/// A streamed HTTP/2 body of `parts` (no length known in advance).
fn streamed(
    parts: Vec<&'static str>,
) -> http_body_util::StreamBody<
    impl futures_util::Stream<Item = Result<http_body::Frame<Bytes>, std::convert::Infallible>>,
> {
    http_body_util::StreamBody::new(futures_util::stream::iter(
        parts
            .into_iter()
            .map(|p| Ok(http_body::Frame::data(Bytes::from_static(p.as_bytes())))),
    ))
}

#[tokio::test]
async fn posts_with_and_without_a_length_reach_the_backend_like_from_http2() {
    let d = dir("post");
    let b = WireBackend::spawn().await;
    let p = Proxy::start(&h3_config(&d, &[b.addr], "")).await;
    let url = format!("https://erp.test:{}/api/method/run", p.addr().port());
    let body = "cmd=frappe.desk.query_report.run&report_name=Stock+Balance";
    let form = "application/x-www-form-urlencoded";
    // With Content-Length: sent in three DATA frames over HTTP/3.
    let head = || {
        Request::post(&url)
            .header("content-type", form)
            .header("content-length", body.len())
    };
    assert_eq!(
        h2_tls(p.addr(), head().body(Full::from(body)).unwrap())
            .await
            .0,
        200
    );
    let mut c = H3Client::connect(p.addr(), "erp.test").await.unwrap();
    let got = c
        .request(head().body(()).unwrap(), body.as_bytes(), 3)
        .await
        .unwrap();
    assert_eq!(got.head.status(), 200);
    let (h2, h3) = (b.nth(1).await, b.nth(2).await);
    assert_eq!(h3.line, "POST /api/method/run HTTP/1.1");
    assert_eq!((h3.line.clone(), lines(&h3)), (h2.line.clone(), lines(&h2)));
    assert_eq!(h3.body, body.as_bytes());
    assert_eq!(h3.body, h2.body);
    // Without a length: chunked upstream, from either client.
    let head = || Request::post(&url).header("content-type", form);
    let parts = vec!["cmd=ping", "&x=1", "&y=2"];
    let req = head().body(streamed(parts)).unwrap();
    let mut send = h2_conn(p.addr()).await;
    assert_eq!(send.send_request(req).await.unwrap().status(), 200);
    let got = c
        .request(head().body(()).unwrap(), b"cmd=ping&x=1&y=2", 3)
        .await
        .unwrap();
    assert_eq!(got.head.status(), 200);
    let (h2, h3) = (b.nth(3).await, b.nth(4).await);
    assert_eq!((h3.line.clone(), lines(&h3)), (h2.line.clone(), lines(&h2)));
    assert!(
        h3.values("transfer-encoding") == ["chunked"],
        "{:?}",
        h3.headers
    );
    let unchunk = |b: &[u8]| -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = b;
        while let Some(i) = rest.windows(2).position(|w| w == b"\r\n") {
            let n = usize::from_str_radix(std::str::from_utf8(&rest[..i]).unwrap(), 16).unwrap();
            out.extend_from_slice(&rest[i + 2..i + 2 + n]);
            rest = &rest[i + 4 + n..];
            if n == 0 {
                break;
            }
        }
        out
    };
    assert_eq!(unchunk(&h3.body), b"cmd=ping&x=1&y=2");
    assert_eq!(unchunk(&h2.body), b"cmd=ping&x=1&y=2");
    // An empty POST without a length (a logout): no body upstream, as from HTTP/2. Its
    // end comes with its head over HTTP/3 only once the stream's end is read.
    let logout = format!("https://erp.test:{}/api/method/logout", p.addr().port());
    let req = Request::post(&logout)
        .body(Full::<Bytes>::default())
        .unwrap();
    assert_eq!(h2_tls(p.addr(), req).await.0, 200);
    let req = Request::post(&logout).body(()).unwrap();
    assert_eq!(c.request(req, b"", 0).await.unwrap().head.status(), 200);
    let (h2, h3) = (b.nth(5).await, b.nth(6).await);
    // hyper's HTTP/2 client adds `content-length: 0` itself; the HTTP/3 client sent none.
    let h2_lines: Vec<String> = lines(&h2)
        .into_iter()
        .filter(|l| l != "content-length: 0")
        .collect();
    assert_eq!((h3.line.clone(), lines(&h3)), (h2.line.clone(), h2_lines));
    assert!(h3.body.is_empty() && h2.body.is_empty());
    c.close().await;
    p.stop().await;
}

#[tokio::test]
async fn http1_and_http2_answers_advertise_http3_with_alt_svc() {
    let d = dir("altsvc");
    let b = Backend::spawn("b").await;
    let cfg = h3_config(&d, &[b.addr], r#"http3_alt_svc_max_age = "1h""#).listener("{listen1}", "");
    let p = Proxy::start(&cfg).await;
    let port = p.addr().port();
    let want = format!("h3=\":{port}\"; ma=3600");
    let (tls, _, _) = tls_connect(p.addr(), "erp.test", &[b"http/1.1"]).await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = send
        .send_request(
            Request::get("/")
                .header("host", "erp.test")
                .body(Full::<Bytes>::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.headers()["alt-svc"], want.as_str(), "HTTP/1.1");
    let mut send = h2_conn(p.addr()).await;
    let url = format!("https://erp.test:{port}/");
    let resp = send
        .send_request(Request::get(&url).body(Full::<Bytes>::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.headers()["alt-svc"], want.as_str(), "HTTP/2");
    let plain = get(&format!("http://{}/", p.addrs[1])).await;
    assert_eq!(plain.status, 200);
    assert!(
        plain.headers.get("alt-svc").is_none(),
        "a listener without http3 advertises nothing"
    );
    p.stop().await;
}

#[tokio::test]
async fn http3_requests_are_logged_as_http_3_0() {
    let d = dir("log");
    let b = Backend::spawn("b").await;
    let log = d.join("access.log");
    let cfg =
        h3_config(&d, &[b.addr], "").toml(&format!("[log]\naccess_log = \"{}\"\n", log.display()));
    let p = Proxy::start(&cfg).await;
    let mut c = H3Client::connect(p.addr(), "erp.test").await.unwrap();
    let got = c
        .get(&format!("https://erp.test:{}/logged", p.addr().port()))
        .await
        .unwrap();
    assert_eq!(got.head.status(), 200);
    c.close().await;
    eventually("the access-log line", || {
        let log = log.clone();
        async move {
            std::fs::read_to_string(&log).is_ok_and(|t| t.contains("\"GET /logged HTTP/3.0\" 200"))
        }
    })
    .await;
    p.stop().await;
}

#[tokio::test]
async fn http3_without_tls_is_a_config_error_with_its_line() {
    let text = "[[listeners]]\naddr = \"127.0.0.1:8443\"\nhttp3 = true\n\n[pools.p]\nservers = [\"127.0.0.1:9\"]\n\n[[routes]]\nname = \"all\"\npool = \"p\"\n";
    let e = switchyard::config::parse(std::path::Path::new("h3.toml"), text)
        .expect_err("http3 without tls")
        .to_string();
    assert!(e.contains("h3.toml:3:"), "{e}");
    assert!(e.contains("needs TLS"), "{e}");
}

#[tokio::test]
async fn a_stop_lets_http3_requests_in_flight_finish() {
    let d = dir("drain");
    let b = Backend::spawn("b").await;
    let p = Proxy::start(&h3_config(&d, &[b.addr], "")).await;
    let addr = p.addr();
    let mut c = H3Client::connect(addr, "erp.test").await.unwrap();
    let url = format!("https://erp.test:{}/slow?ms=700", addr.port());
    let slow = tokio::spawn(async move {
        let got = c.get(&url).await;
        c.close().await;
        got
    });
    eventually("the request reached the backend", || async {
        b.hits() > 0 || !b.seen.lock().unwrap().is_empty()
    })
    .await;
    p.stop().await;
    let got = tokio::time::timeout(WAIT, slow)
        .await
        .unwrap()
        .unwrap()
        .expect("the answer");
    assert_eq!(got.head.status(), 200);
    assert_eq!(got.body, "b");
    let again = tokio::time::timeout(WAIT, H3Client::connect(addr, "erp.test")).await;
    assert!(
        !matches!(again, Ok(Ok(_))),
        "no new QUIC connection after the stop"
    );
}

#[tokio::test]
async fn retry_always_makes_clients_prove_their_address_and_they_are_served() {
    let d = dir("retry");
    let b = Backend::spawn("b").await;
    let p = Proxy::start(&h3_config(&d, &[b.addr], r#"http3_retry = "always""#)).await;
    let mut c = H3Client::connect(p.addr(), "erp.test").await.unwrap();
    let got = c
        .get(&format!("https://erp.test:{}/", p.addr().port()))
        .await
        .unwrap();
    assert_eq!(got.head.status(), 200);
    c.close().await;
    p.stop().await;
}

#[tokio::test]
async fn an_oversize_http3_head_is_431() {
    let d = dir("431");
    let b = Backend::spawn("b").await;
    let cfg = h3_config(&d, &[b.addr], "").toml("[server]\nmax_header_bytes = 8192\n");
    let p = Proxy::start(&cfg).await;
    let mut c = H3Client::connect(p.addr(), "erp.test").await.unwrap();
    let req = Request::get(format!("https://erp.test:{}/", p.addr().port()))
        .header("x-big", "a".repeat(20_000))
        .body(())
        .unwrap();
    let got = c.request(req, b"", 0).await.unwrap();
    assert_eq!(got.head.status(), 431);
    assert_eq!(b.hits(), 0);
    c.close().await;
    p.stop().await;
}

#[tokio::test]
async fn a_renewed_certificate_is_served_to_new_quic_connections() {
    let d = dir("renew");
    let b = Backend::spawn("b").await;
    let file = d.join("switchyard.toml");
    let cfg = h3_config(&d, &[b.addr], "").toml("[reload]\ndebounce = \"20ms\"\n");
    let (p, _) = Proxy::start_file(&cfg, &file).await;
    let url = format!("https://erp.test:{}/", p.addr().port());
    let mut old_conn = H3Client::connect(p.addr(), "erp.test").await.unwrap();
    let old = old_conn.served.clone();
    let new = cert(&d, "erp", &["erp.test"]);
    assert_ne!(new, old);
    let addr = p.addr();
    eventually("the renewed certificate served over QUIC", || {
        let new = new.clone();
        async move {
            match H3Client::connect(addr, "erp.test").await {
                Ok(c) => {
                    let served = c.served.clone();
                    c.close().await;
                    served == new
                }
                Err(_) => false,
            }
        }
    })
    .await;
    let got = old_conn
        .get(&url)
        .await
        .expect("the old connection still serves");
    assert_eq!(got.head.status(), 200);
    old_conn.close().await;
    p.stop().await;
}

#[test]
fn check_shows_http3_on_the_listener_and_names_a_bad_value() {
    let d = dir("check");
    cert(&d, "erp", &["erp.test"]);
    let text = |extra: &str| {
        format!(
            "[[listeners]]\naddr = \"127.0.0.1:8443\"\nhttp3 = true\n{extra}\n[[listeners.tls]]\ncert = \"{0}/erp.pem\"\nkey = \"{0}/erp.key\"\n\n[pools.p]\nservers = [\"127.0.0.1:9\"]\n\n[[routes]]\nname = \"all\"\npool = \"p\"\n",
            d.display()
        )
    };
    let c = switchyard::config::parse(std::path::Path::new("h3.toml"), &text("")).expect("valid");
    let s = c.summary();
    assert!(
        s.contains(
            "HTTP/3 on udp 127.0.0.1:8443 (Alt-Svc ma=86400s, 0-RTT off, retry auto, 128 streams)"
        ),
        "{s}"
    );
    let e = switchyard::config::parse(
        std::path::Path::new("h3.toml"),
        &text("http3_retry = \"sometimes\""),
    )
    .expect_err("a bad retry value")
    .to_string();
    assert!(
        e.contains("h3.toml:4:15") && e.contains("\"auto\", \"always\""),
        "{e}"
    );
}

#[tokio::test]
async fn an_idle_quic_connection_is_closed_after_http3_idle_timeout() {
    let d = dir("idle");
    let b = Backend::spawn("b").await;
    let p = Proxy::start(&h3_config(&d, &[b.addr], r#"http3_idle_timeout = "300ms""#)).await;
    let mut c = H3Client::connect(p.addr(), "erp.test").await.unwrap();
    let got = c
        .get(&format!("https://erp.test:{}/", p.addr().port()))
        .await
        .unwrap();
    assert_eq!(got.head.status(), 200);
    let closed = tokio::time::timeout(WAIT, c.conn.closed())
        .await
        .expect("closed within the wait");
    assert!(
        matches!(closed, quinn::ConnectionError::TimedOut),
        "{closed:?}"
    );
    p.stop().await;
}

#[tokio::test]
async fn a_reload_turns_http3_on_and_off() {
    let d = dir("toggle");
    let b = Backend::spawn("b").await;
    let file = d.join("switchyard.toml");
    let (p, text) = Proxy::start_file(
        &h3_config(&d, &[b.addr], "").toml("[reload]\ndebounce = \"20ms\"\n"),
        &file,
    )
    .await;
    let addr = p.addr();
    assert!(
        H3Client::connect(addr, "erp.test").await.is_ok(),
        "on at start"
    );
    std::fs::write(&file, text.replace("http3 = true", "http3 = false")).unwrap();
    eventually("HTTP/3 off after the reload", || async move {
        tokio::time::timeout(
            std::time::Duration::from_secs(1),
            H3Client::connect(addr, "erp.test"),
        )
        .await
        .map_or(true, |r| r.is_err())
    })
    .await;
    std::fs::write(&file, &text).unwrap();
    eventually("HTTP/3 on again after the next reload", || async move {
        match tokio::time::timeout(
            std::time::Duration::from_secs(1),
            H3Client::connect(addr, "erp.test"),
        )
        .await
        {
            Ok(Ok(mut c)) => {
                let ok = c
                    .get(&format!("https://erp.test:{}/", addr.port()))
                    .await
                    .is_ok_and(|a| a.head.status() == 200);
                c.close().await;
                ok
            }
            _ => false,
        }
    })
    .await;
    p.stop().await;
}

/// A client that cancels request after request (the rapid-reset pattern HTTP/2 servers
/// bound) is disconnected with H3_EXCESSIVE_LOAD after 1,024 cancelled streams.
#[tokio::test]
async fn a_client_that_keeps_cancelling_its_requests_is_disconnected() {
    let d = dir("resets");
    let b = Backend::spawn("b").await;
    let p = Proxy::start(&h3_config(&d, &[b.addr], "")).await;
    let mut c = H3Client::connect(p.addr(), "erp.test").await.unwrap();
    let url = format!("https://erp.test:{}/", p.addr().port());
    let limit = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut sent = 0;
    while std::time::Instant::now() < limit && c.conn.close_reason().is_none() {
        if c.cancel(Request::get(&url).body(()).unwrap())
            .await
            .is_err()
        {
            break;
        }
        sent += 1;
    }
    let closed = tokio::time::timeout(WAIT, c.conn.closed())
        .await
        .expect("closed");
    match closed {
        quinn::ConnectionError::ApplicationClosed(a) => {
            assert_eq!(a.error_code, quinn::VarInt::from_u32(0x107), "{a:?}")
        }
        other => panic!("closed with {other:?} after {sent} cancelled requests"),
    }
    assert!(sent > 1024, "closed after only {sent} cancelled requests");
    p.stop().await;
}

/// `http3_max_streams` bounds the requests a client has open on one connection: with
/// two slow ones open, a third cannot open until one ends.
#[tokio::test]
async fn http3_max_streams_bounds_the_requests_open_on_a_connection() {
    let d = dir("streams");
    let b = Backend::spawn("b").await;
    let p = Proxy::start(&h3_config(&d, &[b.addr], "http3_max_streams = 2")).await;
    let url = format!("https://erp.test:{}/slow?ms=1500", p.addr().port());
    let mut c = H3Client::connect(p.addr(), "erp.test").await.unwrap();
    let mut slow = Vec::new();
    for _ in 0..2 {
        let (mut send, url) = (c.sender(), url.clone());
        slow.push(tokio::spawn(async move {
            let mut s = send
                .send_request(Request::get(&url).body(()).unwrap())
                .await
                .unwrap();
            s.finish().await.unwrap();
            s.recv_response().await.map(|r| r.status())
        }));
    }
    eventually("both slow requests at the backend", || async {
        b.seen.lock().unwrap().len() >= 2
    })
    .await;
    let third = Request::get(format!("https://erp.test:{}/", p.addr().port()))
        .body(())
        .unwrap();
    assert!(
        !c.opens_within(third, std::time::Duration::from_millis(300))
            .await,
        "a third request stream opened past http3_max_streams = 2"
    );
    for s in slow {
        assert_eq!(s.await.unwrap().unwrap(), 200);
    }
    let got = c
        .get(&format!("https://erp.test:{}/", p.addr().port()))
        .await
        .unwrap();
    assert_eq!(
        got.head.status(),
        200,
        "a new request opens once the slow ones ended"
    );
    c.close().await;
    p.stop().await;
}
