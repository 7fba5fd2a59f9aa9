//! The UDP socket of an HTTP/3 endpoint across a handover ([`Steered`]). A new process
//! (USR2 upgrade, `--takeover`) gets the very same UDP socket, and from then on reads
//! every datagram that arrives on it; the old process's QUIC connections must still
//! get theirs while they drain. So every connection ID this process issues starts with
//! a tag of its own ([`endpoint_config`]), and a datagram whose connection ID carries
//! another tag goes to the older process over a Unix datagram channel it handed over
//! with the socket. The old process, once handed over, reads only that channel and
//! still sends on the shared socket. A client's first Initial (its own random
//! connection ID) stays with the process that reads it: new connections go to the
//! new process.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use futures_util::task::AtomicWaker;
use quinn::udp::{EcnCodepoint, RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, ConnectionId, ConnectionIdGenerator, UdpPoller};
use ring::rand::{SecureRandom, SystemRandom};
use tokio::net::UnixDatagram;

/// Connection IDs this process issues: the tag, then random bytes.
pub const CID_LEN: usize = 12;
const TAG_LEN: usize = 4;

/// This process's tag, random, so two generations differ.
static TAG: LazyLock<[u8; TAG_LEN]> = LazyLock::new(|| {
    let mut t = [0u8; TAG_LEN];
    if SystemRandom::new().fill(&mut t).is_err() {
        t = fastrand::u32(..).to_be_bytes();
    }
    t
});

/// Connection IDs with this process's tag in front. The tag says which process a
/// packet belongs to, not which connection (as nginx's and the QUIC-LB draft's server
/// IDs); the rest is cryptographically random.
struct TaggedCids;

impl ConnectionIdGenerator for TaggedCids {
    fn generate_cid(&mut self) -> ConnectionId {
        let mut b = [0u8; CID_LEN];
        b[..TAG_LEN].copy_from_slice(&*TAG);
        if SystemRandom::new().fill(&mut b[TAG_LEN..]).is_err() {
            b[TAG_LEN..].copy_from_slice(&fastrand::u64(..).to_be_bytes());
        }
        ConnectionId::new(&b)
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// The endpoint config every HTTP/3 endpoint of this process uses.
pub fn endpoint_config() -> quinn::EndpointConfig {
    let mut c = quinn::EndpointConfig::default();
    c.cid_generator(|| Box::new(TaggedCids));
    c
}

/// Whether `pkt` belongs to a connection of another process: a short-header packet,
/// or a long-header one past the client's first Initial, whose destination connection
/// ID has our length and another tag.
fn foreign(pkt: &[u8]) -> bool {
    let Some(&first) = pkt.first() else {
        return false;
    };
    let dcid = if first & 0x80 == 0 {
        pkt.get(1..1 + CID_LEN)
    } else {
        // Version negotiation (version 0) is never ours to forward.
        if pkt.get(1..5).is_none_or(|v| v == [0, 0, 0, 0]) || pkt.get(5) != Some(&(CID_LEN as u8)) {
            return false;
        }
        pkt.get(6..6 + CID_LEN)
    };
    dcid.is_some_and(|d| d[..TAG_LEN] != *TAG)
}

/// A datagram on the channel: ECN, source address, destination IP, then the payload.
const HEAD: usize = 1 + 19 + 17;

fn put_ip(out: &mut Vec<u8>, ip: Option<IpAddr>) {
    let mut b = [0u8; 17];
    match ip {
        Some(IpAddr::V4(v)) => {
            b[0] = 4;
            b[1..5].copy_from_slice(&v.octets());
        }
        Some(IpAddr::V6(v)) => {
            b[0] = 6;
            b[1..17].copy_from_slice(&v.octets());
        }
        None => {}
    }
    out.extend_from_slice(&b);
}

fn get_ip(b: &[u8]) -> Option<IpAddr> {
    match b.first()? {
        4 => Some(IpAddr::V4(Ipv4Addr::from(
            <[u8; 4]>::try_from(b.get(1..5)?).ok()?,
        ))),
        6 => Some(IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(b.get(1..17)?).ok()?,
        ))),
        _ => None,
    }
}

fn encode(pkt: &[u8], from: SocketAddr, dst: Option<IpAddr>, ecn: Option<EcnCodepoint>) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEAD + pkt.len());
    out.push(ecn.map_or(0xff, |e| e as u8));
    put_ip(&mut out, Some(from.ip()));
    out.extend_from_slice(&from.port().to_be_bytes());
    put_ip(&mut out, dst);
    out.extend_from_slice(pkt);
    out
}

/// The metadata of a datagram read from the channel into `buf` (moved to its start);
/// `None` for a malformed one.
fn decode(buf: &mut [u8], n: usize) -> Option<RecvMeta> {
    if n < HEAD {
        return None;
    }
    let head = buf.get(..HEAD)?;
    let ip = get_ip(&head[1..18])?;
    let port = u16::from_be_bytes([head[18], head[19]]);
    let mut meta = RecvMeta::default();
    meta.addr = SocketAddr::new(ip, port);
    meta.ecn = EcnCodepoint::from_bits(head[0]);
    meta.dst_ip = get_ip(&head[20..37]);
    meta.len = n - HEAD;
    meta.stride = meta.len;
    buf.copy_within(HEAD..n, 0);
    Some(meta)
}

/// An HTTP/3 endpoint's UDP socket, shared with the processes before and after.
#[derive(Debug)]
pub struct Steered {
    inner: Arc<dyn AsyncUdpSocket>,
    /// The process before this one: datagrams of its connections go there.
    older: Option<UnixDatagram>,
    /// The channel of the latest handover: read instead of the socket once handed over.
    newer: ArcSwapOption<UnixDatagram>,
    handed_over: AtomicBool,
    /// The endpoint's receive task, woken when this process is handed over.
    waker: AtomicWaker,
}

