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
pub mod frappe;
pub mod health;
pub mod idle;
pub mod listen;
pub mod metrics;
pub mod proxy;
pub mod reload;
pub mod routing;
pub mod sites;
pub mod state;
pub mod supervisor;
pub mod takeover;
pub mod tls;
pub mod upgrade;
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
    /// Taken from a running process (`--takeover`): its control socket path is ours now.
    pub took_over: bool,
}

/// Bind every listener of `config`, and the admin API if enabled, taking inherited
/// sockets (`LISTEN_FDS`) for matching addresses.
pub async fn bind(config: &Config) -> std::io::Result<Listeners> {
    bind_taking(config, Vec::new()).await
}

/// [`bind`], also taking `taken` sockets (from `--takeover`) for matching addresses.
/// An inherited socket no listener wants is closed with a warning.
pub async fn bind_taking(
    config: &Config,
    taken: Vec<std::net::TcpListener>,
) -> std::io::Result<Listeners> {
    let mut inherited = listen::inherited();
    inherited.extend(taken);
    let mut proxy = Vec::with_capacity(config.listeners.len());
    for l in &config.listeners {
        proxy.push(listen::take_or_bind(&mut inherited, l.addr, l.freebind)?);
    }
    let admin = match config.admin.addr {
        Some(a) => Some(listen::take_or_bind(&mut inherited, a, false)?),
        None => None,
    };
    for l in inherited {
        let addr = l
            .local_addr()
            .map_or_else(|e| e.to_string(), |a| a.to_string());
        tracing::warn!(%addr, "inherited socket matches no listener in the config; closed");
    }
    Ok(Listeners {
        proxy,
        admin,
        took_over: false,
    })
}

/// Serve until `shutdown` resolves, then stop accepting and let in-flight requests
/// finish for at most the configured drain time. While running, the config file is
/// reloaded on change, on SIGHUP and on the admin API's request.
pub async fn run(
    listeners: Listeners,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    run_with_ready(listeners, config, shutdown, || {}).await
}

/// [`run`], calling `ready` once the listeners accept and the config watcher is set up
/// (also the moment systemd is told READY=1).
pub async fn run_with_ready(
    listeners: Listeners,
    config: Config,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(),
) -> std::io::Result<()> {
    let (access, writer) = match AccessLog::spawn(&config.log).await? {
        Some((log, task)) => (Some(Arc::new(log)), Some(task)),
        None => (None, None),
    };
    let metrics = Arc::new(metrics::Metrics::new());
    metrics.config_generation.set(1);
    let mut registry = state::Registry::default();
    let state = Arc::new(SharedState::new(Snapshot::build(
        &config,
        1,
        &mut registry,
        metrics,
        None,
    )));
    let (stop_tx, stop_rx) = watch::channel(false);
    // Flips first on a graceful stop: health checks fail during the lame duck period.
    let (failing_tx, failing_rx) = watch::channel(false);
    let (events, manager) = health::spawn(state.clone(), registry, stop_rx.clone());
    let shared = Arc::new(Shared {
        state: state.clone(),
        access,
        events: events.clone(),
    });
    let (reloads, reload_rx) = reload::Reloads::new(&config.path);
    let files = reload::watched(&config);
    let watcher = config
        .reload
        .watch
        .then(|| reload::watch_files(&files, &reloads))
        .flatten();
    let mut sup = supervisor::Supervisor::new(shared.clone());
    for l in listeners.proxy {
        sup.start(l);
    }
    let sighup = spawn_signals(reloads.clone(), shared.access.clone(), stop_rx.clone());
    let extra_fds: Vec<std::os::fd::OwnedFd> = listeners
        .admin
        .iter()
        .filter_map(|l| std::os::fd::AsFd::as_fd(l).try_clone_to_owned().ok())
        .collect();
    let upgraded = Arc::new(tokio::sync::Notify::new());
    let admin_task = listeners.admin.map(|l| {
        tracing::info!(addr = ?l.local_addr().ok(), "admin API listening");
        let admin = Arc::new(admin::Admin {
            state: state.clone(),
            events: events.clone(),
            reloads: reloads.clone(),
            failing: failing_rx,
        });
        tokio::spawn(admin::serve(l, admin, stop_rx.clone()))
    });
    let control = config
        .control_socket
        .clone()
        .and_then(|p| takeover::listen(p, listeners.took_over, reloads.clone(), stop_rx.clone()));
    let reloader = tokio::spawn(reload::run(
        reload::Reloader {
            path: config.path.clone(),
            settings: config.reload.clone(),
            watcher,
            files,
            sup,
            events,
            reloads,
            rx: reload_rx,
            extra_fds,
            upgraded: upgraded.clone(),
        },
        stop_rx.clone(),
    ));
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    ready();
    let lame_duck = tokio::select! {
        _ = shutdown => state.load().server.lame_duck,
        _ = upgraded.notified() => {
            tracing::info!("handed over to the new process");
            Duration::ZERO
        }
    };
    let _ = failing_tx.send(true);
    if !lame_duck.is_zero() {
        tracing::info!(
            ?lame_duck,
            "lame duck: health checks fail, requests still served"
        );
        tokio::time::sleep(lame_duck).await;
    }
    tracing::info!("shutting down: no new connections, draining in-flight requests");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    let _ = stop_tx.send(true);
    let _ = reloader.await;
    if let Some(t) = admin_task {
        let _ = t.await;
    }
    let _ = sighup.await;
    if let Some(t) = control {
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

/// SIGHUP asks for a reload; SIGUSR1 reopens the access log (logrotate); SIGUSR2 asks
/// for an upgrade handover.
fn spawn_signals(
    reloads: reload::Reloads,
    access: Option<Arc<AccessLog>>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    use tokio::signal::unix::{SignalKind, signal};
    tokio::spawn(async move {
        let (Ok(mut hup), Ok(mut usr1), Ok(mut usr2)) = (
            signal(SignalKind::hangup()),
            signal(SignalKind::user_defined1()),
            signal(SignalKind::user_defined2()),
        ) else {
            tracing::warn!("cannot listen for SIGHUP/SIGUSR1/SIGUSR2");
            return;
        };
        loop {
            tokio::select! {
                _ = usr1.recv() => {
                    tracing::info!("SIGUSR1: reopening the access log");
                    if let Some(a) = &access {
                        a.reopen();
                    }
                }
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading config");
                    reloads.trigger(reload::Trigger::Signal);
                }
                _ = usr2.recv() => {
                    tracing::info!("SIGUSR2: upgrading (handing the sockets to a new process)");
                    reloads.trigger(reload::Trigger::Upgrade);
                }
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    })
}
