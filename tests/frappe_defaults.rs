//! `switchyard frappe-bench` out of the box: request classes from gunicorn's workers
//! (a report flood in every form leaves a worker for transactions, through the
//! generated config), upload limits from `max_file_size`, and several socket.io nodes
//! kept sticky by cookie.

mod support;

use std::time::Duration;

use support::bench::{bench, on_loopback, run};
use support::engineio::EngineIo;
use support::wire::{exchange, p99, timed};
use support::workers::Workers;
use support::*;
use tokio::time::Instant;

/// `frappe-bench` on `dir` with `args`: (config text, stderr summary); the config
/// passes `--check`.
fn generate(dir: &std::path::Path, args: &[&str]) -> (String, String) {
    let out = dir.join(format!("out-{}/switchyard.toml", fastrand::u32(..)));
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let mut all = vec![
        "frappe-bench",
        dir.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let (code, _, summary) = run(&all);
    assert_eq!(code, 0, "{summary}");
    let (code, _, err) = run(&["--config", out.to_str().unwrap(), "--check"]);
    assert_eq!(code, 0, "{err}");
    (std::fs::read_to_string(&out).unwrap(), summary)
}

/// The `[[routes]]` block named `name`.
fn route<'a>(text: &'a str, name: &str) -> &'a str {
    let at = text
        .find(&format!("name = \"{name}\""))
        .unwrap_or_else(|| panic!("no route {name}"));
    let end = text[at..].find("\n\n").map_or(text.len(), |e| at + e);
    &text[at..end]
}

#[test]
fn report_routes_get_a_class_capped_below_gunicorns_workers() {
    let dir = bench("classes");
    let (text, summary) = generate(&dir, &[]);
    assert!(text.contains("max_connections = 4   # requests at once per app server: gunicorn's sync workers (gunicorn_workers of common_site_config.json)"), "{text}");
    assert!(text.contains("[pools.web.classes.report]"), "{text}");
    assert!(
        text.contains(
            "max_connections = 3   # workers - 1: one worker stays free for transactions"
        ),
        "{text}"
    );
    assert!(text.contains("priority = -10"), "{text}");
    for r in ["reports-cmd", "reports-api"] {
        let block = route(&text, r);
        assert!(
            block.contains("pool = \"web\"") && block.contains("class = \"report\""),
            "{block}"
        );
    }
    assert!(
        summary.contains("class `report` capped at 3 per app server"),
        "{summary}"
    );

    // The report pool's routes carry the class too; the cap applies where they fall back.
    let (text, _) = generate(&dir, &["--report-pool", "127.0.0.1:8100"]);
    let block = route(&text, "reports-cmd");
    assert!(
        block.contains("pool = \"reports\"") && block.contains("class = \"report\""),
        "{block}"
    );
    assert!(text.contains("fallback = \"web\"") && text.contains("[pools.web.classes.report]"));

    let (text, summary) = generate(&dir, &["--workers", "6", "--report-cap", "2"]);
    assert!(text.contains("max_connections = 6   # requests at once per app server: gunicorn's sync workers (--workers)"), "{text}");
    assert!(
        text.contains("max_connections = 2   # --report-cap"),
        "{text}"
    );
    assert!(summary.contains("capped at 2"), "{summary}");

    let (text, summary) = generate(&dir, &["--no-classes"]);
    assert!(
        !text.contains("class =") && !text.contains("classes.report"),
        "{text}"
    );
    assert!(
        !text.contains("reports-cmd"),
        "no split, no classes: no report routes"
    );
    assert!(summary.contains("classes: off"), "{summary}");

    // No gunicorn_workers: bench's own default, 2 x CPU + 1.
    let common = dir.join("sites/common_site_config.json");
    let c = std::fs::read_to_string(&common).unwrap();
    std::fs::write(&common, c.replace("\"gunicorn_workers\": 4,", "")).unwrap();
    let (text, _) = generate(&dir, &[]);
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert!(
        text.contains(&format!("max_connections = {}   #", 2 * cpus + 1)),
        "{text}"
    );
    assert!(text.contains("bench's default 2 x CPU + 1"), "{text}");
}

