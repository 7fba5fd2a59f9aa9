//! Taking over from a running switchyard (`--takeover`), as HAProxy's `-x` does. The
//! running process listens on a private Unix socket (`[runtime] control_socket`). A new
//! process connects, says `TAKEOVER`, and receives every listening socket (SCM_RIGHTS).
//! It serves on those very sockets, then says `READY`; only then does the old process
//! stop accepting and drain. The sockets and their accept queues are never closed, so
//! no waiting connection is reset, and no port is ever bound twice.
//!
//! Without `--takeover`, a second process on a port in use fails to bind and exits
//! naming the address, as nginx and HAProxy do.

use std::io::{self, BufRead, BufReader, IoSlice, IoSliceMut, Write};
use std::mem::MaybeUninit;
use std::net::TcpListener;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use tokio::sync::watch;

use super::trigger::{Reloads, Trigger};

/// Most sockets one handover carries (listeners plus the admin API).
const MAX_FDS: usize = 64;
/// How long either side waits for the other's next line.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the new process may take from receiving the sockets to serving.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The new process's side: the sockets it took, and the line back to the old process.
#[derive(Debug)]
pub struct Taken {
    pub sockets: Vec<TcpListener>,
    /// The UDP sockets of HTTP/3 listeners, with their channels to this process.
    pub udp: Vec<super::listen::QuicSocket>,
    stream: UnixStream,
}

/// Ask the process listening on `path` for its listening sockets.
pub fn request(path: &Path) -> Result<Taken, String> {
    let fail = |e: io::Error| format!("takeover via {}: {e}", path.display());
    let mut stream = UnixStream::connect(path).map_err(|e| {
        format!(
            "takeover: no running switchyard answers on {}: {e}",
            path.display()
        )
    })?;
    stream.set_read_timeout(Some(STEP_TIMEOUT)).map_err(fail)?;
    stream.write_all(b"TAKEOVER\n").map_err(fail)?;
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut line = [0u8; 64];
    let got = rustix::net::recvmsg(
        &stream,
        &mut [IoSliceMut::new(&mut line)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(|e| fail(e.into()))?;
    let mut fds: Vec<OwnedFd> = Vec::new();
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = msg {
            fds.extend(rights);
        }
    }
    if !line[..got.bytes].starts_with(b"SOCKETS") {
        return Err(format!(
            "takeover via {}: unexpected answer {:?}",
            path.display(),
            String::from_utf8_lossy(&line[..got.bytes])
        ));
    }
    let handed = super::listen::Handed::sort(fds);
    Ok(Taken {
        sockets: handed.tcp,
        udp: handed.quic,
        stream,
    })
}

impl Taken {
    /// This process serves: tell the old one to stop accepting and drain.
    pub fn ready(mut self) {
        let _ = self.stream.set_read_timeout(Some(STEP_TIMEOUT));
        let mut answer = String::new();
        let told = self.stream.write_all(b"READY\n").and_then(|()| {
            BufReader::new(&self.stream)
                .read_line(&mut answer)
                .map(|_| ())
        });
        match told {
            Ok(()) if answer.trim() == "DRAINING" => {
                tracing::info!("takeover: the old process stopped accepting and drains")
            }
            Ok(()) => tracing::warn!(answer = answer.trim(), "takeover: unexpected answer"),
            Err(e) => tracing::warn!(error = %e, "takeover: could not tell the old process"),
        }
    }
}

/// The old process's side: send `fds`, wait until the new process serves on them.
/// `Ok` means this process must now stop accepting and drain.
pub fn give(mut stream: UnixStream, fds: Vec<OwnedFd>) -> io::Result<()> {
    let borrowed: Vec<_> = fds.iter().take(MAX_FDS).map(|f| f.as_fd()).collect();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&borrowed)) {
        return Err(io::Error::other("too many sockets for one message"));
    }
    let line = format!("SOCKETS {}\n", borrowed.len());
    rustix::net::sendmsg(
        &stream,
        &[IoSlice::new(line.as_bytes())],
        &mut control,
        SendFlags::empty(),
    )?;
    drop(fds);
    stream.set_read_timeout(Some(READY_TIMEOUT))?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer)?;
    if answer.trim() != "READY" {
        return Err(io::Error::other(format!(
            "new process did not become ready (said {:?})",
            answer.trim()
        )));
    }
    stream.write_all(b"DRAINING\n")
}

/// Listen on `path` for takeover requests until `stop`; each goes to the reloader,
/// which owns the sockets. A live process already there keeps its socket (a warning).
pub fn listen(
    path: PathBuf,
    takeover: bool,
    reloads: Reloads,
    mut stop: watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    if !takeover && UnixStream::connect(&path).is_ok() {
        tracing::warn!(path = %path.display(), "control socket in use by another process; not listening for takeovers");
        return None;
    }
    let listener = match bind(&path) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot listen for takeovers");
            return None;
        }
    };
    tracing::info!(path = %path.display(), "control socket listening for takeovers");
    Some(tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = stop.wait_for(|s| *s) => return,
            };
            match accepted {
                Ok((s, _)) => {
                    tokio::spawn(asked(s, reloads.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }))
}

/// Bind `path` (replacing a stale file), readable by this user only.
fn bind(path: &Path) -> io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::remove_file(path);
    let l = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// One connection on the control socket: a `TAKEOVER` line goes to the reloader.
async fn asked(stream: tokio::net::UnixStream, reloads: Reloads) {
    use tokio::io::AsyncBufReadExt;
    let mut reader = tokio::io::BufReader::new(stream);
    let mut line = String::new();
    let read = tokio::time::timeout(STEP_TIMEOUT, reader.read_line(&mut line)).await;
    if !matches!(read, Ok(Ok(_))) || line.trim() != "TAKEOVER" {
        tracing::warn!(line = line.trim(), "control socket: not a takeover request");
        return;
    }
    let std_stream = reader
        .into_inner()
        .into_std()
        .and_then(|s| s.set_nonblocking(false).map(|()| s));
    match std_stream {
        Ok(s) => reloads.trigger(Trigger::Takeover(s)),
        Err(e) => tracing::warn!(error = %e, "control socket"),
    }
}
