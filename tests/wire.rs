//! What switchyard puts on the wire towards a backend, byte for byte, with HTTP/1.0,
//! HTTP/1.1 and HTTP/2 clients. The backend is a raw socket (`support::wire`) that
//! records the exact request line, header lines in order and body framing.

mod support;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use support::wire::*;
use support::*;

fn config(server: std::net::SocketAddr) -> Config {
    Config::one_pool([server], r#"read_timeout = "2s""#)
}

/// The fields the proxy adds after the client's, for a client on 127.0.0.1.
fn added(req: &WireRequest, host: &str) -> Vec<String> {
    vec![
        "x-forwarded-for: 127.0.0.1".to_owned(),
        "x-real-ip: 127.0.0.1".to_owned(),
        "x-forwarded-proto: http".to_owned(),
        format!("x-forwarded-host: {host}"),
        format!("x-request-id: {}", req.values("x-request-id")[0]),
    ]
}

async fn h1(proxy: &Proxy, bytes: &[u8]) -> String {
    exchange(proxy.addr(), bytes).await.0
}

fn h2_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new())
}

#[tokio::test]
async fn http11_origin_form_goes_out_unchanged_with_host_byte_for_byte() {
    let b = WireBackend::spawn().await;
    let p = Proxy::start(&config(b.addr)).await;
    let got = h1(
        &p,
        b"GET /a/b?x=1 HTTP/1.1\r\nHost: Example.COM:8080\r\nAccept: */*\r\n\r\n",
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    let r = b.nth(1).await;
    assert_eq!(r.line, "GET /a/b?x=1 HTTP/1.1");
    let mut want = vec![
        "host: Example.COM:8080".to_owned(),
        "accept: */*".to_owned(),
    ];
    want.extend(added(&r, "Example.COM:8080"));
    assert_eq!(r.headers, want);
    assert!(r.body.is_empty());
    p.stop().await;
}

#[tokio::test]
async fn absolute_form_becomes_origin_form_with_host_from_the_target() {
    let b = WireBackend::spawn().await;
    let p = Proxy::start(&config(b.addr)).await;
    h1(
        &p,
        b"GET http://erp.test:81/p?q HTTP/1.1\r\nHost: other.test\r\n\r\n",
    )
    .await;
    let r = b.nth(1).await;
    assert_eq!(r.line, "GET /p?q HTTP/1.1");
    assert_eq!(r.values("host"), ["erp.test:81"]);
    p.stop().await;
}

#[tokio::test]
async fn options_asterisk_stays_asterisk_form() {
    let b = WireBackend::spawn().await;
    let p = Proxy::start(&config(b.addr)).await;
    h1(&p, b"OPTIONS * HTTP/1.1\r\nHost: a.test\r\n\r\n").await;
    assert_eq!(b.nth(1).await.line, "OPTIONS * HTTP/1.1");
    p.stop().await;
}

#[tokio::test]
async fn http10_without_host_goes_out_as_http11_with_the_server_as_host() {
    let b = WireBackend::spawn().await;
    let p = Proxy::start(&config(b.addr)).await;
    let got = h1(&p, b"GET /ten HTTP/1.0\r\n\r\n").await;
    assert!(
        got.starts_with("HTTP/1.0 200") || got.starts_with("HTTP/1.1 200"),
        "{got}"
    );
    let r = b.nth(1).await;
    assert_eq!(r.line, "GET /ten HTTP/1.1");
    assert_eq!(r.values("host"), [b.addr.to_string()]);
    p.stop().await;
}

#[tokio::test]
async fn http2_authority_becomes_host_and_cookie_crumbs_are_joined() {
    let b = WireBackend::spawn().await;
    let p = Proxy::start(&config(b.addr)).await;
    let req = Request::get("http://erp.test:81/desk?x=1")
        .header("cookie", "sid=abc")
        .header("cookie", "full_name=A")
        .header("x-one", "1")
        .body(Full::default())
        .unwrap();
    let resp = h2_send(p.addr(), req).await;
    assert_eq!(resp, 200);
    let r = b.nth(1).await;
    assert_eq!(r.line, "GET /desk?x=1 HTTP/1.1");
    let host = "erp.test:81";
    let mut want = vec![
        "cookie: sid=abc; full_name=A".to_owned(),
        "x-one: 1".to_owned(),
    ];
    want.extend(added(&r, host));
    want.push(format!("host: {host}"));
    let mut got = r.headers.clone();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(r.values("cookie").len(), 1);
    p.stop().await;
}

#[tokio::test]
async fn bodies_keep_their_framing_on_every_method() {
    let b = WireBackend::spawn().await;
    let p = Proxy::start(&config(b.addr)).await;
    let (_, mut s) = exchange(
        p.addr(),
        b"GET /q HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    let r = b.nth(1).await;
    assert_eq!(r.line, "GET /q HTTP/1.1");
    assert_eq!(r.values("transfer-encoding"), ["chunked"]);
    assert_eq!(r.body, b"5\r\nhello\r\n0\r\n\r\n");
    use tokio::io::AsyncWriteExt;
    s.write_all(b"DELETE /d HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
        .await
        .unwrap();
    let r = b.nth(2).await;
    assert_eq!(r.line, "DELETE /d HTTP/1.1");
    assert_eq!(r.values("content-length"), ["3"]);
    assert_eq!(r.body, b"abc");
    for method in ["GET", "OPTIONS"] {
        let req = format!("{method} /g HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbody");
        s.write_all(req.as_bytes()).await.unwrap();
    }
    for (n, method) in [(3, "GET"), (4, "OPTIONS")] {
        let r = b.nth(n).await;
        assert_eq!(r.line, format!("{method} /g HTTP/1.1"));
        assert_eq!(
            (r.values("content-length"), r.body),
            (vec!["4".to_owned()], b"body".to_vec())
        );
    }
    p.stop().await;
}

#[tokio::test]
async fn requests_rfc9112_refuses_get_400_and_never_reach_the_backend() {
    let b = WireBackend::spawn().await;
    let p = Proxy::start(&config(b.addr)).await;
    for bad in [
        &b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET brl-j HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n",
        b"GET /../../etc/passwd HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /a/%2e%2e/%2e%2e/x HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        let got = h1(&p, bad).await;
        assert!(
            got.starts_with("HTTP/1.1 400"),
            "{}: {got}",
            String::from_utf8_lossy(bad)
        );
    }
    // h2 and HTTP/1.0 clients go through the same checks.
    let got = h1(&p, b"GET /../x HTTP/1.0\r\n\r\n").await;
    assert!(got.contains(" 400 "), "{got}");
    let resp = h2_client()
        .request(
            Request::get(format!("http://{}/../../x", p.addr()))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let _ = resp.into_body().collect().await;
    assert_eq!(b.requests().len(), 0, "nothing refused reached the backend");
    p.stop().await;
}

#[tokio::test]
async fn header_names_with_underscores_are_dropped() {
    let b = WireBackend::spawn().await;
    let p = Proxy::start(&config(b.addr)).await;
    h1(
        &p,
        b"GET / HTTP/1.1\r\nHost: a\r\nTransfer_Encoding: chunked\r\nX_Sid: 1\r\nX-Ok: 1\r\n\r\n",
    )
    .await;
    let names = b.nth(1).await.names();
    assert!(!names.iter().any(|n| n.contains('_')), "{names:?}");
    assert!(names.contains(&"x-ok".to_owned()));
    p.stop().await;
}

/// After an upgrade request that is not answered `101`, the guard goes on checking:
/// a smuggling-shaped request that follows never reaches the backend.
#[tokio::test]
async fn the_framing_guard_fails_closed_after_upgrades_and_bad_framing() {
    let b = WireBackend::spawn().await;
    let p = Proxy::start(&config(b.addr)).await;
    let smuggled = b"POST /smuggled HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let mut first =
        b"GET /up HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n".to_vec();
    first.extend_from_slice(smuggled);
    let all = raw(p.addr(), &first).await;
    assert!(all.starts_with("HTTP/1.1 200"), "{all}");
    assert!(
        all.contains("HTTP/1.1 400"),
        "the smuggled request is refused: {all}"
    );
    let long_chunk = format!(
        "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;{}\r\nx\r\n0\r\n\r\n",
        "e".repeat(5000)
    );
    for bad in [
        &b"POST /cl HTTP/1.1\r\nHost: a\r\nContent-Length: 4x\r\n\r\nabcd"[..],
        b"POST /te HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked, identity\r\n\r\n",
        long_chunk.as_bytes(),
    ] {
        let got = raw(p.addr(), bad).await;
        assert!(got.starts_with("HTTP/1.1 400"), "{got}");
    }
    let lines: Vec<String> = b.requests().into_iter().map(|r| r.line).collect();
    assert_eq!(
        lines,
        ["GET /up HTTP/1.1"],
        "only the clean request was forwarded"
    );
    assert!(
        b.nth(1).await.values("upgrade").is_empty(),
        "h2c upgrade stripped"
    );
    p.stop().await;
}

#[tokio::test]
async fn a_broken_h2_preface_is_closed_not_answered_in_http1() {
    let b = WireBackend::spawn().await;
    let p = Proxy::start(&config(b.addr)).await;
    let got = raw(p.addr(), b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n").await;
    assert_eq!(got, "", "closed without an HTTP/1.1 answer");
    p.stop().await;
}

/// A browser's socket.io moves from polling to WebSocket on its open keep-alive
/// connection: the upgrade is the second request there.
#[tokio::test]
async fn websocket_upgrade_as_the_second_request_on_a_keepalive_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let b = WireBackend::scripted(|r| {
        if r.values("upgrade").is_empty() {
            ok()
        } else {
            vec![
                Step::Send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n".to_vec()),
                Step::Echo,
            ]
        }
    })
    .await;
    let p = Proxy::start(&config(b.addr)).await;
    let (first, mut s) = exchange(
        p.addr(),
        b"GET /socket.io/?transport=polling HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    s.write_all(b"GET /socket.io/?transport=websocket HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").await.unwrap();
    let mut pending = Vec::new();
    let (head, _) = read_message(&mut s, &mut pending).await.expect("101");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s.write_all(b"ping").await.unwrap();
    let mut echo = pending;
    while echo.len() < 4 {
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "tunnel closed");
        echo.extend_from_slice(&buf[..n]);
    }
    assert_eq!(echo, b"ping");
    let up = b.nth(2).await;
    assert_eq!(up.line, "GET /socket.io/?transport=websocket HTTP/1.1");
    assert_eq!(up.values("upgrade"), ["websocket"]);
    assert_eq!(up.values("connection"), ["upgrade"]);
    p.stop().await;
}

/// One request, sent by an HTTP/1.0, an HTTP/1.1 and an HTTP/2 client: the backend gets
/// the same request line and header lines from all three (only the request id differs).
#[tokio::test]
async fn the_same_request_goes_out_alike_from_http10_http11_and_http2_clients() {
    let b = WireBackend::spawn().await;
    let p = Proxy::start(&config(b.addr)).await;
    h1(
        &p,
        b"GET /app/sales-order?x=1 HTTP/1.0\r\nHost: erp.test\r\nX-Frappe-CSRF-Token: t\r\n\r\n",
    )
    .await;
    h1(
        &p,
        b"GET /app/sales-order?x=1 HTTP/1.1\r\nHost: erp.test\r\nX-Frappe-CSRF-Token: t\r\n\r\n",
    )
    .await;
    let req = Request::get("http://erp.test/app/sales-order?x=1")
        .header("x-frappe-csrf-token", "t")
        .body(Full::default())
        .unwrap();
    assert_eq!(h2_send(p.addr(), req).await, 200);
    let seen: Vec<(String, Vec<String>)> = (1..=3)
        .map(|i| {
            let r = b.requests()[i - 1].clone();
            let mut lines: Vec<String> = r
                .headers
                .iter()
                .filter(|l| !l.starts_with("x-request-id:"))
                .cloned()
                .collect();
            lines.sort();
            (r.line, lines)
        })
        .collect();
    assert_eq!(seen[0].0, "GET /app/sales-order?x=1 HTTP/1.1");
    assert_eq!(seen[0], seen[1], "HTTP/1.0 and HTTP/1.1 clients");
    assert_eq!(seen[1], seen[2], "HTTP/1.1 and HTTP/2 clients");
    assert!(seen[0].1.contains(&"host: erp.test".to_owned()));
    p.stop().await;
}

fn tls_backend_config(dir: &std::path::Path) -> std::sync::Arc<rustls::ServerConfig> {
    let ck = rcgen::generate_simple_self_signed(vec!["app.internal".to_owned()]).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("app.pem"), ck.cert.pem()).unwrap();
    std::fs::write(dir.join("app.key"), ck.signing_key.serialize_pem()).unwrap();
    switchyard::tls::server_config(&[(dir.join("app.pem"), dir.join("app.key"))]).unwrap()
}

/// TLS pools use the same upstream client as plain ones: origin form, Host as sent.
#[tokio::test]
async fn tls_upstreams_get_the_same_bytes_as_plain_ones() {
    let dir = std::env::temp_dir().join(format!("switchyard-wire-tls-{}", std::process::id()));
    let b = WireBackend::tls(tls_backend_config(&dir), |_| ok()).await;
    let tls = format!(
        r#"
        [pools.p.tls]
        ca = "{}"
        server_name = "app.internal"
        "#,
        dir.join("app.pem").display()
    );
    // One worker: one idle set (each worker of the per-worker scheduler has its own, and
    // the two client connections below could go to different workers).
    let config = Config::one_pool([b.addr], "").toml(&tls);
    let p = Proxy::start(&config.toml("[runtime]\nworkers = 1\n")).await;
    let got = h1(
        &p,
        b"GET http://erp.test:8000/api/method/ping HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    let r = b.nth(1).await;
    assert_eq!(r.line, "GET /api/method/ping HTTP/1.1");
    assert_eq!(r.values("host"), ["erp.test:8000"]);
    // Keep-alive: a second request reuses the TLS connection.
    h1(&p, b"GET /two HTTP/1.1\r\nHost: erp.test\r\n\r\n").await;
    assert_eq!((b.nth(2).await.conn, b.connections()), (0, 1));
    p.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// An HTTP/2 upstream gets `:authority` equal to the client's Host and no `host` field.
#[tokio::test]
async fn h2_upstreams_get_the_host_as_authority_and_no_host_field() {
    use std::sync::{Arc, Mutex};
    // (authority, whether a `host` field came, path) per request.
    type Seen = Vec<(Option<String>, bool, String)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let record = record.clone();
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                record.lock().unwrap().push((
                    req.uri().authority().map(|a| a.to_string()),
                    req.headers().contains_key("host"),
                    req.uri().path().to_owned(),
                ));
                async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::<Bytes>::default()))
                }
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc),
            );
        }
    });
    let p = Proxy::start(&Config::one_pool([addr], "upstream_h2 = true")).await;
    let got = h1(&p, b"GET /desk HTTP/1.1\r\nHost: erp.test:8080\r\n\r\n").await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    let got = h1(&p, b"GET /ten HTTP/1.0\r\n\r\n").await;
    assert!(got.contains(" 200 "), "{got}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            (Some("erp.test:8080".to_owned()), false, "/desk".to_owned()),
            (Some(addr.to_string()), false, "/ten".to_owned()),
        ]
    );
    p.stop().await;
}

