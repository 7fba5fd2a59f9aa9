//! The `switchyard` binary itself: `--check`, graceful shutdown on SIGTERM, and flat
//! memory while large bodies stream through it (peak RSS from /proc).

mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

fn write_config(text: &str) -> tempfile_path::TempPath {
    tempfile_path::TempPath::new(text)
}

/// A tiny temp-file helper (no extra crate): removed on drop.
mod tempfile_path {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};

    static N: AtomicUsize = AtomicUsize::new(0);

    pub struct TempPath(PathBuf);

    impl TempPath {
        pub fn new(text: &str) -> Self {
            let p = std::env::temp_dir().join(format!(
                "switchyard-test-{}-{}.toml",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            std::fs::write(&p, text).unwrap();
            TempPath(p)
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// One listener on `addr` sending everything to `backend`, the admin API on `admin`
/// (or off). The access log and the rest are the caller's.
fn binary_config(
    addr: impl std::fmt::Display,
    admin: Option<SocketAddr>,
    backend: impl std::fmt::Display,
) -> Config {
    let admin = admin.map_or("[admin]\nenabled = false".to_owned(), |a| {
        format!("[admin]\naddr = \"{a}\"")
    });
    Config::bare()
        .listener(addr, "")
        .toml(&admin)
        .pool("p", [backend], "")
        .route("all", "p", "")
}

const NO_ACCESS_LOG: &str = "[log]\naccess_log = \"off\"";

/// [`binary_config`] without an access log, and `extra` (whole TOML sections), written
/// to a file.
fn proxy_config(
    addr: SocketAddr,
    admin: Option<SocketAddr>,
    backend: impl std::fmt::Display,
    extra: &str,
) -> tempfile_path::TempPath {
    write_config(
        &binary_config(addr, admin, backend)
            .toml(NO_ACCESS_LOG)
            .toml(extra),
    )
}

/// The binary on `cfg`, warnings and errors to the test's stderr.
fn spawn_bin(cfg: &std::path::Path) -> Child {
    Command::new(BIN)
        .arg("--config")
        .arg(cfg)
        .args(["--log-level", "warn"])
        .stdout(Stdio::null())
        .spawn()
        .expect("the switchyard binary starts")
}

fn check(text: &str) -> (i32, String, String) {
    let cfg = write_config(text);
    let out = Command::new(BIN)
        .arg("--config")
        .arg(cfg.path())
        .arg("--check")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_accepts_shipped_configs_and_prints_summary() {
    for file in ["config/switchyard.toml", "examples/erpnext.toml"] {
        let out = Command::new(BIN)
            .args(["--config", file, "--check"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("listener public on"), "{stdout}");
        assert!(
            stdout.contains(" reports-cmd -> pool secondary"),
            "{stdout}"
        );
    }
    let v = Command::new(BIN).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&v.stdout).starts_with("switchyard "));
}

#[test]
fn check_reports_every_kind_of_bad_config_with_line_and_column() {
    let base = r#"[[listeners]]
addr = "127.0.0.1:8080"
[pools.primary]
servers = ["127.0.0.1:8001"]
"#;
    let cases = [
        (
            "syntax",
            r#"[[routes]]
name = "r
pool = "primary"
"#,
            ":6:10: invalid basic string",
        ),
        (
            "unknown pool",
            r#"[[routes]]
name = "reports"
pool = "secundary"
"#,
            ":7:8: route `reports` uses pool `secundary`, which is not defined; defined pools: primary",
        ),
        (
            "empty pool",
            r#"[pools.none]
servers = []
"#,
            ":5:1: pool `none` has no servers",
        ),
        (
            "bad address",
            r#"[pools.x]
servers = ["nowhere"]
"#,
            ":6:12: server address \"nowhere\" is not host:port",
        ),
        (
            "bad regex",
            r#"[[routes]]
name = "r"
pool = "primary"
match.path_regex = "["
"#,
            ":8:20: path_regex \"[\" does not compile",
        ),
        (
            "duplicate route",
            r#"[[routes]]
name = "r"
pool = "primary"
match.path = "/a"
[[routes]]
name = "r"
pool = "primary"
"#,
            ":10:8: duplicate route name `r`",
        ),
        (
            "unreachable",
            r#"[[routes]]
name = "all"
pool = "primary"
[[routes]]
name = "late"
pool = "primary"
"#,
            ":9:8: route `late` can never match",
        ),
        (
            "bad duration",
            r#"[pools.x]
servers = ["127.0.0.1:1"]
read_timeout = "soon"
"#,
            ":7:16: `read_timeout` = \"soon\" is not a duration",
        ),
        (
            "unknown key",
            r#"[pools.x]
servers = ["127.0.0.1:1"]
retries = 3
"#,
            ":7:1: unknown field `retries`",
        ),
    ];
    for (what, extra, want) in cases {
        let (code, _, stderr) = check(&format!("{base}{extra}"));
        assert_eq!(code, 64, "{what}: {stderr}");
        assert!(stderr.contains(want), "{what}: want {want:?} in\n{stderr}");
        assert!(
            stderr.contains("switchyard-test-"),
            "{what}: file name missing: {stderr}"
        );
    }
    let (code, _, stderr) = check(
        r#"[[listeners]]
addr = "x"
[[routes]]
name = "a"
pool = "b"
timeout = "1 fortnight"
"#,
    );
    assert_eq!(code, 64);
    assert!(
        stderr.contains("3 errors in config"),
        "all errors at once: {stderr}"
    );
    // Type errors in different sections: each is reported at its place, not only the first.
    let (code, _, stderr) = check(&format!(
        r#"{base}[pools.a]
servers = ["127.0.0.1:1"]
keepalive = "many"
[pools.b]
servers = ["127.0.0.1:2"]
read_timeout = 30
[[routes]]
name = 7
pool = "a"
"#
    ));
    assert_eq!(code, 64, "{stderr}");
    for want in [":7:13:", ":10:16:", "a duration like \"30s\"", ":12:8:"] {
        assert!(stderr.contains(want), "want {want:?} in\n{stderr}");
    }
    assert!(stderr.contains("3 errors in config"), "{stderr}");
    // A key file that does not exist: the caret is on `key`, not on `cert`.
    let cert = format!(
        "{}/examples/certs/erp.example.com.pem",
        env!("CARGO_MANIFEST_DIR")
    );
    let (code, _, stderr) = check(&format!(
        r#"[[listeners]]
addr = "127.0.0.1:8443"
[[listeners.tls]]
cert = "{cert}"
key = "/nonexistent/erp.key"
[pools.p]
servers = ["127.0.0.1:1"]
"#
    ));
    assert_eq!(code, 64, "{stderr}");
    assert!(
        stderr.contains(":5:7: TLS: cannot read /nonexistent/erp.key"),
        "{stderr}"
    );
    let (code, _, stderr) = check_missing();
    assert_eq!(code, 64);
    assert!(stderr.contains("cannot read config file"), "{stderr}");
}

fn check_missing() -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(["--config", "/nonexistent/switchyard.toml", "--check"])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::new(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The binary on a free port, killed on drop.
struct Running {
    child: Child,
    addr: SocketAddr,
    _cfg: tempfile_path::TempPath,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    async fn start(backend: SocketAddr) -> Running {
        let addr = free_port();
        let cfg = proxy_config(addr, None, backend, "[server]\ndrain_timeout = \"10s\"");
        let child = spawn_serving(cfg.path(), addr).await;
        Running {
            child,
            addr,
            _cfg: cfg,
        }
    }

    fn url(&self, p: &str) -> String {
        format!("http://{}{p}", self.addr)
    }

    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

#[tokio::test]
async fn sigterm_drains_an_in_flight_request() {
    let b = Backend::spawn("b").await;
    let mut proxy = Running::start(b.addr).await;
    let slow = tokio::spawn(get_owned(proxy.url("/slow?ms=1500")));
    eventually("backend received the slow request", || async {
        b.hits() == 1
    })
    .await;
    let killed = Command::new("kill")
        .args(["-TERM", &proxy.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let addr = proxy.addr;
    eventually("listener closed after SIGTERM", || async move {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    // Refused at once, not queued unanswered until the drain ends: a health checker or
    // keepalived in front notices now, while the slow request is still in flight.
    assert!(
        !slow.is_finished(),
        "new connections were accepted into a dead queue until the drain ended"
    );
    let refused = tokio::net::TcpStream::connect(addr).await.unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    let got = tokio::time::timeout(WAIT, slow).await.unwrap().unwrap();
    assert_eq!((got.status.as_u16(), got.body.as_str()), (200, "b"));
    let status = exit_of(&mut proxy.child, "switchyard did not exit after draining").await;
    assert_eq!(status.code(), Some(0));
}

async fn get_owned(url: String) -> Got {
    get(&url).await
}

#[tokio::test]
async fn large_bodies_stream_at_flat_memory() {
    const MIB: usize = 1024 * 1024;
    let b = Backend::spawn("b").await;
    let proxy = Running::start(b.addr).await;
    // Warm up: connection pools, allocator arenas.
    assert_eq!(get(&proxy.url("/big?mb=1")).await.status, 200);
    let before = proxy.peak_rss_kib();

    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<Bytes>>();
    let resp = client
        .get(proxy.url("/big?mb=64").parse().unwrap())
        .await
        .unwrap();
    let mut body = resp.into_body();
    let (mut got, mut digest) = (0usize, Digest::default());
    while let Some(f) = body.frame().await {
        if let Some(d) = f.unwrap().data_ref() {
            got += d.len();
            digest.update(d);
        }
    }
    let mut want = Digest::default();
    pattern_chunks(64 * MIB).for_each(|c| want.update(&c));
    assert_eq!(
        (got, digest.0),
        (64 * MIB, want.0),
        "download arrived whole"
    );

    let stream = futures_util::stream::iter(
        pattern_chunks(64 * MIB)
            .map(|c| Ok::<_, std::convert::Infallible>(http_body::Frame::data(c))),
    );
    let req = Request::post(proxy.url("/sink"))
        .body(http_body_util::StreamBody::new(stream))
        .unwrap();
    let up = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let resp = up.request(req).await.unwrap();
    let text = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        String::from_utf8_lossy(&text),
        format!("{} {}", 64 * MIB, want.0),
        "upload arrived whole"
    );

    let growth_mib = (proxy.peak_rss_kib().saturating_sub(before)) / 1024;
    let _ = std::io::stderr()
        .write_all(format!("peak RSS growth over 2 x 64 MiB: {growth_mib} MiB\n").as_bytes());
    assert!(
        growth_mib < 16,
        "proxy peak RSS grew by {growth_mib} MiB while streaming 64 MiB each way"
    );
}

/// A process that is not our child: gone, or a zombie nobody reaped yet.
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
    }
}

fn signal(pid: u32, sig: &str) {
    assert!(
        Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
}

async fn admin_pid(admin: SocketAddr) -> Option<u32> {
    let got = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(admin),
    )
    .await
    .ok()?
    .ok()?;
    drop(got);
    let body = get(&format!("http://{admin}/config")).await.body;
    serde_json::from_str::<serde_json::Value>(&body).ok()?["pid"]
        .as_u64()
        .map(|p| p as u32)
}

/// One request on a new connection (`Connection: close`), so every request goes
/// through the listening socket's accept queue.
async fn fresh_request(addr: SocketAddr) -> bool {
    one_connection(addr).await == "ok"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_handover_loses_no_connection() {
    let b = Backend::spawn("b").await;
    let (addr, admin) = (free_port(), free_port());
    let cfg = proxy_config(addr, Some(admin), b.addr, "");
    let mut old = spawn_bin(cfg.path());
    eventually(
        "old process serves",
        || async move { fresh_request(addr).await },
    )
    .await;
    let old_pid = old.id();
    let load = fresh_load(addr, 3);
    load.wait_for_more(50).await;
    // Three handovers in a row: old → new → newer → newest, under load throughout.
    let mut current = old_pid;
    for round in 0..3 {
        signal(current, "-USR2");
        if current == old_pid {
            let status = exit_of(&mut old, &format!("round {round}: did not hand over")).await;
            assert_eq!(status.code(), Some(0));
        } else {
            eventually(
                &format!("round {round}: {current} hands over and exits"),
                || {
                    let gone = exited(current);
                    async move { gone }
                },
            )
            .await;
        }
        let next = admin_pid(admin)
            .await
            .expect("the new process answers on the inherited admin socket");
        assert_ne!(next, current, "round {round}");
        current = next;
        load.wait_for_more(50).await;
    }
    let (ok, failed) = load.stop().await;
    let _ = old.wait();
    signal(current, "-TERM");
    eventually("new process stopped", || async move {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    eprintln!("upgrade handover: {ok} requests on new connections ok, {failed} failed");
    assert_eq!(failed, 0, "connections lost across the handover");
}

/// A second instance on a port in use exits naming the address; with `--takeover` it
/// takes the running instance's sockets over the control socket, under load, and no
/// connection is lost while the old one drains and exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_is_refused_unless_it_takes_over_and_takeover_loses_nothing() {
    let b = Backend::spawn("b").await;
    let (addr, admin) = (free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("sy-takeover-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let sock = dir.join("control.sock");
    let runtime = format!("[runtime]\ncontrol_socket = \"{}\"\n", sock.display());
    let cfg = proxy_config(addr, Some(admin), b.addr, &runtime);
    let mut first = spawn_bin(cfg.path());
    eventually("first serves", || async move { fresh_request(addr).await }).await;
    let first_pid = admin_pid(admin).await.expect("first answers on admin");

    let second = Command::new(BIN)
        .arg("--config")
        .arg(cfg.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot listen on {addr}")) && err.contains("in use"),
        "{err}"
    );

    let load = fresh_load(addr, 3);
    load.wait_for_more(50).await;
    let mut third = Command::new(BIN)
        .arg("--config")
        .arg(cfg.path())
        .args(["--takeover", "--log-level", "warn"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let status = exit_of(&mut first, "the old instance drains and exits").await;
    assert_eq!(status.code(), Some(0));
    let third_pid = admin_pid(admin)
        .await
        .expect("the new instance serves admin");
    assert_ne!(third_pid, first_pid);
    assert_eq!(third_pid, third.id());
    load.wait_for_more(50).await;
    let (ok, failed) = load.stop().await;
    eprintln!("takeover: {ok} requests on new connections ok, {failed} failed");
    assert_eq!(failed, 0, "connections lost across the takeover");
    let _ = third.kill();
    let _ = third.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// `n` loops of requests, each on a new connection, for at most 30 s.
fn fresh_load(addr: SocketAddr, n: usize) -> Load {
    Load::each(n, Duration::from_secs(30), move || fresh_request(addr))
}

#[tokio::test]
async fn sighup_reloads_when_the_watcher_is_off() {
    let a = Backend::spawn("a").await;
    let b = Backend::spawn("b").await;
    let addr = free_port();
    let text = |server: SocketAddr| {
        binary_config(addr, None, server)
            .toml("[reload]\nwatch = false")
            .toml(NO_ACCESS_LOG)
    };
    let cfg = write_config(&text(a.addr));
    let mut child = spawn_serving(cfg.path(), addr).await;
    let url = format!("http://{addr}/x");
    assert_eq!(get(&url).await.body, "a");
    std::fs::write(cfg.path(), text(b.addr)).unwrap();
    let until = std::time::Instant::now() + Duration::from_millis(500);
    while std::time::Instant::now() < until {
        assert_eq!(get(&url).await.body, "a", "reloaded although watch = false");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    signal(child.id(), "-HUP");
    eventually("SIGHUP applied the edit", || async {
        get(&url).await.body == "b"
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_mistyped_log_level_is_refused_and_logs_have_no_colour_off_a_terminal() {
    let out = Command::new(BIN)
        .args([
            "--config",
            "config/switchyard.toml",
            "--check",
            "--log-level",
            "warning",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("did you mean `warn`?"), "{err}");

    // A listener that cannot bind logs an error line and exits: plain text.
    let cfg = write_config(&binary_config("192.0.2.1:8080", None, "127.0.0.1:9"));
    let out = Command::new(BIN)
        .arg("--config")
        .arg(cfg.path())
        .args(["--log-level", "info"])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.is_empty() && !err.contains('\u{1b}'), "{err:?}");
}

/// logrotate's recipe: rename the log, send USR1, and new lines go to a new file. QUIT
/// stops gracefully (exit 0), without a core dump.
#[tokio::test]
async fn usr1_reopens_the_access_log_and_quit_stops_gracefully() {
    let b = Backend::spawn("b").await;
    let dir = std::env::temp_dir().join(format!("sy-logrotate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("access.log");
    let addr = free_port();
    let cfg = write_config(
        &binary_config(addr, None, b.addr)
            .toml(&format!("[log]\naccess_log = \"{}\"", log.display())),
    );
    let mut child = spawn_serving(cfg.path(), addr).await;
    assert_eq!(get(&format!("http://{addr}/before")).await.status, 200);
    file_gets("the first line is written", &log, "/before").await;
    std::fs::rename(&log, dir.join("access.log.1")).unwrap();
    signal(child.id(), "-USR1");
    let l = log.clone();
    eventually("the log is reopened under its name", || {
        let l = l.clone();
        async move { l.exists() }
    })
    .await;
    assert_eq!(get(&format!("http://{addr}/after")).await.status, 200);
    file_gets("the next line goes to the new file", &log, "/after").await;
    let old = std::fs::read_to_string(dir.join("access.log.1")).unwrap();
    assert!(old.contains("/before") && !old.contains("/after"), "{old}");

    signal(child.id(), "-QUIT");
    let status = exit_of(&mut child, "switchyard did not stop on QUIT").await;
    assert_eq!(status.code(), Some(0), "a graceful stop, not a core dump");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A listener on a virtual IP the host does not have yet (the backup of a keepalived
/// pair) starts with `freebind = true`, and fails naming the address without it.
#[tokio::test]
async fn freebind_binds_an_address_the_host_does_not_have_yet() {
    let admin = free_port();
    let config = |freebind: bool| {
        write_config(
            &Config::bare()
                .listener("192.0.2.10:18080", &format!("freebind = {freebind}"))
                .toml(&format!("[admin]\naddr = \"{admin}\""))
                .toml(NO_ACCESS_LOG)
                .pool("p", ["127.0.0.1:9"], "")
                .route("all", "p", ""),
        )
    };
    let without = config(false);
    let mut child = spawn_bin(without.path());
    let status = exit_of(&mut child, "without freebind it must fail").await;
    assert_eq!(status.code(), Some(1));
    let with = config(true);
    let mut child = spawn_bin(with.path());
    accepting(admin).await;
    assert!(child.try_wait().unwrap().is_none(), "it still runs");
    let _ = child.kill();
    let _ = child.wait();
}

/// The exit status of `child`, which must exit within `WAIT`.
async fn exit_of(child: &mut Child, what: &str) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(std::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `lame_duck`: on SIGTERM, `/health/live` and `/health/ready` fail at once while
/// requests are still served; only after the period do the listeners close.
#[tokio::test]
async fn lame_duck_fails_health_first_then_stops_listening() {
    let b = Backend::spawn("b").await;
    let (addr, admin) = (free_port(), free_port());
    let cfg = proxy_config(addr, Some(admin), b.addr, "[server]\nlame_duck = \"600ms\"");
    let mut child = spawn_bin(cfg.path());
    let live = format!("http://{admin}/health/live");
    eventually("live", || async {
        tokio::net::TcpStream::connect(admin).await.is_ok() && get(&live).await.status == 200
    })
    .await;
    let signalled = std::time::Instant::now();
    signal(child.id(), "-TERM");
    eventually("health fails", || async { get(&live).await.status == 503 }).await;
    assert_eq!(
        get(&format!("http://{admin}/health/ready")).await.status,
        503
    );
    assert!(
        fresh_request(addr).await,
        "still served during the lame duck"
    );
    assert!(
        signalled.elapsed() < Duration::from_millis(600),
        "checked within the period"
    );
    eventually("listeners closed after the lame duck", || async move {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    assert!(signalled.elapsed() >= Duration::from_millis(600));
    assert_eq!(
        exit_of(&mut child, "exits after draining").await.code(),
        Some(0)
    );
}

/// A socket handed in (systemd's LISTEN_FDS) whose address no listener has is closed
/// with a warning that names it, and the listeners are bound as usual.
#[tokio::test]
async fn an_inherited_socket_no_listener_wants_is_named_in_a_warning() {
    use command_fds::{CommandFdExt, FdMapping};
    let stray = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let stray_addr = stray.local_addr().unwrap();
    let addr = free_port();
    let cfg = proxy_config(addr, None, "127.0.0.1:9", "");
    let mut cmd = Command::new(BIN);
    cmd.arg("--config")
        .arg(cfg.path())
        .args(["--log-level", "warn"])
        .env("LISTEN_FDS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd.fd_mappings(vec![FdMapping {
        parent_fd: stray.into(),
        child_fd: 3,
    }])
    .unwrap();
    let mut child = cmd.spawn().unwrap();
    accepting(addr).await;
    signal(child.id(), "-TERM");
    exit_of(&mut child, "stops").await;
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(
        err.contains("matches no listener") && err.contains(&stray_addr.to_string()),
        "{err}"
    );
}

/// SIGTERM under a stream of new connections: each one is served or refused, none
/// hangs, and the connections already queued when the listener closes are served.
/// Only a handshake in flight at the very instant the socket closes can still be
/// reset (the kernel has no way to refuse it then): at most one per client loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_refuses_new_connections_at_once_and_serves_the_queued_ones() {
    let b = Backend::spawn("b").await;
    let addr = free_port();
    let cfg = proxy_config(addr, None, b.addr, "");
    let mut child = spawn_bin(cfg.path());
    eventually("serves", || async move { fresh_request(addr).await }).await;
    let outcomes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let loops: Vec<_> = (0..4)
        .map(|_| {
            let outcomes = outcomes.clone();
            tokio::spawn(async move {
                let deadline = std::time::Instant::now() + Duration::from_secs(20);
                while std::time::Instant::now() < deadline {
                    let o = one_connection(addr).await;
                    let refused = o == "refused";
                    outcomes.lock().unwrap().push(o);
                    if refused {
                        return Some(std::time::Instant::now());
                    }
                }
                None
            })
        })
        .collect();
    eventually("load runs", || async {
        outcomes.lock().unwrap().len() > 100
    })
    .await;
    let signalled = std::time::Instant::now();
    signal(child.id(), "-TERM");
    let mut slowest = Duration::ZERO;
    for l in loops {
        let refused_at = l.await.unwrap().expect("refused in the end");
        slowest = slowest.max(refused_at - signalled);
    }
    assert_eq!(exit_of(&mut child, "stops").await.code(), Some(0));
    // Refused at once: not queued on a socket nobody accepts from until the drain ends.
    assert!(
        slowest < Duration::from_millis(400),
        "refused only after {slowest:?}"
    );
    let outcomes = outcomes.lock().unwrap();
    let bad: Vec<&String> = outcomes
        .iter()
        .filter(|o| *o != "ok" && *o != "refused")
        .collect();
    eprintln!(
        "SIGTERM under load: {} connections, {} not served or refused: {bad:?}",
        outcomes.len(),
        bad.len()
    );
    assert!(
        // At most one per loop: the connection each had in its handshake at that instant.
        bad.len() <= 4 && bad.iter().all(|b| b.contains("reset")),
        "{bad:?}"
    );
}

/// One request on a new connection: "ok", "refused", or what went wrong.
async fn one_connection(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let limit = Duration::from_secs(5);
    let mut s = match tokio::time::timeout(limit, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return "refused".into();
        }
        Ok(Err(e)) => return format!("connect: {e}"),
        Err(_) => return "connect timed out".into(),
    };
    if let Err(e) = s
        .write_all(b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
    {
        return format!("write: {e}");
    }
    let mut out = Vec::new();
    match tokio::time::timeout(limit, s.read_to_end(&mut out)).await {
        Ok(Ok(_)) if out.starts_with(b"HTTP/1.1 200") => "ok".into(),
        Ok(Ok(_)) => format!("answer: {:?}", String::from_utf8_lossy(&out)),
        Ok(Err(e)) => format!("read: {e}"),
        Err(_) => "timed out".into(),
    }
}

/// Wait (bounded) until `addr` accepts connections.
async fn accepting(addr: SocketAddr) {
    eventually(&format!("{addr} accepts connections"), || async move {
        tokio::net::TcpStream::connect(addr).await.is_ok()
    })
    .await;
}

/// The binary on `cfg`, once its listener `addr` accepts connections.
async fn spawn_serving(cfg: &std::path::Path, addr: SocketAddr) -> Child {
    let child = spawn_bin(cfg);
    accepting(addr).await;
    child
}

/// Wait (bounded) until the file at `path` contains `text`.
async fn file_gets(what: &str, path: &std::path::Path, text: &str) {
    eventually(what, || async {
        std::fs::read_to_string(path).is_ok_and(|s| s.contains(text))
    })
    .await;
}
