//! Upgraded connections (WebSocket, RFC 6455): after the backend's `101 Switching
//! Protocols`, bytes are copied both ways until either side closes or nothing moves
//! for `tunnel_idle_timeout`. Only `Upgrade: websocket` is tunnelled; every other
//! upgrade token (`h2c` above all, the h2c smuggling attack) is stripped as hop-by-hop.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::HeaderMap;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::metrics::Metrics;

/// Copy buffer per direction.
const BUF: usize = 16 * 1024;

/// A client asking for a WebSocket over HTTP/1.1 (`Connection: upgrade` and
/// `Upgrade: websocket`).
pub fn is_websocket(version: http::Version, headers: &HeaderMap) -> bool {
    let has_token = |name: http::header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    version == http::Version::HTTP_11
        && has_token(http::header::CONNECTION, "upgrade")
        && has_token(http::header::UPGRADE, "websocket")
}

/// Wait for both sides to switch protocols, then relay until done. Runs in its own task.
pub async fn relay(client: OnUpgrade, upstream: OnUpgrade, idle: Duration, metrics: Arc<Metrics>) {
    let (c, u) = match tokio::join!(client, upstream) {
        (Ok(c), Ok(u)) => (c, u),
        (c, u) => {
            tracing::debug!(
                client_ok = c.is_ok(),
                upstream_ok = u.is_ok(),
                "upgrade did not complete"
            );
            return;
        }
    };
    metrics.tunnels_open.inc();
    let (up, down) = pump_both(c, u, idle).await;
    metrics.tunnels_open.dec();
    metrics.tunnel_bytes_up.inc_by(up);
    metrics.tunnel_bytes_down.inc_by(down);
    tracing::debug!(bytes_up = up, bytes_down = down, "tunnel closed");
}

async fn pump_both(c: Upgraded, u: Upgraded, idle: Duration) -> (u64, u64) {
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
    let (mut cr, mut cw) = tokio::io::split(TokioIo::new(c));
    let (mut ur, mut uw) = tokio::io::split(TokioIo::new(u));
    let both = async {
        tokio::join!(
            pump(&mut cr, &mut uw, &last, &up, start),
            pump(&mut ur, &mut cw, &last, &down, start)
        );
    };
    let watchdog = async {
        loop {
            let quiet_since = start + Duration::from_millis(last.load(Ordering::Relaxed));
            if quiet_since.elapsed() >= idle {
                tracing::debug!(?idle, "tunnel idle; closing");
                return;
            }
            tokio::time::sleep_until(quiet_since + idle).await;
        }
    };
    tokio::select! {
        _ = both => {}
        _ = watchdog => {}
    }
    (up.load(Ordering::Relaxed), down.load(Ordering::Relaxed))
}

/// Copy `r` to `w` until EOF or an error, then shut `w` down.
async fn pump<R, W>(r: &mut R, w: &mut W, last: &AtomicU64, bytes: &AtomicU64, start: Instant)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUF];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if w.write_all(&buf[..n]).await.is_err() || w.flush().await.is_err() {
            break;
        }
        bytes.fetch_add(n as u64, Ordering::Relaxed);
        last.store(
            u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
    let _ = w.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_websocket_upgrades_qualify() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            "keep-alive, Upgrade".parse().expect("valid test header"),
        );
        h.insert("upgrade", "WebSocket".parse().expect("valid test header"));
        assert!(is_websocket(http::Version::HTTP_11, &h));
        assert!(!is_websocket(http::Version::HTTP_10, &h));
        h.insert("upgrade", "h2c".parse().expect("valid test header"));
        assert!(!is_websocket(http::Version::HTTP_11, &h));
    }
}
