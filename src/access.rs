//! The access log: one line per request, written by a background task so the request
//! path only moves a small record into a bounded channel (formatting and I/O happen
//! off the request path). Lines are nginx `combined` plus `key=value` fields, or JSON.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::uri::PathAndQuery;
use http::{HeaderValue, Method, Version};
use time::OffsetDateTime;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::{AccessFormat, AccessLogTarget, LogSettings};

/// Records waiting to be written before new ones are dropped (and counted).
const QUEUE: usize = 8192;

/// Everything one access-log line says about a request.
#[derive(Debug)]
pub struct AccessRecord {
    pub time: SystemTime,
    pub client: IpAddr,
    pub method: Method,
    pub target: Option<PathAndQuery>,
    pub version: Version,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub referer: Option<HeaderValue>,
    pub user_agent: Option<HeaderValue>,
    pub request_id: HeaderValue,
    pub route: Option<Arc<str>>,
    pub pool: Option<Arc<str>>,
    pub server: Option<SocketAddr>,
    pub upstream_time: Option<Duration>,
    pub total_time: Duration,
    /// The route's request class (`None`: no route).
    pub class: Option<Arc<str>>,
    /// Time spent waiting in the pool's queue.
    pub queue_wait: Option<Duration>,
    /// A request refused before it was parsed: what arrived of its request line
    /// (escaped), logged in place of method, target and version.
    pub refused_line: Option<Box<str>>,
}

impl AccessRecord {
    /// A record of a request from `client` that is just starting: the request's own
    /// fields are filled in by the caller, the outcome as it is known.
    pub fn new(client: IpAddr, request_id: HeaderValue) -> AccessRecord {
        AccessRecord {
            time: SystemTime::now(),
            client: client.to_canonical(),
            method: Method::GET,
            target: None,
            version: Version::HTTP_11,
            status: 0,
            bytes_in: 0,
            bytes_out: 0,
            referer: None,
            user_agent: None,
            request_id,
            route: None,
            pool: None,
            server: None,
            upstream_time: None,
            total_time: Duration::ZERO,
            class: None,
            queue_wait: None,
            refused_line: None,
        }
    }

    /// A request refused before it was parsed (400, 408, 414, 431), as nginx logs one:
    /// `head` is what arrived of it, of which the first line is shown.
    pub fn refused(client: IpAddr, status: u16, head: &[u8]) -> AccessRecord {
        AccessRecord {
            status,
            bytes_in: head.len() as u64,
            refused_line: Some(escape_line(head)),
            ..AccessRecord::new(client, HeaderValue::from_static("-"))
        }
    }
}

/// The first line of `head`, at most 1 KiB, with `"`, `\\` and bytes outside printable
/// ASCII as `\xNN` (nginx's escaping), so a log reader sees exactly what came.
fn escape_line(head: &[u8]) -> Box<str> {
    let end = head
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(head.len())
        .min(1024);
    let mut out = String::with_capacity(end);
    for &b in &head[..end] {
        match b {
            b'"' | b'\\' | ..=0x1f | 0x7f.. => {
                let _ = write!(out, "\\x{b:02X}");
            }
            _ => out.push(char::from(b)),
        }
    }
    out.into_boxed_str()
}

/// Handle the request path uses to submit records.
#[derive(Debug)]
pub struct AccessLog {
    tx: mpsc::Sender<AccessRecord>,
    /// Asks the writer to reopen its file (SIGUSR1, after logrotate renamed it).
    reopen: Arc<tokio::sync::Notify>,
}

