//! The framing guard's write side: writes pass through, bounded by `send_timeout`, and
//! the status line of an upgrade's answer is watched.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;

use super::Guarded;
use super::State;

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
        // A wait begins when a write first blocks; it goes on while writes stay blocked.
        if !(blocked && self.write_blocked) {
            self.send_timer.reset();
        }
        if blocked && self.send_timer.expired(cx, self.send_timeout.get()) {
            self.write_blocked = false;
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client did not read within send_timeout",
            )));
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
