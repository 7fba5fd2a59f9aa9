//! The body of a client's request as the request path sees it ([`ClientBody`]):
//! hyper's, for HTTP/1.x and HTTP/2, or an HTTP/3 request stream's. Every stage (the
//! `param` body look, the upstream request body, the retry give-back) takes this one
//! type, so an HTTP/3 request goes through the same pipeline as the others.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// What a client body fails with (hyper's error, or an HTTP/3 stream's).
pub type ClientBodyError = Box<dyn std::error::Error + Send + Sync>;

/// The receiving half of an HTTP/3 request stream.
pub type H3Recv = h3::server::RequestStream<h3_quinn::RecvStream, Bytes>;

/// A client's request body.
#[derive(Debug)]
pub enum ClientBody {
    Hyper(Incoming),
    H3(Box<H3Body>),
}

impl From<Incoming> for ClientBody {
    fn from(b: Incoming) -> Self {
        ClientBody::Hyper(b)
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        match self.get_mut() {
            ClientBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            ClientBody::H3(b) => b.poll(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Hyper(b) => b.is_end_stream(),
            ClientBody::H3(b) => b.state == H3State::Done && b.first.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Hyper(b) => b.size_hint(),
            ClientBody::H3(b) => b.size_hint(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum H3State {
    Data,
    Trailers,
    Done,
}

/// An HTTP/3 request body: DATA frames, then trailers. Its length is known only from
/// `Content-Length` (checked against the frames by the h3 crate); its end is known
/// once the stream says so, which [`H3Body::settle`] waits for on a request that
/// declares no body, so a GET is forwarded without one, as from an HTTP/2 client.
pub struct H3Body {
    stream: H3Recv,
    state: H3State,
    /// Data bytes still to come, from `Content-Length`.
    left: Option<u64>,
    /// A frame read while settling, given out first.
    first: Option<Frame<Bytes>>,
}

impl std::fmt::Debug for H3Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H3Body")
            .field("state", &self.state)
            .field("left", &self.left)
            .finish()
    }
}

impl H3Body {
    pub fn new(stream: H3Recv, content_length: Option<u64>) -> Self {
        H3Body {
            stream,
            state: H3State::Data,
            left: content_length,
            first: None,
        }
    }

    /// Read the body's first frame, or its end, now: for a request without
    /// `Content-Length`, whether it has a body at all is known only then. The frame
    /// read is kept and given out first.
    pub async fn settle(&mut self) -> Result<(), ClientBodyError> {
        if self.left.is_some_and(|n| n > 0) {
            return Ok(());
        }
        let first = std::future::poll_fn(|cx| self.poll(cx)).await;
        match first {
            None => Ok(()),
            Some(Ok(f)) => {
                self.first = Some(f);
                Ok(())
            }
            Some(Err(e)) => Err(e),
        }
    }

    fn size_hint(&self) -> SizeHint {
        let first = self
            .first
            .as_ref()
            .and_then(|f| f.data_ref())
            .map_or(0, |d| d.len() as u64);
        match (self.state, self.left) {
            (H3State::Done, _) => SizeHint::with_exact(first),
            (_, Some(n)) => SizeHint::with_exact(n + first),
            _ => {
                let mut h = SizeHint::new();
                h.set_lower(first);
                h
            }
        }
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        if let Some(f) = self.first.take() {
            return Poll::Ready(Some(Ok(f)));
        }
        loop {
            match self.state {
                H3State::Done => return Poll::Ready(None),
                H3State::Data => match std::task::ready!(self.stream.poll_recv_data(cx)) {
                    Ok(Some(mut buf)) => {
                        let data = buf.copy_to_bytes(buf.remaining());
                        if let Some(left) = self.left.as_mut() {
                            *left = left.saturating_sub(data.len() as u64);
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Ok(None) => self.state = H3State::Trailers,
                    Err(e) => {
                        self.state = H3State::Done;
                        return Poll::Ready(Some(Err(e.into())));
                    }
                },
                H3State::Trailers => {
                    let got = std::task::ready!(self.stream.poll_recv_trailers(cx));
                    self.state = H3State::Done;
                    return Poll::Ready(match got {
                        Ok(Some(t)) => Some(Ok(Frame::trailers(t))),
                        Ok(None) => None,
                        Err(e) => Some(Err(e.into())),
                    });
                }
            }
        }
    }
}
