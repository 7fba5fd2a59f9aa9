//! One active health probe: a fresh HTTP/1.1 connection (so a dead listener is seen),
//! the configured method, path and Host, the expected status ranges and an optional
//! body substring. The caller bounds it with the probe timeout.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use rustls::pki_types::ServerName;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::{Instant, MissedTickBehavior};

use super::events::{Event, Events, ProbeFailure};
use crate::config::{HealthCheck, UpstreamTls};

/// Most body bytes read to look for `body_contains`.
const MAX_PROBE_BODY: usize = 64 * 1024;

/// Why a probe failed: the kind and the words for the log.
pub type Failed = (ProbeFailure, String);

/// `Ok(status)` when the server passes, `Err((kind, reason))` otherwise. Pools with
/// upstream TLS are probed over TLS, with the same trust roots and server name.
pub async fn probe(
    addr: SocketAddr,
    check: &HealthCheck,
    tls: Option<&UpstreamTls>,
) -> Result<u16, Failed> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| (ProbeFailure::Connect, format!("connect: {e}")))?;
    let _ = stream.set_nodelay(true);
    match tls {
        None => exchange(stream, addr, check).await,
        Some(t) => {
            let name = t
                .server_name
                .clone()
                .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()));
            let s = tokio_rustls::TlsConnector::from(t.client.clone())
                .connect(name, stream)
                .await
                .map_err(|e| (ProbeFailure::Connect, format!("TLS: {e}")))?;
            exchange(s, addr, check).await
        }
    }
}

async fn exchange<S>(stream: S, addr: SocketAddr, check: &HealthCheck) -> Result<u16, Failed>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(|e| (ProbeFailure::Closed, format!("handshake: {e}")))?;
    let driver = tokio::spawn(conn);
    let mut headers = http::HeaderMap::new();
    if let Some(h) = &check.host {
        headers.insert(header::HOST, h.clone());
    }
    headers.insert(
        header::USER_AGENT,
        http::HeaderValue::from_static("switchyard-health"),
    );
    headers.insert(header::CONNECTION, http::HeaderValue::from_static("close"));
    // The same target rule as forwarded requests: origin form, Host the server's address
    // unless the check names one.
    let server = http::uri::Authority::try_from(addr.to_string())
        .map_err(|e| (ProbeFailure::Connect, e.to_string()))?;
    let (uri, _) = crate::upstream::target(
        &http::Uri::from(check.path.clone()),
        &mut headers,
        &server,
        None,
    );
    let mut req = Request::new(Empty::new());
    *req.method_mut() = check.method.clone();
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    let result = async {
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| (ProbeFailure::Closed, format!("request: {e}")))?;
        let status = resp.status().as_u16();
        if !check
            .expect_status
            .iter()
            .any(|(a, b)| (*a..=*b).contains(&status))
        {
            return Err((ProbeFailure::Answer, format!("status {status}")));
        }
        if let Some(needle) = &check.body_contains {
            let body = Limited::new(resp.into_body(), MAX_PROBE_BODY)
                .collect()
                .await
                .map_err(|e| (ProbeFailure::Closed, format!("body: {e}")))?
                .to_bytes();
            if !String::from_utf8_lossy(&body).contains(needle.as_str()) {
                return Err((ProbeFailure::Answer, format!("body lacks {needle:?}")));
            }
        }
        Ok(status)
    }
    .await;
    driver.abort();
    result
}

/// Probe every server of one pool each interval (at once when asked), concurrently,
/// each with a little jitter and bounded by the probe timeout.
pub(super) async fn probe_loop(
    pool: Arc<str>,
    addrs: Vec<SocketAddr>,
    check: HealthCheck,
    tls: Option<crate::config::UpstreamTls>,
    events: Events,
    now: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut iv = tokio::time::interval(check.interval);
    iv.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let jitter_ms = u64::try_from(check.interval.as_millis() / 10)
        .unwrap_or(0)
        .max(1);
    loop {
        tokio::select! {
            _ = iv.tick() => {}
            _ = now.notified() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let round = addrs.iter().map(|&addr| {
            let (check, events, pool, tls) = (&check, &events, pool.clone(), &tls);
            async move {
                tokio::time::sleep(Duration::from_millis(fastrand::u64(..jitter_ms))).await;
                let started = Instant::now();
                let (failure, detail) =
                    match tokio::time::timeout(check.timeout, probe(addr, check, tls.as_ref()))
                        .await
                    {
                        Ok(Ok(status)) => (None, format!("status {status}")),
                        Ok(Err((kind, e))) => (Some(kind), e),
                        Err(_) => (
                            Some(ProbeFailure::Timeout),
                            format!("timed out after {:?}", check.timeout),
                        ),
                    };
                events
                    .send_wait(Event::Probe {
                        pool,
                        addr,
                        failure,
                        latency: started.elapsed(),
                        detail,
                    })
                    .await;
            }
        });
        tokio::select! {
            _ = futures_util::future::join_all(round) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
