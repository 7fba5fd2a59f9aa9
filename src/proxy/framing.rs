//! A framing guard in front of hyper's HTTP/1 parser, for the two request-smuggling
//! shapes hyper accepts as RFC 9112 §6.3 allows: `Content-Length` together with
//! `Transfer-Encoding`, and `Content-Length` given more than once. A proxy should not
//! guess (nginx and HAProxy answer 400), so the guard follows message boundaries
//! (head, then fixed-length or chunked body) and holds back the bytes that would
//! complete each request head until the whole head is checked. A clean head goes on
//! unchanged. For a smuggling-shaped one hyper gets an invalid byte instead, answers
//! `400 Bad Request` and closes, so the request never reaches a route. Anything else
//! unusual (h2 preface, upgrades, parse errors) switches the guard to pass-through and
//! hyper decides.
//!
//! The guard also parks idle connections (see `proxy::serve_io`): it tells whether a
//! whole head is waiting and how to serve it ([`Round`]), and in an HTTP/1.1 round it
//! reports end of input to hyper once the connection has idled between requests for
//! [`PARK_AFTER`] with nothing left to flush, which ends hyper's connection cleanly.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What hyper gets instead of the bytes that would complete a refused head (or chunk line):
/// a NUL is invalid anywhere in a head, so hyper answers 400 and closes.
const REFUSE: &[u8] = b"\0\r\n\r\n";
/// Longest chunk-size or trailer line we follow before handing over to hyper.
const MAX_LINE: usize = 4096;
const READ_CHUNK: usize = 16 * 1024;
/// Room in hyper's buffer below which a read goes through our own buffer instead.
const MIN_IN_PLACE: usize = 1024;
/// How long a connection may idle between requests before it parks (its hyper
/// connection ends and frees its buffers). Parking at once would rebuild hyper's
/// connection state for every request of a busy keep-alive connection.
pub const PARK_AFTER: std::time::Duration = std::time::Duration::from_millis(50);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailers,
    /// After an upgrade request: nothing more is read until the response shows whether
    /// the protocol switched (`101`: pass-through) or not (next head).
    Switch,
    Pass,
    Refused,
    /// A broken HTTP/2 preface: the connection closes without an answer.
    Closed,
}

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The pure state machine: moves bytes from `input` to `output`, holding a head back
/// until it has been checked.
#[derive(Debug)]
pub struct Framer {
    state: State,
    max_head: usize,
    /// Bytes of the head in progress (at the start of `input`) already given to hyper.
    released: usize,
    /// Hold whole heads, and upgrade heads entirely (in a parking HTTP/1.1 round, whose
    /// hyper connection cannot upgrade: the round ends and a full round takes the head).
    hold: bool,
    /// `hold` kept a whole upgrade head back: the round must end for a full one.
    held_upgrade: bool,
}

impl Framer {
    pub fn new(max_head: usize) -> Self {
        Framer {
            state: State::Head,
            max_head,
            released: 0,
            hold: false,
            held_upgrade: false,
        }
    }

    /// Whether all further bytes go through unexamined.
    pub fn is_pass(&self) -> bool {
        self.state == State::Pass
    }

    /// Whether a full round must serve what comes next (h2, or an upgrade awaiting its answer).
    fn needs_full(&self) -> bool {
        matches!(self.state, State::Pass | State::Switch)
    }

    /// Whether the connection must close without an answer.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The response to an upgrade request began with `status_line`: pass through after
    /// a `101`, otherwise go on with the next request head.
    pub fn answered(&mut self, status_line: &[u8]) {
        if self.state == State::Switch {
            let switched = status_line.len() >= 12 && status_line[9..12] == *b"101";
            self.state = if switched { State::Pass } else { State::Head };
        }
    }

    /// Between requests: nothing of a next head seen yet.
    fn at_boundary(&self) -> bool {
        self.state == State::Head && self.released == 0
    }