impl AccessLog {
    /// Open the target and start the writer task. `Off` gives `None`.
    pub async fn spawn(settings: &LogSettings) -> std::io::Result<Option<(Self, JoinHandle<()>)>> {
        let out: Box<dyn AsyncWrite + Send + Unpin> = match &settings.access_log {
            AccessLogTarget::Off => return Ok(None),
            AccessLogTarget::Stdout => Box::new(tokio::io::stdout()),
            AccessLogTarget::File(p) => Box::new(
                tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .await?,
            ),
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        let reopen = Arc::new(tokio::sync::Notify::new());
        let path = match &settings.access_log {
            AccessLogTarget::File(p) => Some(p.clone()),
            _ => None,
        };
        let task = tokio::spawn(write_loop(
            rx,
            out,
            settings.access_format,
            (path, reopen.clone()),
        ));
        Ok(Some((AccessLog { tx, reopen }, task)))
    }

    /// Reopen the log file by its name (nginx's USR1): lines go to the new file.
    pub fn reopen(&self) {
        self.reopen.notify_one();
    }

    /// Queue a record; if the writer has fallen this far behind, the line is dropped
    /// rather than slowing requests down.
    pub fn submit(&self, rec: AccessRecord) {
        if self.tx.try_send(rec).is_err() {
            tracing::debug!("access log queue full; line dropped");
        }
    }
}

async fn write_loop(
    mut rx: mpsc::Receiver<AccessRecord>,
    out: Box<dyn AsyncWrite + Send + Unpin>,
    format: AccessFormat,
    (path, reopen): (Option<std::path::PathBuf>, Arc<tokio::sync::Notify>),
) {
    let mut out = BufWriter::new(out);
    let mut line = String::with_capacity(512);
    loop {
        let rec = tokio::select! {
            r = rx.recv() => r,
            _ = reopen.notified() => {
                let _ = out.flush().await;
                if let Some(p) = &path {
                    match tokio::fs::OpenOptions::new().create(true).append(true).open(p).await {
                        Ok(f) => {
                            out = BufWriter::new(Box::new(f) as Box<dyn AsyncWrite + Send + Unpin>);
                            tracing::info!(path = %p.display(), "access log reopened");
                        }
                        Err(e) => tracing::error!(path = %p.display(), error = %e, "cannot reopen the access log; still writing to the old file"),
                    }
                }
                continue;
            }
        };
        let Some(rec) = rec else { break };
        let mut next = Some(rec);
        while let Some(rec) = next {
            line.clear();
            match format {
                AccessFormat::Combined => combined(&mut line, &rec),
                AccessFormat::Json => json(&mut line, &rec),
            }
            if let Err(e) = out.write_all(line.as_bytes()).await {
                tracing::error!(error = %e, "cannot write access log");
            }
            next = rx.try_recv().ok();
        }
        if let Err(e) = out.flush().await {
            tracing::error!(error = %e, "cannot flush access log");
        }
    }
}

fn header_text(v: &Option<HeaderValue>) -> &str {
    v.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-")
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_owned(), |d| format!("{:.3}", d.as_secs_f64()))
}

/// nginx `combined`, then `key=value` fields; `"` in client text is escaped as nginx does.
fn combined(line: &mut String, r: &AccessRecord) {
    let t = OffsetDateTime::from(r.time);
    let ts = t
        .format(time::macros::format_description!(
            "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000"
        ))
        .unwrap_or_default();
    let target = r.target.as_ref().map_or("-", |p| p.as_str());
    let esc = |s: &str| s.replace('"', "\\x22");
    let request = match &r.refused_line {
        Some(l) => l.to_string(),
        None => format!("{} {} {:?}", r.method, esc(target), r.version),
    };
    let _ = writeln!(
        line,
        "{} - - [{ts}] \"{request}\" {} {} \"{}\" \"{}\" route={} pool={} upstream={} upstream_time={} request_time={:.3} bytes_in={} request_id={} class={} queue_wait={}",
        r.client,
        r.status,
        r.bytes_out,
        esc(header_text(&r.referer)),
        esc(header_text(&r.user_agent)),
        r.route.as_deref().unwrap_or("-"),
        r.pool.as_deref().unwrap_or("-"),
        r.server.map_or_else(|| "-".to_owned(), |s| s.to_string()),
        secs(r.upstream_time),
        r.total_time.as_secs_f64(),
        r.bytes_in,
        r.request_id.to_str().unwrap_or("-"),
        r.class.as_deref().unwrap_or("-"),
        secs(r.queue_wait),
    );
}

