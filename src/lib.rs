//! switchyard: a reverse proxy and load balancer that routes each request by host,
//! path, query or body parameter, header or method to a named upstream pool.
//!
//! Data flows one way: [`config::load`] → one immutable [`state::Snapshot`] in an
//! `ArcSwap` → the request path in [`proxy`]. `main.rs` is a thin shell around [`run`].

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod access;
pub mod config;
pub mod proxy;
pub mod routing;
pub mod state;
pub mod upstream;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::access::AccessLog;
use crate::config::Config;
use crate::proxy::Shared;
use crate::state::{SharedState, Snapshot};

/// Bind every listener of `config`, in order. Fails on the first address that cannot be bound.
pub async fn bind(config: &Config) -> std::io::Result<Vec<TcpListener>> {
    let mut out = Vec::with_capacity(config.listeners.len());
    for l in &config.listeners {
        let sock = TcpListener::bind(l.addr).await.map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot listen on {}: {e}", l.addr))
        })?;
        out.push(sock);
    }
    Ok(out)
}

/// Serve `listeners` (one per `config.listeners`, same order) until `shutdown`
/// resolves, then stop accepting and let in-flight requests finish for at most the
/// configured drain time.
pub async fn run(
    listeners: Vec<TcpListener>,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let (access, writer) = match AccessLog::spawn(&config.log).await? {
        Some((log, task)) => (Some(Arc::new(log)), Some(task)),
        None => (None, None),
    };
    let shared = Arc::new(Shared {
        state: Arc::new(SharedState::new(Snapshot::build(&config, 1))),
        access,
    });
    let builder = Arc::new(proxy::builder(&config.server));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let name = config
            .listeners
            .get(i)
            .map_or_else(|| "?".into(), |c| c.name.clone());
        tracing::info!(listener = %name, addr = ?l.local_addr().ok(), "listening");
        tasks.push(tokio::spawn(proxy::serve(
            l,
            i,
            shared.clone(),
            builder.clone(),
            stop_rx.clone(),
            config.server.drain_timeout,
            config.server.max_header_bytes,
        )));
    }
    shutdown.await;
    tracing::info!("shutting down: no new connections, draining in-flight requests");
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    drop(shared);
    if let Some(w) = writer {
        let _ = tokio::time::timeout(Duration::from_secs(2), w).await;
    }
    tracing::info!("stopped");
    Ok(())
}
