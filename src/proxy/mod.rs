//! The downstream side: accept loops, one per listener, serving HTTP/1.1 and h2c
//! (prior knowledge) through hyper-util's auto builder, with graceful drain. Each
//! request goes to [`forward::handle`].

mod body;
mod error;
mod forward;
mod framing;
mod headers;
mod look;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::Instrument;

pub use body::{ProxyBody, RequestBody};
pub use error::{BodyError, ProxyError};

use crate::access::AccessLog;
use crate::config::ServerSettings;
use crate::state::SharedState;

/// Process-wide handles every request needs.
#[derive(Debug)]
pub struct Shared {
    pub state: Arc<SharedState>,
    pub access: Option<Arc<AccessLog>>,
    /// Passive-health reports to the health manager.
    pub events: crate::health::Events,
}

/// One client connection.
#[derive(Debug)]
pub struct Conn {
    pub peer: SocketAddr,
    /// Index of the listener in the config, for the `listener` route condition.
    pub listener: usize,
    pub scheme: &'static str,
}

/// The connection builder: HTTP/1.1 with header and keep-alive timeouts and a bounded
/// header section, or HTTP/2 with prior knowledge.
pub fn builder(s: &ServerSettings) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(s.header_timeout)
        .max_buf_size(s.max_header_bytes)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(s.max_header_bytes).unwrap_or(u32::MAX));
    b
}

/// Accept on `listener` until `stop` flips, then drain open connections for at most
/// `drain`.
pub async fn serve(
    listener: TcpListener,
    index: usize,
    shared: Arc<Shared>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
    max_head: usize,
) {
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed; backing off");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let conn = Arc::new(Conn {
            peer,
            listener: index,
            scheme: "http",
        });
        let shared = shared.clone();
        let svc = service_fn(move |req| {
            let conn = conn.clone();
            let shared = shared.clone();
            let span =
                tracing::debug_span!("request", method = %req.method(), path = %req.uri().path());
            async move { Ok::<_, Infallible>(forward::handle(req, &conn, &shared).await) }
                .instrument(span)
        });
        let fut = graceful.watch(
            builder
                .serve_connection(TokioIo::new(framing::Guarded::new(stream, max_head)), svc)
                .into_owned(),
        );
        tokio::spawn(
            async move {
                if let Err(e) = fut.await {
                    tracing::debug!(error = %e, "connection ended with error");
                }
            }
            .instrument(tracing::debug_span!("conn", %peer)),
        );
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?drain,
            "drain deadline passed; closing remaining connections"
        );
    }
}