#[tokio::test]
async fn health_probes_send_origin_form_with_the_configured_host() {
    let b = WireBackend::spawn().await;
    let p = Proxy::start(&Config::one_pool([b.addr], "").toml(
        r#"
        [pools.p.health]
        path = "/api/method/ping"
        host = "erp.test"
        interval = "100ms"
        "#,
    ))
    .await;
    let r = b.nth(1).await;
    assert_eq!(r.line, "GET /api/method/ping HTTP/1.1");
    assert_eq!(r.values("host"), ["erp.test"]);
    p.stop().await;
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Proto {
    H10,
    H11,
    H2,
}

/// POST `target` with `fields` and `body` from a client of `version`; returns the status.
async fn post_as(
    p: &Proxy,
    version: Proto,
    target: &str,
    fields: &[(&str, &str)],
    body: &str,
) -> u16 {
    if version == Proto::H2 {
        let mut req = Request::post(format!("http://erp.test{target}"));
        for (k, v) in fields {
            req = req.header(*k, *v);
        }
        return h2_send(p.addr(), req.body(Full::from(body.to_owned())).unwrap()).await;
    }
    let v = if version == Proto::H10 { "1.0" } else { "1.1" };
    let mut head = format!("POST {target} HTTP/{v}\r\nHost: erp.test\r\n");
    for (k, val) in fields {
        head.push_str(&format!("{k}: {val}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    let mut s = tokio::net::TcpStream::connect(p.addr()).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut s, head.as_bytes())
        .await
        .unwrap();
    let mut pending = Vec::new();
    loop {
        let (head, _) = read_message(&mut s, &mut pending).await.expect("an answer");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        // `100 Continue` (answered by the proxy) comes first; the final answer follows.
        if status >= 200 {
            return status;
        }
    }
}

/// The forwarding rules, byte for byte, for HTTP/1.0, HTTP/1.1 and HTTP/2 clients:
/// `X-Forwarded-*` replaced for an untrusted peer, hop-by-hop fields (and those named in
/// `Connection`) removed, the route's header rules, `Expect` answered by the proxy, and
/// the body (looked at for `param` routing) forwarded whole with its length.
#[tokio::test]
async fn forwarding_rules_on_the_wire_for_every_client_protocol() {
    let b = WireBackend::spawn().await;
    let p = Proxy::start(&Config::new().pool("p", [b.addr], "").route(
        "reports",
        "p",
        r#"
        match.param.cmd = "frappe.desk.query_report.run"
        add_request_headers = { "X-Added" = "yes" }
        remove_request_headers = ["X-Drop"]
        set_request_headers = { "X-Frappe-Site-Name" = "{host}" }
        "#,
    ))
    .await;
    let body = "cmd=frappe.desk.query_report.run&report_name=Stock+Balance";
    let common = [
        ("X-Forwarded-For", "6.6.6.6"),
        ("X-Real-IP", "6.6.6.6"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "evil.test"),
        ("X-Frappe-Site-Name", "other-site"),
        ("X-Drop", "d"),
        ("Cookie", "sid=abc"),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ];
    let hop = [
        ("Connection", "keep-alive, X-Secret"),
        ("X-Secret", "s"),
        ("Keep-Alive", "timeout=5"),
        ("Expect", "100-continue"),
    ];
    for (i, version) in [Proto::H10, Proto::H11, Proto::H2].into_iter().enumerate() {
        let mut fields = common.to_vec();
        if version != Proto::H2 {
            fields.extend(hop);
        }
        let status = post_as(&p, version, "/", &fields, body).await;
        assert_eq!(status, 200, "{version:?}");
        let r = b.nth(i + 1).await;
        let id = r.values("x-request-id")[0].clone();
        let mut want: Vec<String> = [
            "cookie: sid=abc",
            "content-type: application/x-www-form-urlencoded",
            &format!("content-length: {}", body.len()),
            "x-forwarded-for: 127.0.0.1",
            "x-real-ip: 127.0.0.1",
            "x-forwarded-proto: http",
            "x-frappe-site-name: erp.test",
            "x-forwarded-host: erp.test",
            &format!("x-request-id: {id}"),
            "x-added: yes",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        match version {
            Proto::H2 => want.push("host: erp.test".into()),
            _ => want.insert(0, "host: erp.test".into()),
        }
        assert_eq!(r.line, "POST / HTTP/1.1", "{version:?}");
        let (mut got, mut want_sorted) = (r.headers.clone(), want.clone());
        got.sort();
        want_sorted.sort();
        assert_eq!(got, want_sorted, "{version:?}: {:#?}", r.headers);
        assert_eq!(
            r.body,
            body.as_bytes(),
            "{version:?}: the looked-at body arrives whole"
        );
    }
    p.stop().await;
}

/// A client that sends a whole large body before it reads (as browsers and most HTTP
/// libraries do) gets the 413, not a reset: the proxy closes its side and reads and drops
/// the rest of the body (nginx's lingering close) instead of closing with the client's
/// data unread, which makes the kernel reset the connection and drop the answer. HTTP/1.0
/// and HTTP/1.1 clients; an HTTP/2 client gets the 413 on its stream (above).
#[tokio::test]
async fn a_413_reaches_a_client_that_sends_its_whole_body_first() {
    let b = WireBackend::spawn().await;
    let p = Proxy::start(
        &Config::bare()
            .listener("{listen}", r#"max_body_size = "1m""#)
            .pool("p", [b.addr], "")
            .route("all", "p", ""),
    )
    .await;
    const BODY: usize = 8 << 20;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for version in ["HTTP/1.0", "HTTP/1.1"] {
        let mut s = tokio::net::TcpStream::connect(p.addr()).await.unwrap();
        let head = format!("POST /up {version}\r\nHost: a\r\nContent-Length: {BODY}\r\n\r\n");
        let mut req = head.into_bytes();
        req.resize(req.len() + BODY, b'u');
        let wrote = tokio::time::timeout(WAIT, s.write_all(&req)).await;
        assert!(
            matches!(wrote, Ok(Ok(()))),
            "{version}: the body was not taken: {wrote:?}"
        );
        let mut got = Vec::new();
        let read = tokio::time::timeout(WAIT, s.read_to_end(&mut got)).await;
        let text = String::from_utf8_lossy(&got);
        assert!(
            matches!(read, Ok(Ok(_))),
            "{version}: {read:?} after {text:?}"
        );
        assert!(
            text.starts_with(&format!("{version} 413")),
            "{version}: {text}"
        );
    }
    assert_eq!(b.connections(), 0, "nothing went upstream");
    p.stop().await;
}

/// `max_body_size` (nginx `client_max_body_size`): 413 by length before anything goes
/// upstream, and while streaming a body of unknown length, when the upstream request
/// is aborted, never completed with a truncated body. A route may override it.
#[tokio::test]
async fn max_body_size_is_413_by_length_and_while_streaming() {
    let b = WireBackend::spawn().await;
    let p = Proxy::start(
        &Config::bare()
            .listener("{listen}", r#"max_body_size = "1k""#)
            .pool("p", [b.addr], "")
            .route(
                "upload",
                "p",
                r#"
                match.path_prefix = "/upload"
                max_body_size = "0"
                "#,
            )
            .route("all", "p", ""),
    )
    .await;
    let big = "x".repeat(2000);
    let by_length = format!("POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 2000\r\n\r\n{big}");
    let got = raw(p.addr(), by_length.as_bytes()).await;
    assert!(got.starts_with("HTTP/1.1 413"), "{got}");
    assert!(got.contains("max_body_size"), "{got}");
    assert_eq!(b.connections(), 0, "nothing went upstream");
    let resp = h2_send(
        p.addr(),
        Request::post("http://a/h2")
            .body(Full::from(big.clone()))
            .unwrap(),
    )
    .await;
    assert_eq!(resp, 413, "HTTP/2 client");
    assert_eq!(b.connections(), 0);

    let chunk = "y".repeat(600);
    let streamed = format!(
        "POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n"
    );
    let got = raw(p.addr(), streamed.as_bytes()).await;
    assert!(got.starts_with("HTTP/1.1 413"), "{got}");
    eventually(
        "the aborted upstream request's connection closed",
        || async { b.closed() == b.connections() },
    )
    .await;
    assert!(
        b.requests().is_empty(),
        "no upstream request was completed: {:?}",
        b.requests()
    );

    let exact = format!(
        "POST /c HTTP/1.1\r\nHost: a\r\nContent-Length: 1024\r\n\r\n{}",
        "z".repeat(1024)
    );
    assert!(h1(&p, exact.as_bytes()).await.starts_with("HTTP/1.1 200"));
    assert!(
        h1(&p, by_length.replace("/a", "/upload").as_bytes())
            .await
            .starts_with("HTTP/1.1 200")
    );
    let lines: Vec<String> = b.requests().into_iter().map(|r| r.line).collect();
    assert_eq!(lines, ["POST /c HTTP/1.1", "POST /upload HTTP/1.1"]);
    p.stop().await;
}

/// `error_pages`: the proxy's own errors get the configured page (route's before the
/// listener's); an error the app returns passes through untouched.
#[tokio::test]
async fn error_pages_replace_the_proxys_own_errors_only() {
    let dir = std::env::temp_dir().join(format!("switchyard-pages-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("502.html"),
        "<h1>Sorry! We will be back soon.</h1>\n",
    )
    .unwrap();
    std::fs::write(dir.join("413.txt"), "too big for this route\n").unwrap();
    let dead = support::free_port();
    let app = WireBackend::scripted(|_| {
        vec![Step::Send(
            b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 7\r\n\r\napp-502".to_vec(),
        )]
    })
    .await;
    let page_502 = format!(
        "error_pages = {{ 502 = \"{}\" }}",
        dir.join("502.html").display()
    );
    let app_route = format!(
        r#"
        match.path_prefix = "/app"
        max_body_size = "1k"
        error_pages = {{ 413 = "{}" }}
        "#,
        dir.join("413.txt").display()
    );
    let p = Proxy::start(
        &Config::bare()
            .listener("{listen}", &page_502)
            .pool("dead", [dead], "")
            .pool("app", [app.addr], "")
            .route("app", "app", &app_route)
            .route("dead", "dead", ""),
    )
    .await;
    let got = h1(&p, b"GET /desk HTTP/1.1\r\nHost: erp.test\r\n\r\n").await;
    assert!(got.starts_with("HTTP/1.1 502"), "{got}");
    assert!(
        got.contains("content-type: text/html; charset=utf-8"),
        "{got}"
    );
    assert!(
        got.ends_with("<h1>Sorry! We will be back soon.</h1>\n"),
        "{got}"
    );
    let got = h1(&p, b"GET /app/x HTTP/1.1\r\nHost: erp.test\r\n\r\n").await;
    assert!(
        got.starts_with("HTTP/1.1 502") && got.ends_with("app-502"),
        "the app's own 502: {got}"
    );
    let big = format!(
        "POST /app/up HTTP/1.1\r\nHost: a\r\nContent-Length: 2000\r\n\r\n{}",
        "x".repeat(2000)
    );
    let got = raw(p.addr(), big.as_bytes()).await;
    assert!(
        got.starts_with("HTTP/1.1 413") && got.ends_with("too big for this route\n"),
        "{got}"
    );
    p.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Response header rules: the listener's (bench's security headers) on every response,
/// proxied or the proxy's own; a route's first; `response_headers_always = false` adds
/// them only to nginx's success and redirect statuses; a regex route forces downloads.
#[tokio::test]
async fn response_headers_per_listener_and_route_with_always() {
    let b = WireBackend::scripted(|r| {
        if r.line.contains("/missing") {
            vec![Step::Send(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
            )]
        } else {
            ok()
        }
    })
    .await;
    let dead = support::free_port();
    let listener_headers = r#"add_response_headers = { "X-Frame-Options" = "SAMEORIGIN", "X-Content-Type-Options" = "nosniff" }"#;
    let p = Proxy::start(
        &Config::bare()
            .listener("{listen}", listener_headers)
            .pool("app", [b.addr], "")
            .pool("dead", [dead], "")
            .route(
                "download",
                "app",
                r#"
                match.path_regex = '/files/.*\.(html|htm|svg|xml)'
                add_response_headers = { "Content-Disposition" = "attachment" }
                "#,
            )
            .route(
                "quiet",
                "app",
                r#"
                match.path_prefix = "/quiet"
                add_response_headers = { "X-Route" = "quiet" }
                response_headers_always = false
                "#,
            )
            .route("dead", "dead", r#"match.path_prefix = "/dead""#)
            .route("app", "app", ""),
    )
    .await;
    let has = |got: &str, line: &str| got.lines().any(|l| l.eq_ignore_ascii_case(line));
    for path in ["/app", "/missing", "/dead/x"] {
        let got = h1(
            &p,
            format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(has(&got, "x-frame-options: SAMEORIGIN"), "{path}: {got}");
        assert!(
            has(&got, "x-content-type-options: nosniff"),
            "{path}: {got}"
        );
    }
    let got = h1(&p, b"GET /files/page.html HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(has(&got, "content-disposition: attachment"), "{got}");
    let got = h1(&p, b"GET /files/page.pdf HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(
        !got.to_ascii_lowercase().contains("content-disposition"),
        "{got}"
    );
    let got = h1(&p, b"GET /quiet/ok HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(has(&got, "x-route: quiet"), "{got}");
    let got = h1(&p, b"GET /quiet/missing HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(
        got.starts_with("HTTP/1.1 404") && !has(&got, "x-route: quiet"),
        "{got}"
    );
    assert!(
        has(&got, "x-frame-options: SAMEORIGIN"),
        "the listener's stay always: {got}"
    );
    p.stop().await;
}
