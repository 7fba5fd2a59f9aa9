//! HTTP/3 with an independent client: aioquic (PyPI), driven by
//! `tests/fixtures/h3/aioquic_client.py`. GET, POST with a body, a 10 MiB download,
//! a static file with Range, a report call routed by a body parameter, an oversize
//! body (413), and 0-RTT: off by default, and where it is on, only safe methods.
//! Without aioquic these tests skip with a message, unless SWITCHYARD_REQUIRE_AIOQUIC
//! is set (as `.ci/run` does), where they fail.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use support::tlsclient::cert;
use support::*;

fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("switchyard-aioquic-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn have_aioquic() -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import aioquic"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("SWITCHYARD_REQUIRE_AIOQUIC").is_none(),
            "aioquic is required (SWITCHYARD_REQUIRE_AIOQUIC) but python3 cannot import it"
        );
        eprintln!("skipped: python3 cannot import aioquic (pip install aioquic)");
    }
    ok
}

/// Run the aioquic client on `spec`; its JSON answer.
async fn aioquic(spec: Value) -> Value {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/h3/aioquic_client.py"
    );
    let run = tokio::process::Command::new("python3")
        .arg(script)
        .arg(spec.to_string())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("aioquic client within 60 s")
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "aioquic client output not JSON ({e}): {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn spec(p: &Proxy, requests: Value) -> Value {
    json!({"host": "127.0.0.1", "port": p.addr().port(), "sni": "erp.test", "requests": requests})
}

/// Two pools, a report route by body parameter, static files, a 1 MiB body limit.
fn config(d: &std::path::Path, main: &Backend, reports: &Backend, listener: &str) -> Config {
    cert(d, "erp", &["erp.test"]);
    let files = d.join("assets");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(
        files.join("app.js"),
        (0..100).map(|i| format!("{i:03}")).collect::<String>(),
    )
    .unwrap();
    let d = d.display();
    Config::bare()
        .listener(
            "{listen}",
            &format!("http3 = true\nmax_body_size = \"1m\"\n{listener}"),
        )
        .toml(&format!(
            "[[listeners.tls]]\ncert = \"{d}/erp.pem\"\nkey = \"{d}/erp.key\"\n"
        ))
        .pool("main", [main.addr], r#"read_timeout = "10s""#)
        .pool("reports", [reports.addr], r#"read_timeout = "10s""#)
        .action_route(
            "assets",
            &format!("match.path_prefix = \"/assets\"\nroot = \"{d}\""),
        )
        .route(
            "reports",
            "reports",
            r#"match.param.cmd = "frappe.desk.query_report.run""#,
        )
        .route("all", "main", "")
}

/// The SHA-256 of the backend's `/big?mb=N` body.
fn pattern_sha256(len: usize) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for c in pattern_chunks(len) {
        ctx.update(&c);
    }
    ctx.finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn aioquic_gets_posts_downloads_ranges_reports_and_413() {
    if !have_aioquic() {
        return;
    }
    let d = dir("pipeline");
    let (main, reports) = (
        Backend::spawn("main").await,
        Backend::spawn("reports").await,
    );
    let p = Proxy::start(&config(&d, &main, &reports, "")).await;
    let form = [["content-type", "application/x-www-form-urlencoded"]];
    let got = aioquic(spec(
        &p,
        json!([
            {"method": "GET", "path": "/app/sales-order"},
            {"method": "POST", "path": "/sink", "body_len": 100_000, "chunks": 4},
            {"method": "GET", "path": "/big?mb=10"},
            {"method": "GET", "path": "/assets/app.js", "headers": [["range", "bytes=30-38"]]},
            {"method": "POST", "path": "/", "headers": form,
             "body": "cmd=frappe.desk.query_report.run&report_name=Stock+Balance"},
            {"method": "POST", "path": "/", "headers": form, "body_len": 2_000_000, "chunks": 8},
        ]),
    ))
    .await;
    let a = got.as_array().unwrap_or_else(|| panic!("answers: {got}"));
    assert_eq!(a[0]["status"], 200, "{}", a[0]);
    assert_eq!(a[0]["body"], "main");
    assert!(
        a[0]["headers"]["alt-svc"]
            .as_str()
            .is_some_and(|v| v.starts_with("h3=")),
        "{}",
        a[0]
    );
    assert_eq!(a[1]["status"], 200, "{}", a[1]);
    let sent = main
        .seen
        .lock()
        .unwrap()
        .iter()
        .find(|s| s.target == "/sink")
        .map(|s| s.body_len);
    assert_eq!(sent, Some(100_000), "the POST body arrives whole");
    assert_eq!(a[2]["status"], 200, "{}", a[2]);
    assert_eq!(a[2]["body_len"], 10 * 1024 * 1024);
    assert_eq!(a[2]["sha256"], pattern_sha256(10 * 1024 * 1024));
    assert_eq!(a[3]["status"], 206, "{}", a[3]);
    assert_eq!(a[3]["body"], "010011012");
    assert_eq!(a[3]["headers"]["content-range"], "bytes 30-38/300");
    assert_eq!(a[4]["status"], 200, "{}", a[4]);
    assert_eq!(
        a[4]["body"], "reports",
        "the report call goes to the reports pool"
    );
    assert_eq!(a[5]["status"], 413, "{}", a[5]);
    assert_eq!(reports.hits(), 1);
    p.stop().await;
}

#[tokio::test]
async fn zero_rtt_is_off_by_default_and_on_it_takes_only_safe_methods() {
    if !have_aioquic() {
        return;
    }
    let d = dir("early");
    let (main, reports) = (
        Backend::spawn("main").await,
        Backend::spawn("reports").await,
    );
    let p = Proxy::start(&config(&d, &main, &reports, "")).await;
    let mut s = spec(&p, json!([{"method": "GET", "path": "/"}]));
    s["early"] = json!(true);
    let got = aioquic(s).await;
    assert_eq!(
        got["error"], "the ticket allows no early data",
        "0-RTT is off by default: {got}"
    );
    p.stop().await;

    let p = Proxy::start(&config(&d, &main, &reports, "http3_early_data = true")).await;
    let before = main.hits();
    let mut s = spec(
        &p,
        json!([
            {"method": "GET", "path": "/early-get"},
            {"method": "POST", "path": "/early-post", "body": "x=1",
             "headers": [["content-type", "application/x-www-form-urlencoded"]]},
        ]),
    );
    s["early"] = json!(true);
    let got = aioquic(s).await;
    let a = got.as_array().unwrap_or_else(|| panic!("answers: {got}"));
    assert_eq!(
        a[0]["status"], 200,
        "a GET in early data is served: {}",
        a[0]
    );
    assert_eq!(
        a[1]["status"], 425,
        "a POST in early data is 425 Too Early: {}",
        a[1]
    );
    let seen: Vec<String> = main
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.target.clone())
        .collect();
    assert!(
        !seen.contains(&"/early-post".to_owned()),
        "the POST never reached the app: {seen:?}"
    );
    assert_eq!(main.hits(), before + 1);
    p.stop().await;
}
