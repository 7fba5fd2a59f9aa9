//! Live configuration. One task owns the set of listening sockets and reacts to three
//! triggers: the config file changing (watched with `notify`, debounced, tolerant of
//! editors that rename a new file over the old one or leave it briefly missing or
//! half-written), SIGHUP, and `POST /config/reload` on the admin API.
//!
//! A reload runs the same `config::load` as `--check`. If the file is invalid, the
//! error is logged with file:line:col, shown in `GET /config` and counted, and nothing
//! changes. If it is valid, new listener addresses are bound first (a bind failure
//! fails the whole reload), then the health manager builds and publishes the next
//! snapshot in one swap. Only then do accept loops start on new addresses and stop
//! (draining) on removed ones.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::{mpsc, oneshot, watch};

use crate::config::{self, Config, ReloadSettings};
use crate::health::{Event, Events};
use crate::supervisor::Supervisor;

/// What the admin API shows at `GET /config`.
#[derive(Debug, Clone)]
pub struct ReloadStatus {
    pub path: PathBuf,
    pub generation: u64,
    pub loaded_at: SystemTime,
    pub last_error: Option<String>,
    pub last_error_at: Option<SystemTime>,
    pub failures: u64,
}

/// Why a reload runs.
#[derive(Debug)]
pub enum Trigger {
    File,
    Signal,
    Admin(oneshot::Sender<Result<u64, String>>),
    /// SIGUSR2: hand the listening sockets to a new process, then drain and exit.
    Upgrade,
    /// A `--takeover` process asks for the listening sockets on the control socket.
    Takeover(std::os::unix::net::UnixStream),
}

/// Handle to ask for reloads and read their status.
#[derive(Debug, Clone)]
pub struct Reloads {
    tx: mpsc::Sender<Trigger>,
    pub status: Arc<Mutex<ReloadStatus>>,
}

impl Reloads {
    pub fn new(path: &Path) -> (Self, mpsc::Receiver<Trigger>) {
        let (tx, rx) = mpsc::channel(64);
        let status = ReloadStatus {
            path: path.to_path_buf(),
            generation: 1,
            loaded_at: SystemTime::now(),
            last_error: None,
            last_error_at: None,
            failures: 0,
        };
        (
            Reloads {
                tx,
                status: Arc::new(Mutex::new(status)),
            },
            rx,
        )
    }

    pub fn trigger(&self, t: Trigger) {
        let _ = self.tx.try_send(t);
    }

    /// Reload now and wait for the outcome (admin API).
    pub async fn reload_now(&self) -> Result<u64, String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Trigger::Admin(tx))
            .await
            .map_err(|_| "reloader stopped".to_owned())?;
        rx.await.map_err(|_| "reloader stopped".to_owned())?
    }

    pub fn status(&self) -> Option<ReloadStatus> {
        self.status.lock().ok().map(|s| s.clone())
    }
}

/// Everything the reload loop owns.
#[derive(Debug)]
pub struct Reloader {
    pub path: PathBuf,
    pub settings: ReloadSettings,
    pub watcher: Option<notify::RecommendedWatcher>,
    /// What `watcher` watches.
    pub files: Vec<PathBuf>,
    pub sup: Supervisor,
    pub events: Events,
    pub reloads: Reloads,
    pub rx: mpsc::Receiver<Trigger>,
    /// Other sockets to hand over on upgrade (the admin API's).
    pub extra_fds: Vec<std::os::fd::OwnedFd>,
    /// Told when an upgrade handed over: this process should drain and exit.
    pub upgraded: Arc<tokio::sync::Notify>,
}

/// Run the reload loop until `stop` flips, then shut the listeners down (drain).
pub async fn run(r: Reloader, mut stop: watch::Receiver<bool>) {
    let Reloader {
        path,
        settings,
        watcher,
        mut files,
        mut sup,
        events,
        reloads,
        mut rx,
        extra_fds,
        upgraded,
    } = r;
    let mut settings = settings;
    let mut watcher = watcher;
    loop {
        let trigger = tokio::select! {
            t = rx.recv() => match t { Some(t) => t, None => break },
            _ = stop.wait_for(|s| *s) => break,
        };
        let outcome = match trigger {
            Trigger::File => {
                // Debounce: wait for quiet, swallowing the burst of events of one save.
                tokio::time::sleep(settings.debounce).await;
                while let Ok(Trigger::File) = rx.try_recv() {}
                match reload(&path, &mut sup, &events).await {
                    // A file caught mid-write or mid-rename: look once more before reporting.
                    Err(_) => {
                        tokio::time::sleep(settings.debounce * 2).await;
                        reload(&path, &mut sup, &events).await
                    }
                    ok => ok,
                }
            }
            Trigger::Signal => reload(&path, &mut sup, &events).await,
            Trigger::Upgrade => {
                let fds = sup.handover_fds(&extra_fds);
                match crate::upgrade::handover(fds).await {
                    Ok(pid) => {
                        tracing::info!(pid, "upgrade: new process is ready; draining and exiting");
                        upgraded.notify_one();
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "upgrade failed; this process keeps serving")
                    }
                }
                continue;
            }
            Trigger::Takeover(stream) => {
                let fds = sup.handover_fds(&extra_fds);
                let n = fds.len();
                tracing::info!(sockets = n, "takeover: handing the listening sockets over");
                match tokio::task::spawn_blocking(move || crate::takeover::give(stream, fds)).await
                {
                    Ok(Ok(())) => {
                        tracing::info!("takeover: new process serves; draining and exiting");
                        upgraded.notify_one();
                    }
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "takeover failed; this process keeps serving")
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "takeover failed; this process keeps serving")
                    }
                }
                continue;
            }
            Trigger::Admin(reply) => {
                let r = reload(&path, &mut sup, &events).await;
                let _ = reply.send(r.as_ref().map(|(g, _, _)| *g).map_err(Clone::clone));
                r
            }
        };
        record(
            &reloads,
            &sup,
            outcome.as_ref().map(|(g, _, _)| *g).map_err(Clone::clone),
        );
        if let Ok((_, next, next_files)) = outcome {
            if next.watch != settings.watch || next_files != files {
                watcher = if next.watch {
                    watch_files(&next_files, &reloads)
                } else {
                    None
                };
            }
            settings = next;
            files = next_files;
        }
    }
    drop(watcher);
    // Close our copies first: a listening socket must not outlive its accept loop, or
    // new connections would queue on it unanswered instead of being refused.
    drop(extra_fds);
    sup.shutdown().await;
}

