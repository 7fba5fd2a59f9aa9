//! Configuration: `load(path)` reads `switchyard.toml`, checks syntax and types
//! (`file.rs`), then semantics (`validate.rs`), and returns the runtime [`Config`] or
//! every error found, each with file, line and column (`error.rs`).
//!
//! The runtime types have no `Option`s for values with defaults; the defaults are the
//! named constants below. `main` (`--check`, start-up) and later reloads call the same
//! [`load`].
//!
//! - `file.rs`: the serde `File*` structs; `sections.rs`: every type error, not only the first.
//! - `validate.rs`: the whole check and the routes; `check.rs`: the error collector and the
//!   value parsers every section shares.
//! - One file per section: `settings.rs` (`[server]`, `[log]`, `[admin]`, `[runtime]`,
//!   `[reload]`), `listeners.rs`, `pools.rs`, `health.rs`, `upstream_tls.rs`, `sticky.rs`, `classes.rs`, `web.rs`
//!   (actions, sites, compression), `pages.rs` (error pages).
//! - `error.rs`: `file:line:col` and the caret; `summary.rs`: the `--check` summary.

mod check;
mod classes;
mod error;
mod file;
mod health;
mod http3;
mod listeners;
mod pages;
mod pools;
mod sections;
mod settings;
mod sticky;
mod summary;
mod upstream_tls;
mod validate;
mod web;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

pub use error::{ConfigError, ConfigErrors};
pub use file::{AccessFormat, Balance};
pub use http3::{Http3, QuicRetry};
pub use web::{CompressionSettings, DEFAULT_TYPES};

use crate::routing::{ErrorPage, Route};

