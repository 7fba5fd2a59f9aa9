//! switchyard: a reverse proxy and load balancer that routes each request by host,
//! path, query or body parameter, header or method to a named upstream pool.
//!
//! Data flows one way: [`config::load`] → one immutable [`state::Snapshot`] in an
//! `ArcSwap` → the request path in [`proxy`]. `main.rs` is a thin shell around [`run`].

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod access;
pub mod admin;
pub mod config;
pub mod health;
pub mod metrics;
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

/// The sockets switchyard serves on.
#[derive(Debug)]
pub struct Listeners {
    /// One per `config.listeners`, same order.
    pub proxy: Vec<TcpListener>,
    pub admin: Option<TcpListener>,
}

async fn bind_one(addr: std::net::SocketAddr, what: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot listen on {addr} ({what}): {e}"))
    })
}

/// Bind every listener of `config`, and the admin API if enabled.
pub async fn bind(config: &Config) -> std::io::Result<Listeners> {
    let mut proxy = Vec::with_capacity(config.listeners.len());
    for l in &config.listeners {
        proxy.push(bind_one(l.addr, &l.name).await?);
    }
    let admin = match config.admin.addr {
        Some(a) => Some(bind_one(a, "admin").await?),
        None => None,
    };
    Ok(Listeners { proxy, admin })
}

/// Serve until `shutdown` resolves, then stop accepting and let in-flight requests
/// finish for at most the configured drain time.
pub async fn run(
    listeners: Listeners,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let (access, writer) = match AccessLog::spawn(&config.log).await? {
        Some((log, task)) => (Some(Arc::new(log)), Some(task)),
        None => (None, None),
    };
    let metrics = Arc::new(metrics::Metrics::new());
    let mut registry = state::Registry::default();
    let state = Arc::new(SharedState::new(Snapshot::build(
        &config,
        1,
        &mut registry,
        metrics,
    )));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (events, manager) = health::spawn(state.clone(), stop_rx.clone());
    let shared = Arc::new(Shared {
        state: state.clone(),
        access,
        events: events.clone(),
    });
    let builder = Arc::new(proxy::builder(&config.server));
    let mut tasks = Vec::new();
    for (i, l) in listeners.proxy.into_iter().enumerate() {
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
    let admin_task = listeners.admin.map(|l| {
        tracing::info!(addr = ?l.local_addr().ok(), "admin API listening");
        let admin = Arc::new(admin::Admin {
            state: state.clone(),
            events,
            token: config.admin.token.clone(),
        });
        tokio::spawn(admin::serve(l, admin, stop_rx.clone()))
    });
    shutdown.await;
    tracing::info!("shutting down: no new connections, draining in-flight requests");
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    if let Some(t) = admin_task {
        let _ = t.await;
    }
    let _ = manager.await;
    drop(shared);
    if let Some(w) = writer {
        let _ = tokio::time::timeout(Duration::from_secs(2), w).await;
    }
    tracing::info!("stopped");
    Ok(())
}
