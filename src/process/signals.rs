//! Signals while running: SIGHUP reloads, SIGUSR1 reopens the access log, SIGUSR2
//! upgrades. The stop signals (TERM, INT, QUIT) are the binary's: `main.rs` turns them
//! into the `shutdown` future that [`run`](super::start::run) waits on.

use std::sync::Arc;

use tokio::sync::watch;

use super::trigger::{Reloads, Trigger};
use crate::access::AccessLog;

/// SIGHUP asks for a reload; SIGUSR1 reopens the access log (logrotate); SIGUSR2 asks
/// for an upgrade handover.
pub(super) fn spawn(
    reloads: Reloads,
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
                    reloads.trigger(Trigger::Signal);
                }
                _ = usr2.recv() => {
                    tracing::info!("SIGUSR2: upgrading (handing the sockets to a new process)");
                    reloads.trigger(Trigger::Upgrade);
                }
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    })
}
