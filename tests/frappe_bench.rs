//! `switchyard frappe-bench`: the bench under `tests/fixtures/frappe-bench` (plus a TLS
//! site whose certificate the test makes) through the real binary; the output passes
//! `--check`, and a proxy started on it answers as bench's nginx config would, row by
//! row of frappe-nginx.md §8. The app, report and socketio servers are raw-socket peers.

mod support;

use std::path::Path;

use support::bench::{bench, copy_tree, on_loopback, run};
use support::tlsclient::{cert, tls_connect};
use support::wire::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The app: ping answers pong, private files answer with X-Accel-Redirect, WebSocket
/// upgrades are accepted and echoed, everything else says who answered.
async fn server(name: &'static str) -> WireBackend {
    WireBackend::scripted(move |r| {
        let target = r.line.split(' ').nth(1).unwrap_or("").to_owned();
        if !r.values("upgrade").is_empty() {
            return vec![
                Step::Send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n".to_vec()),
                Step::Echo,
            ];
        }
        let (head, body) = if target == "/api/method/ping" {
            ("Content-Type: application/json\r\n".to_owned(), "{\"message\":\"pong\"}".to_owned())
        } else if let Some(f) = target.strip_prefix("/private/files/") {
            (format!("X-Accel-Redirect: /protected/private/files/{f}\r\nContent-Type: application/pdf\r\n"), String::new())
        } else {
            ("Content-Type: text/plain\r\n".to_owned(), format!("from {name}"))
        };
        vec![Step::Send(format!("HTTP/1.1 200 OK\r\n{head}Content-Length: {}\r\n\r\n{body}", body.len()).into_bytes())]
    })
    .await
}

async fn get(addr: std::net::SocketAddr, host: &str, path: &str) -> (String, String) {
    let (got, _) = exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
    )
    .await;
    let (head, body) = got.split_once("\r\n\r\n").unwrap_or((&got, ""));
    (head.to_owned(), body.to_owned())
}

fn app_requests(b: &WireBackend) -> Vec<WireRequest> {
    b.requests()
        .into_iter()
        .filter(|r| !r.line.contains("/api/method/ping"))
        .collect()
}

