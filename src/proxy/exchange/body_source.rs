//! The request body across attempts ([`Source`]): none, kept whole to be sent again
//! (an idempotent request within `retry.body_limit`), or streamed live, re-sendable only
//! if it comes back unsent. The retry rule reads its state (`retry::Body`).

use std::collections::VecDeque;
use std::time::Duration;

use crate::client_body::ClientBody;
use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::sync::oneshot;

use super::retry;
use crate::config::RetryPolicy;
use crate::proxy::error::ProxyError;
use crate::proxy::request::Ctx;
use crate::upstream::{RequestBody, Unsent};

/// The request body across attempts.
pub(crate) enum Source {
    Empty,
    /// Kept whole (idempotent, within `retry.body_limit`): every attempt replays it.
    Kept(Vec<Frame<Bytes>>),
    /// Streaming; re-sendable only if it comes back unsent.
    Live(Unsent),
    /// Sent (or lost) by an earlier attempt.
    Gone,
}

impl Source {
    /// How the body travels: nothing, kept whole (an `idempotent` request small enough
    /// to re-send), or streamed live.
    pub(crate) async fn open(
        body: ClientBody,
        replay: VecDeque<Frame<Bytes>>,
        idempotent: bool,
        retry: &RetryPolicy,
        timeout: Duration,
    ) -> Result<Source, ProxyError> {
        if replay.is_empty() && body.is_end_stream() {
            Ok(Source::Empty)
        } else if idempotent && retry.attempts > 1 && fits(&body, &replay, retry.body_limit) {
            Box::pin(keep(replay, body, timeout))
                .await
                .map(Source::Kept)
                .map_err(|_| ProxyError::ClientBody)
        } else {
            Ok(Source::Live(Unsent {
                replay,
                live: Some(body),
            }))
        }
    }

    /// Whether the whole body is at hand for a re-send (none, or kept).
    pub(crate) fn is_whole(&self) -> bool {
        matches!(self, Source::Empty | Source::Kept(_))
    }

    /// The body as the retry rule sees it.
    pub(crate) fn state(&self) -> retry::Body {
        match self {
            Source::Empty => retry::Body::Empty,
            Source::Kept(_) => retry::Body::Kept,
            Source::Live(_) => retry::Body::Unsent,
            Source::Gone => retry::Body::Streamed,
        }
    }

    /// The body for one attempt: a copy of a kept one, or the live stream (then `Gone`
    /// until it comes back unsent through the returned receiver), cut at `limit`.
    pub(crate) fn take_body(
        &mut self,
        cx: &Ctx<'_>,
        limit: u64,
    ) -> (RequestBody, Option<oneshot::Receiver<Unsent>>) {
        let idle = cx.snap.server.body_timeout;
        match std::mem::replace(self, Source::Gone) {
            Source::Empty => {
                *self = Source::Empty;
                let none = RequestBody::new(VecDeque::new(), None, idle, cx.bytes_in.clone());
                (none, None)
            }
            Source::Kept(frames) => {
                let copy = frames.iter().map(clone_frame).collect();
                *self = Source::Kept(frames);
                (
                    RequestBody::new(copy, None, idle, cx.bytes_in.clone()),
                    None,
                )
            }
            Source::Live(u) => {
                let (b, rx) = RequestBody::new(u.replay, u.live, idle, cx.bytes_in.clone())
                    .limited(limit)
                    .with_give_back();
                (b, Some(rx))
            }
            Source::Gone => {
                let none = RequestBody::new(VecDeque::new(), None, idle, cx.bytes_in.clone());
                (none, None)
            }
        }
    }
}

fn fits(body: &ClientBody, replay: &VecDeque<Frame<Bytes>>, limit: usize) -> bool {
    let buffered: u64 = replay
        .iter()
        .filter_map(|f| f.data_ref())
        .map(|d| d.len() as u64)
        .sum();
    limit > 0
        && body
            .size_hint()
            .upper()
            .is_some_and(|u| u + buffered <= limit as u64)
}

async fn keep(
    replay: VecDeque<Frame<Bytes>>,
    mut body: ClientBody,
    idle: Duration,
) -> Result<Vec<Frame<Bytes>>, ()> {
    let mut out: Vec<Frame<Bytes>> = replay.into_iter().collect();
    loop {
        match tokio::time::timeout(idle, body.frame()).await {
            Ok(Some(Ok(f))) => out.push(f),
            Ok(None) => return Ok(out),
            _ => return Err(()),
        }
    }
}

fn clone_frame(f: &Frame<Bytes>) -> Frame<Bytes> {
    match (f.data_ref(), f.trailers_ref()) {
        (Some(d), _) => Frame::data(d.clone()),
        (None, Some(t)) => Frame::trailers(t.clone()),
        (None, None) => Frame::data(Bytes::new()),
    }
}