    /// Process as much of `input` as possible, moving what may go to hyper into
    /// `output` (the buffered path, for bytes that [`Framer::scan`] stopped at).
    pub fn feed(&mut self, input: &mut BytesMut, output: &mut BytesMut) {
        while !input.is_empty() {
            // The head in progress was partly released already: only `head` knows.
            if self.released == 0 {
                let n = self.scan(input);
                if n > 0 {
                    move_n(input, output, n);
                    continue;
                }
            }
            let progressed = match self.state {
                State::Refused | State::Closed => {
                    input.clear();
                    true
                }
                State::Head => self.head(input, output),
                State::ChunkSize | State::ChunkEnd | State::Trailers => self.line(input, output),
                // Nothing moves until the upgrade is answered; `scan` takes at least one
                // byte in every other state.
                State::Switch | State::Pass | State::Length(_) | State::ChunkData(_) => false,
            };
            if !progressed {
                return;
            }
        }
    }

    /// Judge the head at the start of `data`.
    fn parse_head(&self, data: &[u8]) -> Head {
        if data.starts_with(b"PRI ") || (data.len() < 4 && PREFACE.starts_with(data)) {
            return preface(data);
        }
        // Uninitialised: zeroing 128 fields (4 KiB) cost more than parsing a head.
        let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; 128];
        let mut req = httparse::Request::new(&mut []);
        let len = match req.parse_with_uninit_headers(data, &mut headers) {
            Ok(httparse::Status::Complete(len)) if len <= self.max_head => len,
            // The head's size is the bytes received, not hyper's buffer's.
            Ok(httparse::Status::Complete(_)) => return Head::Refuse,
            Ok(httparse::Status::Partial) if data.len() <= self.max_head => return Head::Partial,
            _ => return Head::Bad,
        };
        let (mut lengths, mut length, mut te, mut chunked, mut upgrade) =
            (0, None, 0, false, false);
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                lengths += 1;
                length = std::str::from_utf8(h.value)
                    .ok()
                    .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|v| v.parse::<u64>().ok());
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                te += 1;
                chunked = h.value.trim_ascii().eq_ignore_ascii_case(b"chunked");
            } else if h.name.eq_ignore_ascii_case("upgrade") {
                upgrade = true;
            }
        }
        // RFC 9112 §6.3: CL with TE, several or invalid CLs, a TE other than exactly
        // `chunked` (one field), and CONNECT (we are no forward proxy) are refused.
        let bad_te = te > 1 || (te == 1 && !chunked);
        if (te > 0 && lengths > 0) || lengths > 1 || (lengths == 1 && length.is_none()) || bad_te {
            return Head::Refuse;
        }
        if req.method == Some("CONNECT") || (upgrade && (te > 0 || length.is_some_and(|n| n > 0))) {
            return Head::Refuse;
        }
        let next = match (upgrade, chunked, length) {
            (true, ..) => State::Switch,
            (_, true, _) => State::ChunkSize,
            (_, _, Some(n)) if n > 0 => State::Length(n),
            _ => State::Head,
        };
        Head::Complete { len, next }
    }

    fn head(&mut self, input: &mut BytesMut, output: &mut BytesMut) -> bool {
        match self.parse_head(input) {
            Head::Complete {
                next: State::Switch,
                ..
            } if self.hold => {
                self.held_upgrade = true;
                false
            }
            Head::Complete { len, next } => {
                output.extend_from_slice(&input[self.released..len]);
                input.advance(len);
                self.released = 0;
                self.state = next;
                true
            }
            Head::Partial if self.hold => false,
            Head::Partial => {
                // No prefix of an unfinished head can finish it, so hyper may have it
                // all now (its header timeout runs); only the completing bytes wait.
                output.extend_from_slice(&input[self.released..]);
                self.released = input.len();
                false
            }
            Head::Bad => {
                // Too large, malformed or too many fields: hyper answers (431/400) and
                // closes; nothing after it is passed on.
                output.extend_from_slice(&input[self.released..]);
                input.clear();
                self.released = 0;
                self.state = State::Refused;
                true
            }
            Head::Refuse => {
                output.extend_from_slice(REFUSE);
                input.clear();
                self.state = State::Refused;
                true
            }
            Head::Preface => {
                output.extend_from_slice(&input[self.released..]);
                input.clear();
                self.released = 0;
                self.state = State::Pass;
                true
            }
            Head::Close => {
                input.clear();
                self.state = State::Closed;
                true
            }
        }
    }

    /// The next state after the line at the start of `data`, and the line's length
    /// with its end, if the whole line is there.
    fn parse_line(&self, data: &[u8]) -> Option<(usize, State)> {
        let end = data.iter().position(|&b| b == b'\n')?;
        if end > MAX_LINE {
            return Some((end + 1, State::Refused));
        }
        let line = &data[..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let next = match self.state {
            State::ChunkSize => {
                let digits = line.split(|&b| b == b';').next().unwrap_or(b"");
                match std::str::from_utf8(digits)
                    .ok()
                    .map(str::trim_end)
                    .filter(|d| !d.is_empty() && d.len() <= 16)
                    .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))
                    .and_then(|d| u64::from_str_radix(d, 16).ok())
                {
                    Some(0) => State::Trailers,
                    Some(n) => State::ChunkData(n),
                    None => State::Refused,
                }
            }
            State::ChunkEnd if line.is_empty() => State::ChunkSize,
            State::Trailers if line.is_empty() => State::Head,
            State::Trailers => State::Trailers,
            _ => State::Refused,
        };
        Some((end + 1, next))
    }

    /// The fast path, over bytes already in hyper's buffer: advance while every byte
    /// may go to hyper as it is, and return how many did. It stops, without changing
    /// state, at anything that needs holding back or judging: an unfinished head or
    /// line, a smuggling-shaped or unparseable head. [`Framer::feed`] takes the rest.
    pub fn scan(&mut self, data: &[u8]) -> usize {
        let mut at = 0;
        while at < data.len() {
            let rest = &data[at..];
            at += match self.state {
                State::Pass => rest.len(),
                State::Refused | State::Closed | State::Switch => return at,
                State::Head => match self.parse_head(rest) {
                    Head::Complete {
                        next: State::Switch,
                        ..
                    } if self.hold => return at,
                    Head::Complete { len, next } => {
                        self.state = next;
                        len
                    }
                    _ => return at,
                },
                State::Length(n) | State::ChunkData(n) => {
                    let k = n.min(rest.len() as u64);
                    let fixed = matches!(self.state, State::Length(_));
                    self.state = match (fixed, k == n) {
                        (true, true) => State::Head,
                        (true, false) => State::Length(n - k),
                        (false, true) => State::ChunkEnd,
                        (false, false) => State::ChunkData(n - k),
                    };
                    k as usize
                }
                State::ChunkSize | State::ChunkEnd | State::Trailers => {
                    match self.parse_line(rest) {
                        Some((len, next)) if next != State::Refused => {
                            self.state = next;
                            len
                        }
                        _ => return at,
                    }
                }
            };
        }
        at
    }

    /// Chunk-size line, the CRLF after chunk data, or a trailer line.
    fn line(&mut self, input: &mut BytesMut, output: &mut BytesMut) -> bool {
        let next = match self.parse_line(input) {
            Some((len, next)) if next != State::Refused => {
                self.state = next;
                move_n(input, output, len);
                return true;
            }
            None if input.len() <= MAX_LINE => return false,
            // A bad or over-long chunk line: hyper gets an invalid chunk and answers 400.
            _ => State::Refused,
        };
        output.extend_from_slice(REFUSE);
        input.clear();
        self.state = next;
        true
    }
}

