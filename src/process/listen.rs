//! Listening sockets. Each is bound with SO_REUSEADDR but not SO_REUSEPORT: a second
//! process on a port in use fails ("address in use") instead of silently splitting the
//! traffic. A new process gets the very same sockets instead, with their accept queues,
//! so no waiting connection is reset: inherited (`LISTEN_FDS`) from systemd socket
//! activation or a SIGUSR2 upgrade, or taken over (`--takeover`, see `takeover`).
//!
//! Listeners get TCP_NODELAY, which Linux passes on to every accepted connection, so
//! a connection costs no `setsockopt` of its own there.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixDatagram;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;

/// Pending connections the kernel queues per listener.
const BACKLOG: i32 = 1024;

/// What every listening socket gets before its bind: IP_FREEBIND if asked, IPv6 only
/// for an IPv6 address, non-blocking.
fn prepare(sock: &Socket, addr: SocketAddr, freebind: bool) -> io::Result<()> {
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
    sock.set_nonblocking(true)
}

/// Bind `addr` with SO_REUSEADDR. Must run inside the tokio runtime.
/// `freebind` (IP_FREEBIND) binds an address this host does not have yet: a virtual IP
/// that keepalived moves here only when this node becomes the master.
pub fn bind_addr(addr: SocketAddr, freebind: bool) -> io::Result<TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    prepare(&sock, addr, freebind)?;
    sock.set_tcp_nodelay(true)?;
    sock.bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    sock.listen(BACKLOG)?;
    TcpListener::from_std(sock.into())
}

/// The UDP socket of an HTTP/3 listener, and the channel to the process that handed
/// it over, if one did (see `proxy::serve::h3::steer`).
#[derive(Debug)]
pub struct QuicSocket {
    pub udp: UdpSocket,
    pub older: Option<UnixDatagram>,
}

/// Sockets handed over, in order: listening TCP sockets, and the UDP sockets of HTTP/3
/// listeners, each followed by the channel to the process that handed it over.
#[derive(Debug, Default)]
pub struct Handed {
    pub tcp: Vec<std::net::TcpListener>,
    pub quic: Vec<QuicSocket>,
}

impl Handed {
    fn tcp(&mut self, l: std::net::TcpListener) {
        self.tcp.push(l);
    }

    fn udp(&mut self, udp: UdpSocket) {
        self.quic.push(QuicSocket { udp, older: None });
    }

    /// A channel belongs to the UDP socket before it.
    fn channel(&mut self, c: UnixDatagram) {
        match self.quic.last_mut() {
            Some(q) if q.older.is_none() => q.older = Some(c),
            _ => tracing::warn!("a handed-over channel follows no UDP socket; ignored"),
        }
    }

    /// Sort descriptors received over the control socket (`--takeover`).
    pub fn sort(fds: Vec<std::os::fd::OwnedFd>) -> Handed {
        use rustix::net::{AddressFamily, SocketType, sockopt};
        let mut out = Handed::default();
        for fd in fds {
            let kind = (sockopt::socket_domain(&fd), sockopt::socket_type(&fd));
            match kind {
                (Ok(AddressFamily::UNIX), Ok(SocketType::DGRAM)) => out.channel(fd.into()),
                (Ok(_), Ok(SocketType::DGRAM)) => out.udp(fd.into()),
                _ => out.tcp(fd.into()),
            }
        }
        out
    }
}

/// Sockets passed in by `LISTEN_FDS` (systemd or an upgrade handover), sorted.
pub fn inherited() -> Handed {
    let mut fds = listenfd::ListenFd::from_env();
    let mut out = Handed::default();
    for i in 0..fds.len() {
        if let Ok(Some(l)) = fds.take_tcp_listener(i) {
            out.tcp(l);
        } else if let Ok(Some(u)) = fds.take_udp_socket(i) {
            out.udp(u);
        } else if let Ok(Some(c)) = fds.take_unix_datagram(i) {
            out.channel(c);
        } else {
            tracing::warn!(
                fd = i,
                "inherited fd is no socket switchyard serves on; ignored"
            );
        }
    }
    out
}

/// What QUIC wants of a UDP socket's buffers (quic-go and nginx ask for about this):
/// smaller ones drop packets under load.
const UDP_BUFFER: usize = 2 << 20;

/// Bind the UDP socket of an HTTP/3 listener. No SO_REUSEADDR: on Linux two UDP
/// sockets with it may share a port, and a second process must fail instead.
pub fn bind_udp(addr: SocketAddr, freebind: bool) -> io::Result<UdpSocket> {
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    prepare(&sock, addr, freebind)?;
    let _ = sock.set_recv_buffer_size(UDP_BUFFER);
    let _ = sock.set_send_buffer_size(UDP_BUFFER);
    sock.bind(&addr.into()).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot listen on udp {addr} (HTTP/3): {e}"),
        )
    })?;
    Ok(sock.into())
}

/// Warn when the kernel gave a UDP socket smaller buffers than QUIC wants (the
/// `net.core.rmem_max` and `wmem_max` sysctls cap what a socket may ask for).
pub fn warn_small_udp_buffers(s: &UdpSocket, addr: SocketAddr) {
    let s = socket2::SockRef::from(s);
    // Linux reports twice what was granted (the other half is its bookkeeping).
    let (recv, send) = (
        s.recv_buffer_size().unwrap_or(0) / 2,
        s.send_buffer_size().unwrap_or(0) / 2,
    );
    if recv < UDP_BUFFER || send < UDP_BUFFER {
        tracing::warn!(
            %addr,
            recv_kib = recv / 1024,
            send_kib = send / 1024,
            want_kib = UDP_BUFFER / 1024,
            "UDP buffers are smaller than QUIC wants; packets may drop under load: raise them with sysctl -w net.core.rmem_max=2500000 net.core.wmem_max=2500000"
        );
    }
}

/// The UDP socket of every `http3` listener, on the port its TCP socket has (`tcp`,
/// the listening sockets in config order): inherited if one matches, else bound now.
pub fn quic_sockets(
    config: &crate::config::Config,
    tcp: &[TcpListener],
    inherited: &mut Vec<QuicSocket>,
) -> io::Result<Vec<QuicSocket>> {
    let mut out = Vec::new();
    for (l, t) in config.listeners.iter().zip(tcp) {
        if l.http3.is_none() {
            continue;
        }
        let addr = t.local_addr()?;
        let q = match inherited
            .iter()
            .position(|q| q.udp.local_addr().ok() == Some(addr))
        {
            Some(i) => inherited.swap_remove(i),
            None => QuicSocket {
                udp: bind_udp(addr, l.freebind)?,
                older: None,
            },
        };
        warn_small_udp_buffers(&q.udp, addr);
        out.push(q);
    }
    for q in inherited.drain(..) {
        let addr = q
            .udp
            .local_addr()
            .map_or_else(|e| e.to_string(), |a| a.to_string());
        tracing::warn!(%addr, "inherited UDP socket matches no HTTP/3 listener in the config; closed");
    }
    Ok(out)
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
    /// Inherited or taken UDP sockets, for the HTTP/3 listeners (see [`quic_sockets`]).
    pub udp: Vec<QuicSocket>,
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
    let Handed {
        tcp: mut inherited,
        quic: udp,
    } = inherited();
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
        udp,
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
