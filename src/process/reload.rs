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
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::{mpsc, oneshot, watch};

use super::supervisor::Supervisor;
use super::trigger::{Reloads, Trigger};
use crate::config::{self, Config, ReloadSettings};
use crate::health::{Event, Events};

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

/// A reload's outcome: the generation applied, with its reload settings and the files
/// to watch; or the error, as `GET /config` shows it.
type Outcome = Result<(u64, ReloadSettings, Vec<PathBuf>), String>;

/// Run the reload loop until `stop` flips, then shut the listeners down (drain).
pub async fn run(mut r: Reloader, mut stop: watch::Receiver<bool>) {
    loop {
        let trigger = tokio::select! {
            t = r.rx.recv() => match t { Some(t) => t, None => break },
            _ = stop.wait_for(|s| *s) => break,
        };
        let outcome = match trigger {
            Trigger::File => r.on_file().await,
            Trigger::Signal => reload(&r.path, &mut r.sup, &r.events).await,
            Trigger::Upgrade => {
                r.upgrade().await;
                continue;
            }
            Trigger::Takeover(stream) => {
                r.takeover(stream).await;
                continue;
            }
            Trigger::Admin(reply) => {
                let o = reload(&r.path, &mut r.sup, &r.events).await;
                let _ = reply.send(o.as_ref().map(|(g, _, _)| *g).map_err(Clone::clone));
                o
            }
        };
        r.settle(outcome);
    }
    drop(r.watcher);
    // Close our copies first: a listening socket must not outlive its accept loop, or
    // new connections would queue on it unanswered instead of being refused.
    drop(r.extra_fds);
    r.sup.shutdown().await;
}

impl Reloader {
    /// The file changed. Debounce: wait for quiet, swallowing the burst of events of
    /// one save; a file caught mid-write or mid-rename is looked at once more.
    async fn on_file(&mut self) -> Outcome {
        tokio::time::sleep(self.settings.debounce).await;
        while let Ok(Trigger::File) = self.rx.try_recv() {}
        match reload(&self.path, &mut self.sup, &self.events).await {
            Err(_) => {
                tokio::time::sleep(self.settings.debounce * 2).await;
                reload(&self.path, &mut self.sup, &self.events).await
            }
            ok => ok,
        }
    }

    /// SIGUSR2: start the new binary with the sockets; drain and exit once it is ready.
    async fn upgrade(&mut self) {
        let fds = self.sup.handover_fds(&self.extra_fds);
        match super::upgrade::handover(fds).await {
            Ok(pid) => {
                tracing::info!(pid, "upgrade: new process is ready; draining and exiting");
                self.sup.handed_over();
                self.upgraded.notify_one();
            }
            Err(e) => tracing::error!(error = %e, "upgrade failed; this process keeps serving"),
        }
    }

    /// `--takeover`: hand the sockets to the asking process; drain and exit once it serves.
    async fn takeover(&mut self, stream: std::os::unix::net::UnixStream) {
        let fds = self.sup.handover_fds(&self.extra_fds);
        tracing::info!(
            sockets = fds.len(),
            "takeover: handing the listening sockets over"
        );
        let given = tokio::task::spawn_blocking(move || super::takeover::give(stream, fds)).await;
        match given.map_err(std::io::Error::other).and_then(|r| r) {
            Ok(()) => {
                tracing::info!("takeover: new process serves; draining and exiting");
                self.sup.handed_over();
                self.upgraded.notify_one();
            }
            Err(e) => tracing::error!(error = %e, "takeover failed; this process keeps serving"),
        }
    }

    /// Record the outcome for `GET /config`; an applied config's reload settings and
    /// watched files take effect (the watcher is remade when they changed).
    fn settle(&mut self, outcome: Outcome) {
        let generation = outcome.as_ref().map(|(g, _, _)| *g).map_err(Clone::clone);
        record(&self.reloads, &self.sup, generation);
        let Ok((_, next, next_files)) = outcome else {
            return;
        };
        if next.watch != self.settings.watch || next_files != self.files {
            self.watcher = if next.watch {
                watch_files(&next_files, &self.reloads)
            } else {
                None
            };
        }
        self.settings = next;
        self.files = next_files;
    }
}

/// Load, bind new listeners, publish, then start/stop accept loops.
async fn reload(path: &Path, sup: &mut Supervisor, events: &Events) -> Outcome {
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
            super::listen::bind_addr(l.addr, l.freebind)
                .map_err(|e| format!("{}: {e}; nothing applied", path.display()))?,
        );
    }
    let mut fresh_quic = Vec::new();
    for l in cfg
        .listeners
        .iter()
        .filter(|l| l.http3.is_some() && !sup.serves_quic(l.addr))
    {
        let udp = super::listen::bind_udp(l.addr, l.freebind)
            .map_err(|e| format!("{}: {e}; nothing applied", path.display()))?;
        super::listen::warn_small_udp_buffers(&udp, l.addr);
        fresh_quic.push(super::listen::QuicSocket { udp, older: None });
    }
    let quic_wanted: Vec<SocketAddr> = cfg
        .listeners
        .iter()
        .filter(|l| l.http3.is_some())
        .map(|l| l.addr)
        .collect();
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
    for u in fresh_quic {
        sup.start_quic(u);
    }
    for a in sup
        .quic_addrs()
        .into_iter()
        .filter(|a| !quic_wanted.contains(a))
    {
        sup.stop_quic(a);
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