/// What a request head calls for.
enum Head {
    /// Clean: `len` bytes, then the body (or next head) that `next` expects.
    Complete { len: usize, next: State },
    /// Not all there yet (and not too large).
    Partial,
    /// Malformed or too many fields (or too large while unfinished): hyper judges it.
    Bad,
    /// Framing a proxy must not guess at (see [`Framer::parse_head`]), or too large.
    Refuse,
    /// The whole HTTP/2 preface.
    Preface,
    /// Something that starts like the HTTP/2 preface and is not: close, no answer.
    Close,
}

/// Judge bytes that start like the HTTP/2 preface.
fn preface(data: &[u8]) -> Head {
    let n = data.len().min(PREFACE.len());
    match (data[..n] == PREFACE[..n], n == PREFACE.len()) {
        (false, _) => Head::Close,
        (true, true) => Head::Preface,
        (true, false) => Head::Partial,
    }
}

fn move_n(input: &mut BytesMut, output: &mut BytesMut, n: usize) -> bool {
    output.extend_from_slice(&input[..n]);
    input.advance(n);
    n > 0
}

/// The client connection with a [`Framer`] on its read side; writes pass through.
/// How the next stretch of a connection is served (see [`Guarded::next_round`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    /// HTTP/1.1 requests, until the connection goes idle between two of them.
    H1,
    /// Everything else (HTTP/2 preface, an upgrade or CONNECT, a head hyper must
    /// judge): served by the full connection builder until the connection ends.
    Full,
}

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
    /// Runs while the connection idles between requests in a round; parks it when
    /// it fires. Kept (and reset) while a round lasts.
    idle_timer: Option<Pin<Box<tokio::time::Sleep>>>,
    idle_armed: bool,
    /// While an upgrade awaits its answer: the first bytes of the response written.
    status: Vec<u8>,
    /// The read side waiting for that answer.
    reader: Option<std::task::Waker>,
    /// Longest a write may wait for the client to read (`send_timeout`).
    send_timeout: std::time::Duration,
    /// Runs while a write waits; allocated the first time one does.
    send_timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Requests in flight on this connection (see `proxy::Conn::busy`).
    busy: Option<std::sync::Arc<std::sync::atomic::AtomicUsize>>,
}

