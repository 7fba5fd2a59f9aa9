//! Every wait is bounded: a backend that stalls mid-body, a client that stops reading,
//! a silent admin client, and a client that goes away mid-request, each against real
//! sockets with raw peers.

mod support;

use std::time::{Duration, Instant};

use support::wire::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Pool `p` of `server` (with `read_timeout`), short client timeouts.
fn config(server: std::net::SocketAddr, read_timeout: &str) -> Config {
    Config::one_pool([server], &format!("read_timeout = \"{read_timeout}\"")).toml(
        r#"
        [server]
        send_timeout = "300ms"
        header_timeout = "300ms"
        "#,
    )
}

#[tokio::test]
async fn a_backend_that_stalls_mid_body_is_cut_off_after_read_timeout() {
    let b = WireBackend::scripted(|_| {
        vec![
            Step::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello".to_vec()),
            Step::Hang,
        ]
    })
    .await;
    let p = Proxy::start(&config(b.addr, "300ms")).await;
    let started = Instant::now();
    let got = raw(p.addr(), b"GET /stall HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let took = started.elapsed();
    assert!(
        got.starts_with("HTTP/1.1 200") && got.ends_with("hello"),
        "{got}"
    );
    assert!(
        took < Duration::from_secs(3),
        "the client was held {took:?}"
    );
    eventually("the stalled upstream connection is closed", || async {
        b.closed() == 1
    })
    .await;
    p.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_and_so_is_its_upstream() {
    const BODY: usize = 32 << 20;
    let b = WireBackend::scripted(|_| {
        let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {BODY}\r\n\r\n").into_bytes();
        r.resize(r.len() + BODY, b'x');
        vec![Step::Send(r), Step::Hang]
    })
    .await;
    let p = Proxy::start(&config(b.addr, "300ms")).await;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut s = sock.connect(p.addr()).await.unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    // The client reads nothing; the proxy gives up after send_timeout.
    eventually(
        "the upstream connection of a stalled client is closed",
        || async { b.closed() == 1 },
    )
    .await;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut got)).await;
    assert!(
        got.len() < BODY,
        "the whole body was sent to a client that stopped reading"
    );
    p.stop().await;
}

#[tokio::test]
async fn a_silent_admin_client_is_closed_after_the_header_timeout() {
    let b = WireBackend::spawn().await;
    let p = Proxy::start(&config(b.addr, "300ms").toml(ADMIN)).await;
    let started = Instant::now();
    let got = raw(p.admin.unwrap(), b"GET /health HTTP/1.1\r\n").await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "held {took:?}: {got}");
    p.stop().await;
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_the_upstream_exchange() {
    let b = WireBackend::scripted(|_| vec![Step::Hang]).await;
    let p = Proxy::start(&config(b.addr, "60s")).await;
    for (version, req) in [
        ("HTTP/1.1", &b"GET /wait HTTP/1.1\r\nHost: a\r\n\r\n"[..]),
        ("HTTP/1.0", b"GET /wait HTTP/1.0\r\n\r\n"),
    ] {
        let before = b.closed();
        let mut s = tokio::net::TcpStream::connect(p.addr()).await.unwrap();
        s.write_all(req).await.unwrap();
        b.nth(before + 1).await;
        drop(s);
        eventually(version, || async { b.closed() == before + 1 }).await;
    }
    p.stop().await;
}
