//! The start/stop sequence: the first snapshot, the process's tasks (health manager,
//! accept loops, reloader, admin API, signals, takeover control socket), readiness,
//! then on shutdown the lame duck period, the drain and the tasks joined in order.

use std::future::Future;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use super::admin::{self, Admin};
use super::listen::Listeners;
use super::listen::QuicSocket;
use super::reload::{self, Reloader};
use super::supervisor::Supervisor;
use super::trigger::{Reloads, Trigger};
use super::workers::Workers;
use super::{signals, takeover};
use crate::access::AccessLog;
use crate::config::Config;
use crate::health;
use crate::metrics::Metrics;
use crate::proxy::request::Shared;
use crate::state::{SharedState, Snapshot, StatsTable};

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
    let (stop_tx, stop) = watch::channel(false);
    // Flips first on a graceful stop: health checks fail during the lame duck period.
    let (failing_tx, failing) = watch::channel(false);
    // Names resolve before the first request, so a restart or an upgrade serves at once.
    let names = crate::resolve::Table::default();
    let sets = crate::resolve::first_round(&config, &names).await;
    let workers = start_workers(&config)?;
    let handles = workers.as_ref().map_or_else(Vec::new, Workers::handles);
    let mut listeners = listeners;
    let udp = super::listen::quic_sockets(&config, &listeners.proxy, &mut listeners.udp)?;
    let running = Running::start(
        (listeners, handles, udp),
        (&config, sets, names),
        access,
        stop,
        failing,
    );
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    ready();
    let lame_duck = tokio::select! {
        _ = shutdown => running.shared.state.load().server.lame_duck,
        _ = running.upgraded.notified() => {
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
    running.join().await;
    if let Some(w) = workers {
        let _ = tokio::task::spawn_blocking(move || w.stop()).await;
    }
    if let Some(w) = writer {
        let _ = tokio::time::timeout(Duration::from_secs(2), w).await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// The per-worker scheduler's threads, when configured with more than one worker.
fn start_workers(config: &Config) -> std::io::Result<Option<Workers>> {
    if config.scheduler != crate::config::Scheduler::PerWorker || config.workers < 2 {
        return Ok(None);
    }
    tracing::info!(workers = config.workers, "per-worker scheduler");
    Workers::start(config.workers).map(Some)
}

/// The first generation's snapshot (of `config` with its names' addresses), and the
/// server counters that outlive it.
fn first_state(config: &Config, names: crate::resolve::Table) -> (Arc<SharedState>, StatsTable) {
    let metrics = Arc::new(Metrics::new());
    metrics.config_generation.set(1);
    let mut stats = StatsTable::default();
    let snapshot = Snapshot::build(config, 1, &mut stats, metrics, None);
    (
        Arc::new(SharedState::new(snapshot).with_names(names)),
        stats,
    )
}

/// A running process: the handles every request needs and its tasks.
struct Running {
    shared: Arc<Shared>,
    /// Told when a USR2 upgrade handed over: this process should drain and exit.
    upgraded: Arc<Notify>,
    reloader: JoinHandle<()>,
    admin: Option<JoinHandle<()>>,
    signals: JoinHandle<()>,
    control: Option<JoinHandle<()>>,
    health: JoinHandle<()>,
}

impl Running {
    /// Start every task; the accept loops serve from here on, on `workers` (the
    /// per-worker scheduler) if there are any.
    fn start(
        (listeners, workers, udp): (Listeners, Vec<tokio::runtime::Handle>, Vec<QuicSocket>),
        (config, sets, names): (&Config, crate::resolve::Sets, crate::resolve::Table),
        access: Option<Arc<AccessLog>>,
        stop: watch::Receiver<bool>,
        failing: watch::Receiver<bool>,
    ) -> Self {
        let expanded = crate::resolve::expand(config, &sets, &names);
        let (state, stats) = first_state(&expanded, names);
        let (events, health) =
            health::spawn(state.clone(), stats, stop.clone(), config.clone(), sets);
        let cap = super::limits::connection_cap(config.server.max_connections);
        tracing::info!(
            max_connections = cap,
            descriptors = super::limits::nofile(),
            "client connection cap"
        );
        let shared = Arc::new(Shared {
            state: state.clone(),
            access,
            events: events.clone(),
            cap: Arc::new(crate::conn_cap::ConnectionCap::new(cap)),
        });
        let (reloads, reload_rx) = Reloads::new(&config.path);
        let mut sup = Supervisor::new(shared.clone()).with_workers(workers);
        for l in listeners.proxy {
            sup.start(l);
        }
        for u in udp {
            sup.start_quic(u);
        }
        let signals = signals::spawn(reloads.clone(), shared.access.clone(), stop.clone());
        let extra_fds = copies(listeners.admin.as_ref());
        let admin = listeners.admin.map(|l| {
            let admin = Admin {
                state,
                events: events.clone(),
                reloads: reloads.clone(),
                failing,
                cap: shared.cap.clone(),
            };
            spawn_admin(l, admin, stop.clone())
        });
        let control = config
            .control_socket
            .clone()
            .and_then(|p| takeover::listen(p, listeners.took_over, reloads.clone(), stop.clone()));
        let reloader = reloader(config, sup, events, reloads, reload_rx, extra_fds);
        let upgraded = reloader.upgraded.clone();
        Running {
            shared,
            upgraded,
            reloader: tokio::spawn(reload::run(reloader, stop)),
            admin,
            signals,
            control,
            health,
        }
    }

    /// Wait for every task to end (the stop flag has flipped), in dependency order.
    async fn join(self) {
        let _ = self.reloader.await;
        if let Some(t) = self.admin {
            let _ = t.await;
        }
        let _ = self.signals.await;
        if let Some(t) = self.control {
            let _ = t.await;
        }
        let _ = self.health.await;
        drop(self.shared);
    }
}

/// The reload loop's state: the config's path and watched files, the accept loops, and
/// its inbox.
fn reloader(
    config: &Config,
    sup: Supervisor,
    events: health::Events,
    reloads: Reloads,
    rx: mpsc::Receiver<Trigger>,
    extra_fds: Vec<OwnedFd>,
) -> Reloader {
    let files = reload::watched(config);
    let watch = config.reload.watch;
    Reloader {
        path: config.path.clone(),
        settings: config.reload.clone(),
        watcher: watch
            .then(|| reload::watch_files(&files, &reloads))
            .flatten(),
        files,
        sup,
        events,
        reloads,
        rx,
        extra_fds,
        upgraded: Arc::new(Notify::new()),
    }
}

/// Copies of the admin socket, handed over on upgrade with the proxy's.
fn copies(admin: Option<&TcpListener>) -> Vec<OwnedFd> {
    admin
        .iter()
        .filter_map(|l| std::os::fd::AsFd::as_fd(*l).try_clone_to_owned().ok())
        .collect()
}

fn spawn_admin(l: TcpListener, admin: Admin, stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tracing::info!(addr = ?l.local_addr().ok(), "admin API listening");
    tokio::spawn(admin::serve(l, Arc::new(admin), stop))
}