impl Steered {
    /// Wrap `udp`; `older` is the channel to the process before, if it handed it over.
    /// Must run inside the tokio runtime.
    pub fn new(
        udp: std::net::UdpSocket,
        older: Option<std::os::unix::net::UnixDatagram>,
    ) -> io::Result<Arc<Self>> {
        let inner = quinn::Runtime::wrap_udp_socket(&quinn::TokioRuntime, udp)?;
        let older = match older {
            Some(o) => {
                o.set_nonblocking(true)?;
                Some(UnixDatagram::from_std(o)?)
            }
            None => None,
        };
        Ok(Arc::new(Steered {
            inner,
            older,
            newer: ArcSwapOption::empty(),
            handed_over: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        }))
    }

    /// A channel for the next process: it sends this process's datagrams there. Must
    /// run inside the tokio runtime.
    pub fn channel_for_next(&self) -> io::Result<OwnedFd> {
        let (ours, theirs) = std::os::unix::net::UnixDatagram::pair()?;
        ours.set_nonblocking(true)?;
        self.newer
            .store(Some(Arc::new(UnixDatagram::from_std(ours)?)));
        Ok(theirs.into())
    }

    /// The next process serves: from now on read only what it passes on.
    pub fn handed_over(&self) {
        if self.newer.load().is_some() {
            self.handed_over.store(true, Ordering::Release);
            self.waker.wake();
        }
    }

    /// Pass a datagram of an older process's connection on (dropped if its channel is
    /// full or gone: QUIC sends it again).
    fn pass_on(&self, pkt: &[u8], meta: &RecvMeta) -> bool {
        let Some(older) = &self.older else {
            return false;
        };
        if !foreign(pkt) {
            return false;
        }
        let _ = older.try_send(&encode(pkt, meta.addr, meta.dst_ip, meta.ecn));
        true
    }

    /// Read from the socket; hand the older process's datagrams on.
    fn poll_socket(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let n = std::task::ready!(self.inner.poll_recv(cx, bufs, meta))?;
        if self.older.is_some() {
            for (m, buf) in meta.iter_mut().zip(bufs.iter()).take(n) {
                let data = &buf[..m.len];
                let stride = m.stride.max(1);
                if data.chunks(stride).all(foreign) {
                    for seg in data.chunks(stride) {
                        self.pass_on(seg, m);
                    }
                    m.len = 0;
                }
            }
        }
        Poll::Ready(Ok(n))
    }

    /// Read what the next process passed on (after a handover).
    fn poll_channel(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let Some(chan) = self.newer.load_full() else {
            return Poll::Pending;
        };
        let (Some(buf), Some(slot)) = (bufs.first_mut(), meta.first_mut()) else {
            return Poll::Ready(Ok(0));
        };
        loop {
            let mut rb = tokio::io::ReadBuf::new(buf);
            std::task::ready!(chan.poll_recv(cx, &mut rb))?;
            let n = rb.filled().len();
            let Some(m) = decode(buf, n) else { continue };
            if self.pass_on(&buf[..m.len], &m) {
                continue;
            }
            *slot = m;
            return Poll::Ready(Ok(1));
        }
    }
}

impl AsyncUdpSocket for Steered {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.waker.register(cx.waker());
        match self.handed_over.load(Ordering::Acquire) {
            true => self.poll_channel(cx, bufs, meta),
            false => self.poll_socket(cx, bufs, meta),
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short(cid: &[u8]) -> Vec<u8> {
        let mut p = vec![0x40];
        p.extend_from_slice(cid);
        p.extend_from_slice(&[0xaa; 20]);
        p
    }

    #[test]
    fn only_other_tags_of_our_length_are_foreign() {
        let mut ours = [7u8; CID_LEN];
        ours[..TAG_LEN].copy_from_slice(&*TAG);
        let mut theirs = ours;
        theirs[0] ^= 0xff;
        assert!(!foreign(&short(&ours)));
        assert!(foreign(&short(&theirs)));
        // A Handshake packet (long header, type 2) to the other process's ID.
        let mut hs = vec![0xe0, 0, 0, 0, 1, CID_LEN as u8];
        hs.extend_from_slice(&theirs);
        assert!(foreign(&hs));
        // A client's first Initial: its own ID, of another length, stays here.
        let mut initial = vec![0xc0, 0, 0, 0, 1, 8];
        initial.extend_from_slice(&[9; 8]);
        assert!(!foreign(&initial));
        // Version negotiation is never passed on.
        let mut vn = vec![0x80, 0, 0, 0, 0, CID_LEN as u8];
        vn.extend_from_slice(&theirs);
        assert!(!foreign(&vn));
        assert!(!foreign(&[]));
    }

    #[test]
    fn a_datagram_crosses_the_channel_with_its_addresses() {
        let from: SocketAddr = "[2001:db8::1]:4433".parse().expect("an address");
        let dst = Some("10.0.0.1".parse().expect("an address"));
        let mut buf = encode(b"payload", from, dst, Some(EcnCodepoint::Ect0));
        buf.resize(100, 0);
        let n = HEAD + 7;
        let m = decode(&mut buf, n).expect("a datagram");
        assert_eq!(
            (m.addr, m.dst_ip, m.ecn, m.len),
            (from, dst, Some(EcnCodepoint::Ect0), 7)
        );
        assert_eq!(&buf[..7], b"payload");
        assert!(decode(&mut buf, HEAD - 1).is_none());
    }
}
