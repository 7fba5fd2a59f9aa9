//! High availability through real sockets: killed, frozen, failing and dying backends;
//! active and passive health; fallback pools; retries that never duplicate a write;
//! the admin API and metrics.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::Request;
use http_body_util::Full;
use serde_json::Value;
use support::*;
use tokio::time::Instant;

async fn json(url: &str) -> Value {
    serde_json::from_str(&get(url).await.body).unwrap()
}

/// Backends `a` and `b`, the pool most tests here balance over.
async fn two_servers() -> (Backend, Backend) {
    (Backend::spawn("a").await, Backend::spawn("b").await)
}

/// `server`'s entry in the admin `/upstreams` answer.
async fn entry(proxy: &Proxy, server: &Backend) -> Option<Value> {
    let v = json(&proxy.admin_url("/upstreams")).await;
    v["pools"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["servers"].as_array().unwrap().clone())
        .find(|s| s["server"] == server.addr.to_string())
}

/// `in_rotation` of `server` in the admin `/upstreams` answer.
async fn in_rotation(proxy: &Proxy, server: &Backend) -> bool {
    entry(proxy, server)
        .await
        .is_some_and(|s| s["in_rotation"] == true)
}

async fn state_of(proxy: &Proxy, server: &Backend) -> String {
    let s = entry(proxy, server).await.unwrap();
    s["state"].as_str().unwrap().to_owned()
}

