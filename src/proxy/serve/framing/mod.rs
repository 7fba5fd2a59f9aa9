//! A framing guard in front of hyper's HTTP/1 parser ([`Framer`], `framer.rs`) that
//! fails closed: it follows message boundaries (head, then fixed-length or chunked
//! body), holds back the bytes that would complete each request head until the whole
//! head is checked, and replaces a head whose framing a proxy must not guess at
//! (RFC 9112 §6.3: nginx and HAProxy answer 400) with bytes hyper refuses, so hyper
//! answers `400 Bad Request`, closes, and nothing after it reaches a route. Bytes pass
//! through unchecked only after an HTTP/2 preface or a `101` answer to an upgrade.
//!
//! [`Guarded`] puts it on a client connection's read side. It also parks idle
//! connections (see `proxy::serve::conn`): it tells whether a whole head is waiting and
//! how to serve it ([`Round`]), and in an HTTP/1.1 round it reports end of input to
//! hyper once the connection has idled between requests for [`PARK_AFTER`] with
//! nothing left to flush and no request in flight, which ends hyper's connection
//! cleanly. Writes pass through, bounded by `send_timeout`.
//!
//! - `framer.rs`: the state machine on the raw bytes.
//! - `timeouts.rs`: what the read timer runs for, timeouts in milliseconds, [`HeadTimeout`].
//! - `write.rs`: the write side (`send_timeout`, an upgrade's status line).

mod framer;
mod timeouts;
mod write;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, ReadBuf};

pub use framer::Framer;
use framer::State;
pub use timeouts::HeadTimeout;
use timeouts::{Millis, Wait};

use crate::idle::IdleTimer;

const READ_CHUNK: usize = 16 * 1024;
/// Room in hyper's buffer below which a read goes through our own buffer instead.
const MIN_IN_PLACE: usize = 1024;
/// How long a connection may idle between requests before it parks (its hyper
/// connection ends and frees its buffers). Parking at once would rebuild hyper's
/// connection state for every request of a busy keep-alive connection.
pub const PARK_AFTER: std::time::Duration = std::time::Duration::from_millis(50);

/// How the next stretch of a connection is served (see [`Guarded::next_round`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    /// HTTP/1.1 requests, until the connection goes idle between two of them.
    H1,
    /// Everything else (HTTP/2 preface, an upgrade or CONNECT, a head hyper must
    /// judge): served by the full connection builder until the connection ends.
    Full,
}

/// The client connection with a [`Framer`] on its read side; writes pass through.
#[derive(Debug)]
pub struct Guarded<S> {
    inner: S,
    framer: Framer,
    input: BytesMut,
    output: BytesMut,
    eof: bool,
    /// In an HTTP/1.1 round: report end of input to hyper when the connection goes
    /// idle between requests, so hyper's connection ends and its buffers are freed.
    park: bool,
    /// Set when `park` ended a round.
    parked: bool,
    /// The last write or flush could not finish: hyper still holds output, so the
    /// round must not end yet (its buffer would be lost with it).
    write_blocked: bool,
    /// Runs while the connection idles between requests in a round (parks it when it
    /// fires), or while a request head that began waits for the rest (`head_timeout`).
    /// Kept (and reset) while a round lasts.
    timer: IdleTimer,
    /// What `timer` runs for now.
    waiting: Wait,
    /// While an upgrade awaits its answer: the first bytes of the response written.
    status: Vec<u8>,
    /// The read side waiting for that answer.
    reader: Option<std::task::Waker>,
    /// Longest a write may wait for the client to read (`send_timeout`), in ms: every
    /// open connection keeps this struct, so its timeouts are kept small.
    send_timeout: Millis,
    /// Runs while a write waits; allocated the first time one does.
    send_timer: IdleTimer,
    /// Longest a request head may take to arrive in an HTTP/1.1 round once it began
    /// (`header_timeout`; hyper's own head timer is off in these rounds, see
    /// `proxy::serve::conn::h1_builder`).
    head_timeout: Millis,
    /// Requests in flight on this connection (see `proxy::request::Conn::busy`).
    busy: Option<std::sync::Arc<std::sync::atomic::AtomicUsize>>,
}

impl<S> Guarded<S> {
    /// Also answer targets over `max_uri` bytes with 414 (see [`Framer::with_max_uri`]).
    pub fn with_max_uri(mut self, max_uri: usize) -> Self {
        self.framer.set_max_uri(max_uri);
        self
    }

    /// Bound the time a request head may take in an HTTP/1.1 round once it began
    /// (`header_timeout`): past it the read fails with [`HeadTimeout`].
    pub fn with_head_timeout(mut self, head_timeout: std::time::Duration) -> Self {
        self.head_timeout = Millis::of(head_timeout);
        self
    }

