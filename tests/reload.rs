//! Live configuration through real sockets: reloads under load, invalid edits refused,
//! health state carried across reloads, listeners added and removed.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Request;
use http_body_util::Full;
use serde_json::Value;
use support::*;
use tokio::time::Instant;

fn temp_config(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switchyard-reload-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("switchyard.toml")
}

/// Replace the file the way editors do: write a new file, rename it over the old one.
fn write_renamed(path: &Path, text: &str) {
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn admin_json(proxy: &Proxy, path: &str) -> Value {
    serde_json::from_str(&get(&proxy.admin_url(path)).await.body).unwrap()
}

/// Reloads apply 20 ms after an edit.
const FAST_RELOAD: &str = r#"
[reload]
debounce = "20ms"
"#;

/// Generation `i`: its own route name and `X-Gen` header, and one of `servers`.
fn gen_config(listen: &str, i: usize, servers: &[&Backend]) -> Config {
    let s = servers[i % servers.len()];
    Config::bare()
        .listener(listen, "")
        .toml(FAST_RELOAD)
        .pool("p", [s.addr], "")
        .route(
            &format!("gen{i}"),
            "p",
            &format!(r#"add_response_headers = {{ "X-Gen" = "{i}" }}"#),
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_reloads_under_load_fail_no_request() {
    let servers = [
        Backend::spawn("b0").await,
        Backend::spawn("b1").await,
        Backend::spawn("b2").await,
    ];
    let refs: Vec<&Backend> = servers.iter().collect();
    let file = temp_config("hundred");
    let (proxy, _) = Proxy::start_file(&gen_config("{listen}", 0, &refs), &file).await;
    let listen = proxy.addr().to_string();
    let load = Load::start(proxy.url("/x"), 2);
    let mut slowest = Duration::ZERO;
    for i in 1..=100 {
        let text = gen_config(&listen, i, &refs);
        if i % 2 == 0 {
            write_renamed(&file, &text);
        } else {
            std::fs::write(&file, &text).unwrap();
        }
        let written = Instant::now();
        let want = (i.to_string(), servers[i % servers.len()].name.clone());
        loop {
            let got = get(&proxy.url("/probe")).await;
            let generation = got
                .headers
                .get("x-gen")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            if (generation, got.body) == want {
                break;
            }
            assert!(
                written.elapsed() < Duration::from_secs(1),
                "reload {i} not in effect after 1 s"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        slowest = slowest.max(written.elapsed());
    }
    let (ok, failed) = load.stop().await;
    eprintln!(
        "100 reloads under load: {ok} requests ok, {failed} failed; slowest reload in effect after {} ms",
        slowest.as_millis()
    );
    assert_eq!(failed, 0);
    assert!(ok > 100);
    proxy.stop().await;
}

#[tokio::test]
async fn invalid_edits_are_refused_and_the_next_valid_one_applies() {
    let a = Backend::spawn("a").await;
    let b = Backend::spawn("b").await;
    let file = temp_config("invalid");
    let base = Config::one_pool([a.addr], "").toml(ADMIN).toml(FAST_RELOAD);
    let (proxy, text) = Proxy::start_file(&base, &file).await;
    assert_eq!(get(&proxy.url("/x")).await.body, "a");
    // A syntax error.
    let broken = text.replace("name = \"all\"", "name = \"all");
    std::fs::write(&file, &broken).unwrap();
    eventually("syntax error reported", || async {
        admin_json(&proxy, "/config").await["last_error"].is_string()
    })
    .await;
    let status = admin_json(&proxy, "/config").await;
    let err = status["last_error"].as_str().unwrap().to_owned();
    let line = broken.lines().position(|l| l == "name = \"all").unwrap() + 1;
    assert!(
        err.contains(&format!("{}:{line}:12:", file.display())),
        "file:line:col in {err}"
    );
    assert_eq!(status["generation"], 1);
    assert_eq!(
        get(&proxy.url("/x")).await.body,
        "a",
        "old config keeps serving"
    );
    // A route to an unknown pool.
    let unknown = text.replace("pool = \"p\"\n", "pool = \"nope\"\n");
    write_renamed(&file, &unknown);
    eventually("semantic error reported", || async {
        admin_json(&proxy, "/config").await["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("uses pool `nope`"))
    })
    .await;
    let err = admin_json(&proxy, "/config").await["last_error"]
        .as_str()
        .unwrap()
        .to_owned();
    let line = unknown
        .lines()
        .position(|l| l == "pool = \"nope\"")
        .unwrap()
        + 1;
    assert!(
        err.contains(&format!(":{line}:8:")),
        "line and column of the bad value: {err}"
    );
    assert_eq!(get(&proxy.url("/x")).await.body, "a");
    let metrics = get(&proxy.admin_url("/metrics")).await.body;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("switchyard_reload_failures_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
    // The next valid edit applies.
    std::fs::write(
        &file,
        text.replace(&a.addr.to_string(), &b.addr.to_string()),
    )
    .unwrap();
    eventually("valid edit applied", || async {
        get(&proxy.url("/x")).await.body == "b"
    })
    .await;
    let status = admin_json(&proxy, "/config").await;
    assert_eq!(status["generation"], 2);
    assert!(status["last_error"].is_null());
    proxy.stop().await;
}

#[tokio::test]
async fn watch_false_ignores_edits_and_admin_reload_applies_them() {
    let a = Backend::spawn("a").await;
    let b = Backend::spawn("b").await;
    let file = temp_config("nowatch");
    let cfg = Config::one_pool([a.addr], "").toml(
        r#"
        [admin]
        addr = "{admin}"
        token = "t"
        [reload]
        watch = false
        "#,
    );
    let (proxy, text) = Proxy::start_file(&cfg, &file).await;
    write_renamed(
        &file,
        &text.replace(&a.addr.to_string(), &b.addr.to_string()),
    );
    // Nothing to await when nothing should happen: check for a bounded while.
    let until = Instant::now() + Duration::from_millis(600);
    while Instant::now() < until {
        assert_eq!(
            get(&proxy.url("/x")).await.body,
            "a",
            "watch = false still reloaded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let denied = send(
        Request::post(proxy.admin_url("/config/reload"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(denied.status, 401);
    let ok = send(
        Request::post(proxy.admin_url("/config/reload"))
            .header("authorization", "Bearer t")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(get(&proxy.url("/x")).await.body, "b");
    proxy.stop().await;
}

fn real_requests(b: &Backend) -> usize {
    b.seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| !s.target.starts_with("/hc"))
        .count()
}

#[tokio::test]
async fn health_state_survives_reload_and_new_servers_wait_for_a_passing_probe() {
    let a = Backend::spawn("a").await;
    let b = Backend::spawn("b").await;
    let c = Backend::spawn("c").await;
    a.set_mode(Mode::Fail);
    c.set_mode(Mode::Fail);
    let file = temp_config("keepstate");
    let cfg = |servers: &[&Backend], header: &str| {
        Config::new()
            .toml(ADMIN)
            .toml(FAST_RELOAD)
            .pool("p", servers.iter().map(|s| s.addr), "")
            .toml(
                r#"
                [pools.p.health]
                path = "/hc"
                interval = "300ms"
                timeout = "200ms"
                healthy_after = 1
                unhealthy_after = 1
                "#,
            )
            .route(
                "all",
                "p",
                &format!(r#"add_response_headers = {{ "X-H" = "{header}" }}"#),
            )
    };
    let (proxy, text) = Proxy::start_file(&cfg(&[&a, &b], "1"), &file).await;
    let listen = proxy.addr().to_string();
    eventually("a unhealthy", || async {
        admin_json(&proxy, "/upstreams")
            .await
            .to_string()
            .contains("\"state\":\"unhealthy\"")
    })
    .await;
    let before = real_requests(&a);
    let next = cfg(&[&a, &b, &c], "2")
        .replace("{listen}", &listen)
        .replace("{admin}", &proxy.admin.unwrap().to_string());
    assert!(text.contains("X-H"));
    std::fs::write(&file, next).unwrap();
    eventually("reload applied", || async {
        get(&proxy.url("/x"))
            .await
            .headers
            .get("x-h")
            .is_some_and(|v| v == "2")
    })
    .await;
    for _ in 0..30 {
        let got = get(&proxy.url("/x")).await;
        assert_eq!(
            got.body, "b",
            "traffic reached a server known or not yet proven healthy"
        );
    }
    assert_eq!(
        real_requests(&a),
        before,
        "a kept its unhealthy state across the reload"
    );
    assert_eq!(
        real_requests(&c),
        0,
        "a new server gets no traffic before it passes a probe"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn listeners_are_added_and_removed_by_reload() {
    let a = Backend::spawn("a").await;
    let file = temp_config("listeners");
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cfg = |listeners: &[String]| {
        listeners
            .iter()
            .fold(Config::bare(), |c, l| c.listener(l, ""))
            .toml(FAST_RELOAD)
            .pool("p", [a.addr], "")
            .route("all", "p", "")
    };
    let (proxy, _) = Proxy::start_file(&cfg(&["{listen}".into()]), &file).await;
    let first = proxy.addr().to_string();
    std::fs::write(&file, cfg(&[first.clone(), free.to_string()])).unwrap();
    eventually("added listener serves", || async move {
        tokio::net::TcpStream::connect(free).await.is_ok()
    })
    .await;
    assert_eq!(get(&format!("http://{free}/x")).await.body, "a");
    write_renamed(&file, &cfg(&[free.to_string()]));
    let old = proxy.addr();
    eventually("removed listener refuses", || async move {
        tokio::net::TcpStream::connect(old).await.is_err()
    })
    .await;
    assert_eq!(get(&format!("http://{free}/x")).await.body, "a");
    // A listener that cannot bind fails the reload as a whole.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();
    std::fs::write(
        &file,
        cfg(&[free.to_string(), taken_addr.to_string()])
            .replace(&a.addr.to_string(), "127.0.0.1:1"),
    )
    .unwrap();
    let until = Instant::now() + Duration::from_millis(600);
    while Instant::now() < until {
        assert_eq!(
            get(&format!("http://{free}/x")).await.body,
            "a",
            "a failed bind must apply nothing"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(taken);
    proxy.stop().await;
}

#[tokio::test]
async fn briefly_missing_file_is_picked_up_when_it_returns() {
    let a = Backend::spawn("a").await;
    let b = Backend::spawn("b").await;
    let file = temp_config("missing");
    let text = |s: &Backend| Config::one_pool([s.addr], "").toml(ADMIN).toml(FAST_RELOAD);
    let (proxy, rendered) = Proxy::start_file(&text(&a), &file).await;
    std::fs::remove_file(&file).unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        get(&proxy.url("/x")).await.body,
        "a",
        "still serving while the file is gone"
    );
    std::fs::write(
        &file,
        rendered.replace(&a.addr.to_string(), &b.addr.to_string()),
    )
    .unwrap();
    eventually("the returned file is applied", || async {
        get(&proxy.url("/x")).await.body == "b"
    })
    .await;
    eventually("no error left behind", || async {
        admin_json(&proxy, "/config").await["last_error"].is_null()
    })
    .await;
    proxy.stop().await;
}
