//! HTTP/3 across a handover, with the real binary: a USR2 upgrade and a `--takeover`
//! hand the UDP socket to the new process, which serves new QUIC connections, while a
//! QUIC connection of the old process finishes its download during the drain. The
//! download starts only after the handover and is larger than the client's receive
//! window, so the old process needs the client's packets (flow-control credit,
//! acknowledgements) that now arrive at the new one: they are passed on by connection
//! ID (`proxy::serve::h3::steer`). Without that the old connection stalls.

mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::h3client::H3Client;
use support::tlsclient::cert;
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

fn config(
    dir: &std::path::Path,
    addr: SocketAddr,
    admin: SocketAddr,
    backend: SocketAddr,
) -> std::path::PathBuf {
    cert(dir, "erp", &["erp.test"]);
    let d = dir.display();
    let text = Config::bare()
        .listener(addr, "http3 = true")
        .toml(&format!("[[listeners.tls]]\ncert = \"{d}/erp.pem\"\nkey = \"{d}/erp.key\"\n"))
        .toml(&format!(
            "[admin]\naddr = \"{admin}\"\n[log]\naccess_log = \"off\"\n[runtime]\ncontrol_socket = \"{d}/control.sock\"\n[server]\ndrain_timeout = \"20s\"\n"
        ))
        .pool("p", [backend], r#"read_timeout = "20s""#)
        .route("all", "p", "");
    let path = dir.join("switchyard.toml");
    std::fs::write(&path, &text).unwrap();
    path
}

fn spawn(cfg: &std::path::Path, extra: &[&str]) -> Child {
    Command::new(BIN)
        .arg("--config")
        .arg(cfg)
        .args(["--log-level", "warn"])
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .expect("the switchyard binary starts")
}

/// The pid the admin API reports; `None` while nothing answers (a handover closes the
/// old process's copy of the admin socket, which may reset a connection).
async fn pid_on(admin: SocketAddr) -> Option<u64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ask = async {
        let mut s = tokio::net::TcpStream::connect(admin).await.ok()?;
        s.write_all(b"GET /config HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.ok()?;
        let text = String::from_utf8_lossy(&got).into_owned();
        let body = text.split_once("\r\n\r\n")?.1.to_owned();
        serde_json::from_str::<serde_json::Value>(&body).ok()?["pid"].as_u64()
    };
    tokio::time::timeout(Duration::from_secs(2), ask)
        .await
        .ok()?
}

async fn h3_get(addr: SocketAddr, path: &str) -> Result<support::h3client::Answer, String> {
    let mut c = H3Client::connect(addr, "erp.test").await?;
    let got = c
        .get(&format!("https://erp.test:{}{path}", addr.port()))
        .await;
    c.close().await;
    got
}

/// Kills the processes a test started, should it fail halfway.
struct Reap(Vec<u64>);

impl Drop for Reap {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// Start a process, begin a download on one of its QUIC connections, hand over with
/// `hand_over`, and check both sides.
async fn download_survives(
    tag: &str,
    hand_over: impl FnOnce(&Child, &std::path::Path) -> Option<Child>,
) {
    let dir = std::env::temp_dir().join(format!("sy-h3-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let b = Backend::spawn("b").await;
    let (addr, admin) = (free_port(), free_port());
    let cfg = config(&dir, addr, admin, b.addr);
    let mut old = spawn(&cfg, &[]);
    let mut reap = Reap(vec![u64::from(old.id())]);
    eventually("the old process serves HTTP/3", || async move {
        h3_get(addr, "/")
            .await
            .is_ok_and(|a| a.head.status() == 200)
    })
    .await;
    let old_pid = pid_on(admin).await.expect("the old process on admin");
    let mut c = H3Client::connect(addr, "erp.test")
        .await
        .expect("a QUIC connection");
    let url = format!("https://erp.test:{}/big?mb=16&ms=1500", addr.port());
    let download = tokio::spawn(async move {
        let got = c.get(&url).await;
        c.close().await;
        got
    });
    eventually("the download reached the backend", || async {
        !b.seen.lock().unwrap().is_empty()
            && b.seen
                .lock()
                .unwrap()
                .iter()
                .any(|s| s.target.starts_with("/big"))
    })
    .await;
    let new = hand_over(&old, &cfg);
    let new_pid = {
        let mut pid = None;
        for _ in 0..100 {
            match pid_on(admin).await {
                Some(p) if p != old_pid => {
                    pid = Some(p);
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        pid.expect("the new process serves admin")
    };
    reap.0.push(new_pid);
    let fresh = h3_get(addr, "/")
        .await
        .expect("a new QUIC connection after the handover");
    assert_eq!(fresh.head.status(), 200);
    let got = tokio::time::timeout(Duration::from_secs(30), download)
        .await
        .expect("the old connection's download ends")
        .unwrap()
        .expect("the old connection's download completes");
    assert_eq!(got.head.status(), 200);
    assert_eq!(got.body.len(), 16 << 20, "the whole download");
    let status = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Some(s) = old.try_wait().unwrap() {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the old process exits after its drain");
    assert_eq!(status.code(), Some(0));
    let h = h3_get(addr, "/")
        .await
        .expect("the new process still serves");
    assert_eq!(h.head.status(), 200);
    let _ = Command::new("kill")
        .args(["-TERM", &new_pid.to_string()])
        .status();
    if let Some(mut n) = new {
        let _ = n.wait();
    } else {
        eventually("the new process stopped", || async move {
            pid_on(admin).await.is_none()
        })
        .await;
    }
    reap.0.clear();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_hands_the_udp_socket_over_and_the_old_connection_finishes() {
    download_survives("takeover", |_, cfg| Some(spawn(cfg, &["--takeover"]))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_hands_the_udp_socket_over_and_the_old_connection_finishes() {
    download_survives("upgrade", |old, _| {
        let _ = Command::new("kill")
            .args(["-USR2", &old.id().to_string()])
            .status();
        None
    })
    .await;
}
