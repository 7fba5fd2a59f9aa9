//! A deterministic guard on the cost of the request path: instructions per proxied
//! keep-alive GET, counted by valgrind (callgrind) on the real binary, with a real
//! backend, over real sockets. Wall time is never trusted.
//!
//! Two runs differ only in how many requests they serve; the difference of their totals
//! divided by the difference of their request counts is the per-request cost, with
//! start-up and shutdown cancelled out. The test fails when that cost passes a limit set
//! at about twice today's figure, so a change that doubles the per-request work is
//! caught. It needs `valgrind` on the PATH: without it the test says so and passes,
//! unless `SWITCHYARD_REQUIRE_VALGRIND` is set (as `.ci/run` does), when it fails.

mod support;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
/// Instructions per proxied request, debug build (what `cargo test` runs). Measured
/// 2026-11-23: 452,500 ± 500 over three runs; the release build does about 47,000.
/// 2026-12-06: 356,189, then 341,275 with cheaper timers (see `idle`), so the limit
/// follows it down to just above (a change that gives back a fifth of the request path
/// fails).
const LIMIT: u64 = 405_000;

fn valgrind_available() -> bool {
    Command::new("valgrind")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Total instructions of one proxy run under callgrind that serves `n` keep-alive GETs.
async fn run(backend: SocketAddr, n: usize, tag: &str) -> u64 {
    let listen = free_port();
    let dir = std::env::temp_dir();
    let cfg = dir.join(format!(
        "switchyard-instr-{}-{tag}.toml",
        std::process::id()
    ));
    let out = dir.join(format!("switchyard-instr-{}-{tag}.out", std::process::id()));
    let config = Config::bare()
        .listener(listen, "")
        .toml(
            r#"
            [admin]
            enabled = false
            [log]
            access_log = "off"
            [reload]
            watch = false
            [runtime]
            workers = 1
            "#,
        )
        .pool("app", [backend], "")
        .route("all", "app", "");
    std::fs::write(&cfg, config).unwrap();
    let mut child = Command::new("valgrind")
        .args(["--tool=callgrind", "--quiet"])
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(BIN)
        .arg("--config")
        .arg(&cfg)
        .args(["--log-level", "error"])
        .stdout(Stdio::null())
        .spawn()
        .expect("valgrind starts");
    // Under valgrind start-up takes a while; bounded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while tokio::net::TcpStream::connect(listen).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "proxy under valgrind never listened"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "proxy under valgrind exited"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let url = format!("http://{listen}/");
    let client = client();
    for i in 0..n {
        let req = http::Request::get(&url)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let got = tokio::time::timeout(Duration::from_secs(30), client.request(req))
            .await
            .expect("request under valgrind timed out")
            .expect("request under valgrind failed");
        assert_eq!(got.status(), 200, "request {i}");
        let _ = http_body_util::BodyExt::collect(got.into_body()).await;
    }
    drop(client);
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let waited = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap();
    assert!(waited.is_ok(), "proxy under valgrind did not exit");
    let text = std::fs::read_to_string(&out).expect("callgrind wrote its output");
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(&cfg);
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.trim().parse().ok())
        .expect("callgrind output has a total")
}

#[tokio::test]
async fn instructions_per_proxied_request_stay_under_the_limit() {
    if !valgrind_available() {
        assert!(
            std::env::var_os("SWITCHYARD_REQUIRE_VALGRIND").is_none(),
            "valgrind is required here but not installed"
        );
        eprintln!("valgrind not installed; instruction guard skipped");
        return;
    }
    let b = Backend::spawn("b").await;
    let (few, many) = (20, 220);
    let base = run(b.addr, few, "few").await;
    let more = run(b.addr, many, "many").await;
    let per = more.saturating_sub(base) / (many - few) as u64;
    eprintln!("instructions per proxied request (debug build): {per}");
    assert!(
        per > 1_000,
        "implausibly low count {per}: the guard measured nothing"
    );
    assert!(
        per <= LIMIT,
        "{per} instructions per proxied request; the limit is {LIMIT}"
    );
}