/// Time to receive a request's header section, counted from the end of the previous
/// response on a keep-alive connection: nginx's `keepalive_timeout` and
/// `client_header_timeout` in one (hyper times both together). 15 s is bench's keep-alive.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest pause between two reads of a request body (nginx `client_body_timeout`).
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a response write to the client may wait for the client to read (nginx
/// `send_timeout`): a client that stops reading is dropped, and so is its upstream.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long shutdown waits for in-flight requests.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request header section; larger gets 431 (nginx allows 4 × 8 KiB, Frappe's bench raises it to 4 × 32 KiB).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// Smallest accepted `max_header_bytes` (hyper's minimum read buffer).
pub const MIN_HEADER_BYTES: usize = 8 * 1024;
/// Longest request target; longer gets 414 (nginx: one 8 KiB buffer for the request line).
pub const DEFAULT_MAX_URI_BYTES: usize = 8 * 1024;
/// Most body bytes read to find a `param`; a larger body routes on the query string.
pub const DEFAULT_PARAM_BODY_LIMIT: usize = 64 * 1024;
/// Longest wait for the body look; a slower body routes on the query string.
pub const DEFAULT_PARAM_BODY_TIMEOUT: Duration = Duration::from_secs(1);
/// A WebSocket (or other upgraded) tunnel with no bytes either way for this long is
/// closed. Above socket.io's 25 s ping interval + 20 s ping timeout.
pub const DEFAULT_TUNNEL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Upstream TCP connect timeout (HAProxy's usual `timeout connect 5s`).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time from sending the request head to the upstream's response head (nginx `proxy_read_timeout`).
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an idle upstream keep-alive connection is kept: below the 2 s keep-alive
/// of gunicorn (Frappe's app server), so a connection is retired before the server may
/// close it under a request being written. A server's `Keep-Alive: timeout=N` can only
/// shorten it (to three quarters of N).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_millis(1500);
/// Idle upstream connections kept per server (nginx `keepalive`): room for the steady
/// concurrency of a busy server, so it does not reconnect; extras age out in
/// `idle_timeout`.
pub const DEFAULT_KEEPALIVE: usize = 256;
/// Largest weight of one server; keeps the round-robin schedule small.
pub const MAX_WEIGHT: u32 = 1000;
/// Quiet time after the last file event before a watched config is reloaded.
pub const DEFAULT_RELOAD_DEBOUNCE: Duration = Duration::from_millis(200);
/// Where the admin API listens unless `[admin] addr` says otherwise.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:9901";
/// Active check period and per-probe timeout.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(2);
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// Consecutive probe results needed to flip a server (HAProxy's rise/fall).
pub const DEFAULT_HEALTHY_AFTER: u32 = 2;
pub const DEFAULT_UNHEALTHY_AFTER: u32 = 2;
/// Consecutive connect/reset/timeout failures of live traffic that eject a server.
/// Retries hide single failures from clients, so three is quick and not jumpy.
pub const DEFAULT_EJECT_AFTER: u32 = 3;
/// First ejection; doubles on each repeated ejection up to the maximum.
pub const DEFAULT_EJECTION_TIME: Duration = Duration::from_secs(5);
pub const DEFAULT_MAX_EJECTION_TIME: Duration = Duration::from_secs(300);
/// Tries per request, the first included.
pub const DEFAULT_RETRY_ATTEMPTS: u32 = 3;
/// Retries may add at most this share of a pool's requests over 10 s ...
pub const DEFAULT_RETRY_BUDGET_RATIO: f64 = 0.2;
/// ... plus this many per second, so a quiet pool can still retry.
pub const DEFAULT_RETRY_BUDGET_MIN_PER_SEC: u32 = 10;
/// Methods re-sent by default after they may have reached a server: the safe ones
/// (RFC 9110 §9.2.1). PUT and DELETE are idempotent by the RFC, but Frappe commits on
/// them, so a pool must opt them in (`retry.idempotent_methods`).
pub const DEFAULT_IDEMPOTENT: [&str; 4] = ["GET", "HEAD", "OPTIONS", "TRACE"];
/// Methods a pool may list in `retry.idempotent_methods` (RFC 9110 §9.2.2).
pub const IDEMPOTENT: [&str; 6] = ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"];
/// A waiting request gains one priority step per this much waiting.
pub const DEFAULT_AGING: Duration = Duration::from_secs(1);
/// Names are re-resolved at least this often (sooner when their TTL runs out).
pub const DEFAULT_RESOLVE_INTERVAL: Duration = Duration::from_secs(5);
/// Names are never re-resolved more often than this.
pub const MIN_RESOLVE_INTERVAL: Duration = Duration::from_secs(1);
/// Per-query DNS timeout and attempts (`[resolver]`).
pub const DEFAULT_RESOLVER_TIMEOUT: Duration = Duration::from_secs(2);
pub const DEFAULT_RESOLVER_ATTEMPTS: usize = 2;
/// How long a request may wait for a free connection slot when `max_connections` is set.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(5);
/// How many requests may wait for a slot per pool; more get 503 at once.
pub const DEFAULT_QUEUE_SIZE: usize = 1024;

/// `[runtime] scheduler`: how worker threads share the connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduler {
    /// One runtime whose workers steal each other's tasks (tokio's multi-thread
    /// scheduler): a busy worker's connections are served by an idle one.
    WorkStealing,
    /// A runtime per worker thread, each with its own accept loops, timers and
    /// upstream keep-alive connections: a connection never changes thread (nginx's
    /// worker processes, in one process). With one worker both are the same.
    PerWorker,
}

/// A validated configuration. Built by [`load`], turned into a
/// [`Snapshot`](crate::state::Snapshot) for the request path.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub listeners: Vec<Listener>,
    pub server: ServerSettings,
    pub log: LogSettings,
    pub pools: Vec<PoolConfig>,
    pub routes: Vec<Route>,
    pub admin: AdminSettings,
    pub reload: ReloadSettings,
    /// Worker threads of the runtime (applied at start; a reload cannot change it).
    pub workers: usize,
    /// How the workers share connections (applied at start, like `workers`).
    pub scheduler: Scheduler,
    /// `[runtime] control_socket`, else `$RUNTIME_DIRECTORY/control.sock` under
    /// systemd: where a `--takeover` start asks this process for its sockets.
    pub control_socket: Option<PathBuf>,
    /// `[sites]`: site mapping and the site header; `None` when absent.
    pub sites: Option<Arc<crate::sites::Sites>>,
    /// `[compression]`; `None` when absent or disabled.
    pub compression: Option<Arc<CompressionSettings>>,
    /// Request class names; index 0 is `default`.
    pub classes: Vec<Arc<str>>,
    /// Problems worth a look that do not stop the config (`--check` prints them).
    pub warnings: Vec<String>,
    /// `[resolver]`.
    pub resolver: ResolverSettings,
}

