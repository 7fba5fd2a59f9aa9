//! Servers by name, re-resolved live, against a real DNS server (dnsmasq on a loopback
//! port) and backends on several loopback addresses: a name that moves under load, a
//! name with two addresses, a name that does not exist yet, a DNS server that stops,
//! a name that goes away, SRV weights, a reload that changes a name, and the request
//! at the wire.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use support::dns::Dns;
use support::wire::WireBackend;
use support::*;
use tokio::time::Instant;

/// A port free on both 127.0.0.2 and 127.0.0.3.
fn two_addresses() -> (SocketAddr, SocketAddr) {
    loop {
        let a = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
        let port = a.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.3", port)).is_ok() {
            return (
                SocketAddr::from(([127, 0, 0, 2], port)),
                SocketAddr::from(([127, 0, 0, 3], port)),
            );
        }
    }
}

/// Pool `p` of `servers` (names), resolved with `dns`, once a second at most.
fn config(dns: &Dns, servers: &str) -> Config {
    config_every(dns, servers, "1s")
}

fn config_every(dns: &Dns, servers: &str, interval: &str) -> Config {
    Config::new()
        .toml(ADMIN)
        .toml(&format!(
            r#"
            [resolver]
            nameservers = ["{}"]
            timeout = "300ms"
            attempts = 1

            [pools.p]
            servers = {servers}
            resolve_interval = "{interval}"
            "#,
            dns.addr
        ))
        .route("all", "p", "")
}