impl<S> Guarded<S> {
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
            idle_timer: None,
            idle_armed: false,
            status: Vec::new(),
            reader: None,
            send_timeout,
            send_timer: None,
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
        self.idle_armed = false;
        if !park {
            self.idle_timer = None;
        }
    }

    /// Whether the last round ended because the connection went idle (not closed).
    pub fn parked(&self) -> bool {
        self.parked
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
        let deadline = tokio::time::Instant::now() + PARK_AFTER;
        let timer = self
            .idle_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.idle_armed {
            timer.as_mut().reset(deadline);
            self.idle_armed = true;
        }
        timer.as_mut().poll(cx)
    }

    /// What the buffered bytes call for, if enough has arrived to tell.
    fn round(&self) -> Option<Round> {
        if self.output.is_empty() && self.input.is_empty() {
            return None;
        }
        if self.framer.needs_full() {
            return Some(Round::Full);
        }
        // A head still incomplete: wait for the rest (under the caller's deadline).
        if self.framer.state == State::Head && self.framer.released > 0 {
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

    /// Read from the socket into `buf`; `false` when the connection parked instead.
    /// While it idles between requests in a parking round, a read that would wait
    /// parks it once [`PARK_AFTER`] has passed: hyper then sees the end of input and its
    /// connection ends cleanly, freeing its buffers, while the socket stays open.
    fn read_inner(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<bool>> {
        let idle = self.idle();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Pending if idle => {
                ready!(self.poll_idle(cx));
                self.parked = true;
                Poll::Ready(Ok(false))
            }
            Poll::Pending => Poll::Pending,
            Poll::Ready(r) => {
                self.idle_armed = false;
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

impl<S> Guarded<S> {
    /// While an upgrade awaits its answer, look at the status line being written.
    fn watch<'b>(&mut self, written: impl Iterator<Item = &'b [u8]>) {
        if self.framer.state != State::Switch {
            return;
        }
        for chunk in written {
            let take = chunk.len().min(12 - self.status.len());
            self.status.extend_from_slice(&chunk[..take]);
            if self.status.len() == 12 {
                self.framer.answered(&self.status);
                self.status = Vec::new();
                if let Some(w) = self.reader.take() {
                    w.wake();
                }
                return;
            }
        }
    }

    /// Note whether a write finished; when a blocked one finishes, poll again so an
    /// idle connection can park. A write that waits longer than `send_timeout` for the
    /// client to read fails, which ends the connection (and with it the upstream
    /// exchange).
    fn track<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        let blocked = r.is_pending();
        if self.write_blocked && !blocked && self.park {
            cx.waker().wake_by_ref();
        }
        if blocked {
            let deadline = tokio::time::Instant::now() + self.send_timeout;
            let timer = match &mut self.send_timer {
                Some(t) => t,
                None => self
                    .send_timer
                    .insert(Box::pin(tokio::time::sleep_until(deadline))),
            };
            if !self.write_blocked {
                timer.as_mut().reset(deadline);
            }
            if timer.as_mut().poll(cx).is_ready() {
                self.write_blocked = false;
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "client did not read within send_timeout",
                )));
            }
        }
        self.write_blocked = blocked;
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            this.watch(std::iter::once(&buf[..n]));
        }
        this.track(cx, r)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            let mut left = n;
            this.watch(bufs.iter().map(|b| {
                let k = b.len().min(left);
                left -= k;
                &b[..k]
            }));
        }
        this.track(cx, r)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.track(cx, r)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `data` in pieces of `step` bytes; return what hyper would see.
    fn run(data: &[u8], step: usize) -> (Vec<u8>, State) {
        let mut f = Framer::new(65536);
        let (mut input, mut output) = (BytesMut::new(), BytesMut::new());
        for piece in data.chunks(step) {
            input.extend_from_slice(piece);
            f.feed(&mut input, &mut output);
        }
        (output.to_vec(), f.state)
    }

    /// Like `Guarded::poll_read`: with nothing buffered, bytes are checked where they
    /// lie and only the rest takes the buffered path.
    fn run_in_place(data: &[u8], step: usize) -> (Vec<u8>, State) {
        let mut f = Framer::new(65536);
        let (mut input, mut output, mut seen) = (BytesMut::new(), BytesMut::new(), Vec::new());
        for piece in data.chunks(step) {
            if input.is_empty() && output.is_empty() {
                let ok = f.scan(piece);
                seen.extend_from_slice(&piece[..ok]);
                input.extend_from_slice(&piece[ok..]);
            } else {
                input.extend_from_slice(piece);
            }
            f.feed(&mut input, &mut output);
            seen.extend_from_slice(&output.split());
        }
        (seen, f.state)
    }

    #[test]
    fn in_place_checks_match_the_buffered_path() {
        let inputs: [&[u8]; 6] = [
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloPOST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"GET /ok HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0",
            b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nframes",
            b"GET\0 / HTTP/1.1\r\n\r\n",
        ];
        for data in inputs {
            for step in [1, 2, 3, 5, 7, 16, 64, data.len()] {
                assert_eq!(
                    run_in_place(data, step),
                    run(data, step),
                    "step {step}: {data:?}"
                );
            }
        }
    }

    #[test]
    fn clean_pipelined_requests_pass_unchanged_at_any_split() {
        let data: &[u8] = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloPOST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\n";
        for step in [1, 2, 7, 64, data.len()] {
            let (out, state) = run(data, step);
            assert_eq!(out, data, "step {step}");
            assert_eq!(state, State::Head, "step {step}");
        }
    }

    #[test]
    fn smuggling_heads_are_replaced() {
        for bad in [
            &b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                [..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd",
        ] {
            let (out, state) = run(bad, 3);
            assert!(out.ends_with(REFUSE), "{out:?}");
            assert!(
                !out.ends_with(b"\r\n\r\n\0\r\n\r\n"),
                "head never completed"
            );
            assert!(
                httparse::Request::new(&mut [httparse::EMPTY_HEADER; 16])
                    .parse(&out)
                    .is_err()
            );
            assert_eq!(state, State::Refused);
        }
        // A bad head after a good one: the good one is released, the bad one is not.
        let mut data = b"GET /ok HTTP/1.1\r\n\r\n".to_vec();
        data.extend_from_slice(
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
        );
        let (out, _) = run(&data, 5);
        assert!(out.starts_with(b"GET /ok HTTP/1.1\r\n\r\n"));
        assert!(out.ends_with(REFUSE));
    }

    #[test]
    fn h2_passes_upgrades_await_their_answer_and_garbage_is_refused() {
        let (_, s) = run(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0", 4);
        assert_eq!(s, State::Pass);
        let (out, s) = run(
            b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nframes",
            4,
        );
        assert_eq!(s, State::Switch);
        assert!(
            out.ends_with(b"upgrade\r\n\r\n"),
            "frames wait for the answer"
        );
        let (out, s) = run(b"GET\0 / HTTP/1.1\r\n\r\nGET /next HTTP/1.1\r\n\r\n", 4);
        assert_eq!(s, State::Refused);
        assert_eq!(
            out, b"GET\0",
            "hyper judges the bad head; nothing after it is passed"
        );
    }

    #[test]
    fn an_upgrade_passes_through_only_after_a_101() {
        let ws = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n";
        let mut f = Framer::new(65536);
        assert_eq!(f.scan(ws), ws.len());
        assert_eq!(f.state, State::Switch);
        f.answered(b"HTTP/1.1 400 Bad Request");
        assert_eq!(
            f.state,
            State::Head,
            "refused: the next bytes are a request head"
        );
        assert_eq!(f.scan(ws), ws.len());
        f.answered(b"HTTP/1.1 101 Switching Protocols");
        assert!(f.is_pass());
    }

    #[test]
    fn a_parking_round_holds_an_upgrade_head_for_a_full_round() {
        let ws = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n";
        let mut f = Framer::new(65536);
        f.hold = true;
        assert_eq!(f.scan(ws), 0);
        let (mut input, mut output) = (BytesMut::from(&ws[..]), BytesMut::new());
        f.feed(&mut input, &mut output);
        assert!(output.is_empty() && f.held_upgrade);
        f.hold = false;
        f.feed(&mut input, &mut output);
        assert_eq!((&output[..], f.state), (&ws[..], State::Switch));
    }

    #[test]
    fn ambiguous_framing_is_refused_not_passed() {
        let long_chunk = format!(
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;{}\r\nx\r\n0\r\n\r\n",
            "e".repeat(5000)
        );
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(65536));
        for bad in [
            &b"POST / HTTP/1.1\r\nContent-Length: 5x\r\n\r\nhello"[..],
            b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello",
            b"POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nxx",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxy\r\n",
            b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
            b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nContent-Length: 3\r\n\r\nabc",
            long_chunk.as_bytes(),
        ] {
            let what = String::from_utf8_lossy(&bad[..bad.len().min(80)]);
            for step in [1, 7, bad.len()] {
                let (out, state) = run(bad, step);
                assert_eq!(state, State::Refused, "step {step}: {what}");
                assert!(out.ends_with(REFUSE), "step {step}: {what}");
            }
        }
        // A head over the limit: refused whole, or (arriving in pieces) handed to hyper,
        // which answers 431 for a buffer past its limit; nothing after it passes.
        let (out, state) = run(big.as_bytes(), big.len());
        assert_eq!((state, out.ends_with(REFUSE)), (State::Refused, true));
        let (_, state) = run(big.as_bytes(), 4096);
        assert_eq!(state, State::Refused);
    }

    #[test]
    fn a_broken_h2_preface_closes_without_an_answer() {
        for bad in [
            &b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"[..],
            b"PRI / HTTP/1.1\r\n\r\n",
        ] {
            let (_, state) = run(bad, 3);
            assert_eq!(state, State::Closed, "{}", String::from_utf8_lossy(bad));
        }
        let (_, state) = run(b"PRI * HTTP/2.0\r\n", 3);
        assert_eq!(state, State::Head, "a partial preface waits");
    }
}
