//! The reloader's inbox: why it should act ([`Trigger`]: a file change, SIGHUP, the
//! admin API, a USR2 upgrade, a `--takeover` request) and the handle every other part
//! asks through ([`Reloads`]), with the status the admin API shows.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::{mpsc, oneshot};

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
