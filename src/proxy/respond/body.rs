//! The response body of a proxied exchange, [`ProxyBody`]: upstream (or the proxy
//! itself) → client, never more than one frame buffered. It enforces the route's total
//! deadline and the upstream's idle time between reads, counts bytes, and on completion
//! (or drop) releases the in-flight guard and submits the access-log record. The
//! request body (client → upstream) is `upstream::RequestBody`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::access::{AccessLog, AccessRecord};
use crate::idle::IdleTimer;
use crate::metrics::AtomicHistogram;
use crate::upstream::{BodyError, InFlight, Lease};

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
    /// Released with the response (see `host_limit`).
    pub host_slot: Option<crate::host_limit::HostSlot>,
}

/// One request in flight on its client connection (see `proxy::request::Conn::busy`).
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

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A body made by a response filter or a file (compressed, or read from disk).
pub type Boxed = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

#[derive(Debug)]
enum Source {
    Fixed(Option<Bytes>),
    Upstream(Incoming),
    Boxed(Boxed),
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
    /// Runs while the upstream body is awaited.
    idle_timer: IdleTimer,
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
            idle_timer: IdleTimer::default(),
            bytes: 0,
            finish: None,
        }
    }

    /// A file's body, or another body wrapped by a filter (compression).
    pub fn boxed<B>(b: B) -> Self
    where
        B: Body<Data = Bytes, Error = BoxError> + Send + 'static,
    {
        let mut me = ProxyBody::fixed(Bytes::new());
        me.source = Source::Boxed(Boxed::new(b));
        me
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
            idle_timer: IdleTimer::default(),
            bytes: 0,
            finish: None,
        }
    }

    pub fn set_finish(&mut self, f: Finish) {
        self.finish = Some(f);
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
            Source::Boxed(b) => Pin::new(b).poll_frame(cx).map_err(BodyError::Response),
        };
        if res.is_ready() {
            this.idle_timer.reset();
        } else if matches!(this.source, Source::Upstream(_))
            && this.idle_timer.expired(cx, this.idle)
        {
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
            Source::Boxed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Fixed(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Source::Upstream(inc) => inc.size_hint(),
            Source::Boxed(b) => b.size_hint(),
        }
    }
}