    pub fn new(inner: S, max_head: usize, send_timeout: std::time::Duration) -> Self {
        Guarded {
            inner,
            framer: Framer::new(max_head),
            input: BytesMut::new(),
            output: BytesMut::new(),
            eof: false,
            park: false,
            parked: false,
            write_blocked: false,
            timer: IdleTimer::default(),
            waiting: Wait::Nothing,
            status: Vec::new(),
            reader: None,
            send_timeout: Millis::of(send_timeout),
            send_timer: IdleTimer::default(),
            head_timeout: Millis(u32::MAX),
            busy: None,
        }
    }

    /// Count of the connection's requests in flight; it never parks while one is.
    pub fn set_busy(&mut self, busy: std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        self.busy = Some(busy);
    }

    /// Start a round: with `park`, idleness between requests ends it.
    pub fn set_park(&mut self, park: bool) {
        self.park = park;
        self.framer.hold = park;
        if !park && !self.input.is_empty() {
            // A head held back for a full round goes on now.
            self.framer.held_upgrade = false;
            self.framer.feed(&mut self.input, &mut self.output);
        }
        self.parked = false;
        self.timer.reset();
        self.waiting = Wait::Nothing;
        if !park {
            self.timer.release();
        }
    }

    /// Whether the client may still be sending a request body nobody read: the answer
    /// came first (a 413, a refused head), and closing now could reset the connection
    /// before the client reads it.
    pub fn body_unread(&self) -> bool {
        !self.eof
            && matches!(
                self.framer.state,
                State::Length(_)
                    | State::ChunkSize
                    | State::ChunkData(_)
                    | State::ChunkEnd
                    | State::Trailers
                    | State::Refused
            )
    }

    /// The connection itself, bypassing the guard (for a lingering close).
    pub fn socket(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Whether the last round ended because the connection went idle (not closed).
    pub fn parked(&self) -> bool {
        self.parked
    }

    /// What arrived of a request head that is not complete yet, if anything.
    pub fn partial_head(&self) -> Option<&[u8]> {
        [&self.output, &self.input]
            .into_iter()
            .find(|b| !b.is_empty())
            .map(|b| &b[..])
    }

    /// Bytes hyper read but did not use go back in front of the stream.
    pub fn unread(&mut self, bytes: &[u8]) {
        if !bytes.is_empty() {
            let mut front = BytesMut::with_capacity(bytes.len() + self.output.len());
            front.extend_from_slice(bytes);
            front.extend_from_slice(&self.output);
            self.output = front;
        }
    }

    /// Take in what one read returned: bytes go through the framer; none means end of
    /// input, and whatever is held then goes to hyper as it is.
    fn take_in(&mut self, filled: &[u8]) {
        if filled.is_empty() {
            self.eof = true;
            let rest = self.input.split();
            self.output.extend_from_slice(&rest);
            return;
        }
        self.input.extend_from_slice(filled);
        self.framer.feed(&mut self.input, &mut self.output);
        if self.input.is_empty() {
            self.input = BytesMut::new();
        }
    }

    /// Ready once the connection has idled between requests for [`PARK_AFTER`]; the
    /// timer is armed at the start of each idle spell and reused across a round.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self.timer.expired(cx, PARK_AFTER) {
            true => Poll::Ready(()),
            false => Poll::Pending,
        }
    }

    /// What the buffered bytes call for, if enough has arrived to tell.
    fn round(&self) -> Option<Round> {
        if self.output.is_empty() && self.input.is_empty() {
            return None;
        }
        if self.framer.needs_full() {
            return Some(Round::Full);
        }
        // Only a head still incomplete: wait for the rest (under the caller's deadline).
        // Whole requests before it (pipelined) are served meanwhile.
        let partial = self.framer.state == State::Head && self.framer.released > 0;
        if partial && self.output.len() <= self.framer.released {
            return None;
        }
        Some(Round::H1)
    }
}

