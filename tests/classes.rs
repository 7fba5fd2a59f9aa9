//! Request classes: the seed's story with small numbers. One app server that handles
//! exactly N requests at once (like gunicorn's sync workers: more connections wait in
//! its backlog), a closed-loop flood of slow report requests from more clients than
//! workers, and a steady open-loop stream of fast transactional POSTs.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::wire::{p99, timed};
use support::workers::Workers;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// A keep-alive app server with `workers` workers (`support::workers`): a request holds
/// one for the time its path asks (`/report…` 600 ms, `/hold` 150 ms, else 5 ms). Its
/// `order` is the order in which requests got a worker.
async fn app(workers: usize) -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    let w = Workers::spawn(workers, hold).await;
    (w.addr, w.order.clone())
}

fn hold(head: &str, _: &[u8]) -> Duration {
    let path = head.split(' ').nth(1).unwrap_or("");
    Duration::from_millis(if path.starts_with("/report") {
        600
    } else if path == "/hold" {
        150
    } else {
        5
    })
}

/// A `200 ok` answer; false when the connection is gone.
async fn answer_ok(s: &mut TcpStream) -> bool {
    s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        .await
        .is_ok()
}

/// Pool `app` with routes `reports` (class `report`, under `/report`) and `default`;
/// `pool_keys` and `classes` are its limits.
fn config(app: std::net::SocketAddr, pool_keys: &str, classes: &str) -> Config {
    Config::new()
        .pool("app", [app], pool_keys)
        .toml(classes)
        .route(
            "reports",
            "app",
            r#"
            class = "report"
            match.path_prefix = "/report"
            "#,
        )
        .route("default", "app", "")
}

/// Six report clients in a closed loop and a transaction every 40 ms, for `secs`:
/// (transaction latencies, failed transactions, reports completed). Transactions start
/// once `fill` reports hold a worker of the app (whose `order` this is).
async fn storm(
    addr: std::net::SocketAddr,
    secs: u64,
    order: &Mutex<Vec<String>>,
    fill: usize,
) -> (Vec<Duration>, usize, usize) {
    let until = Instant::now() + Duration::from_secs(secs);
    let reports: Vec<_> = (0..6)
        .map(|_| {
            tokio::spawn(async move {
                let mut done = 0;
                while Instant::now() < until {
                    if timed(
                        addr,
                        b"GET /report/stock-balance HTTP/1.1\r\nHost: erp\r\n\r\n",
                    )
                    .await
                    .0 == 200
                    {
                        done += 1;
                    }
                }
                done
            })
        })
        .collect();
    // The flood fills the workers first, as in the story.
    eventually("the reports hold the workers", || {
        let started = order.lock().unwrap().len();
        async move { started >= fill }
    })
    .await;
    let mut tx = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(40));
    while Instant::now() < until {
        tick.tick().await;
        tx.push(tokio::spawn(timed(addr, b"POST /api/resource/Sales%20Order HTTP/1.1\r\nHost: erp\r\nContent-Length: 2\r\n\r\n{}")));
    }
    let mut lat = Vec::new();
    let mut failed = 0;
    for t in tx {
        let (status, took) = t.await.unwrap();
        if status == 200 {
            lat.push(took);
        } else {
            failed += 1;
        }
    }
    let mut done = 0;
    for r in reports {
        done += r.await.unwrap();
    }
    lat.sort();
    (lat, failed, done)
}