#[tokio::test]
async fn the_generated_config_checks_and_answers_like_benchs_nginx() {
    let dir = bench("ok");
    let (web, reports, sock) = (
        server("web").await,
        server("reports").await,
        server("socketio").await,
    );
    let out = dir.join("out/switchyard.toml");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let (code, _, err) = run(&[
        "frappe-bench",
        dir.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--web",
        &web.addr.to_string(),
        "--report-pool",
        &reports.addr.to_string(),
        "--socketio",
        &sock.addr.to_string(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("3 site(s)") && err.contains("dns_multitenant"),
        "{err}"
    );
    let (code, summary, err) = run(&["--config", out.to_str().unwrap(), "--check"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        summary.contains("route") && summary.contains("internal"),
        "{summary}"
    );

    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        text.contains("max_requests_per_host = 8"),
        "allow_rate_limiting"
    );
    let p = Proxy::start(&on_loopback(&text)).await;
    let http = p.addrs[0];
    // Asset with a year of caching and the security headers; through the apps/ symlink.
    let (h, body) = get(http, "erp.test", "/assets/frappe/js/desk.js").await;
    assert!(h.starts_with("HTTP/1.1 200"), "{h}");
    assert!(body.starts_with("desk();"));
    assert!(h.contains("cache-control: max-age=31536000"), "{h}");
    assert!(
        h.contains("x-frame-options: SAMEORIGIN") && h.contains("strict-transport-security"),
        "{h}"
    );
    // Public files by site, the alias reaching its site's folder.
    assert_eq!(
        get(http, "hr.test", "/files/logo.png").await.1,
        "hr.test logo"
    );
    assert_eq!(
        get(http, "erp-alias.test", "/files/logo.png").await.1,
        "erp.test logo"
    );
    // A private file through X-Accel-Redirect, with the site header the proxy's own.
    let (h, body) = get(http, "erp-alias.test", "/private/files/report.pdf").await;
    assert!(
        h.starts_with("HTTP/1.1 200") && body == "%PDF erp.test private report",
        "{h}\n{body}"
    );
    let r = app_requests(&web).pop().unwrap();
    assert_eq!(r.values("x-frappe-site-name"), vec!["erp.test".to_owned()]);
    assert_eq!(r.values("x-use-x-accel-redirect"), vec!["True".to_owned()]);
    assert_eq!(
        get(http, "erp.test", "/protected/private/files/report.pdf")
            .await
            .0
            .split(' ')
            .nth(1),
        Some("404")
    );
    // Rewrite with the query kept; forced download of uploaded HTML, not rewritten.
    let (h, _) = get(http, "erp.test", "/app/sales-order/?x=1").await;
    assert!(
        h.starts_with("HTTP/1.1 301") && h.contains("location: /app/sales-order?x=1"),
        "{h}"
    );
    let (h, body) = get(http, "erp.test", "/files/page.html").await;
    assert!(
        h.contains("content-disposition: attachment") && body == "<p>uploaded page</p>",
        "{h}"
    );
    // Traversal refused: nothing of a site_config.json.
    for path in [
        "/assets/../erp.test/site_config.json",
        "/../erp.test/site_config.json",
        "/assets/%2e%2e/erp.test/site_config.json",
        "/files/..%2f..%2fsite_config.json",
    ] {
        let (h, body) = get(http, "erp.test", path).await;
        assert!(!body.contains("db_s3cret"), "{path}: {h}\n{body}");
    }
    // The app gets everything else; report calls go to the report pool.
    assert_eq!(get(http, "erp.test", "/app").await.1, "from web");
    assert_eq!(
        get(
            http,
            "erp.test",
            "/api/method/frappe.desk.query_report.run?report_name=Stock%20Balance"
        )
        .await
        .1,
        "from reports"
    );
    let form = "cmd=frappe.desk.query_report.export_query&report_name=Stock+Balance";
    let (got, _) = exchange(http, format!("POST / HTTP/1.1\r\nHost: erp.test\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}", form.len()).as_bytes()).await;
    assert!(got.ends_with("from reports"), "{got}");
    let r = reports
        .requests()
        .into_iter()
        .rfind(|r| r.line.starts_with("POST"))
        .unwrap();
    assert_eq!(
        r.body,
        form.as_bytes(),
        "the looked-at body is replayed whole"
    );

    // socket.io: upgraded, with Origin rebuilt from the Host and the site header.
    let mut s = tokio::net::TcpStream::connect(http).await.unwrap();
    s.write_all(b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: erp.test:8080\r\nOrigin: http://evil.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    s.write_all(b"ping-frame").await.unwrap();
    let n = tokio::time::timeout(WAIT, s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"ping-frame");
    let r = sock.requests().pop().unwrap();
    assert_eq!(r.values("origin"), vec!["http://erp.test:8080".to_owned()]);
    assert_eq!(r.values("host"), vec!["erp.test".to_owned()]);
    assert_eq!(r.values("x-frappe-site-name"), vec!["erp.test".to_owned()]);

    // The TLS site: :80 redirects to https, :443 serves it with its certificate.
    let (h, _) = get(http, "shop.test", "/app?x=1").await;
    assert!(
        h.starts_with("HTTP/1.1 301") && h.contains("location: https://shop.test/app?x=1"),
        "{h}"
    );
    let (mut tls, _, _) = tls_connect(p.addrs[2], "shop.test", &[b"http/1.1"]).await;
    tls.write_all(b"GET /files/logo.png HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(WAIT, tls.read_to_end(&mut got)).await;
    let got = String::from_utf8_lossy(&got);
    assert!(
        got.starts_with("HTTP/1.1 200") && got.ends_with("shop.test logo"),
        "{got}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_dead_app_gets_benchs_502_page() {
    let dir = bench("dead");
    let dead = free_port();
    let out = dir.join("switchyard.toml");
    let (code, _, err) = run(&[
        "frappe-bench",
        dir.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--web",
        &dead.to_string(),
    ]);
    assert_eq!(code, 0, "{err}");
    let p = Proxy::start(&on_loopback(&std::fs::read_to_string(&out).unwrap())).await;
    let (h, body) = get(p.addrs[0], "erp.test", "/app").await;
    assert!(
        h.starts_with("HTTP/1.1 502") || h.starts_with("HTTP/1.1 503"),
        "{h}"
    );
    assert!(body.contains("Sorry! We will be back soon."), "{body}");
    // An asset is still served: files do not need the app.
    assert!(
        get(p.addrs[0], "erp.test", "/assets/frappe/js/desk.js")
            .await
            .0
            .starts_with("HTTP/1.1 200")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_benches_are_refused_naming_the_file_and_writing_nothing() {
    let dir = std::env::temp_dir().join(format!("sy-bench-bad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("out.toml");
    let generate = |d: &Path| {
        run(&[
            "frappe-bench",
            d.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ])
    };
    let (code, _, err) = generate(&dir);
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("sites") && err.contains("no such directory"),
        "{err}"
    );

    copy_tree(Path::new("tests/fixtures/frappe-bench"), &dir);
    put(
        &dir,
        "sites/hr.test/site_config.json",
        "{\"db_name\": \"_hr\",",
    );
    let (code, _, err) = generate(&dir);
    assert_eq!(code, 64);
    assert!(
        err.contains("hr.test/site_config.json") && err.contains("invalid JSON"),
        "{err}"
    );

    put(
        &dir,
        "sites/hr.test/site_config.json",
        "{\"nginx_port\": 8001}",
    );
    put(
        &dir,
        "sites/erp.test/site_config.json",
        "{\"nginx_port\": 8001}",
    );
    std::fs::write(dir.join("sites/common_site_config.json"), "{}").unwrap();
    let (code, _, err) = generate(&dir);
    assert_eq!(code, 64);
    assert!(
        err.contains("site_config.json")
            && err.contains("nginx_port 8001 is also the port of site"),
        "{err}"
    );

    std::fs::write(dir.join("sites/hr.test/site_config.json"), "{\"ssl_certificate\": \"/nonexistent/hr.pem\", \"ssl_certificate_key\": \"/nonexistent/hr.key\"}").unwrap();
    std::fs::write(dir.join("sites/erp.test/site_config.json"), "{}").unwrap();
    let (code, _, err) = generate(&dir);
    assert_eq!(code, 64);
    assert!(
        err.contains("hr.test/site_config.json")
            && err.contains("/nonexistent/hr.pem does not exist"),
        "{err}"
    );
    assert!(!out.exists(), "no partial config is written");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn per_site_ports_pin_each_listener_to_its_site() {
    let dir = std::env::temp_dir().join(format!("sy-bench-ports-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    copy_tree(Path::new("tests/fixtures/frappe-bench"), &dir);
    put(
        &dir,
        "sites/common_site_config.json",
        "{\"webserver_port\": 8005}",
    );
    put(
        &dir,
        "sites/hr.test/site_config.json",
        "{\"nginx_port\": 8080}",
    );
    let (code, text, err) = run(&["frappe-bench", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("erp.test on :80") && err.contains("hr.test on :8080"),
        "{err}"
    );
    assert!(
        text.contains("addr = \"0.0.0.0:80\"\nsite = \"erp.test\""),
        "{text}"
    );
    assert!(
        text.contains("addr = \"0.0.0.0:8080\"\nsite = \"hr.test\""),
        "{text}"
    );
    assert!(text.contains("servers = [\"127.0.0.1:8005\"]"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_wildcard_certificate_covers_the_sites_under_its_domain() {
    let dir = bench("wildcard");
    let certs = dir.join("certs");
    cert(&certs, "wild", &["*.erp.test"]);
    std::fs::create_dir_all(dir.join("sites/a.erp.test")).unwrap();
    put(
        &dir,
        "sites/a.erp.test/site_config.json",
        "{\"db_name\": \"_a\"}",
    );
    let common = format!(
        "{{\"dns_multitenant\": true, \"wildcard\": {{\"domain\": \"*.erp.test\", \"ssl_certificate\": \"{0}/wild.pem\", \"ssl_certificate_key\": \"{0}/wild.key\"}}}}",
        certs.display()
    );
    std::fs::write(dir.join("sites/common_site_config.json"), common).unwrap();
    let out = dir.join("w.toml");
    let (code, _, err) = run(&[
        "frappe-bench",
        dir.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        text.contains("# wildcard certificate for *.erp.test"),
        "{text}"
    );
    assert!(
        text.contains("match.host = [\"a.erp.test\", \"shop.test\"]"),
        "{text}"
    );
    let (code, _, err) = run(&["--config", out.to_str().unwrap(), "--check"]);
    assert_eq!(code, 0, "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Write `text` to `rel` under the bench copy `dir`.
fn put(dir: &Path, rel: &str, text: &str) {
    std::fs::write(dir.join(rel), text).unwrap();
}