async fn upstreams(proxy: &Proxy) -> Value {
    serde_json::from_str(&get(&proxy.admin_url("/upstreams")).await.body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_moves_under_load_fails_no_request() {
    moves_under_load("").await;
}

/// The same with active checks: the new address joins through a probe, and the pool is
/// never left without a server meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_moves_under_load_with_health_checks_fails_no_request() {
    moves_under_load("[pools.p.health]\ninterval = \"5s\"\n").await;
}

async fn moves_under_load(health: &str) {
    let (at2, at3) = two_addresses();
    let (mut a, b) = (
        Backend::spawn_at("a", at2).await,
        Backend::spawn_at("b", at3).await,
    );
    let dns = Dns::start(&[("app.test", "127.0.0.2")], &[]);
    let servers = format!(r#"["app.test:{}"]"#, at2.port());
    let proxy = Proxy::start(&config(&dns, &servers).toml(health)).await;
    let load = Load::start(proxy.url("/x"), 4);
    load.wait_for_more(50).await;
    assert_eq!(b.hits(), 0);
    dns.set(&[("app.test", "127.0.0.3")]);
    let moved = Instant::now();
    eventually("requests reach the new address", || async { b.hits() > 0 }).await;
    let took = moved.elapsed();
    let a_then = a.hits();
    load.wait_for_more(50).await;
    let late = a.hits() - a_then;
    // The old server goes away too, as a recreated container's does.
    a.kill().await;
    load.wait_for_more(50).await;
    let (ok, failed) = load.stop().await;
    eprintln!(
        "name moved: first request at the new address {took:?} after the DNS change; {late} request(s) on the old one after that; {ok} ok, {failed} failed"
    );
    assert_eq!(failed, 0, "no request may fail while the name moves");
    assert!(
        late <= 4,
        "the old address gets no new requests once the set changed: {late}"
    );
    assert!(took < Duration::from_secs(4), "{took:?}");
    let v = upstreams(&proxy).await;
    let name = &v["pools"][0]["names"][0];
    assert_eq!(name["name"], format!("app.test:{}", at2.port()), "{v}");
    assert_eq!(
        name["addresses"],
        serde_json::json!([at3.to_string()]),
        "{v}"
    );
    assert!(
        name["resolved_at"].is_string() && name["ttl_secs"].is_number(),
        "{v}"
    );
    proxy.stop().await;
}

/// A name's TTL and interval are a minute, but its address refuses connections: the
/// refusal makes the name resolve again at once (1 s apart at most), so a recreated
/// container is followed in about a second, not a minute.
#[tokio::test]
async fn a_refused_connect_resolves_the_name_again_early() {
    let (at2, at3) = two_addresses();
    let (mut a, b) = (
        Backend::spawn_at("a", at2).await,
        Backend::spawn_at("b", at3).await,
    );
    let dns = Dns::start_ttl(&[("app.test", "127.0.0.2")], &[], 60);
    let proxy = Proxy::start(&config_every(
        &dns,
        &format!(r#"["app.test:{}"]"#, at2.port()),
        "60s",
    ))
    .await;
    assert_eq!(get(&proxy.url("/x")).await.body, "a");
    tokio::time::sleep(Duration::from_millis(1100)).await; // past the 1 s floor
    a.kill().await;
    dns.set(&[("app.test", "127.0.0.3")]);
    let t = Instant::now();
    let first = get(&proxy.url("/x")).await;
    assert_eq!(first.status, 502, "the old address refuses: {}", first.body);
    eventually("the name followed after a refusal", || async {
        get(&proxy.url("/x")).await.body == "b"
    })
    .await;
    eprintln!("re-resolved after a refused connect in {:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(b.hits() > 0);
    proxy.stop().await;
}

#[tokio::test]
async fn a_name_with_two_addresses_spreads_load_over_both() {
    let (at2, at3) = two_addresses();
    let (a, b) = (
        Backend::spawn_at("a", at2).await,
        Backend::spawn_at("b", at3).await,
    );
    let dns = Dns::start(&[("app.test", "127.0.0.2"), ("app.test", "127.0.0.3")], &[]);
    let proxy = Proxy::start(&config(&dns, &format!(r#"["app.test:{}"]"#, at2.port()))).await;
    for _ in 0..20 {
        assert_eq!(get(&proxy.url("/x")).await.status, 200);
    }
    assert_eq!(
        (a.hits(), b.hits()),
        (10, 10),
        "round robin over both addresses"
    );
    let v = upstreams(&proxy).await;
    let servers = v["pools"][0]["servers"].as_array().unwrap();
    assert_eq!(
        servers.len(),
        2,
        "each address is a server with its own state: {v}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_name_that_does_not_exist_at_start_comes_into_service_when_it_appears() {
    let (at2, _) = two_addresses();
    let a = Backend::spawn_at("a", at2).await;
    let dns = Dns::start(&[], &[]);
    let name = format!("late.test:{}", at2.port());
    let proxy = Proxy::start(&config(&dns, &format!(r#"["{name}"]"#))).await;
    let got = get(&proxy.url("/x")).await;
    assert_eq!(got.status, 503, "{}", got.body);
    assert_eq!(got.headers["retry-after"], "5");
    assert!(
        got.body.contains(&name) && got.body.contains("NXDOMAIN"),
        "the body names the name and the answer: {}",
        got.body
    );
    dns.set(&[("late.test", "127.0.0.2")]);
    let appeared = Instant::now();
    eventually("the name comes into service", || async {
        get(&proxy.url("/x")).await.status == 200
    })
    .await;
    eprintln!("a name that appeared served after {:?}", appeared.elapsed());
    assert!(
        appeared.elapsed() < Duration::from_secs(3),
        "within one interval (1 s) and a TTL"
    );
    assert!(a.hits() > 0);
    proxy.stop().await;
}

#[tokio::test]
async fn a_stopped_dns_server_keeps_the_last_set_and_a_gone_name_empties_the_pool() {
    let (at2, _) = two_addresses();
    let _a = Backend::spawn_at("a", at2).await;
    let mut dns = Dns::start(&[("app.test", "127.0.0.2")], &[]);
    let proxy = Proxy::start(&config(&dns, &format!(r#"["app.test:{}"]"#, at2.port()))).await;
    assert_eq!(get(&proxy.url("/x")).await.status, 200);
    // NXDOMAIN: the service is gone.
    dns.set(&[]);
    eventually("a gone name empties the pool", || async {
        get(&proxy.url("/x")).await.status == 503
    })
    .await;
    let got = get(&proxy.url("/x")).await;
    assert!(
        got.body.contains("app.test") && got.body.contains("NXDOMAIN"),
        "{}",
        got.body
    );
    dns.set(&[("app.test", "127.0.0.2")]);
    eventually("back", || async {
        get(&proxy.url("/x")).await.status == 200
    })
    .await;
    // The DNS server stops: failures keep the last good set.
    dns.stop();
    eventually("a failed resolution is seen", || async {
        let v = upstreams(&proxy).await;
        v["pools"][0]["names"][0]["last_error"].is_string()
    })
    .await;
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        assert_eq!(
            get(&proxy.url("/x")).await.status,
            200,
            "the last set stays"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = get(&proxy.admin_url("/metrics")).await.body;
    assert!(
        m.contains(r#"result="failed""#) && m.contains(r#"result="gone""#),
        "{m}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn srv_records_give_targets_ports_and_weights() {
    let (a, b) = (Backend::spawn("a").await, Backend::spawn("b").await);
    let dns = Dns::start(
        &[("a.test", "127.0.0.1"), ("b.test", "127.0.0.1")],
        &[
            ("_http._tcp.app.test", "a.test", a.addr.port(), 1),
            ("_http._tcp.app.test", "b.test", b.addr.port(), 3),
        ],
    );
    let proxy = Proxy::start(&config(&dns, r#"[{ srv = "_http._tcp.app.test" }]"#)).await;
    for _ in 0..40 {
        assert_eq!(get(&proxy.url("/x")).await.status, 200);
    }
    assert_eq!((a.hits(), b.hits()), (10, 30), "weights 1 and 3");
    proxy.stop().await;
}

#[tokio::test]
async fn a_reload_that_changes_a_name_is_applied_live() {
    let (at2, at3) = two_addresses();
    let (a, b) = (
        Backend::spawn_at("a", at2).await,
        Backend::spawn_at("b", at3).await,
    );
    let dns = Dns::start(&[("one.test", "127.0.0.2"), ("two.test", "127.0.0.3")], &[]);
    let file = std::env::temp_dir().join(format!("sy-names-reload-{}.toml", std::process::id()));
    let cfg = |name: &str| {
        config(&dns, &format!(r#"["{name}:{}"]"#, at2.port()))
            .toml("[reload]\ndebounce = \"20ms\"\n")
    };
    let (proxy, _) = Proxy::start_file(&cfg("one.test"), &file).await;
    assert_eq!(get(&proxy.url("/x")).await.body, "a");
    let next = cfg("two.test")
        .replace("{listen}", &proxy.addr().to_string())
        .replace("{admin}", &proxy.admin.unwrap().to_string());
    std::fs::write(&file, next).unwrap();
    eventually("the new name serves", || async {
        get(&proxy.url("/x")).await.body == "b"
    })
    .await;
    let before = a.hits();
    for _ in 0..5 {
        assert_eq!(get(&proxy.url("/x")).await.body, "b");
    }
    assert_eq!(a.hits(), before);
    assert!(b.hits() >= 5);
    // A reload that changes the resolver: another DNS server, where two.test is .2.
    let other = Dns::start(&[("two.test", "127.0.0.2")], &[]);
    let next = config(&other, &format!(r#"["two.test:{}"]"#, at2.port()))
        .toml("[reload]\ndebounce = \"20ms\"\n")
        .replace("{listen}", &proxy.addr().to_string())
        .replace("{admin}", &proxy.admin.unwrap().to_string());
    std::fs::write(&file, next).unwrap();
    eventually("the new resolver's answer serves", || async {
        get(&proxy.url("/x")).await.body == "a"
    })
    .await;
    proxy.stop().await;
}

/// The last request each backend received: the same request line and the same fields
/// in the same order (the request id aside). Returns both.
fn same_upstream_request(
    by_name: &WireBackend,
    by_addr: &WireBackend,
    what: &str,
) -> (support::wire::WireRequest, support::wire::WireRequest) {
    let (n, p) = (
        by_name.requests().pop().unwrap(),
        by_addr.requests().pop().unwrap(),
    );
    assert_eq!(n.line, p.line, "{what}");
    let fields = |r: &support::wire::WireRequest| {
        r.names()
            .into_iter()
            .filter(|h| h != "x-request-id")
            .collect::<Vec<_>>()
    };
    assert_eq!(
        fields(&n),
        fields(&p),
        "{what}: the same fields in the same order"
    );
    (n, p)
}

/// At the wire, a server reached by name gets exactly what a server by address gets.
#[tokio::test]
async fn a_server_by_name_gets_the_same_bytes_as_by_address() {
    let by_name = WireBackend::spawn().await;
    let by_addr = WireBackend::spawn().await;
    let dns = Dns::start(&[("wire.test", "127.0.0.1")], &[]);
    let named = Proxy::start(&config(
        &dns,
        &format!(r#"["wire.test:{}"]"#, by_name.addr.port()),
    ))
    .await;
    let plain = Proxy::start(&Config::one_pool([by_addr.addr], "")).await;
    for (version, req) in [
        (
            "1.1",
            "GET /x?a=1 HTTP/1.1\r\nHost: erp.example\r\nX-One: 1\r\nX-One: 2\r\nConnection: close\r\n\r\n",
        ),
        (
            "1.0",
            "GET /x?a=1 HTTP/1.0\r\nHost: erp.example\r\nX-One: 1\r\nX-One: 2\r\n\r\n",
        ),
    ] {
        let _ = raw(named.addr(), req.as_bytes()).await;
        let _ = raw(plain.addr(), req.as_bytes()).await;
        let (n, p) = same_upstream_request(&by_name, &by_addr, &format!("HTTP/{version}"));
        assert_eq!(
            n.values("host"),
            vec!["erp.example".to_owned()],
            "HTTP/{version}"
        );
        assert_eq!(n.values("x-one"), p.values("x-one"));
    }
    // HTTP/2 from the client: the upstream request is the same HTTP/1.1 either way.
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    for proxy in [&named, &plain] {
        let req = http::Request::get(proxy.url("/x?a=1"))
            .header("x-one", "1")
            .body(http_body_util::Full::default())
            .unwrap();
        assert_eq!(h2.request(req).await.unwrap().status(), 200);
    }
    same_upstream_request(&by_name, &by_addr, "HTTP/2");
    named.stop().await;
    plain.stop().await;
}