/// Active checks for `pool` that flip a server after one probe.
fn checks(pool: &str) -> String {
    format!(
        r#"
        [pools.{pool}.health]
        path = "/"
        interval = "100ms"
        timeout = "300ms"
        healthy_after = 1
        unhealthy_after = 1
        "#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_server_under_load_fails_no_request_and_comes_back() {
    let mut a = Backend::spawn("a").await;
    let b = Backend::spawn("b").await;
    let proxy = Proxy::start(
        &Config::one_pool([a.addr, b.addr], "")
            .toml(ADMIN)
            .toml(&checks("p")),
    )
    .await;
    let load = Load::start(proxy.url("/x"), 4);
    eventually("load reaches both servers", || async {
        a.hits() > 20 && b.hits() > 20
    })
    .await;
    a.kill().await;
    let killed = Instant::now();
    eventually("killed server leaves rotation", || async {
        !in_rotation(&proxy, &a).await
    })
    .await;
    let out_after = killed.elapsed();
    let before_restart = a.hits();
    a.restart().await;
    eventually("restarted server is back in rotation", || async {
        in_rotation(&proxy, &a).await
    })
    .await;
    eventually("restarted server gets traffic", || async {
        a.hits() > before_restart + 10
    })
    .await;
    let (ok, failed) = load.stop().await;
    eprintln!(
        "kill under load: {ok} requests ok, {failed} failed; dead server left rotation after {} ms",
        out_after.as_millis()
    );
    assert_eq!(failed, 0, "client requests failed while a server died");
    assert!(
        out_after < Duration::from_secs(2),
        "dead server stayed in rotation {out_after:?}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn post_whose_backend_dies_after_the_body_is_502_and_sent_once() {
    let (a, b) = two_servers().await;
    a.set_mode(Mode::DieAfterBody);
    let proxy = Proxy::start(&Config::one_pool([a.addr, b.addr], "")).await;
    // Round robin starts at `a`.
    let got = post(
        &proxy.url("/api/method/frappe.client.submit"),
        "application/x-www-form-urlencoded",
        "doc=SINV-0001",
    )
    .await;
    assert_eq!(got.status, 502, "{}", got.body);
    assert_eq!(got.headers["x-switchyard-outcome"], "unknown");
    let id = got.headers["x-request-id"].to_str().unwrap().to_owned();
    assert!(got.body.contains(&id), "{}", got.body);
    assert_eq!(
        a.hits() + b.hits(),
        1,
        "the write reached a backend more than once"
    );
    // An idempotent GET in the same situation is retried on the other server.
    let got = get(&proxy.url("/x")).await;
    assert_eq!((got.status.as_u16(), got.body.as_str()), (200, "b"));
    proxy.stop().await;
}

#[tokio::test]
async fn connect_failure_is_retried_for_any_method_with_the_body() {
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let b = Backend::spawn("b").await;
    let proxy = Proxy::start(&Config::one_pool([dead_addr, b.addr], "")).await;
    for _ in 0..4 {
        let got = post(&proxy.url("/sink"), "application/json", r#"{"doc":"x"}"#).await;
        assert_eq!(got.status, 200, "{}", got.body);
        assert_eq!(b.last().body.as_deref(), Some(&br#"{"doc":"x"}"#[..]));
    }
    assert_eq!(b.hits(), 4, "each POST arrived exactly once");
    proxy.stop().await;
}

#[tokio::test]
async fn frozen_server_is_ejected_by_read_timeout_and_gets_retried_when_the_pool_opts_in() {
    let (a, b) = two_servers().await;
    let proxy = Proxy::start(
        &Config::one_pool([a.addr, b.addr], r#"read_timeout = "300ms""#)
            .toml(ADMIN)
            .toml(
                r#"
                [pools.p.passive]
                eject_after = 1
                [pools.p.retry]
                on_timeout = true
                "#,
            ),
    )
    .await;
    a.set_mode(Mode::Frozen);
    for _ in 0..6 {
        let got = get(&proxy.url("/x")).await;
        assert_eq!(
            (got.status.as_u16(), got.body.as_str()),
            (200, "b"),
            "GET retried past the frozen server"
        );
    }
    eventually("frozen server ejected", || async {
        state_of(&proxy, &a).await == "ejected"
    })
    .await;
    let v = json(&proxy.admin_url("/upstreams")).await;
    assert!(v.to_string().contains("\"ejections\":1"), "{v}");
    proxy.stop().await;
}

#[tokio::test]
async fn frozen_server_is_marked_down_by_active_checks_and_requests_never_wait_on_probes() {
    let (a, b) = two_servers().await;
    let proxy = Proxy::start(
        &Config::one_pool([a.addr, b.addr], "")
            .toml(ADMIN)
            .toml(&checks("p")),
    )
    .await;
    a.set_mode(Mode::Frozen);
    eventually("frozen server unhealthy by probes alone", || async {
        state_of(&proxy, &a).await == "unhealthy"
    })
    .await;
    let v = json(&proxy.admin_url("/upstreams")).await;
    assert!(
        v.to_string().contains("timed out"),
        "last probe says why: {v}"
    );
    let before = a.hits();
    for _ in 0..10 {
        assert_eq!(get(&proxy.url("/x")).await.body, "b");
    }
    assert_eq!(a.hits(), before);
    a.set_mode(Mode::Normal);
    eventually("thawed server healthy again", || async {
        state_of(&proxy, &a).await == "healthy"
    })
    .await;
    proxy.stop().await;

    // Probes that hang for 30 s never hold up a request.
    let c = Backend::spawn("c").await;
    let proxy = Proxy::start(&Config::one_pool([c.addr], "").toml(
        r#"
        [pools.p.health]
        path = "/hang"
        interval = "50ms"
        timeout = "30s"
        "#,
    ))
    .await;
    for _ in 0..20 {
        let t = Instant::now();
        assert_eq!(get(&proxy.url("/x")).await.body, "c");
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "a request waited on a hanging probe"
        );
    }
    proxy.stop().await;
}

#[tokio::test]
async fn reports_fall_back_to_primary_and_all_down_is_503() {
    let mut p = Backend::spawn("primary").await;
    let mut s = Backend::spawn("secondary").await;
    let proxy = Proxy::start(
        &Config::new()
            .toml(ADMIN)
            .pool("primary", [p.addr], "")
            .toml(&checks("primary"))
            .pool("secondary", [s.addr], r#"fallback = "primary""#)
            .toml(&checks("secondary"))
            .route(
                "reports",
                "secondary",
                r#"match.path_prefix = "/api/method/frappe.desk.query_report.run""#,
            )
            .route("default", "primary", ""),
    )
    .await;
    let report = proxy.url("/api/method/frappe.desk.query_report.run");
    assert_eq!(get(&report).await.body, "secondary");
    s.kill().await;
    eventually("report calls served by the primary", || async {
        get(&report).await.body == "primary"
    })
    .await;
    let h = get(&proxy.admin_url("/health")).await;
    assert_eq!(
        h.status, 200,
        "secondary has a fallback that serves: {}",
        h.body
    );
    p.kill().await;
    eventually("everything down gives 503", || async {
        get(&report).await.status == 503
    })
    .await;
    let got = get(&report).await;
    assert_eq!(got.headers["retry-after"], "5");
    assert!(got.body.contains("no healthy server"), "{}", got.body);
    assert_eq!(get(&proxy.admin_url("/health")).await.status, 503);
    p.restart().await;
    s.restart().await;
    eventually("recovered", || async {
        get(&report).await.body == "secondary"
    })
    .await;
    proxy.stop().await;
}

#[tokio::test]
async fn drain_and_enable_need_the_token() {
    let (a, b) = two_servers().await;
    let proxy = Proxy::start(&Config::one_pool([a.addr, b.addr], "").toml(
        r#"
        [admin]
        addr = "{admin}"
        token = "s3cret"
        "#,
    ))
    .await;
    let drain = proxy.admin_url(&format!("/upstreams/p/{}/drain", a.addr));
    let with = |url: &str, auth: Option<&str>| {
        let mut r = Request::post(url);
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.body(Full::default()).unwrap()
    };
    assert_eq!(send(with(&drain, None)).await.status, 401);
    assert_eq!(send(with(&drain, Some("Bearer nope"))).await.status, 401);
    let ok = send(with(&drain, Some("Bearer s3cret"))).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(ok.body.contains("draining"));
    assert_eq!(state_of(&proxy, &a).await, "draining");
    let before = a.hits();
    for _ in 0..10 {
        assert_eq!(get(&proxy.url("/x")).await.body, "b");
    }
    assert_eq!(a.hits(), before);
    let missing = send(with(
        &proxy.admin_url("/upstreams/p/127.0.0.1:1/drain"),
        Some("Bearer s3cret"),
    ))
    .await;
    assert_eq!(missing.status, 404);
    let enable = proxy.admin_url(&format!("/upstreams/p/{}/enable", a.addr));
    assert_eq!(send(with(&enable, Some("Bearer s3cret"))).await.status, 200);
    eventually("enabled server gets traffic", || async {
        get(&proxy.url("/x")).await.body == "a"
    })
    .await;
    proxy.stop().await;

    let no_token = Proxy::start(&Config::one_pool([a.addr], "").toml(ADMIN)).await;
    let drain = no_token.admin_url(&format!("/upstreams/p/{}/drain", a.addr));
    assert_eq!(
        send(with(&drain, Some("Bearer anything"))).await.status,
        403
    );
    no_token.stop().await;
}

fn counter(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_parse_and_move() {
    let a = Backend::spawn("a").await;
    let proxy = Proxy::start(&Config::new().toml(ADMIN).pool("p", [a.addr], "").route(
        "all",
        "p",
        r#"match.path_prefix = "/in""#,
    ))
    .await;
    get(&proxy.url("/in")).await;
    let before = get(&proxy.admin_url("/metrics")).await.body;
    for _ in 0..3 {
        get(&proxy.url("/in")).await;
    }
    get(&proxy.url("/in?code=503")).await;
    get(&proxy.url("/nowhere")).await;
    // The access record (and its metrics) is completed when the body ends; poll briefly.
    let ok_series = "switchyard_requests_total{route=\"all\",pool=\"p\",class=\"2xx\"}";
    let want = counter(&before, ok_series) + 3.0;
    let url = proxy.admin_url("/metrics");
    eventually("counters move", || {
        let url = url.clone();
        async move { counter(&get(&url).await.body, ok_series) >= want }
    })
    .await;
    let after = get(&url).await.body;
    let ups = json(&proxy.admin_url("/upstreams")).await.to_string();
    assert!(
        ups.contains("\"latency_ewma_ms\"") && !ups.contains("\"latency_ewma_ms\":0.0"),
        "the latency average is fed: {ups}"
    );
    assert_eq!(
        counter(&after, ok_series) - counter(&before, ok_series),
        3.0,
        "{after}"
    );
    assert!(
        counter(
            &after,
            "switchyard_requests_total{route=\"all\",pool=\"p\",class=\"5xx\"}"
        ) >= 1.0,
        "{after}"
    );
    assert!(
        counter(
            &after,
            "switchyard_requests_total{route=\"-\",pool=\"-\",class=\"4xx\"}"
        ) >= 1.0,
        "{after}"
    );
    assert!(
        after.contains("switchyard_request_duration_seconds_bucket{le=\"+Inf\",route=\"all\"}"),
        "{after}"
    );
    assert!(
        after.contains(&format!(
            "switchyard_upstream_healthy{{pool=\"p\",server=\"{}\"}} 1",
            a.addr
        )),
        "{after}"
    );
    // Prometheus text format 0.0.4: comments and samples `name{labels} value`.
    let sample = regex::Regex::new(
        r#"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="[^"]*",?)*\})? -?[0-9.eE+]+$"#,
    )
    .unwrap();
    for line in after.lines() {
        assert!(
            line.starts_with('#') || sample.is_match(line),
            "not Prometheus text: {line:?}"
        );
    }
    assert!(
        !after.contains("# EOF") && !after.contains("# UNIT"),
        "{after}"
    );
    promtool_check(&after);
    // Two scrapes of the same state read the same (series sorted, not in hash order).
    let again = get(&proxy.admin_url("/metrics")).await.body;
    let stable = |t: &str| {
        t.lines()
            .filter(|l| l.contains("upstream_healthy") || l.contains("requests_total"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(stable(&after), stable(&again));
    proxy.stop().await;
}

/// `promtool check metrics` finds nothing to say, where promtool is installed (CI
/// installs it with Debian's `prometheus` package).
fn promtool_check(text: &str) {
    use std::io::Write;
    let Ok(mut child) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        eprintln!("SKIPPED promtool check: promtool not installed (apt-get install prometheus)");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}\n{text}"
    );
}

#[tokio::test]
async fn hash_balancing_is_sticky_and_slow_start_ramps() {
    let (a, b) = two_servers().await;
    let c = Backend::spawn("c").await;
    let proxy = Proxy::start(&Config::one_pool(
        [a.addr, b.addr, c.addr],
        r#"
        balance = "hash"
        hash_key = "cookie:io"
        "#,
    ))
    .await;
    let mut owners = std::collections::HashSet::new();
    for user in 0..12 {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..5 {
            let req = Request::get(proxy.url("/socket.io/"))
                .header("cookie", format!("sid=1; io=session{user}"))
                .body(Full::default())
                .unwrap();
            seen.insert(send(req).await.body);
        }
        assert_eq!(
            seen.len(),
            1,
            "session {user} moved between servers: {seen:?}"
        );
        owners.extend(seen);
    }
    assert!(
        owners.len() >= 2,
        "sessions spread over servers: {owners:?}"
    );
    proxy.stop().await;

    let proxy = Proxy::start(
        &Config::one_pool([a.addr, b.addr], r#"slow_start = "4s""#).toml(
            r#"
        [admin]
        addr = "{admin}"
        token = "t"
        "#,
        ),
    )
    .await;
    let admin = |action: &str| {
        Request::post(proxy.admin_url(&format!("/upstreams/p/{}/{action}", a.addr)))
            .header("authorization", "Bearer t")
            .body(Full::default())
            .unwrap()
    };
    assert_eq!(send(admin("drain")).await.status, 200);
    assert_eq!(send(admin("enable")).await.status, 200);
    let (mut to_a, n) = (0, 100);
    for _ in 0..n {
        if get(&proxy.url("/x")).await.body == "a" {
            to_a += 1;
        }
    }
    assert!(
        to_a < 30,
        "a returning server got {to_a}% of traffic at once"
    );
    eventually("slow start ends in an even share", || async {
        let mut a_hits = 0;
        for _ in 0..40 {
            if get(&proxy.url("/x")).await.body == "a" {
                a_hits += 1;
            }
        }
        a_hits >= 18
    })
    .await;
    proxy.stop().await;
}

#[tokio::test]
async fn max_connections_queues_then_refuses() {
    let a = Backend::spawn("a").await;
    for (queue_timeout, want) in [("2s", 200u16), ("200ms", 503)] {
        let pool = format!(
            r#"
            max_connections = 1
            queue_timeout = "{queue_timeout}"
            "#
        );
        let proxy = Proxy::start(&Config::one_pool([a.addr], &pool)).await;
        let first = tokio::spawn(get_owned(proxy.url("/slow?ms=700")));
        let hits = a.hits();
        eventually("first request in flight", || async { a.hits() > hits }).await;
        let second = get(&proxy.url("/x")).await;
        assert_eq!(
            second.status.as_u16(),
            want,
            "queue_timeout {queue_timeout}: {}",
            second.body
        );
        assert_eq!(first.await.unwrap().status, 200);
        proxy.stop().await;
    }
}

async fn get_owned(url: String) -> Got {
    get(&url).await
}

#[tokio::test]
async fn request_id_is_kept_only_from_a_trusted_proxy() {
    let a = Backend::spawn("a").await;
    for (trusted, keep) in [("", false), ("trusted_proxies = [\"127.0.0.1\"]", true)] {
        let proxy = Proxy::start(
            &Config::bare()
                .listener("{listen}", trusted)
                .pool("p", [a.addr], "")
                .route("all", "p", ""),
        )
        .await;
        let req = Request::get(proxy.url("/x"))
            .header("x-request-id", "outer-123")
            .body(Full::default())
            .unwrap();
        let got = send(req).await;
        let id = got.headers["x-request-id"].to_str().unwrap().to_owned();
        assert_eq!(id == "outer-123", keep, "{trusted}: {id}");
        assert_eq!(
            a.last().headers["x-request-id"],
            id.as_str(),
            "backend sees the same id"
        );
        let plain = get(&proxy.url("/y")).await;
        assert_eq!(plain.headers["x-request-id"].len(), 16);
        proxy.stop().await;
    }
}

#[tokio::test]
async fn consecutive_5xx_eject_when_configured() {
    let (a, b) = two_servers().await;
    a.set_mode(Mode::Fail);
    let proxy = Proxy::start(&Config::one_pool([a.addr, b.addr], "").toml(ADMIN).toml(
        r#"
                [pools.p.passive]
                eject_after_5xx = 2
                "#,
    ))
    .await;
    // A 500 is an answer, passed through (not retried: the server did respond).
    let mut saw_500 = false;
    for _ in 0..4 {
        saw_500 |= get(&proxy.url("/x")).await.status == 500;
    }
    assert!(saw_500, "the app's own 500 reaches the client");
    eventually("server answering 500s ejected", || async {
        state_of(&proxy, &a).await == "ejected"
    })
    .await;
    for _ in 0..6 {
        assert_eq!(get(&proxy.url("/x")).await.body, "b");
    }
    proxy.stop().await;
}

/// A keep-alive backend like gunicorn: it serves requests on a connection until the
/// connection has idled for `keepalive`, then closes it, optionally announcing
/// `Keep-Alive: timeout=N`. With `keepalive` zero it closes right after each answer
/// without saying so (the worst case for a proxy). Counts requests and connections.
async fn keepalive_backend(
    keepalive: Duration,
    announce: Option<u64>,
) -> (std::net::SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (hits, conns) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (counted, opened) = (hits.clone(), conns.clone());
    let answer = match announce {
        Some(n) => {
            format!("HTTP/1.1 200 OK\r\nkeep-alive: timeout={n}\r\ncontent-length: 2\r\n\r\nok")
        }
        None => "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_owned(),
    };
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            opened.fetch_add(1, Ordering::SeqCst);
            let (counted, answer) = (counted.clone(), answer.clone());
            tokio::spawn(async move {
                let mut pending = Vec::new();
                loop {
                    let wait = keepalive.max(Duration::from_millis(1));
                    let next = tokio::time::timeout(wait, read_message(&mut s, &mut pending));
                    let Ok(Some(_)) = next.await else { return };
                    counted.fetch_add(1, Ordering::SeqCst);
                    let _ = s.write_all(answer.as_bytes()).await;
                    if keepalive.is_zero() {
                        return;
                    }
                }
            });
        }
    });
    (addr, hits, conns)
}

fn write_or_read(i: usize) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    let builder = match i % 3 {
        0 => http::Request::get("/api/method/frappe.client.get_list"),
        _ => http::Request::post("/api/method/frappe.client.insert"),
    };
    builder
        .body(http_body_util::Full::from(r#"{"doc":1}"#))
        .unwrap()
}

async fn send_to(proxy: &Proxy, req: http::Request<http_body_util::Full<bytes::Bytes>>) -> Got {
    let (mut parts, body) = req.into_parts();
    parts.uri = proxy.url(parts.uri.path()).parse().unwrap();
    send(http::Request::from_parts(parts, body)).await
}

#[tokio::test]
async fn writes_reuse_keepalive_connections_retired_before_the_server_closes_them() {
    // The server keeps connections 300 ms; the proxy retires them after 100 ms. Pauses
    // of 150 ms and none alternate, so requests meet both warm and retired connections.
    let (addr, hits, conns) = keepalive_backend(Duration::from_millis(300), None).await;
    // One worker: one idle set (each worker of the per-worker scheduler has its own).
    let config =
        Config::one_pool([addr], r#"idle_timeout = "100ms""#).toml("[runtime]\nworkers = 1\n");
    let proxy = Proxy::start(&config).await;
    for i in 0..30 {
        let got = send_to(&proxy, write_or_read(i)).await;
        assert_eq!(
            (got.status.as_u16(), got.body.as_str()),
            (200, "ok"),
            "request {i}"
        );
        if i % 5 == 4 {
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        30,
        "a request was sent twice or lost"
    );
    let opened = conns.load(Ordering::SeqCst);
    assert!(
        opened <= 8,
        "writes reuse connections: {opened} opened for 30 requests"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_server_announced_keepalive_shortens_the_idle_time() {
    // Default idle_timeout (1.5 s), but the server says `timeout=1` and closes after
    // 1 s: connections are retired at 750 ms, so a write after 900 ms never meets the close.
    let (addr, hits, conns) = keepalive_backend(Duration::from_secs(1), Some(1)).await;
    let proxy = Proxy::start(&Config::one_pool([addr], "")).await;
    for i in 1..=3 {
        let got = send_to(&proxy, write_or_read(i)).await;
        assert_eq!(got.status, 200, "request {i}: {}", got.body);
        tokio::time::sleep(Duration::from_millis(900)).await;
    }
    assert_eq!(hits.load(Ordering::SeqCst), 3);
    assert_eq!(
        conns.load(Ordering::SeqCst),
        3,
        "each write on a new connection"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_write_that_loses_the_keepalive_race_is_502_unknown_and_never_sent_twice() {
    // The worst case: the server closes every connection right after its answer without
    // saying so. Reads are sent again on a new connection; a write that meets the close
    // is answered 502 with its outcome unknown, and is never applied twice.
    let (addr, hits, _) = keepalive_backend(Duration::ZERO, None).await;
    let proxy = Proxy::start(&Config::one_pool([addr], "")).await;
    let mut ok = 0;
    for i in 0..30 {
        let got = send_to(&proxy, write_or_read(i)).await;
        match got.status.as_u16() {
            200 => ok += 1,
            502 if i % 3 != 0 => {
                assert_eq!(
                    got.headers["x-switchyard-outcome"], "unknown",
                    "{}",
                    got.body
                );
            }
            s => panic!("request {i}: {s} {}", got.body),
        }
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        ok,
        "every request applied at most once"
    );
    proxy.stop().await;
}

/// By default nothing is sent again after a read timeout: not a DELETE (Frappe commits
/// on it), and not a GET either (a slow report run twice doubles the load).
#[tokio::test]
async fn read_timeouts_are_not_retried_by_default_for_any_method() {
    let (a, b) = two_servers().await;
    let proxy = Proxy::start(&Config::one_pool(
        [a.addr, b.addr],
        r#"read_timeout = "300ms""#,
    ))
    .await;
    for method in ["DELETE", "PUT", "GET"] {
        let req = http::Request::builder()
            .method(method)
            .uri(proxy.url("/slow?ms=1000"))
            .body(http_body_util::Full::default())
            .unwrap();
        let got = send(req).await;
        assert_eq!(got.status, 504, "{method}: {}", got.body);
        let write = method != "GET";
        assert_eq!(
            got.headers.contains_key("x-switchyard-outcome"),
            write,
            "{method}"
        );
    }
    assert_eq!(
        a.hits() + b.hits(),
        3,
        "each request reached one server once"
    );
    proxy.stop().await;
}

/// An HAProxy `option httpchk HEAD /health` in front must see the admin API answer.
#[tokio::test]
async fn admin_answers_head_and_refuses_wrong_methods_with_405() {
    let b = Backend::spawn("b").await;
    let p = Proxy::start(&Config::one_pool([b.addr], "").toml(ADMIN)).await;
    let admin = p.admin.unwrap();
    let got = raw(
        admin,
        b"HEAD /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(got.ends_with("\r\n\r\n"), "no body: {got}");
    let got = raw(
        admin,
        b"DELETE /upstreams HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 405"), "{got}");
    assert!(
        got.to_ascii_lowercase().contains("allow: get, head"),
        "{got}"
    );
    let got = raw(
        admin,
        b"GET /config/reload HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        got.starts_with("HTTP/1.1 405") && got.to_ascii_lowercase().contains("allow: post"),
        "{got}"
    );
    let got = raw(
        admin,
        b"GET /nope HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 404"), "{got}");
}

/// For a VIP handover: liveness has no backend dependency; readiness may name one pool.
#[tokio::test]
async fn health_live_and_ready_answer_separately() {
    let up = Backend::spawn("up").await;
    let dead = free_port();
    let p = Proxy::start(
        &Config::new()
            .toml(ADMIN)
            .pool("up", [up.addr], "")
            .pool("down", [dead], "")
            .toml(
                r#"
                [pools.down.health]
                interval = "100ms"
                unhealthy_after = 1
                "#,
            )
            .route("all", "up", ""),
    )
    .await;
    eventually("the dead pool is marked down", || async {
        get(&p.admin_url("/health/ready")).await.status == 503
    })
    .await;
    assert_eq!(get(&p.admin_url("/health/live")).await.status, 200);
    assert_eq!(get(&p.admin_url("/health/ready?pool=up")).await.status, 200);
    assert_eq!(
        get(&p.admin_url("/health/ready?pool=down")).await.status,
        503
    );
    assert_eq!(
        get(&p.admin_url("/health/ready?pool=nope")).await.status,
        404
    );
    // Times are RFC 3339, not float epochs.
    let v = json(&p.admin_url("/upstreams")).await;
    let at = v["pools"][0]["servers"][0]["last_probe"]["at"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        at.len() == 24 && at.ends_with('Z') && at.as_bytes()[10] == b'T',
        "{v}"
    );
}
