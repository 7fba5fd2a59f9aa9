//! One HTTP/3 request stream ([`Request::serve`]): its head (within `header_timeout`;
//! h3 answers an oversize head with 431 itself, logged here), its body as a
//! [`ClientBody`], the pipeline, and the response written back frame by frame, each
//! write within `send_timeout`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode, header};
use http_body_util::BodyExt;

use crate::client_body::{ClientBody, H3Body};
use crate::proxy::exchange::headers;
use crate::proxy::forward;
use crate::proxy::request::{Conn, EarlyData, Shared};
use crate::proxy::respond::body::ProxyBody;

pub(super) type Resolver = h3::server::RequestResolver<h3_quinn::Connection, Bytes>;
type Send = h3::server::RequestStream<h3_quinn::SendStream<Bytes>, Bytes>;
type Failure = Box<dyn std::error::Error + std::marker::Send + Sync>;

/// One request stream of a connection.
pub(super) struct Request {
    pub(super) conn: Arc<Conn>,
    pub(super) shared: Arc<Shared>,
    /// Set while the connection's handshake is not complete (0-RTT): the request may be
    /// early data, which an attacker can replay.
    pub(super) early: Option<Arc<AtomicBool>>,
    /// The connection's count of streams the client reset before their answer.
    pub(super) resets: Arc<AtomicUsize>,
}

impl Request {
    pub(super) async fn serve(self, resolver: Resolver) {
        let server = self.shared.state.load().server.clone();
        let resolved =
            tokio::time::timeout(server.header_timeout, resolver.resolve_request()).await;
        let (req, stream) = match resolved {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return self.refused(&e),
            Err(_) => {
                crate::proxy::serve::refused::log(
                    self.shared.access.as_deref(),
                    self.conn.peer.ip(),
                    408,
                    b"",
                );
                return;
            }
        };
        let (mut send, recv) = stream.split();
        let length = content_length(req.headers());
        let mut body = H3Body::new(recv, length);
        // Whether a request without Content-Length has a body is known only once
        // its first frame (or its end) arrives; a GET's end comes with its head.
        if let Ok(Err(e)) = tokio::time::timeout(server.body_timeout, body.settle()).await {
            tracing::debug!(client = %self.conn.peer, error = %e, "HTTP/3 request body failed");
        }
        let head_only = req.method() == Method::HEAD;
        let mut req = req.map(|()| ClientBody::H3(Box::new(body)));
        // Early data counts as such until the handshake completes (RFC 8470).
        if self
            .early
            .as_ref()
            .is_some_and(|c| !c.load(Ordering::Acquire))
        {
            req.extensions_mut().insert(EarlyData);
        }
        let resp = forward::handle(req, &self.conn, &self.shared).await;
        if let Err(e) = respond(&mut send, resp, head_only, server.send_timeout).await {
            if matches!(
                e.downcast_ref::<h3::error::StreamError>(),
                Some(h3::error::StreamError::RemoteTerminate { .. })
            ) {
                self.resets.fetch_add(1, Ordering::Relaxed);
            }
            tracing::debug!(client = %self.conn.peer, error = %e, "HTTP/3 response not delivered");
        }
    }

    /// A head h3 refused: too big (h3 sent the 431), malformed, or reset.
    fn refused(&self, e: &h3::error::StreamError) {
        use h3::error::StreamError as E;
        let status = match e {
            E::HeaderTooBig { .. } => 431,
            E::StreamError { .. } => 400,
            E::RemoteTerminate { .. } => {
                self.resets.fetch_add(1, Ordering::Relaxed);
                return;
            }
            _ => return,
        };
        crate::proxy::serve::refused::log(
            self.shared.access.as_deref(),
            self.conn.peer.ip(),
            status,
            b"",
        );
    }
}

/// `Content-Length`, when present and valid (h3 checks the body against it).
fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// Write `resp` on the stream: the head (without HTTP/1.1's connection headers, which
/// HTTP/3 forbids), then the body's frames, then the end.
async fn respond(
    send: &mut Send,
    resp: Response<ProxyBody>,
    head_only: bool,
    wait: std::time::Duration,
) -> Result<(), Failure> {
    let (mut parts, mut body) = resp.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    let bodiless = head_only
        || parts.status == StatusCode::NO_CONTENT
        || parts.status == StatusCode::NOT_MODIFIED;
    timed(wait, send.send_response(Response::from_parts(parts, ()))).await?;
    if !bodiless {
        while let Some(frame) = body.frame().await {
            let frame = frame?;
            match frame.into_data() {
                Ok(d) if d.is_empty() => {}
                Ok(d) => timed(wait, send.send_data(d)).await?,
                Err(f) => {
                    if let Ok(t) = f.into_trailers() {
                        timed(wait, send.send_trailers(t)).await?;
                    }
                }
            }
        }
    }
    drop(body);
    timed(wait, send.finish()).await
}

async fn timed<T>(
    wait: std::time::Duration,
    f: impl Future<Output = Result<T, h3::error::StreamError>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(wait, f).await {
        Ok(r) => r.map_err(Into::into),
        Err(_) => Err("HTTP/3 client did not take the response within send_timeout".into()),
    }
}
