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
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::listen::QuicSocket;
use crate::proxy::request::Shared;
use crate::proxy::serve;
use crate::proxy::serve::h3::steer::Steered;

#[derive(Debug)]
pub struct Supervisor {
    shared: Arc<Shared>,
    /// The per-worker scheduler's runtimes, each with an accept loop per listener;
    /// empty: the accept loops run on the current runtime.
    workers: Vec<Handle>,
    served: HashMap<SocketAddr, (watch::Sender<bool>, Vec<JoinHandle<()>>)>,
    /// A duplicate of each listening socket, to hand to a new process on upgrade.
    fds: HashMap<SocketAddr, OwnedFd>,
    /// The HTTP/3 endpoints, by the address they share with their TCP listener.
    quic: HashMap<SocketAddr, Quic>,
}

/// One HTTP/3 endpoint: its stop flag and task, its socket, and a duplicate of the
/// socket for a new process.
#[derive(Debug)]
struct Quic {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    socket: Arc<Steered>,
    fd: OwnedFd,
}

impl Supervisor {
    pub fn new(shared: Arc<Shared>) -> Self {
        Supervisor {
            shared,
            workers: Vec::new(),
            served: HashMap::new(),
            fds: HashMap::new(),
            quic: HashMap::new(),
        }
    }

    /// Run the accept loops on these runtimes (the per-worker scheduler), one each.
    pub fn with_workers(mut self, workers: Vec<Handle>) -> Self {
        self.workers = workers;
        self
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
        let tasks = match self.workers.is_empty() {
            true => vec![tokio::spawn(serve::serve(l, self.shared.clone(), rx))],
            false => self.start_on_workers(l, &rx),
        };
        self.served.insert(addr, (tx, tasks));
    }

    /// An accept loop on every worker, each on its own copy of the listening socket
    /// (registered with that worker's runtime); the kernel's accept queue is shared.
    fn start_on_workers(&self, l: TcpListener, rx: &watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        let std = match l.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot hand the listening socket to the workers");
                return Vec::new();
            }
        };
        let mut tasks = Vec::new();
        for h in &self.workers {
            let copy = match std.try_clone() {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "cannot copy the listening socket for a worker");
                    continue;
                }
            };
            let (shared, rx) = (self.shared.clone(), rx.clone());
            tasks.push(h.spawn(async move {
                match TcpListener::from_std(copy) {
                    Ok(l) => serve::serve(l, shared, rx).await,
                    Err(e) => tracing::error!(error = %e, "a worker cannot listen"),
                }
            }));
        }
        tasks
    }

    /// Serve HTTP/3 on `q` (on the main runtime: one endpoint per address).
    pub fn start_quic(&mut self, q: QuicSocket) {
        let Ok(addr) = q.udp.local_addr() else {
            return;
        };
        use std::os::fd::AsFd;
        let made = q
            .udp
            .as_fd()
            .try_clone_to_owned()
            .and_then(|fd| Ok((fd, Steered::new(q.udp, q.older)?)));
        let (fd, socket) = match made {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(%addr, error = %e, "cannot serve HTTP/3");
                return;
            }
        };
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(serve::h3::serve(socket.clone(), self.shared.clone(), rx));
        let quic = Quic {
            stop,
            task,
            socket,
            fd,
        };
        self.quic.insert(addr, quic);
    }

    /// A new process serves on copies of the sockets: this one's QUIC connections
    /// get their datagrams from it from now on (see `steer`).
    pub fn handed_over(&self) {
        for q in self.quic.values() {
            q.socket.handed_over();
        }
    }

    /// Whether HTTP/3 is served on `addr`.
    pub fn serves_quic(&self, addr: SocketAddr) -> bool {
        self.quic.contains_key(&addr)
    }

    /// Every address HTTP/3 is served on.
    pub fn quic_addrs(&self) -> Vec<SocketAddr> {
        self.quic.keys().copied().collect()
    }

    /// Stop serving HTTP/3 on `addr`; its connections drain in the background.
    pub fn stop_quic(&mut self, addr: SocketAddr) {
        if let Some(q) = self.quic.remove(&addr) {
            tracing::info!(%addr, "HTTP/3 stopped; draining its connections");
            let _ = q.stop.send(true);
            tokio::spawn(q.task);
        }
    }

    /// Stop accepting on `addr`; its connections drain in the background.
    pub fn stop(&mut self, addr: SocketAddr) {
        self.stop_quic(addr);
        self.fds.remove(&addr);
        if let Some((tx, tasks)) = self.served.remove(&addr) {
            tracing::info!(%addr, "listener removed; draining its connections");
            let _ = tx.send(true);
            tokio::spawn(async move {
                for t in tasks {
                    let _ = t.await;
                }
            });
        }
    }

    /// Stop every accept loop and wait for their connections to drain.
    pub async fn shutdown(mut self) {
        self.fds.clear();
        let quic: Vec<_> = self.quic.drain().map(|(_, q)| q).collect();
        for q in &quic {
            let _ = q.stop.send(true);
        }
        let all: Vec<_> = self.served.drain().collect();
        for (_, (tx, _)) in &all {
            let _ = tx.send(true);
        }
        for q in quic {
            drop(q.fd);
            let _ = q.task.await;
        }
        for (_, (_, tasks)) in all {
            for t in tasks {
                let _ = t.await;
            }
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

    /// Copies of every listening socket (and `extra`), for a new process to serve on;
    /// each UDP socket is followed by a channel on which the new process passes on
    /// the datagrams of this process's QUIC connections.
    pub fn handover_fds(&self, extra: &[OwnedFd]) -> Vec<OwnedFd> {
        let mut out: Vec<OwnedFd> = self
            .fds
            .values()
            .filter_map(|fd| fd.try_clone().ok())
            .collect();
        for q in self.quic.values() {
            let (Ok(fd), Ok(chan)) = (q.fd.try_clone(), q.socket.channel_for_next()) else {
                tracing::warn!("cannot hand an HTTP/3 socket over; the new process binds its own");
                continue;
            };
            out.extend([fd, chan]);
        }
        out.extend(extra.iter().filter_map(|fd| fd.try_clone().ok()));
        out
    }
}
