//! The accept loops, one per listening address, and a copy of each listening socket
//! to hand to a new process (USR2 upgrade, `--takeover`). The reload loop owns it.
//! On shutdown the copies are closed first: a listening socket must not outlive its
//! accept loop, or new connections would queue on it unanswered instead of being
//! refused.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::proxy::request::Shared;
use crate::proxy::serve;

#[derive(Debug)]
pub struct Supervisor {
    shared: Arc<Shared>,
    served: HashMap<SocketAddr, (watch::Sender<bool>, JoinHandle<()>)>,
    /// A duplicate of each listening socket, to hand to a new process on upgrade.
    fds: HashMap<SocketAddr, OwnedFd>,
}

impl Supervisor {
    pub fn new(shared: Arc<Shared>) -> Self {
        Supervisor {
            shared,
            served: HashMap::new(),
            fds: HashMap::new(),
        }
    }

    pub fn start(&mut self, l: TcpListener) {
        let Ok(addr) = l.local_addr() else { return };
        tracing::info!(%addr, "listening");
        use std::os::fd::AsFd;
        match l.as_fd().try_clone_to_owned() {
            Ok(fd) => {
                self.fds.insert(addr, fd);
            }
            Err(e) => {
                tracing::warn!(%addr, error = %e, "cannot keep a copy of the socket; upgrades will rebind it")
            }
        }
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(serve::serve(l, self.shared.clone(), rx));
        self.served.insert(addr, (tx, task));
    }

    /// Stop accepting on `addr`; its connections drain in the background.
    pub fn stop(&mut self, addr: SocketAddr) {
        self.fds.remove(&addr);
        if let Some((tx, task)) = self.served.remove(&addr) {
            tracing::info!(%addr, "listener removed; draining its connections");
            let _ = tx.send(true);
            tokio::spawn(async move {
                let _ = task.await;
            });
        }
    }

    /// Stop every accept loop and wait for their connections to drain.
    pub async fn shutdown(mut self) {
        self.fds.clear();
        let all: Vec<_> = self.served.drain().collect();
        for (_, (tx, _)) in &all {
            let _ = tx.send(true);
        }
        for (_, (_, task)) in all {
            let _ = task.await;
        }
    }

    /// Whether an accept loop runs on `addr`.
    pub fn serves(&self, addr: SocketAddr) -> bool {
        self.served.contains_key(&addr)
    }

    /// Every address with an accept loop.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.served.keys().copied().collect()
    }

    /// The snapshot current now.
    pub fn state(&self) -> Arc<crate::state::Snapshot> {
        self.shared.state.load()
    }

    /// Copies of every listening socket (and `extra`), for a new process to serve on.
    pub fn handover_fds(&self, extra: &[OwnedFd]) -> Vec<OwnedFd> {
        self.fds
            .values()
            .chain(extra)
            .filter_map(|fd| fd.try_clone().ok())
            .collect()
    }
}