#[tokio::test]
async fn capped_reports_leave_a_worker_for_transactions() {
    let (addr, order) = app(2).await;
    let bare = Proxy::start(&config(addr, r#"read_timeout = "10s""#, "")).await;
    let (lat, failed, reports) = storm(bare.addr(), 3, &order, 2).await;
    let without = p99(&lat);
    bare.stop().await;
    let (addr, order) = app(2).await;
    let classed = Proxy::start(&config(
        addr,
        r#"
        read_timeout = "10s"
        max_connections = 2
        queue_size = 100
        queue_timeout = "10s"
        "#,
        r#"
        [pools.app.classes.report]
        max_connections = 1
        priority = -10
        "#,
    ))
    .await;
    let (lat, failed_with, reports_with) = storm(classed.addr(), 3, &order, 1).await;
    let with = p99(&lat);
    eprintln!(
        "transactions p99: without classes {without:?} ({failed} failed, {reports} reports), with `report` capped at N-1 {with:?} ({failed_with} failed, {reports_with} reports)"
    );
    assert!(
        without >= Duration::from_millis(300),
        "the flood must hurt without classes: {without:?}"
    );
    assert!(
        with < Duration::from_millis(200),
        "with classes transactions stay fast: {with:?}"
    );
    assert_eq!(failed_with, 0);
    assert!(reports_with >= 3, "reports still complete: {reports_with}");
}

#[tokio::test]
async fn the_highest_priority_goes_first_and_each_class_in_arrival_order() {
    let (addr, order) = app(1).await;
    let toml = config(
        addr,
        "max_connections = 1",
        r#"
        [pools.app.classes.report]
        priority = -10
        "#,
    )
    .toml(ADMIN);
    let p = Proxy::start(&toml).await;
    let a = p.addr();
    let mut all = vec![tokio::spawn(timed(
        a,
        b"GET /hold HTTP/1.1\r\nHost: erp\r\n\r\n",
    ))];
    eventually("the first request holds the one place", || {
        let n = order.lock().unwrap().len();
        async move { n == 1 }
    })
    .await;
    let reqs: [&'static [u8]; 5] = [
        b"GET /report/1 HTTP/1.1\r\nHost: erp\r\n\r\n",
        b"GET /report/2 HTTP/1.1\r\nHost: erp\r\n\r\n",
        b"GET /d1 HTTP/1.1\r\nHost: erp\r\n\r\n",
        b"GET /report/3 HTTP/1.1\r\nHost: erp\r\n\r\n",
        b"GET /d2 HTTP/1.1\r\nHost: erp\r\n\r\n",
    ];
    // Each waits in the queue before the next is sent, so arrival order is known.
    for (queued, r) in reqs.into_iter().enumerate() {
        all.push(tokio::spawn(timed(a, r)));
        let url = p.admin_url("/upstreams");
        eventually("the request waits in the pool's queue", || {
            let url = url.clone();
            async move {
                let v: serde_json::Value = serde_json::from_str(&get(&url).await.body).unwrap();
                v["pools"][0]["queued"] == queued + 1
            }
        })
        .await;
    }
    for t in all {
        assert_eq!(t.await.unwrap().0, 200);
    }
    let got = order.lock().unwrap().clone();
    assert_eq!(
        got,
        ["/hold", "/d1", "/d2", "/report/1", "/report/2", "/report/3"]
    );
}

/// The adaptive limit rises while answers stay fast, falls when the server slows, and
/// shows in `/upstreams` and `/metrics`.
#[tokio::test]
async fn the_adaptive_limit_follows_latency_and_is_visible() {
    let slow = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = slow.clone();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let flag = flag.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    let ms = if flag.load(std::sync::atomic::Ordering::Relaxed) {
                        60
                    } else {
                        1
                    };
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    if !answer_ok(&mut s).await {
                        return;
                    }
                }
            });
        }
    });
    let toml = Config::new()
        .toml(ADMIN)
        .pool(
            "app",
            [addr],
            r#"
            max_connections = 16
            limit = "adaptive"
            "#,
        )
        .route("all", "app", "");
    let p = Proxy::start(&toml).await;
    let limit = |p: &Proxy| {
        let url = p.admin_url("/upstreams");
        async move {
            let v: serde_json::Value = serde_json::from_str(&get(&url).await.body).unwrap();
            v["pools"][0]["servers"][0]["limit"].as_u64().unwrap()
        }
    };
    assert_eq!(limit(&p).await, 4, "it starts low");
    let load = |n: usize| {
        let a = p.addr();
        async move {
            let tasks: Vec<_> = (0..n)
                .map(|_| {
                    tokio::spawn(
                        async move { timed(a, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await },
                    )
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        }
    };
    // Bounded: fast answers raise it within a few hundred requests.
    let mut high = 4;
    for _ in 0..100 {
        load(8).await;
        high = limit(&p).await;
        if high >= 6 {
            break;
        }
    }
    assert!(high > 4, "fast answers raise it: {high}");
    slow.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut low = high;
    for _ in 0..20 {
        load(8).await;
        low = limit(&p).await;
        if low < high {
            break;
        }
    }
    assert!(low < high, "slow answers lower it: {high} -> {low}");
    let metrics = get(&p.admin_url("/metrics")).await.body;
    assert!(
        metrics.contains(&format!(
            "upstream_limit{{pool=\"app\",server=\"{addr}\"}} {low}"
        )),
        "{metrics}"
    );
    assert!(metrics.contains("upstream_class_in_flight{"), "{metrics}");
    assert!(
        metrics.contains("upstream_rejected_total{pool=\"app\",class=\"default\"} 0"),
        "{metrics}"
    );
}