/// Load, bind new listeners, publish, then start/stop accept loops.
async fn reload(
    path: &Path,
    sup: &mut Supervisor,
    events: &Events,
) -> Result<(u64, ReloadSettings, Vec<PathBuf>), String> {
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Reloading,
        sd_notify::NotifyState::monotonic_usec_now().unwrap_or(sd_notify::NotifyState::Ready),
    ]);
    let p = path.to_path_buf();
    let loaded = tokio::task::spawn_blocking(move || config::load(&p))
        .await
        .map_err(|e| e.to_string())?;
    let cfg: Config = loaded.map_err(|e| e.to_string())?;
    let wanted: Vec<SocketAddr> = cfg.listeners.iter().map(|l| l.addr).collect();
    let mut fresh = Vec::new();
    for l in cfg.listeners.iter().filter(|l| !sup.serves(l.addr)) {
        fresh.push(
            crate::listen::bind(l.addr, l.freebind)
                .map_err(|e| format!("{}: {e}; nothing applied", path.display()))?,
        );
    }
    let settings = cfg.reload.clone();
    let files = watched(&cfg);
    let (tx, rx) = oneshot::channel();
    if !events
        .send_wait(Event::Apply {
            config: Box::new(cfg),
            reply: tx,
        })
        .await
    {
        return Err("health manager stopped".into());
    }
    let generation = rx.await.map_err(|_| "health manager stopped".to_owned())?;
    for l in fresh {
        sup.start(l);
    }
    let gone: Vec<SocketAddr> = sup
        .addrs()
        .into_iter()
        .filter(|a| !wanted.contains(a))
        .collect();
    for a in gone {
        sup.stop(a);
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    Ok((generation, settings, files))
}

fn record(reloads: &Reloads, sup: &Supervisor, outcome: Result<u64, String>) {
    let snap = sup.state();
    let Ok(mut st) = reloads.status.lock() else {
        return;
    };
    match outcome {
        Ok(g) => {
            st.generation = g;
            st.loaded_at = SystemTime::now();
            st.last_error = None;
            snap.metrics
                .config_generation
                .set(i64::try_from(g).unwrap_or(i64::MAX));
            tracing::info!(generation = g, "config generation applied");
        }
        Err(e) => {
            st.failures += 1;
            st.last_error = Some(e.clone());
            st.last_error_at = Some(SystemTime::now());
            snap.metrics.reload_failures.inc();
            tracing::error!(error = %e, "config reload refused; still serving generation {}", st.generation);
        }
    }
}

/// Watch the directories of `files` (so a rename over a file is seen) for events on
/// those files: the config itself and its certificates and keys.
pub fn watch_files(files: &[PathBuf], reloads: &Reloads) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let names: Vec<std::ffi::OsString> = files
        .iter()
        .filter_map(|f| f.file_name().map(|n| n.to_owned()))
        .collect();
    let mut dirs: Vec<PathBuf> = files
        .iter()
        .map(|f| match f.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    let r = reloads.clone();
    let handler = move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res
            && !ev.kind.is_access()
            && ev
                .paths
                .iter()
                .any(|p| p.file_name().is_some_and(|n| names.iter().any(|x| x == n)))
        {
            r.trigger(Trigger::File);
        }
    };
    let mut w = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %e, "cannot start file watcher");
            return None;
        }
    };
    for dir in &dirs {
        if let Err(e) = w.watch(dir, notify::RecursiveMode::NonRecursive) {
            tracing::error!(error = %e, dir = %dir.display(), "cannot watch directory; use SIGHUP or the admin API to reload");
        }
    }
    Some(w)
}

/// The files whose change triggers a reload: the config and every certificate and key.
pub fn watched(config: &Config) -> Vec<PathBuf> {
    let mut files = vec![config.path.clone()];
    files.extend(
        config
            .listeners
            .iter()
            .flat_map(|l| l.tls_files.iter().cloned()),
    );
    let pages = config.listeners.iter().flat_map(|l| &l.error_pages);
    let pages = pages.chain(config.routes.iter().flat_map(|r| &r.error_pages));
    files.extend(pages.map(|p| p.path.clone()));
    files.sort();
    files.dedup();
    files
}
