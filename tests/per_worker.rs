//! The per-worker scheduler (`[runtime] scheduler = "per-worker"`): every worker thread
//! runs its own runtime and accept loops. What reaches a backend must not change with
//! the scheduler (a raw-socket backend records the exact bytes), upstream keep-alive
//! connections are reused per worker, and a stop drains every worker's requests.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use support::wire::*;
use support::*;

fn config(server: std::net::SocketAddr, scheduler: &str) -> Config {
    Config::one_pool([server], r#"read_timeout = "2s""#).toml(&format!(
        "[runtime]\nworkers = 2\nscheduler = \"{scheduler}\"\n"
    ))
}

/// The same requests from HTTP/1.0, HTTP/1.1 and HTTP/2 clients, bodies included,
/// each on a new connection (so either worker may take it).
async fn traffic(p: &Proxy) {
    let h1: [&[u8]; 4] = [
        b"GET /a?x=1 HTTP/1.0\r\nHost: erp.test\r\nX-Frappe-CSRF-Token: t\r\n\r\n",
        b"GET /a?x=1 HTTP/1.1\r\nHost: erp.test\r\nX-Frappe-CSRF-Token: t\r\n\r\n",
        b"POST /api/method/run HTTP/1.1\r\nHost: erp.test\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /api/method/run HTTP/1.1\r\nHost: erp.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ];
    for bytes in h1 {
        let (got, _) = exchange(p.addr(), bytes).await;
        assert!(got.starts_with("HTTP/1."), "{got:?}");
    }
    let get = Request::get("http://erp.test/a?x=1")
        .header("x-frappe-csrf-token", "t")
        .body(Full::default())
        .unwrap();
    assert_eq!(h2_send(p.addr(), get).await, 200);
    let post = Request::post("http://erp.test/api/method/run")
        .body(Full::new(Bytes::from_static(b"hello")))
        .unwrap();
    assert_eq!(h2_send(p.addr(), post).await, 200);
}

/// What the backend saw of each request: the request line, the header lines in order
/// (the request id aside, it differs by design) and the body as framed.
fn seen(b: &WireBackend) -> Vec<(String, Vec<String>, Vec<u8>)> {
    b.requests()
        .into_iter()
        .map(|r| {
            let headers = (r.headers.iter())
                .filter(|l| !l.starts_with("x-request-id:"))
                .cloned()
                .collect();
            (r.line, headers, r.body)
        })
        .collect()
}

#[tokio::test]
async fn per_worker_forwards_the_same_bytes_as_work_stealing() {
    let mut wire = Vec::new();
    for scheduler in ["work-stealing", "per-worker"] {
        let b = WireBackend::spawn().await;
        let p = Proxy::start(&config(b.addr, scheduler)).await;
        traffic(&p).await;
        wire.push(seen(&b));
        p.stop().await;
    }
    assert_eq!(wire[0].len(), 6, "{:?}", wire[0]);
    assert_eq!(wire[0], wire[1], "work-stealing, then per-worker");
    assert_eq!(wire[1][0].0, "GET /a?x=1 HTTP/1.1");
    assert_eq!(
        wire[1][3].2, b"5\r\nhello\r\n0\r\n\r\n",
        "chunked framing kept"
    );
}

#[tokio::test]
async fn per_worker_reuses_upstream_connections_under_concurrent_clients() {
    let b = WireBackend::spawn().await;
    let p = Proxy::start(&config(b.addr, "per-worker")).await;
    const CLIENTS: usize = 16;
    const EACH: usize = 20;
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let url = p.url("/k");
            // Each client keeps its own connection, served by whichever worker took it.
            tokio::spawn(async move {
                let c = client();
                for _ in 0..EACH {
                    let req = Request::get(&url).body(Full::default()).unwrap();
                    let resp = tokio::time::timeout(WAIT, c.request(req)).await;
                    let resp = resp.unwrap().unwrap();
                    assert_eq!(resp.status(), 200);
                    let _ = resp.into_body().collect().await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(b.requests().len(), CLIENTS * EACH);
    // Never more upstream connections than requests in flight at once (plus one per
    // worker): each worker reuses its own.
    assert!(
        b.connections() <= CLIENTS + 2,
        "{} upstream connections for {} requests",
        b.connections(),
        CLIENTS * EACH
    );
    p.stop().await;
}

#[tokio::test]
async fn a_stop_drains_requests_in_flight_on_every_worker() {
    let b = WireBackend::scripted(|_| {
        let mut steps = vec![Step::Sleep(Duration::from_millis(300))];
        steps.extend(ok());
        steps
    })
    .await;
    let p = Proxy::start(&config(b.addr, "per-worker")).await;
    let addr = p.addr();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            tokio::spawn(async move {
                let req = format!("GET /slow/{i} HTTP/1.1\r\nHost: a\r\n\r\n");
                exchange(addr, req.as_bytes()).await.0
            })
        })
        .collect();
    eventually("eight requests reach the backend", || async {
        b.requests().len() == 8
    })
    .await;
    p.stop().await;
    for t in tasks {
        let got = t.await.unwrap();
        assert!(got.starts_with("HTTP/1.1 200"), "{got:?}");
    }
}

#[test]
fn an_unknown_scheduler_is_refused_with_its_place() {
    let dir = std::env::temp_dir().join(format!("sy-sched-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    let text = "[[listeners]]\naddr = \"127.0.0.1:0\"\n[runtime]\nscheduler = \"fast\"\n";
    std::fs::write(&path, text).unwrap();
    let err = switchyard::config::load(&path).unwrap_err().to_string();
    assert!(err.contains("bad.toml:4:"), "{err}");
    assert!(err.contains("\"per-worker\""), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