#[tokio::test]
async fn uploads_up_to_max_file_size_pass_and_the_rest_of_the_sites_keep_50m() {
    let dir = bench("uploads");
    let conf = dir.join("sites/erp.test/site_config.json");
    let c = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(&conf, c.replacen('{', "{\"max_file_size\": 57671680, ", 1)).unwrap();
    let common = dir.join("sites/common_site_config.json");
    let c = std::fs::read_to_string(&common).unwrap();
    std::fs::write(
        &common,
        c.replace("\"dns_multitenant\": 1", "\"dns_multitenant\": 0"),
    )
    .unwrap();
    let app = Backend::spawn("app").await;
    let (text, summary) = generate(&dir, &["--web", &app.addr.to_string()]);
    assert!(
        summary.contains("max_body_size 56m for erp.test"),
        "{summary}"
    );
    assert!(text.contains("max_body_size = \"56m\"   # max_file_size of erp.test (57671680 bytes) + 1 MiB for the multipart form"), "{text}");
    // Per-site ports: erp.test on :80, hr.test on :8001 (and shop.test on :8002).
    let text = text
        .replace("\"0.0.0.0:80\"", "\"{listen0}\"")
        .replace("\"0.0.0.0:8001\"", "\"{listen1}\"")
        .replace("\"0.0.0.0:8002\"", "\"{listen2}\"");
    let p = Proxy::start(&text).await;
    let body = vec![b'x'; 55 << 20];
    let post = |addr: std::net::SocketAddr, host: &'static str| {
        let body = body.clone();
        async move {
            let req = http::Request::post(format!("http://{addr}/sink"))
                .header("host", host)
                .header("content-type", "application/octet-stream")
                .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                .unwrap();
            send(req).await
        }
    };
    let got = post(p.addrs[0], "erp.test").await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert!(
        got.body.contains(&(55u64 << 20).to_string()),
        "{}",
        got.body
    );
    let got = post(p.addrs[1], "hr.test").await;
    assert_eq!(got.status, 413, "hr.test keeps bench's 50m");
    p.stop().await;
}

/// How long a request holds a gunicorn worker: reports 600 ms, ping 2 ms, else 20 ms.
fn frappe_hold(head: &str, body: &[u8]) -> Duration {
    let report = head.contains("query_report") || body.windows(12).any(|w| w == b"query_report");
    Duration::from_millis(if report {
        600
    } else if head.contains("/api/method/ping") {
        2
    } else {
        20
    })
}

