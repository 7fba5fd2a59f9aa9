//! The two streaming bodies of a proxied exchange. Neither buffers more than one frame
//! (plus the bounded look-ahead of the `param` body look, replayed first).
//!
//! - [`RequestBody`]: client → upstream. Replays look-ahead frames, then the live
//!   stream; fails if the client pauses longer than `body_timeout`; counts bytes.
//! - [`ProxyBody`]: upstream (or the proxy itself) → client. Enforces the route's total
//!   deadline, counts bytes, and on completion (or drop) releases the in-flight guard
//!   and submits the access-log record.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

use super::error::BodyError;
use crate::access::{AccessLog, AccessRecord};
use crate::metrics::AtomicHistogram;
use crate::upstream::{InFlight, Lease};

/// Client request body on its way upstream.
#[derive(Debug)]
pub struct RequestBody {
    replay: VecDeque<Frame<Bytes>>,
    live: Option<Incoming>,
    idle: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    bytes: Arc<AtomicU64>,
    /// Set on the first poll: from then on bytes may have left.
    touched: bool,
    /// Where an untouched body goes back to when the request is dropped unsent
    /// (connect failure), so it can be sent to another server.
    give_back: Option<oneshot::Sender<Unsent>>,
}

/// A request body that was never polled, returned for another attempt.
#[derive(Debug)]
pub struct Unsent {
    pub replay: VecDeque<Frame<Bytes>>,
    pub live: Option<Incoming>,
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
        live: Option<Incoming>,
        idle: Duration,
        bytes: Arc<AtomicU64>,
    ) -> Self {
        RequestBody {
            replay,
            live,
            idle,
            timer: None,
            bytes,
            touched: false,
            give_back: None,
        }
    }

    /// Ask for the body back if it is dropped before anything was sent.
    pub fn with_give_back(mut self) -> (Self, oneshot::Receiver<Unsent>) {
        let (tx, rx) = oneshot::channel();
        self.give_back = Some(tx);
        (self, rx)
    }

    /// An empty body (for error paths and tests).
    pub fn empty() -> Self {
        Self::new(VecDeque::new(), None, Duration::MAX, Arc::default())
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
            return Poll::Ready(Some(Ok(f)));
        }
        let Some(live) = this.live.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(live).poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => {
                this.timer = None;
                if let Some(d) = f.data_ref() {
                    this.bytes.fetch_add(d.len() as u64, Ordering::Relaxed);
                }
                Poll::Ready(Some(Ok(f)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(BodyError::Client(e)))),
            Poll::Ready(None) => {
                this.live = None;
                Poll::Ready(None)
            }
            Poll::Pending => {
                let idle = this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                ready!(timer.as_mut().poll(cx));
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

/// Work left for when the response body ends: release the endpoint, log the request.
#[derive(Debug)]
pub struct Finish {
    pub record: Option<Box<AccessRecord>>,
    pub log: Option<Arc<AccessLog>>,
    pub bytes_in: Arc<AtomicU64>,
    pub started: Instant,
    pub in_flight: Option<InFlight>,
    /// The connection's count of requests in flight, decremented when this one ends.
    pub busy: Option<Busy>,
    /// Request counter and duration histogram of the route, if one matched.
    pub metrics: Option<(
        prometheus_client::metrics::counter::Counter,
        Option<AtomicHistogram>,
    )>,
}

/// One request in flight on its client connection (see `proxy::Conn::busy`).
#[derive(Debug)]
pub struct Busy(Arc<std::sync::atomic::AtomicUsize>);

impl Busy {
    pub fn new(count: &Arc<std::sync::atomic::AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Busy(Arc::clone(count))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Finish {
    fn complete(mut self, bytes_out: u64) {
        drop(self.in_flight.take());
        drop(self.busy.take());
        if let Some((count, hist)) = self.metrics.take() {
            count.inc();
            if let Some(h) = hist {
                h.observe(self.started.elapsed().as_secs_f64());
            }
        }
        if let (Some(mut rec), Some(log)) = (self.record.take(), self.log.take()) {
            rec.bytes_out = bytes_out;
            rec.bytes_in = self.bytes_in.load(Ordering::Relaxed);
            rec.total_time = self.started.elapsed();
            log.submit(*rec);
        }
    }
}

#[derive(Debug)]
enum Source {
    Fixed(Option<Bytes>),
    Upstream(Incoming),
}

/// Response body sent to the client.
#[derive(Debug)]
pub struct ProxyBody {
    source: Source,
    /// The upstream connection this body is read from, when this task drives it.
    lease: Option<Lease>,
    deadline: Option<Pin<Box<Sleep>>>,
    /// Longest wait for the next piece of the upstream body (the pool's `read_timeout`).
    idle: Duration,
    /// Runs while the upstream body is awaited; allocated the first time it is.
    idle_timer: Option<Pin<Box<Sleep>>>,
    /// Whether `idle_timer` runs for the current wait.
    waiting: bool,
    bytes: u64,
    finish: Option<Finish>,
}

impl ProxyBody {
    /// A body the proxy writes itself (error messages).
    pub fn fixed(b: impl Into<Bytes>) -> Self {
        ProxyBody {
            source: Source::Fixed(Some(b.into())),
            lease: None,
            deadline: None,
            idle: Duration::MAX,
            idle_timer: None,
            waiting: false,
            bytes: 0,
            finish: None,
        }
    }

    /// The upstream's body; `lease` is the connection it arrives on, if this task drives
    /// it. The body fails if the upstream sends nothing for `idle`.
    pub fn upstream(
        b: Incoming,
        lease: Option<Lease>,
        deadline: Option<Instant>,
        idle: Duration,
    ) -> Self {
        ProxyBody {
            source: Source::Upstream(b),
            lease,
            deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
            idle,
            idle_timer: None,
            waiting: false,
            bytes: 0,
            finish: None,
        }
    }

    pub fn set_finish(&mut self, f: Finish) {
        self.finish = Some(f);
    }

    /// The upstream has sent nothing for `idle` since this wait began.
    fn stalled(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(at) = Instant::now().checked_add(self.idle) else {
            return false;
        };
        let timer = match &mut self.idle_timer {
            Some(t) => t,
            None => self
                .idle_timer
                .insert(Box::pin(tokio::time::sleep_until(at))),
        };
        if !self.waiting {
            timer.as_mut().reset(at);
            self.waiting = true;
        }
        timer.as_mut().poll(cx).is_ready()
    }

    fn done(&mut self) {
        if let Some(f) = self.finish.take() {
            f.complete(self.bytes);
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        // A body never polled because it was empty (HEAD, 204, 304) still ended cleanly.
        if let (Some(lease), Source::Upstream(inc)) = (self.lease.take(), &self.source)
            && inc.is_end_stream()
        {
            lease.release();
        }
        self.done();
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if let Some(d) = this.deadline.as_mut()
            && d.as_mut().poll(cx).is_ready()
        {
            tracing::warn!("route timeout expired while streaming the response; aborting");
            this.done();
            return Poll::Ready(Some(Err(BodyError::Deadline)));
        }
        let res = match &mut this.source {
            Source::Fixed(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Source::Upstream(inc) => {
                if let Some(l) = this.lease.as_mut() {
                    l.drive(cx);
                }
                Pin::new(inc).poll_frame(cx).map_err(BodyError::Upstream)
            }
        };
        if res.is_ready() {
            this.waiting = false;
        } else if matches!(this.source, Source::Upstream(_)) && this.stalled(cx) {
            tracing::warn!(idle = ?this.idle, "upstream sent nothing within read_timeout while streaming the response; aborting");
            this.lease = None;
            this.done();
            return Poll::Ready(Some(Err(BodyError::UpstreamIdle)));
        }
        match &res {
            Poll::Ready(Some(Ok(f))) => this.bytes += f.data_ref().map_or(0, |d| d.len() as u64),
            Poll::Ready(None) => {
                if let Some(mut l) = this.lease.take() {
                    l.drive(cx);
                    l.release();
                }
                this.done();
            }
            Poll::Ready(Some(Err(_))) => {
                this.lease = None;
                this.done();
            }
            Poll::Pending => {}
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Fixed(b) => b.is_none(),
            Source::Upstream(inc) => inc.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Fixed(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Source::Upstream(inc) => inc.size_hint(),
        }
    }
}
