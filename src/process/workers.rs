//! The per-worker scheduler (`[runtime] scheduler = "per-worker"`): worker threads that
//! each run their own current-thread runtime. The supervisor starts an accept loop on
//! every worker for every listener (each on a copy of the listening socket), so a
//! connection is accepted, served and driven to its upstream by one thread, with that
//! thread's timers and upstream keep-alive connections (see `upstream::h1`). The main
//! runtime keeps the rest: health checks, reloads, the admin API, signals.

use std::sync::mpsc;
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::worker as index;

/// Running worker threads; each ends when told to (or when this is dropped).
#[derive(Debug)]
pub struct Workers {
    handles: Vec<Handle>,
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Start `n` worker threads, each with its own current-thread runtime.
    pub fn start(n: usize) -> std::io::Result<Self> {
        index::set_count(n);
        let mut w = Workers {
            handles: Vec::new(),
            stops: Vec::new(),
            threads: Vec::new(),
        };
        for i in 0..n {
            let (handle_tx, handle_rx) = mpsc::channel();
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("switchyard-worker-{i}"))
                .spawn(move || run(i, handle_tx, stop_rx))?;
            let handle = handle_rx
                .recv()
                .map_err(|_| std::io::Error::other("a worker thread failed to start"))??;
            w.handles.push(handle);
            w.stops.push(stop_tx);
            w.threads.push(thread);
        }
        Ok(w)
    }

    /// The workers' runtimes, to spawn accept loops on.
    pub fn handles(&self) -> Vec<Handle> {
        self.handles.clone()
    }

    /// Tell every worker to end and wait for the threads (blocking: call it from
    /// `spawn_blocking` or outside a runtime).
    pub fn stop(self) {
        for s in self.stops {
            let _ = s.send(());
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// One worker thread: its runtime runs until told to stop (or its `Workers` is gone).
fn run(i: usize, handle_tx: mpsc::Sender<std::io::Result<Handle>>, stop: oneshot::Receiver<()>) {
    index::set(i);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = handle_tx.send(Err(e));
            return;
        }
    };
    let _ = handle_tx.send(Ok(rt.handle().clone()));
    rt.block_on(async {
        let _ = stop.await;
    });
}
