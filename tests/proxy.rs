//! Proxy behaviour through real sockets: forwarded headers, hop-by-hop removal,
//! upstream failures, HTTP/2 cleartext, 1xx handling and request-smuggling hardening.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Pool `p` of `server`, and route `all` with header rules to see at the backend.
fn one_pool(server: impl std::fmt::Display) -> Config {
    Config::new()
        .pool("p", [server], r#"read_timeout = "500ms""#)
        .route(
            "all",
            "p",
            r#"
            add_request_headers = { "X-Added" = "yes" }
            remove_request_headers = ["X-Drop"]
            add_response_headers = { "X-Served-From" = "p" }
            "#,
        )
}

/// Backend `b` behind [`one_pool`].
async fn proxied() -> (Backend, Proxy) {
    let b = Backend::spawn("b").await;
    let proxy = Proxy::start(&one_pool(b.addr)).await;
    (b, proxy)
}

#[tokio::test]
async fn forwarded_headers_replace_untrusted_and_append_trusted() {
    let b = Backend::spawn("b").await;
    let untrusted = Proxy::start(&one_pool(b.addr)).await;
    let req = Request::get(untrusted.url("/x"))
        .header("host", "erp.example.com")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-real-ip", "6.6.6.6")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "evil.example")
        .body(Full::default())
        .unwrap();
    send(req).await;
    let h = b.last().headers;
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "erp.example.com");
    assert_eq!(h["host"], "erp.example.com", "Host is preserved");
    untrusted.stop().await;

    let trusted = Proxy::start(
        &Config::bare()
            .listener("{listen}", r#"trusted_proxies = ["127.0.0.0/8"]"#)
            .pool("p", [b.addr], "")
            .route("all", "p", ""),
    )
    .await;
    let req = Request::get(trusted.url("/x"))
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-proto", "https")
        .body(Full::default())
        .unwrap();
    send(req).await;
    let h = b.last().headers;
    assert_eq!(h["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(h["x-real-ip"], "203.0.113.7");
    assert_eq!(h["x-forwarded-proto"], "https");
    trusted.stop().await;
}

#[tokio::test]
async fn hop_by_hop_headers_do_not_reach_the_backend() {
    let (b, proxy) = proxied().await;
    let resp = raw(
        proxy.addr(),
        b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nUpgrade: h2c\r\nProxy-Authorization: Basic eA==\r\nX-Drop: 1\r\nX-Kept: 1\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        resp.to_ascii_lowercase().contains("x-served-from: p"),
        "{resp}"
    );
    let h = b.last().headers;
    for gone in [
        "x-secret",
        "keep-alive",
        "te",
        "upgrade",
        "proxy-authorization",
        "x-drop",
    ] {
        assert!(!h.contains_key(gone), "{gone} reached the backend");
    }
    assert_eq!(h["x-kept"], "1");
    assert_eq!(h["x-added"], "yes");
    proxy.stop().await;
}

#[tokio::test]
async fn dead_backend_is_502_and_silent_backend_is_504() {
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let proxy = Proxy::start(&one_pool(dead_addr)).await;
    let got = get(&proxy.url("/x")).await;
    assert_eq!(got.status, 502);
    assert_eq!(
        got.body,
        "502 Bad Gateway: cannot connect to upstream (route all, pool p)\n"
    );
    proxy.stop().await;

    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let proxy = Proxy::start(&one_pool(silent_addr)).await;
    let got = get(&proxy.url("/x")).await;
    assert_eq!(got.status, 504);
    assert!(
        got.body
            .starts_with("504 Gateway Timeout: upstream timed out"),
        "{}",
        got.body
    );
    proxy.stop().await;
    hold.abort();
}

#[tokio::test]
async fn route_timeout_cuts_a_slow_upstream() {
    let b = Backend::spawn("b").await;
    let proxy = Proxy::start(&Config::new().pool("p", [b.addr], "").route(
        "all",
        "p",
        r#"timeout = "300ms""#,
    ))
    .await;
    assert_eq!(get(&proxy.url("/slow?ms=2000")).await.status, 504);
    assert_eq!(get(&proxy.url("/fast")).await.status, 200);
    proxy.stop().await;
}

#[tokio::test]
async fn h2c_prior_knowledge_is_served() {
    let (b, proxy) = proxied().await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let req = Request::post(proxy.url("/h2?x=1"))
        .body(Full::new(Bytes::from_static(b"hello")))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "b");
    let seen = b.last();
    assert_eq!(seen.target, "/h2?x=1");
    assert_eq!(seen.body.as_deref(), Some(&b"hello"[..]));
    assert_eq!(
        seen.headers["host"],
        proxy.addr().to_string(),
        "Host from the :authority"
    );
    proxy.stop().await;
}

/// A raw backend that sends `103 Early Hints` before its final response.
#[tokio::test]
async fn informational_response_is_not_taken_as_final() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await.unwrap();
        s.write_all(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal").await.unwrap();
    });
    let proxy = Proxy::start(&one_pool(addr)).await;
    let got = get(&proxy.url("/x")).await;
    assert_eq!((got.status.as_u16(), got.body.as_str()), (200, "final"));
    server.await.unwrap();
    proxy.stop().await;
}

