//! The proxy at its own limits: oversize request heads get the statuses README
//! promises on every protocol (431 for a head or a field over `max_header_bytes`, 414
//! for a target over `max_uri_bytes`), with the default limits and the sizes clients
//! really send (a 64 KiB field or target).

mod support;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Send `head` in pieces of `step` bytes; the status line of the answer.
async fn answer(addr: std::net::SocketAddr, head: &[u8], step: usize) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    for piece in head.chunks(step) {
        if s.write_all(piece).await.is_err() {
            break;
        }
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    text.lines().next().unwrap_or("").to_owned()
}

#[tokio::test]
async fn oversize_heads_get_431_and_long_targets_414_on_every_protocol() {
    let b = Backend::spawn("b").await;
    let proxy = Proxy::start(&Config::one_pool([b.addr], "")).await;
    let field = "a".repeat(65_536);
    for version in ["HTTP/1.0", "HTTP/1.1"] {
        for step in [usize::MAX, 1024] {
            let head = format!("GET /x {version}\r\nHost: a\r\nX-Big: {field}\r\n\r\n");
            let got = answer(proxy.addr(), head.as_bytes(), step).await;
            assert!(
                got.contains(" 431 "),
                "{version}, a 64 KiB field in pieces of {step}: {got}"
            );
            let many: String = (0..80)
                .map(|i| format!("X-{i}: {}\r\n", "b".repeat(1000)))
                .collect();
            let head = format!("GET /x {version}\r\nHost: a\r\n{many}\r\n");
            let got = answer(proxy.addr(), head.as_bytes(), step).await;
            assert!(got.contains(" 431 "), "{version}, 80 KB of fields: {got}");
            let head = format!("GET /{field} {version}\r\nHost: a\r\nConnection: close\r\n\r\n");
            let got = answer(proxy.addr(), head.as_bytes(), usize::MAX).await;
            assert!(got.contains(" 414 "), "{version}, a 64 KiB target: {got}");
            let head = format!(
                "GET /{} {version}\r\nHost: a\r\nConnection: close\r\n\r\n",
                "p".repeat(9000)
            );
            let got = answer(proxy.addr(), head.as_bytes(), step).await;
            assert!(got.contains(" 414 "), "{version}, a 9 KB target: {got}");
        }
    }
    let h2 = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let req = http::Request::get(proxy.url("/x"))
        .header("x-big", field.as_str())
        .body(Full::default())
        .unwrap();
    let got = h2.request(req).await.map(|r| r.status().as_u16());
    assert!(matches!(got, Ok(431)), "HTTP/2, a 64 KiB field: {got:?}");
    let req = http::Request::get(proxy.url(&format!("/{}", "p".repeat(9000))))
        .body(Full::default())
        .unwrap();
    let got = h2.request(req).await.map(|r| r.status().as_u16());
    assert!(matches!(got, Ok(414)), "HTTP/2, a 9 KB target: {got:?}");
    let req = http::Request::get(proxy.url(&format!("/{}", "p".repeat(60_000))))
        .body(Full::default())
        .unwrap();
    let got = h2.request(req).await.map(|r| r.status().as_u16());
    assert!(
        matches!(got, Ok(414) | Ok(431)),
        "HTTP/2, a 60 KB target: {got:?}"
    );
    assert_eq!(b.hits(), 0, "nothing oversize reaches the app");
    proxy.stop().await;
}