/// A report call in each form the report split matches.
fn report(i: usize) -> String {
    let m = "frappe.desk.query_report.run";
    let post = |ct: &str, body: String| {
        format!(
            "POST / HTTP/1.1\r\nHost: erp.test\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    match i % 5 {
        0 => format!(
            "GET /api/method/{m}?report_name=Stock%20Balance HTTP/1.1\r\nHost: erp.test\r\n\r\n"
        ),
        1 => {
            format!("GET /?cmd={m}&report_name=Stock%20Balance HTTP/1.1\r\nHost: erp.test\r\n\r\n")
        }
        2 => post(
            "application/x-www-form-urlencoded",
            format!("cmd={m}&report_name=Stock+Balance"),
        ),
        3 => post(
            "multipart/form-data; boundary=XyZ",
            format!(
                "--XyZ\r\nContent-Disposition: form-data; name=\"cmd\"\r\n\r\n{m}\r\n--XyZ--\r\n"
            ),
        ),
        _ => post(
            "application/json",
            format!("{{\"cmd\": \"{m}\", \"report_name\": \"Stock Balance\"}}"),
        ),
    }
}

/// Transactions every 50 ms for `secs` while `reporters` clients loop over report
/// calls: (p99 of the transactions, failed transactions, reports done).
async fn flood(
    addr: std::net::SocketAddr,
    secs: u64,
    reporters: usize,
    app: &Workers,
) -> (Duration, usize, usize) {
    let until = Instant::now() + Duration::from_secs(secs);
    let reports: Vec<_> = (0..reporters)
        .map(|c| {
            tokio::spawn(async move {
                let mut done = 0;
                let mut i = c;
                while Instant::now() < until {
                    done += usize::from(timed(addr, report(i).as_bytes()).await.0 == 200);
                    i += 1;
                }
                done
            })
        })
        .collect();
    if reporters > 0 {
        eventually("the reports hold workers", || async { app.started() >= 3 }).await;
    }
    let tx = "POST /api/resource/Sales%20Order HTTP/1.1\r\nHost: erp.test\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
    let mut sent = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    while Instant::now() < until {
        tick.tick().await;
        sent.push(tokio::spawn(timed(addr, tx.as_bytes())));
    }
    let (mut lat, mut failed) = (Vec::new(), 0);
    for t in sent {
        match t.await.unwrap() {
            (200, took) => lat.push(took),
            _ => failed += 1,
        }
    }
    let mut done = 0;
    for r in reports {
        done += r.await.unwrap();
    }
    lat.sort();
    (p99(&lat), failed, done)
}

/// The seed's story through the generated config: 4 workers (gunicorn_workers of the
/// fixture), 8 clients of 600 ms reports in all five forms, a transaction every 50 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_flood_leaves_a_worker_for_transactions_through_the_generated_config() {
    let dir = bench("flood");
    // Without `allow_rate_limiting`: its `limit_conn $host 8` would refuse the ninth client.
    let common = dir.join("sites/common_site_config.json");
    let c = std::fs::read_to_string(&common).unwrap();
    std::fs::write(&common, c.replace("\"allow_rate_limiting\": 1,", "")).unwrap();
    let mut results = Vec::new();
    for args in [&[][..], &["--no-classes"][..]] {
        let app = Workers::spawn(4, frappe_hold).await;
        let mut all = vec!["--web", &app.addr.to_string()]
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>();
        all.extend(args.iter().map(|s| (*s).to_owned()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let (text, _) = generate(&dir, &all);
        let p = Proxy::start(&on_loopback(&text)).await;
        let (quiet, _, _) = flood(p.addrs[0], 2, 0, &app).await;
        let (loaded, failed, reports) = flood(p.addrs[0], 4, 8, &app).await;
        eprintln!(
            "{args:?}: transactions p99 unloaded {quiet:?}, under the flood {loaded:?}, {failed} failed, {reports} reports done"
        );
        results.push((quiet, loaded, failed, reports));
        p.stop().await;
        app.kill().await;
    }
    let (quiet, loaded, failed, reports) = results[0];
    assert!(
        loaded <= 2 * quiet.max(Duration::from_millis(25)),
        "classes: p99 {loaded:?} against {quiet:?} unloaded"
    );
    assert_eq!(failed, 0);
    assert!(reports >= 10, "reports still run: {reports}");
    let (_, without, failed, _) = results[1];
    assert!(
        without >= Duration::from_millis(300),
        "without classes the flood must hurt: {without:?}"
    );
    assert_eq!(failed, 0, "busy is not dead: no 503 without classes either");
}

/// Several socket.io nodes: the generated config keeps each client on the node that
/// issued its session, for long-polling and the WebSocket upgrade, over new connections.
#[tokio::test]
async fn two_socketio_nodes_each_see_only_their_own_clients() {
    let dir = bench("socketio");
    let (a, b) = (EngineIo::spawn("a").await, EngineIo::spawn("b").await);
    let (text, summary) = generate(
        &dir,
        &[
            "--socketio",
            &a.addr.to_string(),
            "--socketio",
            &b.addr.to_string(),
        ],
    );
    assert!(summary.contains("(sticky by cookie)"), "{summary}");
    assert!(text.contains("[pools.socketio.sticky]"), "{text}");
    let p = Proxy::start(&on_loopback(&text)).await;
    let refused = clients(p.addrs[0], 8).await;
    assert_eq!(
        refused, 0,
        "a client reached a node that did not issue its sid"
    );
    assert_eq!(
        a.refused.load(std::sync::atomic::Ordering::SeqCst)
            + b.refused.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    assert!(
        a.sessions() > 0 && b.sessions() > 0,
        "both nodes get clients: {} {}",
        a.sessions(),
        b.sessions()
    );
    p.stop().await;

    // The control: the same config without the sticky section breaks long-polling.
    let at = text.find("[pools.socketio.sticky]").unwrap();
    let end = at + text[at..].find("\n\n").unwrap();
    let plain = format!("{}{}", &text[..at], &text[end..]);
    let p = Proxy::start(&on_loopback(&plain)).await;
    assert!(
        clients(p.addrs[0], 8).await > 0,
        "without stickiness some polls land on the wrong node"
    );
    p.stop().await;
}

/// `n` Engine.IO clients: handshake, polls, a POST and the upgrade, each request on a
/// new connection with the cookie the proxy set. Returns the requests refused.
async fn clients(addr: std::net::SocketAddr, n: usize) -> usize {
    let mut refused = 0;
    for _ in 0..n {
        let (got, _) = exchange(
            addr,
            b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: erp.test\r\n\r\n",
        )
        .await;
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
        let sid = got
            .split("\"sid\":\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_owned();
        let cookie = got
            .lines()
            .find_map(|l| l.strip_prefix("set-cookie: "))
            .map(|c| c.split(';').next().unwrap().to_owned())
            .unwrap_or_default();
        let base = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
        let reqs = [
            format!("GET {base} HTTP/1.1\r\nHost: erp.test\r\nCookie: {cookie}\r\n\r\n"),
            format!(
                "POST {base} HTTP/1.1\r\nHost: erp.test\r\nCookie: {cookie}\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\n40/erp.test,"
            ),
            format!("GET {base} HTTP/1.1\r\nHost: erp.test\r\nCookie: {cookie}\r\n\r\n"),
            format!(
                "GET /socket.io/?EIO=4&transport=websocket&sid={sid} HTTP/1.1\r\nHost: erp.test\r\nCookie: {cookie}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            ),
        ];
        for r in reqs {
            let (got, _) = exchange(addr, r.as_bytes()).await;
            if got.starts_with("HTTP/1.1 400") {
                refused += 1;
            } else {
                assert!(
                    got.starts_with("HTTP/1.1 200") || got.starts_with("HTTP/1.1 101"),
                    "{got}"
                );
            }
        }
    }
    refused
}