#[derive(Debug, Clone)]
pub struct ReloadSettings {
    /// Reload when the file changes (SIGHUP and the admin API always work).
    pub watch: bool,
    pub debounce: Duration,
}

#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// `None` when `[admin] enabled = false`.
    pub addr: Option<SocketAddr>,
    /// Bearer token for drain/enable; `None` refuses those endpoints outright.
    pub token: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Listener {
    /// Referenced by the `listener` route condition; defaults to the address text.
    pub name: Arc<str>,
    pub addr: SocketAddr,
    /// Peers whose `X-Forwarded-*` headers are believed and appended to; everyone else's are replaced.
    pub trusted_proxies: Vec<IpNet>,
    /// rustls config built from `[[listeners.tls]]` at load time; `None` = plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The certificate and key files, watched so a renewal is picked up.
    pub tls_files: Vec<PathBuf>,
    pub redirect_https: bool,
    /// Largest request body (nginx `client_max_body_size`); `None` = no limit.
    pub max_body_size: Option<u64>,
    /// Pages for errors the proxy generates on this listener.
    pub error_pages: Vec<ErrorPage>,
    pub add_response_headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Add them to every status (default), or only to nginx's success/redirect list.
    pub response_headers_always: bool,
    /// The site every request here belongs to, whatever its Host.
    pub site: Option<Arc<str>>,
    /// Requests in flight per Host; `None` = no limit.
    pub max_requests_per_host: Option<u32>,
    /// IP_FREEBIND: bind a virtual IP before it arrives on this host.
    pub freebind: bool,
    /// HTTP/3 on the same port over UDP (`http3 = true`).
    pub http3: Option<Http3>,
}

/// Client-facing limits; see the `DEFAULT_*` constants.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub send_timeout: Duration,
    pub drain_timeout: Duration,
    /// On SIGTERM, fail `/health/live` and keep serving this long before stopping,
    /// so a VIP or a load balancer in front moves traffic away first.
    pub lame_duck: Duration,
    pub max_header_bytes: usize,
    pub max_uri_bytes: usize,
    pub param_body_limit: usize,
    pub param_body_timeout: Duration,
    pub tunnel_idle_timeout: Duration,
    /// Client connections open at once; `None`: derived from the descriptor limit at
    /// start (see `process::limits`).
    pub max_connections: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    Off,
    Stdout,
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub access_log: AccessLogTarget,
    pub access_format: AccessFormat,
}

/// `[pools.NAME.sticky]`: sticky sessions by cookie.
#[derive(Debug, Clone, PartialEq)]
pub struct Sticky {
    pub cookie: String,
    /// `; Path=…; HttpOnly; SameSite=…; Max-Age=…`: every attribute but `Secure`.
    pub attributes: String,
    /// `Secure` always (`true`), never (`false`), or on HTTPS requests (`None`).
    pub secure: Option<bool>,
    /// Key of the cookie's digest; `None` = a random key per process.
    pub secret: Option<String>,
}

#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub name: Arc<str>,
    /// Servers by address, and (once resolved) the addresses of `names`.
    pub servers: Vec<ServerConfig>,
    /// Servers by name, re-resolved in the background (`resolve = "live"`).
    pub names: Vec<NameConfig>,
    /// Re-resolve a name at least this often (sooner when its TTL runs out).
    pub resolve_interval: Duration,
    /// Why the pool has no server yet: its names and what the resolver said.
    pub unresolved: Option<Arc<str>>,
    pub balance: Balance,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub idle_timeout: Duration,
    pub keepalive: usize,
    /// Pool (index) that takes requests when none of this pool's servers is healthy.
    pub fallback: Option<usize>,
    pub health: Option<HealthCheck>,
    pub passive: Passive,
    pub retry: RetryPolicy,
    /// Ramp a joining or returning server's share up over this time.
    pub slow_start: Option<Duration>,
    pub hash_key: HashKey,
    /// Sticky sessions by cookie.
    pub sticky: Option<Sticky>,
    /// Most requests in flight per server; `None` = unlimited.
    pub max_connections: Option<usize>,
    pub queue_timeout: Duration,
    pub queue_size: usize,
    pub tls: Option<UpstreamTls>,
    pub upstream_h2: bool,
    /// The per-server limit follows latency (bounded by `max_connections`).
    pub adaptive: bool,
    /// A waiting request gains one priority step per `aging` waited.
    pub aging: Duration,
    /// Per class (index into `Config::classes`): cap, priority, queue bounds.
    pub classes: Vec<ClassRule>,
}

