//! Binary upgrade without losing a connection (SIGUSR2), as nginx and HAProxy do it:
//! the running process starts a new copy of itself (the binary on disk now, same
//! arguments) and hands it the listening sockets themselves as inherited file
//! descriptors (`LISTEN_FDS`, the systemd protocol). The new process serves on the very
//! same sockets and says `READY=1` on a private `NOTIFY_SOCKET`. Only then does the old
//! process stop accepting and drain. The sockets and their accept queues are never
//! closed, so no waiting connection is reset.

use std::os::fd::OwnedFd;
use std::time::Duration;

use command_fds::{CommandFdExt, FdMapping};
use tokio::net::UnixDatagram;

/// How long the new process may take to become ready before the upgrade is abandoned.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// First inherited descriptor number (SD_LISTEN_FDS_START).
const FIRST_FD: i32 = 3;

/// Start the new process with `fds` and wait for it to be ready; returns its pid.
pub async fn handover(fds: Vec<OwnedFd>) -> Result<u32, String> {
    let dir = std::env::temp_dir().join(format!("switchyard-upgrade-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let sock_path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&sock_path);
    let sock = UnixDatagram::bind(&sock_path)
        .map_err(|e| format!("cannot bind {}: {e}", sock_path.display()))?;
    let result = start_and_wait(fds, &sock, &sock_path).await;
    let _ = std::fs::remove_file(&sock_path);
    let _ = std::fs::remove_dir(&dir);
    result
}

async fn start_and_wait(
    fds: Vec<OwnedFd>,
    sock: &UnixDatagram,
    sock_path: &std::path::Path,
) -> Result<u32, String> {
    let n = fds.len();
    let mut child = start(fds, sock_path)?;
    let pid = child.id();
    tracing::info!(
        pid,
        sockets = n,
        "upgrade: new process started with the listening sockets"
    );
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    let mut buf = [0u8; 4096];
    loop {
        tokio::select! {
            r = sock.recv(&mut buf) => {
                let n = r.map_err(|e| format!("notify socket: {e}"))?;
                if String::from_utf8_lossy(&buf[..n]).lines().any(|l| l == "READY=1") {
                    return Ok(pid);
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("new process exited before it was ready ({status})"));
                }
                if tokio::time::Instant::now() >= deadline {
                    let _ = child.kill();
                    return Err(format!("new process not ready within {READY_TIMEOUT:?}; killed it"));
                }
            }
        }
    }
}

/// This binary again, with this process's arguments (less `--takeover`), the sockets as
/// `LISTEN_FDS` and its readiness reported to `sock_path`.
fn start(fds: Vec<OwnedFd>, sock_path: &std::path::Path) -> Result<std::process::Child, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own binary: {e}"))?;
    let n = fds.len();
    let mappings = fds
        .into_iter()
        .zip(FIRST_FD..)
        .map(|(parent_fd, child_fd)| FdMapping {
            parent_fd,
            child_fd,
        })
        .collect();
    let mut cmd = std::process::Command::new(&exe);
    // The sockets come as LISTEN_FDS: not from a control socket.
    cmd.args(std::env::args_os().skip(1).filter(|a| a != "--takeover"))
        .env("LISTEN_FDS", n.to_string())
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES")
        .env("NOTIFY_SOCKET", sock_path);
    cmd.fd_mappings(mappings)
        .map_err(|e| format!("fd mapping: {e}"))?;
    cmd.spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))
}
