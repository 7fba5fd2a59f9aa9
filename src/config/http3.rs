//! A listener's HTTP/3: `http3 = true` and the `http3_*` keys. The QUIC server
//! config is built here, from the listener's own certificates, so a listener that
//! cannot serve HTTP/3 is a config error with its line.

use std::sync::Arc;
use std::time::Duration;

use super::check::Check;
use super::file::FileListener;

/// `Alt-Svc`'s `ma` unless `http3_alt_svc_max_age` says otherwise (nginx's examples).
pub const DEFAULT_ALT_SVC_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// Request streams a client may have open at once (nginx `http3_max_concurrent_streams`).
pub const DEFAULT_MAX_STREAMS: u32 = 128;
/// A QUIC connection idle this long is closed (quinn's idle timeout).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// When a new QUIC connection must prove its address first (RFC 9000 §8.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuicRetry {
    /// Only while many handshakes are in progress (a flood of spoofed Initials).
    Auto,
    /// Every new connection (HAProxy's `quic-force-retry`).
    Always,
}

/// `http3 = true` on a TLS listener.
#[derive(Debug, Clone)]
pub struct Http3 {
    pub alt_svc_max_age: Duration,
    pub early_data: bool,
    pub retry: QuicRetry,
    pub max_streams: u32,
    pub idle_timeout: Duration,
    /// The QUIC server config: the listener's certificates and SNI, ALPN `h3`.
    pub quic: Arc<quinn::ServerConfig>,
}

/// The listener's HTTP/3 settings; `None` unless `http3 = true`.
pub(super) fn http3(
    cx: &mut Check<'_>,
    l: &FileListener,
    tls: Option<&Arc<rustls::ServerConfig>>,
) -> Option<Http3> {
    let on = l.http3.as_ref()?;
    if !*on.get_ref() {
        return None;
    }
    let Some(tls) = tls else {
        if l.tls.is_empty() {
            cx.err(
                on.span(),
                "`http3 = true` needs TLS: HTTP/3 runs over QUIC, which always uses TLS 1.3; add [[listeners.tls]]",
            );
        }
        return None;
    };
    let early_data = l.http3_early_data.unwrap_or(false);
    let max_streams = cx.count(
        &l.http3_max_streams,
        "http3_max_streams",
        DEFAULT_MAX_STREAMS,
    );
    let idle_timeout = cx.duration(
        &l.http3_idle_timeout,
        "http3_idle_timeout",
        DEFAULT_IDLE_TIMEOUT,
    );
    let quic = match crate::tls::quic_server_config(tls, early_data, max_streams, idle_timeout) {
        Ok(q) => q,
        Err(e) => {
            cx.err(on.span(), format!("http3: {e}"));
            return None;
        }
    };
    Some(Http3 {
        alt_svc_max_age: cx.duration(
            &l.http3_alt_svc_max_age,
            "http3_alt_svc_max_age",
            DEFAULT_ALT_SVC_MAX_AGE,
        ),
        early_data,
        retry: retry(cx, l),
        max_streams,
        idle_timeout,
        quic,
    })
}

fn retry(cx: &mut Check<'_>, l: &FileListener) -> QuicRetry {
    let Some(r) = &l.http3_retry else {
        return QuicRetry::Auto;
    };
    match r.get_ref().as_str() {
        "auto" => QuicRetry::Auto,
        "always" => QuicRetry::Always,
        other => {
            cx.err(
                r.span(),
                format!("`http3_retry` = {other:?} is not one of \"auto\", \"always\""),
            );
            QuicRetry::Auto
        }
    }
}
