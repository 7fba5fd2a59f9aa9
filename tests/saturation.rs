//! Busy is not dead: a health check must never turn saturation into an outage. A
//! server whose workers are all held by the proxy's own slow requests makes its probes
//! wait and time out; those timeouts do not count while it answers. A killed server
//! still leaves at once. A pool whose every server fails its checks keeps serving them
//! (panic mode), unless they are dead.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::workers::Workers;
use support::*;
use tokio::time::Instant;

async fn json(url: &str) -> Value {
    serde_json::from_str(&get(url).await.body).unwrap()
}

/// Every state `/upstreams` gives for pool `p`'s servers, in order.
async fn states(proxy: &Proxy) -> Vec<String> {
    let v = json(&proxy.admin_url("/upstreams")).await;
    v["pools"][0]["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap().to_owned())
        .collect()
}

/// `/slow` holds a worker 200 ms; anything else 2 ms.
fn hold(head: &str, _: &[u8]) -> Duration {
    Duration::from_millis(if head.starts_with("GET /slow") {
        200
    } else {
        2
    })
}

/// Frappe's ping, probed often with a short timeout; panic mode off so only the busy
/// rule can keep the server in.
fn config(app: std::net::SocketAddr, busy: &str) -> Config {
    Config::one_pool([app], r#"read_timeout = "10s""#)
        .toml(ADMIN)
        .toml(&format!(
            r#"
        [pools.p.health]
        path = "/api/method/ping"
        body_contains = "pong"
        interval = "100ms"
        timeout = "150ms"
        healthy_after = 1
        unhealthy_after = 3
        panic = false
        busy = "{busy}"
        "#
        ))
}

/// Passing probes so far, from `/metrics`.
async fn passes(proxy: &Proxy) -> u64 {
    let m = get(&proxy.admin_url("/metrics")).await.body;
    m.lines()
        .filter(|l| {
            l.starts_with("switchyard_health_checks_total") && l.contains(r#"result="pass""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The server answers a request (as a live site does before a flood), and a probe
/// after that has passed, so the manager has seen it answer.
async fn warm_up(proxy: &Proxy) {
    assert_eq!(get(&proxy.url("/x")).await.status, 200);
    let before = passes(proxy).await;
    eventually("a probe after the answer", || async {
        passes(proxy).await > before + 1
    })
    .await;
}

/// Six clients hold the two workers with slow requests for `secs`; the server's state
/// sampled every 50 ms meanwhile. Returns (ok, failed, states seen that were not healthy).
async fn saturate(proxy: &Proxy, secs: u64) -> (usize, usize, usize) {
    warm_up(proxy).await;
    let load = Load::each(6, Duration::from_secs(secs), {
        let url = proxy.url("/slow");
        move || {
            let url = url.clone();
            async move { get(&url).await.status == 200 }
        }
    });
    let until = Instant::now() + Duration::from_secs(secs);
    let mut out = 0;
    while Instant::now() < until {
        if states(proxy).await != ["healthy"] {
            out += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (ok, failed) = load.stop().await;
    (ok, failed, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_server_stays_in_rotation_and_a_killed_one_leaves() {
    let app = Workers::spawn(2, hold).await;
    let proxy = Proxy::start(&config(app.addr, "alive")).await;
    let (ok, failed, out) = saturate(&proxy, 3).await;
    let metrics = get(&proxy.admin_url("/metrics")).await.body;
    eprintln!("saturated, busy = alive: {ok} ok, {failed} failed, {out} samples out of rotation");
    assert!(
        metrics.contains(r#"result="busy""#),
        "probes must have timed out behind the slow requests (else the test proves nothing)"
    );
    assert_eq!((failed, out), (0, 0), "a busy server stays in rotation");
    assert!(ok >= 8, "the load ran: {ok}");

    // Killed: refused connections are not busy; it leaves as fast as before.
    app.kill().await;
    let killed = Instant::now();
    eventually("the killed server leaves", || async {
        states(&proxy).await == ["unhealthy"]
    })
    .await;
    eprintln!("killed server left rotation after {:?}", killed.elapsed());
    let v = json(&proxy.admin_url("/upstreams")).await;
    let detail = v["pools"][0]["servers"][0]["last_probe"]["detail"].to_string();
    assert!(detail.contains("connect"), "{detail}");
    let got = get(&proxy.url("/x")).await;
    assert_eq!(got.status, 503, "{}", got.body);
    assert!(got.body.contains("no healthy server"), "{}", got.body);
    proxy.stop().await;
}

/// The control: counting timeouts while busy (`busy = "fail"`, the old behaviour)
/// takes the saturated server out, and requests fail; the same load as above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counting_busy_timeouts_turns_saturation_into_an_outage() {
    let app = Workers::spawn(2, hold).await;
    let proxy = Proxy::start(&config(app.addr, "fail")).await;
    let (ok, failed, out) = saturate(&proxy, 3).await;
    eprintln!("saturated, busy = fail: {ok} ok, {failed} failed, {out} samples out of rotation");
    assert!(out > 0 && failed > 0, "{ok} ok, {failed} failed, {out} out");
    proxy.stop().await;
    app.kill().await;
}

/// Both servers fail their checks with a wrong answer: panic mode serves them both;
/// with `panic = false` the pool answers 503. A dead server is never served.
#[tokio::test]
async fn a_pool_whose_every_server_fails_checks_keeps_serving_them() {
    let (mut a, b) = (Backend::spawn("a").await, Backend::spawn("b").await);
    let checks = |panic: bool| {
        format!(
            r#"
            [pools.p.health]
            path = "/status?code=500"
            interval = "100ms"
            timeout = "300ms"
            healthy_after = 1
            unhealthy_after = 1
            panic = {panic}
            "#
        )
    };
    let proxy = Proxy::start(
        &Config::one_pool([a.addr, b.addr], "")
            .toml(ADMIN)
            .toml(&checks(true)),
    )
    .await;
    eventually("both unhealthy", || async {
        states(&proxy).await == ["unhealthy", "unhealthy"]
    })
    .await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let got = get(&proxy.url("/x")).await;
        assert_eq!(got.status, 200, "panic mode serves: {}", got.body);
        seen.insert(got.body);
    }
    assert_eq!(seen.len(), 2, "both servers serve in panic mode: {seen:?}");
    let v = json(&proxy.admin_url("/upstreams")).await;
    assert_eq!(v["pools"][0]["panic"], true, "{v}");
    let h = json(&proxy.admin_url("/health")).await;
    assert_eq!(h["pools"][0]["panic"], true, "{h}");
    assert_eq!(h["pools"][0]["healthy"], 0, "{h}");

    // A dead server is left out even in panic mode.
    a.kill().await;
    eventually("only b serves", || async {
        get(&proxy.url("/x")).await.body == "b"
    })
    .await;
    for _ in 0..10 {
        assert_eq!(get(&proxy.url("/x")).await.body, "b");
    }
    proxy.stop().await;

    let off = Proxy::start(
        &Config::one_pool([b.addr], "")
            .toml(ADMIN)
            .toml(&checks(false)),
    )
    .await;
    eventually("unhealthy", || async {
        states(&off).await == ["unhealthy"]
    })
    .await;
    assert_eq!(get(&off.url("/x")).await.status, 503);
    off.stop().await;
}