#[tokio::test]
async fn expect_100_continue_is_answered_before_the_body() {
    let (b, proxy) = proxied().await;
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    s.write_all(
        b"POST /sink HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(WAIT, s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100 Continue"));
    s.write_all(b"hello").await.unwrap();
    let n = tokio::time::timeout(WAIT, s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(b.last().body.as_deref(), Some(&b"hello"[..]));
    assert!(!b.last().headers.contains_key("expect"));
    proxy.stop().await;
}

#[tokio::test]
async fn chunked_request_with_trailers_passes() {
    let (b, proxy) = proxied().await;
    let resp = raw(
        proxy.addr(),
        b"POST /sink HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: 1\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(b.last().body.as_deref(), Some(&b"hello world"[..]));
    proxy.stop().await;
}

#[tokio::test]
async fn ambiguous_or_malformed_requests_are_400_and_never_forwarded() {
    let (b, proxy) = proxied().await;
    let cases: [(&str, &[u8]); 10] = [
        ("CL + TE", b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("TE + CL", b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"),
        ("duplicate equal CL", b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"),
        (
            "differing CLs",
            b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        ),
        (
            "malformed CL",
            b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5x\r\n\r\nhello",
        ),
        (
            "CL list",
            b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello",
        ),
        (
            "obs-fold",
            b"GET /x HTTP/1.1\r\nHost: a\r\nX-Long: a\r\n  folded\r\n\r\n",
        ),
        (
            "bare CR",
            b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n",
        ),
        (
            "NUL in field",
            b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: a\0b\r\n\r\n",
        ),
        (
            "control byte",
            b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: a\x01b\r\n\r\n",
        ),
    ];
    for (what, bytes) in cases {
        let resp = raw(proxy.addr(), bytes).await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{what}: {resp:?}");
    }
    for (what, bytes) in [
        ("HTTP/0.9", &b"GET /x\r\n\r\n"[..]),
        (
            "bad request line",
            &b"GET  /x  HTTP/1.1 extra\r\nHost: a\r\n\r\n"[..],
        ),
        (
            "not HTTP",
            &b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n"[..],
        ),
    ] {
        let resp = raw(proxy.addr(), bytes).await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{what}: {resp:?}");
    }
    assert_eq!(b.hits(), 0, "a refused request reached the backend");

    // A bad chunk size is found mid-body: the backend never sees a complete request.
    let resp = raw(proxy.addr(), b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n").await;
    assert!(
        resp.is_empty() || resp.starts_with("HTTP/1.1 400"),
        "{resp:?}"
    );
    assert_eq!(
        b.hits(),
        0,
        "a request with a broken body completed at the backend"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn oversized_header_is_431_and_oversized_target_is_414() {
    let b = Backend::spawn("b").await;
    let proxy = Proxy::start(&one_pool(b.addr).toml(
        r#"
        [server]
        max_header_bytes = 16384
        max_uri_bytes = 4096
        "#,
    ))
    .await;
    let big = format!(
        "GET /x HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let resp = raw(proxy.addr(), big.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp:?}");
    let long = format!(
        "GET /{} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        "p".repeat(5000)
    );
    let resp = raw(proxy.addr(), long.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 414"), "{resp:?}");
    assert_eq!(b.hits(), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn slow_clients_are_cut_off() {
    let b = Backend::spawn("b").await;
    let proxy = Proxy::start(&one_pool(b.addr).toml(
        r#"
        [server]
        header_timeout = "300ms"
        body_timeout = "300ms"
        "#,
    ))
    .await;
    // Slowloris: a header section that never ends.
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    s.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "connection with an unfinished header was not closed"
    );
    // A body that stalls half way.
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    s.write_all(b"POST /sink HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nhalf")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "connection with a stalled body was not closed"
    );
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    assert_eq!(
        b.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.body_len == 100)
            .count(),
        0
    );
    proxy.stop().await;
}

/// The classic CL.TE smuggle, after a clean request on the same connection: the clean
/// one is served, the smuggling one is refused with 400 and nothing after it is read.
#[tokio::test]
async fn smuggling_after_a_clean_request_is_refused() {
    let (b, proxy) = proxied().await;
    let data = b"GET /first HTTP/1.1\r\nHost: a\r\n\r\nPOST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    let resp = raw(proxy.addr(), data).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp:?}");
    assert_eq!(resp.matches("HTTP/1.1 ").count(), 2, "{resp:?}");
    assert!(resp.contains("HTTP/1.1 400"), "{resp:?}");
    let targets: Vec<String> = b
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.target.clone())
        .collect();
    assert_eq!(targets, vec!["/first".to_owned()]);
    proxy.stop().await;
}

#[tokio::test]
async fn access_log_writes_one_line_per_request() {
    let b = Backend::spawn("b").await;
    for (format, check) in [("combined", "combined"), ("json", "json")] {
        let path = std::env::temp_dir().join(format!(
            "switchyard-access-{}-{format}.log",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        let log = format!(
            r#"
            [log]
            access_log = "{}"
            access_format = "{format}"
            "#,
            path.display()
        );
        let proxy = Proxy::start(&Config::new().toml(&log).pool("p", [b.addr], "").route(
            "all",
            "p",
            r#"match.path_prefix = "/in""#,
        ))
        .await;
        let req = Request::get(proxy.url("/in?q=1"))
            .header("user-agent", "tester/1")
            .header("referer", "http://r/")
            .body(Full::default())
            .unwrap();
        send(req).await;
        get(&proxy.url("/out")).await;
        proxy.stop().await;
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        if check == "combined" {
            assert!(lines[0].starts_with("127.0.0.1 - - ["), "{text}");
            assert!(lines[0].contains("\"GET /in?q=1 HTTP/1.1\" 200 1 \"http://r/\" \"tester/1\" route=all pool=p upstream="), "{text}");
            assert!(lines[1].contains("\"GET /out HTTP/1.1\" 404 "), "{text}");
            assert!(
                lines[1].contains("route=- pool=- upstream=- upstream_time=-"),
                "{text}"
            );
        } else {
            let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
            assert_eq!(v["status"], 200);
            assert_eq!(v["route"], "all");
            assert_eq!(v["server"], b.addr.to_string());
            assert_eq!(v["user_agent"], "tester/1");
        }
        let _ = std::fs::remove_file(&path);
    }
}

/// HEAD (RFC 9110 §9.3.2): the backend's headers, including Content-Length, and no
/// body; the connection stays usable for the next request.
#[tokio::test]
async fn head_gets_headers_and_no_body() {
    let b = Backend::spawn("backend").await;
    let proxy = Proxy::start(&one_pool(b.addr)).await;
    let resp = raw(
        proxy.addr(),
        b"HEAD /x HTTP/1.1\r\nHost: a\r\n\r\nGET /y HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    let (head, rest) = resp.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{resp:?}");
    assert!(
        head.to_ascii_lowercase().contains("content-length: 7"),
        "{head}"
    );
    assert!(
        rest.starts_with("HTTP/1.1 200"),
        "no body after the HEAD answer: {rest:?}"
    );
    assert!(rest.ends_with("backend"), "{rest:?}");
    assert_eq!(b.seen.lock().unwrap()[0].method, "HEAD");
    proxy.stop().await;
}

/// The status and body of the next response on a keep-alive connection.
async fn read_response(s: &mut TcpStream, pending: &mut Vec<u8>) -> (u16, String) {
    let (head, body) = read_message(s, pending)
        .await
        .expect("a response before the connection closed");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn idle_keep_alive_connections_park_and_keep_serving() {
    // A keep-alive connection idle between requests parks: its hyper connection and
    // buffers are freed. It must then serve its next request, and pipelined ones, as
    // if nothing happened.
    let b = Backend::spawn("b").await;
    let proxy = Proxy::start(&Config::one_pool([b.addr], "").toml(ADMIN)).await;
    let metric = |name: &'static str, want: u64| {
        let url = proxy.admin_url("/metrics");
        async move {
            get(&url)
                .await
                .body
                .lines()
                .any(|l| l == format!("switchyard_{name} {want}"))
        }
    };
    let mut s = TcpStream::connect(proxy.addrs[0]).await.unwrap();
    let mut pending = Vec::new();
    let req = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
    s.write_all(req).await.unwrap();
    assert_eq!(
        read_response(&mut s, &mut pending).await,
        (200, "b".to_owned())
    );
    eventually("the idle connection parks", || {
        metric("client_connections_parked", 1)
    })
    .await;
    // The parked connection serves its next request, then pipelined ones.
    s.write_all(req).await.unwrap();
    assert_eq!(
        read_response(&mut s, &mut pending).await,
        (200, "b".to_owned())
    );
    s.write_all(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        read_response(&mut s, &mut pending).await,
        (200, "b".to_owned())
    );
    assert_eq!(
        read_response(&mut s, &mut pending).await,
        (200, "b".to_owned())
    );
    assert_eq!(b.last().target, "/c");
    eventually("parked again", || metric("client_connections_parked", 1)).await;
    assert!(metric("client_connections_open", 1).await);
    // A POST with a body on the parked connection arrives whole.
    s.write_all(b"POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        .await
        .unwrap();
    let (status, body) = read_response(&mut s, &mut pending).await;
    assert_eq!(status, 200);
    assert!(body.starts_with("5 "), "{body}");
    drop(s);
    eventually("closed connections are counted out", || {
        metric("client_connections_open", 0)
    })
    .await;
    assert!(metric("client_connections_parked", 0).await);
    proxy.stop().await;
}

/// A keep-alive HTTP/1.1 backend that answers each request with the number of the
/// connection it arrived on, after 300 ms for `/slow`.
async fn numbered_connections_backend() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for n in 0u32.. {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => buf.extend_from_slice(&chunk[..k]),
                        }
                        continue;
                    };
                    let head: Vec<u8> = buf.drain(..end + 4).collect();
                    if head.starts_with(b"GET /slow") {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                    let body = n.to_string();
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if s.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn idle_upstream_connections_reuse_the_same_few_first() {
    let backend = numbered_connections_backend().await;
    // One worker: one idle set (each worker of the per-worker scheduler has its own).
    let config = Config::one_pool([backend], "keepalive = 16").toml("[runtime]\nworkers = 1\n");
    let p = Proxy::start(&config).await;
    // Eight requests at once open eight upstream connections, which all go idle.
    let slow = p.url("/slow");
    let burst: Vec<_> = (0..8)
        .map(|_| {
            let url = slow.clone();
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    let mut opened = std::collections::HashSet::new();
    for h in burst {
        let g = tokio::time::timeout(Duration::from_secs(10), h)
            .await
            .expect("burst answered in time")
            .expect("burst task");
        assert_eq!(g.status, 200);
        opened.insert(g.body);
    }
    assert_eq!(opened.len(), 8, "the burst used eight upstream connections");
    // One request at a time then needs one connection: the same one keeps serving
    // (a FIFO pool would rotate through all eight and keep every one warm).
    let mut used = std::collections::HashSet::new();
    for _ in 0..24 {
        let g = get(&p.url("/")).await;
        assert_eq!(g.status, 200);
        used.insert(g.body);
    }
    assert_eq!(
        used.len(),
        1,
        "sequential requests used connections {used:?}"
    );
    p.stop().await;
}
