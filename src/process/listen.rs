//! Listening sockets. Each is bound with SO_REUSEADDR but not SO_REUSEPORT: a second
//! process on a port in use fails ("address in use") instead of silently splitting the
//! traffic. A new process gets the very same sockets instead, with their accept queues,
//! so no waiting connection is reset: inherited (`LISTEN_FDS`) from systemd socket
//! activation or a SIGUSR2 upgrade, or taken over (`--takeover`, see `takeover`).
//!
//! Listeners get TCP_NODELAY, which Linux passes on to every accepted connection, so
//! a connection costs no `setsockopt` of its own there.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;

/// Pending connections the kernel queues per listener.
const BACKLOG: i32 = 1024;

/// Bind `addr` with SO_REUSEADDR. Must run inside the tokio runtime.
/// `freebind` (IP_FREEBIND) binds an address this host does not have yet: a virtual IP
/// that keepalived moves here only when this node becomes the master.
pub fn bind_addr(addr: SocketAddr, freebind: bool) -> io::Result<TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    #[cfg(target_os = "linux")]
    if freebind {
        match addr {
            SocketAddr::V4(_) => sock.set_freebind_v4(true)?,
            SocketAddr::V6(_) => sock.set_freebind_v6(true)?,
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = freebind;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_nonblocking(true)?;
    sock.set_tcp_nodelay(true)?;
    sock.bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    sock.listen(BACKLOG)?;
    TcpListener::from_std(sock.into())
}

/// Listening TCP sockets passed in by `LISTEN_FDS` (systemd or an upgrade handover).
pub fn inherited() -> Vec<std::net::TcpListener> {
    let mut fds = listenfd::ListenFd::from_env();
    let mut out = Vec::new();
    for i in 0..fds.len() {
        match fds.take_tcp_listener(i) {
            Ok(Some(l)) => out.push(l),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(fd = i, error = %e, "inherited fd is not a TCP listener; ignored")
            }
        }
    }
    out
}

/// Take the inherited socket bound to `addr`, or bind a new one.
pub fn take_or_bind(
    inherited: &mut Vec<std::net::TcpListener>,
    addr: SocketAddr,
    freebind: bool,
) -> io::Result<TcpListener> {
    if let Some(i) = inherited
        .iter()
        .position(|l| l.local_addr().ok() == Some(addr))
    {
        let l = inherited.swap_remove(i);
        l.set_nonblocking(true)?;
        socket2::SockRef::from(&l).set_tcp_nodelay(true)?;
        tracing::info!(%addr, "using inherited listening socket");
        return TcpListener::from_std(l);
    }
    bind_addr(addr, freebind)
}

/// The sockets switchyard serves on.
#[derive(Debug)]
pub struct Listeners {
    /// One per `config.listeners`, same order.
    pub proxy: Vec<TcpListener>,
    pub admin: Option<TcpListener>,
    /// Taken from a running process (`--takeover`): its control socket path is ours now.
    pub took_over: bool,
}

/// Bind every listener of `config`, and the admin API if enabled, taking inherited
/// sockets (`LISTEN_FDS`) for matching addresses.
pub async fn bind(config: &crate::config::Config) -> std::io::Result<Listeners> {
    bind_taking(config, Vec::new()).await
}

/// [`bind`], also taking `taken` sockets (from `--takeover`) for matching addresses.
/// An inherited socket no listener wants is closed with a warning.
pub async fn bind_taking(
    config: &crate::config::Config,
    taken: Vec<std::net::TcpListener>,
) -> std::io::Result<Listeners> {
    let mut inherited = inherited();
    inherited.extend(taken);
    let mut proxy = Vec::with_capacity(config.listeners.len());
    for l in &config.listeners {
        proxy.push(take_or_bind(&mut inherited, l.addr, l.freebind)?);
    }
    let admin = match config.admin.addr {
        Some(a) => Some(take_or_bind(&mut inherited, a, false)?),
        None => None,
    };
    for l in inherited {
        let addr = l
            .local_addr()
            .map_or_else(|e| e.to_string(), |a| a.to_string());
        tracing::warn!(%addr, "inherited socket matches no listener in the config; closed");
    }
    Ok(Listeners {
        proxy,
        admin,
        took_over: false,
    })
}

#[cfg(test)]
mod tests {
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn accepted_connections_have_nodelay() -> std::io::Result<()> {
        let l = super::bind_addr("127.0.0.1:0".parse().map_err(std::io::Error::other)?, false)?;
        let client = tokio::net::TcpStream::connect(l.local_addr()?).await?;
        let (accepted, _) = l.accept().await?;
        assert!(
            accepted.nodelay()?,
            "TCP_NODELAY is inherited from the listener"
        );
        drop(client);
        Ok(())
    }
}
