//! The proxy's own shortage is not the app servers' fault. The real binary runs under
//! `ulimit -n 48` in front of two app servers with the strictest passive ejection;
//! idle clients take every descriptor. A request then gets 503 saying the proxy is out
//! of descriptors (never 502, no retry), both servers stay in rotation, the warning
//! comes once a second with a count, and everything works again when the clients go.
//! A test binary of its own: it watches one child process.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::bench::BIN;
use support::wire::exchange;
use support::*;
use tokio::net::TcpStream;

/// One keep-alive request on `s`: (head, body).
async fn ask(s: &mut TcpStream) -> (String, String) {
    use tokio::io::AsyncWriteExt;
    s.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut pending = Vec::new();
    let (head, body) = read_message(s, &mut pending).await.expect("an answer");
    (head, String::from_utf8_lossy(&body).into_owned())
}

/// The proxy process, killed when the test ends however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_descriptors_is_503_and_blames_no_app_server() {
    // App servers that close after each answer (gunicorn's sync workers): every
    // request needs a new upstream connection, so a new descriptor.
    let app = || {
        support::wire::WireBackend::scripted(|_| {
            vec![
                support::wire::Step::Send(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".to_vec(),
                ),
                support::wire::Step::Close,
            ]
        })
    };
    let (a, b) = (app().await, app().await);
    let (listen, admin) = (free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("sy-fds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("switchyard.toml");
    std::fs::write(
        &conf,
        format!(
            r#"
[[listeners]]
addr = "{listen}"
[server]
header_timeout = "60s"
max_connections = 1000
[admin]
addr = "{admin}"
[log]
access_log = "off"
[reload]
watch = false
[pools.p]
servers = ["{}", "{}"]
idle_timeout = "50ms"
[pools.p.passive]
eject_after = 1
[[routes]]
name = "all"
pool = "p"
"#,
            a.addr, b.addr
        ),
    )
    .unwrap();
    let log = dir.join("stderr.log");
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -S -n 48 && ulimit -H -n 48 && exec {BIN} --config {} --log-level warn",
            conf.display()
        ))
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .stdout(Stdio::from(
            std::fs::File::create(log.with_extension("out")).unwrap(),
        ))
        .spawn()
        .unwrap();
    let mut child = Child(child);
    let pid = child.0.id();
    eventually("the proxy listens", || async {
        TcpStream::connect(listen).await.is_ok()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await; // the probe connection above closes
    let baseline = open_fds(pid);
    let url = format!("http://{listen}/x");
    assert_eq!(get(&url).await.status, 200);
    // A keep-alive client, connected before the descriptors run out.
    let (first, mut kept) = exchange(listen, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    // Idle upstream connections expire (idle_timeout): a request needs a new one.
    eventually("only the kept client is open", || async {
        open_fds(pid) <= baseline + 1
    })
    .await;
    // Idle clients take the proxy's descriptors, one by one, until a request finds
    // none left for its upstream connection: 503, never 502.
    let mut hogs = Vec::new();
    let mut shortages = 0;
    for _ in 0..200 {
        // One more idle client; the accept loop backs off 50 ms after a failed accept.
        hogs.push(TcpStream::connect(listen).await.unwrap());
        tokio::time::sleep(Duration::from_millis(60)).await;
        let (head, body) = ask(&mut kept).await;
        if head.starts_with("HTTP/1.1 200") {
            assert_eq!(shortages, 0, "no 200 once the descriptors are gone");
            continue;
        }
        assert!(head.starts_with("HTTP/1.1 503"), "{head}\n{body}");
        assert!(
            head.to_ascii_lowercase().contains("retry-after: 5"),
            "{head}"
        );
        assert!(
            body.contains("the proxy is out of file descriptors"),
            "{body}"
        );
        shortages += 1;
        if shortages == 6 {
            break;
        }
    }
    assert_eq!(
        shortages,
        6,
        "the descriptors ran out ({} open)",
        open_fds(pid)
    );
    eprintln!("{} idle clients took the proxy's descriptors", hogs.len());
    // The clients leave: everything works again, and no server was blamed.
    drop(hogs);
    eventually("descriptors return", || async {
        open_fds(pid) <= baseline + 2
    })
    .await;
    eventually("requests succeed again", || async {
        get(&url).await.status == 200
    })
    .await;
    let admin_url = format!("http://{admin}");
    let v: serde_json::Value =
        serde_json::from_str(&get(&format!("{admin_url}/upstreams")).await.body).unwrap();
    for s in v["pools"][0]["servers"].as_array().unwrap() {
        assert_eq!(
            (s["state"].as_str(), s["ejections"].as_u64()),
            (Some("healthy"), Some(0)),
            "{v}"
        );
    }
    let m = get(&format!("{admin_url}/metrics")).await.body;
    let line = m
        .lines()
        .find(|l| {
            l.starts_with("switchyard_shortages_total{")
                && l.contains("upstream_connect")
                && l.contains("descriptors")
        })
        .unwrap_or_default()
        .to_owned();
    let n: u64 = line
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(n >= 6, "{line}");
    let _ = Command::new("kill").arg(pid.to_string()).status();
    let _ = child.0.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    let warnings = text
        .lines()
        .filter(|l| l.contains("short of resources"))
        .count();
    eprintln!("{text}");
    assert!(
        (1..=6).contains(&warnings),
        "rate-limited to one a second per kind: {warnings}\n{text}"
    );
    assert!(
        !text.contains("upstream attempt failed") && !text.contains("server ejected"),
        "{text}"
    );
}
