//! The client connection cap (`[server] max_connections`): at the cap nothing is
//! accepted, so the kernel's backlog holds new clients until a connection ends; an idle
//! keep-alive connection is closed to make room, a WebSocket never.

mod support;

use std::time::Duration;

use support::wire::{Step, WireBackend, exchange};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

fn capped(backend: std::net::SocketAddr) -> Config {
    Config::one_pool([backend], r#"read_timeout = "10s""#)
        .toml(ADMIN)
        .toml("[server]\nmax_connections = 2\n")
}

async fn admin(proxy: &Proxy, path: &str) -> serde_json::Value {
    serde_json::from_str(&get(&proxy.admin_url(path)).await.body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_new_clients_wait_in_the_backlog_and_are_served_when_room_frees() {
    let b = Backend::spawn("b").await;
    let proxy = Proxy::start(&capped(b.addr)).await;
    let busy = |ms: u64| {
        let addr = proxy.addr();
        tokio::spawn(async move {
            let req = format!("GET /slow?ms={ms} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
            exchange(addr, req.as_bytes()).await.0
        })
    };
    let (one, two) = (busy(800), busy(800));
    eventually("both slow requests hold a connection", || async {
        admin(&proxy, "/connections").await["at_cap"] == true
    })
    .await;
    let v = admin(&proxy, "/connections").await;
    assert_eq!(v["open"].as_u64(), Some(2), "{v}");
    // The third client's connect completes in the kernel's backlog; its request waits.
    let t = Instant::now();
    let (third, _) = exchange(
        proxy.addr(),
        b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    let waited = t.elapsed();
    assert!(third.starts_with("HTTP/1.1 200"), "{third}");
    assert!(
        waited >= Duration::from_millis(400),
        "served only when a slot freed: {waited:?}"
    );
    assert!(
        one.await.unwrap().starts_with("HTTP/1.1 200")
            && two.await.unwrap().starts_with("HTTP/1.1 200")
    );
    let m = get(&proxy.admin_url("/metrics")).await.body;
    assert!(m.contains("switchyard_client_connections_max 2"), "{m}");
    assert!(
        !m.contains("switchyard_client_connections_capped_total 0"),
        "{m}"
    );
    proxy.stop().await;
}

/// A client the accept loop took while at the cap, waiting for a place, is served when
/// the proxy stops meanwhile (a takeover, an upgrade or a shutdown), like the clients
/// still queued in the kernel: it used to be dropped unanswered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_waiting_at_the_cap_is_served_when_the_proxy_stops() {
    let b = Backend::spawn("b").await;
    let proxy = Proxy::start(&capped(b.addr)).await;
    let addr = proxy.addr();
    let send = |path: &'static str| {
        tokio::spawn(async move {
            let req = format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
            exchange(addr, req.as_bytes()).await.0
        })
    };
    let (one, two) = (send("/slow?ms=800"), send("/slow?ms=800"));
    eventually("both slow requests hold a connection", || async {
        admin(&proxy, "/connections").await["at_cap"] == true
    })
    .await;
    let third = send("/x");
    eventually("the third client waits for a place", || async {
        let m = get(&proxy.admin_url("/metrics")).await.body;
        !m.contains("switchyard_client_connections_capped_total 0")
    })
    .await;
    proxy.stop().await;
    for (name, answer) in [("first", one), ("second", two), ("third", third)] {
        let got = answer.await.unwrap();
        assert!(got.starts_with("HTTP/1.1 200"), "{name}: {got:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keepalive_connection_makes_room_and_a_websocket_is_never_cut() {
    let app = WireBackend::scripted(|r| {
        if !r.values("upgrade").is_empty() {
            return vec![
                Step::Send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n".to_vec()),
                Step::Echo,
            ];
        }
        vec![Step::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec())]
    })
    .await;
    let proxy = Proxy::start(&capped(app.addr)).await;
    // A WebSocket tunnel, idle.
    let (got, mut ws) = exchange(
        proxy.addr(),
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 101"), "{got}");
    // A keep-alive connection that made a request and now idles (parks).
    let mut idle = TcpStream::connect(proxy.addr()).await.unwrap();
    idle.write_all(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    eventually("the keep-alive connection parked", || async {
        get(&proxy.admin_url("/metrics"))
            .await
            .body
            .contains("switchyard_client_connections_parked 1")
    })
    .await;
    // A third client: the idle connection is closed for it, promptly.
    let t = Instant::now();
    let (third, _) = exchange(
        proxy.addr(),
        b"GET /b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(third.starts_with("HTTP/1.1 200"), "{third}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let closed = tokio::time::timeout(WAIT, idle.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0))),
        "the idle connection was closed: {closed:?}"
    );
    // The tunnel still carries bytes both ways.
    ws.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    tokio::time::timeout(WAIT, ws.read_exact(&mut echo))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echo, b"ping");
    let v = admin(&proxy, "/connections").await;
    assert!(v["reclaimed_idle"].as_u64() >= Some(1), "{v}");
    proxy.stop().await;
}

#[test]
fn check_prints_the_descriptor_capacity_and_warns_of_a_cap_that_does_not_fit() {
    let dir = std::env::temp_dir().join(format!("sy-cap-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("cap.toml");
    std::fs::write(
        &file,
        "[[listeners]]\naddr = \"127.0.0.1:0\"\n[server]\nmax_connections = 100000000\n[pools.p]\nservers = [\"127.0.0.1:9\"]\n[[routes]]\nname = \"all\"\npool = \"p\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(support::bench::BIN)
        .args(["--config", file.to_str().unwrap(), "--check"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("descriptors: ") && text.contains("client connections"),
        "{text}"
    );
    assert!(
        text.contains("warning: [server] max_connections 100000000 does not fit"),
        "{text}"
    );
}