fn json(line: &mut String, r: &AccessRecord) {
    let t = OffsetDateTime::from(r.time)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let v = serde_json::json!({
        "time": t,
        "client": r.client.to_string(),
        "method": r.refused_line.is_none().then(|| r.method.as_str()),
        "target": r.target.as_ref().map(|p| p.as_str()),
        "version": r.refused_line.is_none().then(|| format!("{:?}", r.version)),
        "request": r.refused_line.as_deref(),
        "status": r.status,
        "bytes_in": r.bytes_in,
        "bytes_out": r.bytes_out,
        "referer": r.referer.as_ref().and_then(|v| v.to_str().ok()),
        "user_agent": r.user_agent.as_ref().and_then(|v| v.to_str().ok()),
        "route": r.route.as_deref(),
        "pool": r.pool.as_deref(),
        "server": r.server.map(|s| s.to_string()),
        "upstream_time": r.upstream_time.map(|d| d.as_secs_f64()),
        "request_time": r.total_time.as_secs_f64(),
        "request_id": r.request_id.to_str().ok(),
        "class": r.class.as_deref(),
        "queue_wait": r.queue_wait.map(|d| d.as_secs_f64()),
    });
    let _ = writeln!(line, "{v}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> AccessRecord {
        AccessRecord {
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_312_313),
            client: [192, 0, 2, 1].into(),
            method: Method::POST,
            target: Some(PathAndQuery::from_static("/?a=b")),
            version: Version::HTTP_11,
            status: 200,
            bytes_in: 12,
            bytes_out: 34,
            referer: None,
            user_agent: Some(HeaderValue::from_static("curl \"8\"")),
            request_id: HeaderValue::from_static("abc123"),
            route: Some("reports".into()),
            pool: Some("secondary".into()),
            server: Some(([127, 0, 0, 1], 8001).into()),
            upstream_time: Some(Duration::from_millis(12)),
            total_time: Duration::from_millis(13),
            class: Some("report".into()),
            queue_wait: Some(Duration::from_millis(250)),
            refused_line: None,
        }
    }

    #[test]
    fn a_refused_request_shows_its_first_line_escaped() {
        let mut r = AccessRecord::refused(
            [192, 0, 2, 1].into(),
            400,
            b"GET /a\"b\x01\xff HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        r.time = rec().time;
        let mut s = String::new();
        combined(&mut s, &r);
        assert!(
            s.starts_with(
                "192.0.2.1 - - [22/Nov/2026:01:51:53 +0000] \"GET /a\\x22b\\x01\\xFF HTTP/1.1\" 400 0 \"-\" \"-\" route=-"
            ),
            "{s}"
        );
    }

    #[test]
    fn combined_line_is_nginx_shaped() {
        let mut s = String::new();
        combined(&mut s, &rec());
        assert_eq!(
            s,
            "192.0.2.1 - - [22/Nov/2026:01:51:53 +0000] \"POST /?a=b HTTP/1.1\" 200 34 \"-\" \"curl \\x228\\x22\" \
             route=reports pool=secondary upstream=127.0.0.1:8001 upstream_time=0.012 request_time=0.013 bytes_in=12 request_id=abc123 class=report queue_wait=0.250\n"
        );
    }

    #[test]
    fn json_line_parses() {
        let mut s = String::new();
        json(&mut s, &rec());
        let v: serde_json::Value = serde_json::from_str(&s).expect("the line is JSON");
        assert_eq!(v["route"], "reports");
        assert_eq!(v["status"], 200);
        assert_eq!(v["class"], "report");
        assert_eq!(v["queue_wait"], 0.25);
    }
}
