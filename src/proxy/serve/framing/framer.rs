//! The framing guard's pure state machine: which bytes of a client's HTTP/1 stream
//! may go to hyper now, which wait, and which heads are refused (see `framing`).

use bytes::{Buf, BytesMut};

/// What hyper gets instead of the bytes that would complete a refused head (or chunk line):
/// a NUL is invalid anywhere in a head, so hyper answers 400 and closes.
pub(super) const REFUSE: &[u8] = b"\0\r\n\r\n";
/// A request line's bytes besides its target: method, two spaces, version and CRLF.
const LINE_SLACK: usize = 32;
/// Longest chunk-size or trailer line we follow; a longer one is refused.
const MAX_LINE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
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
    pub(super) state: State,
    max_head: usize,
    /// Bytes of the head in progress (at the start of `input`) already given to hyper.
    pub(super) released: usize,
    /// Hold whole heads, and upgrade heads entirely (in a parking HTTP/1.1 round, whose
    /// hyper connection cannot upgrade: the round ends and a full round takes the head).
    pub(super) hold: bool,
    /// `hold` kept a whole upgrade head back: the round must end for a full one.
    pub(super) held_upgrade: bool,
    /// Longest request target (`max_uri_bytes`): a longer request line gets 414 even
    /// when the head is too large as well.
    max_uri: usize,
}

impl Framer {
    pub fn new(max_head: usize) -> Self {
        Framer {
            state: State::Head,
            max_head,
            released: 0,
            hold: false,
            held_upgrade: false,
            max_uri: usize::MAX,
        }
    }

    /// Answer a request line longer than `max_uri` bytes of target with 414.
    pub fn with_max_uri(mut self, max_uri: usize) -> Self {
        self.set_max_uri(max_uri);
        self
    }

    pub(super) fn set_max_uri(&mut self, max_uri: usize) {
        self.max_uri = max_uri;
    }

    /// Whether all further bytes go through unexamined.
    pub fn is_pass(&self) -> bool {
        self.state == State::Pass
    }

    /// Whether a full round must serve what comes next (h2, or an upgrade awaiting its answer).
    pub(super) fn needs_full(&self) -> bool {
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
    pub(super) fn at_boundary(&self) -> bool {
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
        let line = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
        if line > self.max_uri.saturating_add(LINE_SLACK) {
            return Head::UriTooLong;
        }
        // Uninitialised: zeroing 128 fields (4 KiB) cost more than parsing a head.
        let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; 128];
        let mut req = httparse::Request::new(&mut []);
        let len = match req.parse_with_uninit_headers(data, &mut headers) {
            Ok(httparse::Status::Complete(len)) if len <= self.max_head => len,
            // The head's size is the bytes received, not hyper's buffer's.
            Ok(httparse::Status::Complete(_)) => return Head::TooLarge,
            Ok(httparse::Status::Partial) if data.len() <= self.max_head => return Head::Partial,
            Ok(httparse::Status::Partial) => return Head::TooLarge,
            Err(_) => return Head::Bad,
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
            // Malformed or too many fields: hyper answers (400) and closes; nothing
            // after it is passed on.
            Head::Bad => self.hand_over(input, output, State::Refused),
            Head::UriTooLong if self.released == 0 => self.uri_too_long(input, output),
            Head::TooLarge | Head::UriTooLong => self.too_large(input, output),
            Head::Refuse => {
                // The request line goes first (when hyper has none of the head yet), so
                // the access log shows what was refused; the NUL after it still fails.
                if self.released == 0
                    && let Some(end) = input.iter().take(1024).position(|&b| b == b'\n')
                {
                    output.extend_from_slice(&input[..=end]);
                }
                output.extend_from_slice(REFUSE);
                input.clear();
                self.state = State::Refused;
                true
            }
            Head::Preface => self.hand_over(input, output, State::Pass),
            Head::Close => {
                input.clear();
                self.state = State::Closed;
                true
            }
        }
    }

    /// Give hyper the rest of the head in progress as it is, and go on in `next`.
    /// A head over `max_head`: hyper gets exactly `max_head` bytes of it (never its
    /// end), so its buffer fills and it answers 431 and closes.
    fn too_large(&mut self, input: &mut BytesMut, output: &mut BytesMut) -> bool {
        let end = input.len().min(self.max_head);
        if end > self.released {
            output.extend_from_slice(&input[self.released..end]);
        }
        input.clear();
        self.released = 0;
        self.state = State::Refused;
        true
    }

    /// A request line over `max_uri`: hyper gets the request cut to a target one byte
    /// too long, which the request path answers 414 (logged as any request), and the
    /// connection closes after it.
    fn uri_too_long(&mut self, input: &mut BytesMut, output: &mut BytesMut) -> bool {
        let line_end = input.iter().position(|&b| b == b'\n');
        let line = &input[..line_end.unwrap_or(input.len())];
        let mut parts = line.split(|&b| b == b' ');
        let method = parts
            .next()
            .filter(|m| !m.is_empty() && m.len() <= 16 && m.iter().all(u8::is_ascii_alphabetic));
        let target = parts.next().unwrap_or(b"");
        let version = match parts.next() {
            Some(v) if v.starts_with(b"HTTP/1.0") => &b"HTTP/1.0"[..],
            _ => b"HTTP/1.1",
        };
        let Some(method) = method else {
            return self.too_large(input, output);
        };
        let cut = &target[..target.len().min(self.max_uri.saturating_add(1))];
        if cut.iter().any(|&b| b <= b' ' || b == 0x7f) {
            return self.too_large(input, output);
        }
        for part in [
            method,
            b" ",
            cut,
            b" ",
            version,
            b"\r\nConnection: close\r\n\r\n",
        ] {
            output.extend_from_slice(part);
        }
        input.clear();
        self.released = 0;
        self.state = State::Refused;
        true
    }

    fn hand_over(&mut self, input: &mut BytesMut, output: &mut BytesMut, next: State) -> bool {
        output.extend_from_slice(&input[self.released..]);
        input.clear();
        self.released = 0;
        self.state = next;
        true
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
    /// Malformed or too many fields: hyper judges it.
    Bad,
    /// Framing a proxy must not guess at (see [`Framer::parse_head`]).
    Refuse,
    /// Over `max_head` bytes: 431.
    TooLarge,
    /// A request line with a target over `max_uri` bytes: 414.
    UriTooLong,
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

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
