//! The request body on its way upstream ([`RequestBody`]): replays the look-ahead
//! frames of the `param` body look, then the live client stream; fails if the client
//! pauses longer than `body_timeout`; counts bytes; hands itself back untouched when
//! an attempt never sent it. Shared by the request path (`proxy`), which builds it,
//! and the upstream connections, which send it. Also [`BodyError`], the errors of
//! both streaming bodies.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::client_body::ClientBody;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::oneshot;

use crate::idle::IdleTimer;

/// Errors raised inside the streaming bodies.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("client body read failed")]
    Client(#[source] crate::client_body::ClientBodyError),
    #[error("client sent no body data for too long")]
    ClientTimeout,
    /// The body passed `max_body_size` (the limit, in bytes) while streaming.
    #[error("request body larger than {0} bytes")]
    TooLarge(u64),
    #[error("upstream body read failed")]
    Upstream(#[source] hyper::Error),
    #[error("route timeout expired while streaming the response")]
    Deadline,
    #[error("upstream sent no body data within read_timeout")]
    UpstreamIdle,
    /// A file or filtered body failed (a read error, a compressor's error).
    #[error("response body failed")]
    Response(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Client request body on its way upstream.
#[derive(Debug)]
pub struct RequestBody {
    replay: VecDeque<Frame<Bytes>>,
    live: Option<ClientBody>,
    idle: Duration,
    timer: IdleTimer,
    bytes: Arc<AtomicU64>,
    /// Set on the first poll: from then on bytes may have left.
    touched: bool,
    /// `max_body_size` (`u64::MAX`: none) and the data bytes passed so far.
    limit: u64,
    passed: u64,
    /// Where an untouched body goes back to when the request is dropped unsent
    /// (connect failure), so it can be sent to another server.
    give_back: Option<oneshot::Sender<Unsent>>,
}

/// A request body that was never polled, returned for another attempt.
#[derive(Debug)]
pub struct Unsent {
    pub replay: VecDeque<Frame<Bytes>>,
    pub live: Option<ClientBody>,
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        if let (false, Some(tx)) = (self.touched, self.give_back.take()) {
            let _ = tx.send(Unsent {
                replay: std::mem::take(&mut self.replay),
                live: self.live.take(),
            });
        }
    }
}

impl RequestBody {
    /// `replay` frames (already counted in `bytes`) go first, then `live`.
    pub fn new(
        replay: VecDeque<Frame<Bytes>>,
        live: Option<ClientBody>,
        idle: Duration,
        bytes: Arc<AtomicU64>,
    ) -> Self {
        RequestBody {
            replay,
            live,
            idle,
            timer: IdleTimer::default(),
            bytes,
            touched: false,
            limit: u64::MAX,
            passed: 0,
            give_back: None,
        }
    }

    /// Fail (and so abort the upstream request, never completing it short) once more
    /// than `limit` data bytes have passed.
    pub fn limited(mut self, limit: u64) -> Self {
        self.limit = limit;
        self
    }

    fn count(&mut self, f: &Frame<Bytes>) -> Result<(), BodyError> {
        self.passed += f.data_ref().map_or(0, |d| d.len() as u64);
        match self.passed > self.limit {
            true => Err(BodyError::TooLarge(self.limit)),
            false => Ok(()),
        }
    }

    /// Ask for the body back if it is dropped before anything was sent.
    pub fn with_give_back(mut self) -> (Self, oneshot::Receiver<Unsent>) {
        let (tx, rx) = oneshot::channel();
        self.give_back = Some(tx);
        (self, rx)
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        this.touched = true;
        if let Some(f) = this.replay.pop_front() {
            return Poll::Ready(Some(this.count(&f).map(|()| f)));
        }
        let Some(live) = this.live.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(live).poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => {
                this.timer.reset();
                if let Some(d) = f.data_ref() {
                    this.bytes.fetch_add(d.len() as u64, Ordering::Relaxed);
                }
                Poll::Ready(Some(this.count(&f).map(|()| f)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(BodyError::Client(e)))),
            Poll::Ready(None) => {
                this.live = None;
                Poll::Ready(None)
            }
            Poll::Pending => {
                if !this.timer.expired(cx, this.idle) {
                    return Poll::Pending;
                }
                Poll::Ready(Some(Err(BodyError::ClientTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.replay.is_empty() && self.live.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let buffered: u64 = self
            .replay
            .iter()
            .filter_map(|f| f.data_ref())
            .map(|d| d.len() as u64)
            .sum();
        let live = self
            .live
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint());
        let mut hint = SizeHint::new();
        // Upper first: `set_lower` asserts lower <= upper.
        if let Some(u) = live.upper() {
            hint.set_upper(u + buffered);
        }
        hint.set_lower(live.lower() + buffered);
        hint
    }
}