impl<S: AsyncRead + Unpin> Guarded<S> {
    /// Wait, holding no buffer, until a whole request head (or something hyper must
    /// judge) has arrived, and say how to serve it. `None` when the client closed.
    pub fn poll_next_round(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Round>>> {
        loop {
            if self.framer.is_closed() {
                return Poll::Ready(Ok(None));
            }
            if let Some(r) = self.round() {
                return Poll::Ready(Ok(Some(r)));
            }
            if self.eof {
                let rest = !self.output.is_empty() || !self.input.is_empty();
                return Poll::Ready(Ok(rest.then_some(Round::H1)));
            }
            let mut storage = [std::mem::MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let mut rb = ReadBuf::uninit(&mut storage);
            ready!(Pin::new(&mut self.inner).poll_read(cx, &mut rb))?;
            self.take_in(rb.filled());
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.output.is_empty() {
                let n = this.output.len().min(buf.remaining());
                buf.put_slice(&this.output[..n]);
                this.output.advance(n);
                if this.output.is_empty() {
                    this.output = BytesMut::new();
                }
                return Poll::Ready(Ok(()));
            }
            if this.framer.is_closed() {
                return Poll::Ready(Ok(()));
            }
            if this.framer.state == State::Switch {
                // Nothing is read until the upgrade is answered (see `watch`).
                this.reader = Some(cx.waker().clone());
                return Poll::Pending;
            }
            if this.framer.held_upgrade {
                // End this HTTP/1.1 round cleanly once its last answer is out; a full
                // round serves the upgrade.
                if this.write_blocked {
                    return Poll::Pending;
                }
                this.parked = true;
                return Poll::Ready(Ok(()));
            }
            if !this.input.is_empty() && !this.eof {
                // Bytes that waited (for an upgrade's answer) go on first.
                let before = this.output.len();
                this.framer.feed(&mut this.input, &mut this.output);
                if this.output.len() > before {
                    continue;
                }
            }
            if this.eof || (this.framer.is_pass() && this.input.is_empty()) {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            if this.input.is_empty() && buf.remaining() >= MIN_IN_PLACE {
                match this.read_in_place(cx, buf) {
                    Poll::Ready(Ok(false)) => continue,
                    Poll::Ready(Ok(true)) => return Poll::Ready(Ok(())),
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
            }
            // Read into an uninitialised stack buffer (no zeroing, no per-connection
            // buffer kept while the connection idles); only unconsumed bytes are kept.
            let mut storage = [std::mem::MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let mut rb = ReadBuf::uninit(&mut storage);
            if !ready!(this.read_inner(cx, &mut rb))? {
                return Poll::Ready(Ok(()));
            }
            this.take_in(rb.filled());
        }
    }
}

impl<S: AsyncRead + Unpin> Guarded<S> {
    /// Whether the connection idles between requests in a parking round.
    fn idle(&self) -> bool {
        let busy = self
            .busy
            .as_ref()
            .is_some_and(|b| b.load(std::sync::atomic::Ordering::Acquire) > 0);
        self.park
            && !busy
            && !self.write_blocked
            && self.input.is_empty()
            && self.framer.at_boundary()
    }

    /// Whether a request head began arriving in a parking round and is not whole yet.
    fn head_begun(&self) -> bool {
        self.park
            && self.framer.state == State::Head
            && (self.framer.released > 0 || !self.input.is_empty())
    }

    /// Read from the socket into `buf`; `false` when the connection parked instead.
    /// While it idles between requests in a parking round, a read that would wait
    /// parks it once [`PARK_AFTER`] has passed: hyper then sees the end of input and its
    /// connection ends cleanly, freeing its buffers, while the socket stays open.
    fn read_inner(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<bool>> {
        let waiting = match (self.idle(), self.head_begun()) {
            (true, _) => Wait::Idle,
            (false, true) => Wait::Head,
            (false, false) => Wait::Nothing,
        };
        if waiting != self.waiting {
            self.timer.reset();
            self.waiting = waiting;
        }
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Pending if waiting == Wait::Idle => {
                ready!(self.poll_idle(cx));
                self.parked = true;
                Poll::Ready(Ok(false))
            }
            Poll::Pending
                if waiting == Wait::Head && self.timer.expired(cx, self.head_timeout.get()) =>
            {
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, HeadTimeout)))
            }
            Poll::Pending => Poll::Pending,
            Poll::Ready(r) => {
                // Progress ends an idle spell; a head's time runs until it is whole.
                if waiting == Wait::Idle {
                    self.timer.reset();
                }
                Poll::Ready(r.map(|()| true))
            }
        }
    }

    /// Read straight into hyper's buffer and let the framer check the new bytes where
    /// they lie; only bytes it must hold back are taken out again (into the buffered
    /// path). `true` when `buf` holds something for hyper (or the end of input),
    /// `false` when everything new was held back.
    fn read_in_place(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<bool>> {
        let start = buf.filled().len();
        if !ready!(self.read_inner(cx, buf))? {
            return Poll::Ready(Ok(true));
        }
        let end = buf.filled().len();
        if end == start {
            self.eof = true;
            return Poll::Ready(Ok(true));
        }
        let ok = start + self.framer.scan(&buf.filled()[start..]);
        if ok < end {
            self.take_in(&buf.filled()[ok..]);
            buf.set_filled(ok);
        }
        Poll::Ready(Ok(ok > start))
    }
}