/// How a pool treats one request class.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassRule {
    /// Requests of the class in flight per server; `None` = only the server's limit.
    pub cap: Option<usize>,
    pub priority: i32,
    pub queue_size: usize,
    pub queue_timeout: Duration,
}

/// TLS to a pool's servers, built at load time.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    pub client: Arc<rustls::ClientConfig>,
    /// Overrides the name sent in SNI and checked in the certificate.
    pub server_name: Option<rustls::pki_types::ServerName<'static>>,
}

/// `[pools.NAME.health]`.
#[derive(Debug, Clone)]
pub struct HealthCheck {
    pub method: http::Method,
    pub path: http::uri::PathAndQuery,
    pub host: Option<http::HeaderValue>,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_after: u32,
    pub unhealthy_after: u32,
    /// Inclusive status ranges that count as healthy (default 200-399).
    pub expect_status: Vec<(u16, u16)>,
    pub body_contains: Option<String>,
    /// A probe timeout counts while the server is busy with proxied requests
    /// (`busy = "fail"`); by default it does not (`busy = "alive"`).
    pub busy_fails: bool,
    /// Panic mode: when no server passes (or fewer than `panic_threshold` percent),
    /// the pool serves its servers that fail only their checks.
    pub panic: bool,
    /// Percent of servers that must pass; 0 (default) = panic only when none does.
    pub panic_threshold: u8,
}

/// `[pools.NAME.passive]`.
#[derive(Debug, Clone)]
pub struct Passive {
    pub eject_after: u32,
    /// 0 = 5xx responses never eject.
    pub eject_after_5xx: u32,
    pub ejection_time: Duration,
    pub max_ejection_time: Duration,
}

/// `[pools.NAME.retry]`.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub idempotent: Vec<http::Method>,
    /// Re-send (an idempotent request) after a read timeout; off by default, as a
    /// request that timed out is often slow because of load that a re-send doubles.
    pub on_timeout: bool,
    /// Largest request body kept so an idempotent request can be re-sent (0 = only bodyless).
    pub body_limit: usize,
    pub budget_ratio: f64,
    pub budget_min_per_sec: u32,
}

/// What `balance = "hash"` hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    ClientIp,
    Header(http::HeaderName),
    Cookie(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerConfig {
    pub addr: SocketAddr,
    pub weight: u32,
}

/// A server given by name, resolved in the background into servers of its pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NameConfig {
    /// `host:port`: every A/AAAA address of `host`, each with `weight`.
    Host {
        host: String,
        port: u16,
        weight: u32,
    },
    /// An SRV name: targets, ports and weights from its records.
    Srv { name: String },
}

impl std::fmt::Display for NameConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NameConfig::Host { host, port, .. } => write!(f, "{host}:{port}"),
            NameConfig::Srv { name } => write!(f, "srv {name}"),
        }
    }
}

/// `[resolver]`: DNS servers (`None`: the system's `/etc/resolv.conf`), per-query
/// timeout and attempts. `/etc/hosts` is always read first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverSettings {
    pub nameservers: Option<Vec<SocketAddr>>,
    pub timeout: Duration,
    pub attempts: usize,
}

/// Read, parse and validate a config file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let src = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError::at(
            path,
            "",
            None,
            format!("cannot read config file: {e}"),
        )])
    })?;
    parse(path, &src)
}

/// Parse and validate config text; `path` is only used in messages.
pub fn parse(path: &Path, src: &str) -> Result<Config, ConfigErrors> {
    let file: file::FileConfig =
        toml::from_str(src).map_err(|e| ConfigErrors(sections::errors(path, src, &e)))?;
    validate::validate(path, src, file)
}

#[cfg(test)]
mod tests;
