//! Serde-facing shape of `switchyard.toml`: the `File*` structs.
//!
//! This layer only checks syntax and types; `validate.rs` turns it into the runtime
//! [`Config`](super::Config). Every struct rejects unknown keys, and every value that
//! validation inspects is wrapped in [`Spanned`] so an error can point at it.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

/// A string value with its position in the file.
pub type SpanStr = Spanned<String>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub listeners: Vec<Spanned<FileListener>>,
    #[serde(default)]
    pub server: FileServer,
    #[serde(default)]
    pub log: FileLog,
    #[serde(default)]
    pub pools: BTreeMap<SpanStr, Spanned<FilePool>>,
    #[serde(default)]
    pub routes: Vec<Spanned<FileRoute>>,
    #[serde(default)]
    pub admin: FileAdmin,
    #[serde(default)]
    pub reload: FileReload,
    #[serde(default)]
    pub runtime: FileRuntime,
    /// Site mapping (Frappe sites, or any tenant name).
    pub sites: Option<FileSites>,
    /// Response compression (nginx `gzip`).
    pub compression: Option<FileCompression>,
    /// How server names are resolved (`[resolver]`).
    #[serde(default)]
    pub resolver: FileResolver,
}

/// `[resolver]`: the DNS servers names are resolved with; default the system's.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileResolver {
    pub nameservers: Option<Vec<SpanStr>>,
    pub timeout: Option<SpanStr>,
    pub attempts: Option<Spanned<usize>>,
}

/// `[sites]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSites {
    /// The header the proxy always sets upstream to the site (default `X-Frappe-Site-Name`).
    pub header: Option<SpanStr>,
    /// Domain → site, for hosts that are aliases of a site folder.
    #[serde(default)]
    pub domains: BTreeMap<SpanStr, SpanStr>,
}

/// `[compression]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCompression {
    pub enabled: Option<bool>,
    /// Content types compressed (without parameters); `text/html` is always included.
    pub types: Option<Vec<SpanStr>>,
    /// 1 (fast) to 9 (small) for gzip; brotli and zstd use their equivalent.
    pub level: Option<Spanned<u32>>,
    /// Responses whose length is known and smaller are sent as they are.
    pub min_length: Option<u64>,
    pub gzip: Option<bool>,
    pub brotli: Option<bool>,
    pub zstd: Option<bool>,
}

/// `[runtime]`: how the process runs.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRuntime {
    /// Worker threads; default: one per core.
    pub workers: Option<Spanned<usize>>,
    /// How the workers share connections: `"per-worker"` (default) or `"work-stealing"`.
    pub scheduler: Option<SpanStr>,
    /// Unix socket a `--takeover` start takes the listening sockets from.
    pub control_socket: Option<SpanStr>,
}

/// `[reload]`: live configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileReload {
    pub watch: Option<bool>,
    pub debounce: Option<SpanStr>,
}

/// The admin API listener.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAdmin {
    pub enabled: Option<bool>,
    pub addr: Option<SpanStr>,
    /// Bearer token for the endpoints that change state.
    pub token: Option<SpanStr>,
    /// Name of an environment variable holding the token (keeps it out of the file).
    pub token_env: Option<SpanStr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileListener {
    pub name: Option<SpanStr>,
    pub addr: SpanStr,
    #[serde(default)]
    pub trusted_proxies: Vec<SpanStr>,
    /// Certificates; the first is the default for unknown or missing SNI.
    #[serde(default)]
    pub tls: Vec<Spanned<FileTls>>,
    /// Answer every request with a 301 to the same URL over https.
    pub redirect_https: Option<bool>,
    /// Largest request body (nginx `client_max_body_size`); routes may override.
    pub max_body_size: Option<SpanStr>,
    /// `{ "502" = "502.html" }`: pages for errors the proxy generates (nginx `error_page`).
    #[serde(default)]
    pub error_pages: BTreeMap<SpanStr, SpanStr>,
    /// Added to every response on this listener, after the route's.
    #[serde(default)]
    pub add_response_headers: BTreeMap<SpanStr, SpanStr>,
    /// `false`: add them only to success and redirect statuses, as nginx's `add_header`
    /// without `always` does.
    pub response_headers_always: Option<bool>,
    /// Every request on this listener belongs to this site (bench's per-port sites).
    pub site: Option<SpanStr>,
    /// At most this many requests in flight per Host (nginx `limit_conn $host`).
    pub max_requests_per_host: Option<u32>,
    /// Bind an address the host does not have yet (IP_FREEBIND; a keepalived VIP).
    pub freebind: Option<bool>,
    /// Also serve HTTP/3 (QUIC) on the same port over UDP; needs `tls`.
    pub http3: Option<Spanned<bool>>,
    /// `ma` of the `Alt-Svc` header that advertises HTTP/3 (default 24h).
    pub http3_alt_svc_max_age: Option<SpanStr>,
    /// Accept 0-RTT early data (safe methods only; others get 425). Default false.
    pub http3_early_data: Option<bool>,
    /// Address validation with a Retry packet: "auto" (under a handshake flood) or "always".
    pub http3_retry: Option<SpanStr>,
    /// Concurrent request streams per QUIC connection (default 128).
    pub http3_max_streams: Option<Spanned<u32>>,
    /// Close a QUIC connection idle this long (default 60s).
    pub http3_idle_timeout: Option<SpanStr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTls {
    pub cert: SpanStr,
    pub key: SpanStr,
}

/// Client-facing limits and timeouts (nginx's `client_*` and `keepalive_*`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileServer {
    pub header_timeout: Option<SpanStr>,
    pub body_timeout: Option<SpanStr>,
    pub send_timeout: Option<SpanStr>,
    pub drain_timeout: Option<SpanStr>,
    pub lame_duck: Option<SpanStr>,
    pub max_header_bytes: Option<Spanned<u64>>,
    pub max_uri_bytes: Option<Spanned<u64>>,
    pub param_body_limit: Option<Spanned<u64>>,
    pub param_body_timeout: Option<SpanStr>,
    pub tunnel_idle_timeout: Option<SpanStr>,
    /// Client connections open at once (nginx `worker_connections`, HAProxy `maxconn`).
    pub max_connections: Option<Spanned<usize>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLog {
    pub access_log: Option<SpanStr>,
    pub access_format: Option<AccessFormat>,
}

/// Access-log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessFormat {
    /// nginx `combined`, extended with `key=value` fields for route, pool and timings.
    #[default]
    Combined,
    /// One JSON object per line.
    Json,
}

/// How a pool spreads requests over its servers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Smooth weighted round robin, as nginx does it.
    #[default]
    RoundRobin,
    /// Fewest requests in flight relative to weight.
    LeastConn,
    /// Power of two random choices on in-flight requests × latency EWMA.
    RandomTwo,
    /// Consistent hashing on `hash_key` (client IP, a header or a cookie).
    Hash,
}

impl Balance {
    pub fn as_str(self) -> &'static str {
        match self {
            Balance::RoundRobin => "round_robin",
            Balance::LeastConn => "least_conn",
            Balance::RandomTwo => "random_two",
            Balance::Hash => "hash",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePool {
    pub servers: Vec<Spanned<FileServerEntry>>,
    #[serde(default)]
    pub balance: Balance,
    pub connect_timeout: Option<SpanStr>,
    pub read_timeout: Option<SpanStr>,
    pub idle_timeout: Option<SpanStr>,
    pub keepalive: Option<usize>,
    pub fallback: Option<SpanStr>,
    pub health: Option<Spanned<FileHealth>>,
    #[serde(default)]
    pub passive: FilePassive,
    #[serde(default)]
    pub retry: FileRetry,
    pub slow_start: Option<SpanStr>,
    pub hash_key: Option<SpanStr>,
    pub max_connections: Option<Spanned<usize>>,
    pub queue_timeout: Option<SpanStr>,
    pub queue_size: Option<usize>,
    /// TLS to the servers of this pool.
    pub tls: Option<Spanned<FileUpstreamTls>>,
    /// Speak HTTP/2 to the servers (h2c prior knowledge, or ALPN h2 over TLS).
    pub upstream_h2: Option<bool>,
    /// `"static"` (default) or `"adaptive"`: the per-server limit follows latency.
    pub limit: Option<SpanStr>,
    /// A waiting request gains one priority step per `aging` waited.
    pub aging: Option<SpanStr>,
    /// How often names among `servers` are re-resolved at most (default 5 s).
    pub resolve_interval: Option<SpanStr>,
    /// `"live"` (default: names resolved in the background, a pool may start empty)
    /// or `"at_start"` (resolved once at load; a name that does not resolve is an error).
    pub resolve: Option<SpanStr>,
    /// Sticky sessions by cookie (`[pools.NAME.sticky]`).
    pub sticky: Option<FileSticky>,
    /// Request classes: caps and priorities (`[pools.NAME.classes.CLASS]`).
    #[serde(default)]
    pub classes: BTreeMap<SpanStr, Spanned<FileClass>>,
}

/// `[pools.NAME.sticky]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSticky {
    pub cookie: Option<SpanStr>,
    pub path: Option<SpanStr>,
    /// `Secure`: always, never, or (unset) on HTTPS requests.
    pub secure: Option<bool>,
    pub http_only: Option<bool>,
    pub same_site: Option<SpanStr>,
    /// Lifetime; unset = a session cookie.
    pub max_age: Option<SpanStr>,
    /// Key of the cookie's digest, for several proxies that must agree.
    pub secret: Option<String>,
}

/// `[pools.NAME.classes.CLASS]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileClass {
    /// Requests of this class in flight per server.
    pub max_connections: Option<Spanned<usize>>,
    /// Higher goes first; `default` is 0.
    pub priority: Option<i32>,
    pub queue_size: Option<usize>,
    pub queue_timeout: Option<SpanStr>,
}

/// `[pools.NAME.tls]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileUpstreamTls {
    /// PEM file of CA certificates to trust; the system roots when absent.
    pub ca: Option<SpanStr>,
    /// SNI and verification name; the server's address when absent.
    pub server_name: Option<SpanStr>,
}

/// `[pools.NAME.health]`: active checks.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHealth {
    pub method: Option<SpanStr>,
    pub path: Option<SpanStr>,
    pub host: Option<SpanStr>,
    pub interval: Option<SpanStr>,
    pub timeout: Option<SpanStr>,
    pub healthy_after: Option<Spanned<u32>>,
    pub unhealthy_after: Option<Spanned<u32>>,
    pub expect_status: Option<Spanned<StringList>>,
    pub body_contains: Option<String>,
    /// `"alive"` (default) or `"fail"`: whether a timeout counts while the server is busy.
    pub busy: Option<SpanStr>,
    /// Panic mode on (default) or off.
    pub panic: Option<bool>,
    /// Percent (0-100, default 0 = none passes): below it the pool serves its failing
    /// servers too.
    pub panic_threshold: Option<Spanned<u8>>,
}

/// `[pools.NAME.passive]`: outlier ejection from live traffic.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePassive {
    pub eject_after: Option<u32>,
    pub eject_after_5xx: Option<u32>,
    pub ejection_time: Option<SpanStr>,
    pub max_ejection_time: Option<SpanStr>,
}

/// `[pools.NAME.retry]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRetry {
    pub attempts: Option<Spanned<u32>>,
    pub idempotent_methods: Option<Spanned<StringList>>,
    pub on_timeout: Option<bool>,
    pub body_limit: Option<u64>,
    pub budget_ratio: Option<Spanned<f64>>,
    pub budget_min_per_sec: Option<u32>,
}

/// `"10.0.0.1:8000"`, `"backend:8000"`, `{ addr = "10.0.0.1:8000", weight = 2 }` or
/// `{ srv = "_http._tcp.gunicorn.erp.svc.cluster.local" }`.
#[derive(Debug)]
pub struct FileServerEntry {
    pub addr: Option<String>,
    pub srv: Option<String>,
    pub weight: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileServerTable {
    addr: Option<String>,
    srv: Option<String>,
    #[serde(default = "default_weight")]
    weight: u32,
}

/// A server without an explicit weight counts once.
fn default_weight() -> u32 {
    1
}

impl<'de> Deserialize<'de> for FileServerEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FileServerEntry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    r#"an address "host:port", a table { addr = "host:port", weight = N } or { srv = "_service._proto.name" }"#,
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(FileServerEntry {
                    addr: Some(v.to_owned()),
                    srv: None,
                    weight: default_weight(),
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let t = FileServerTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(FileServerEntry {
                    addr: t.addr,
                    srv: t.srv,
                    weight: t.weight,
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRoute {
    pub name: SpanStr,
    /// Where requests go; with `root`, where they go when no file exists.
    pub pool: Option<SpanStr>,
    /// Serve files from this directory (`{site}` allowed).
    pub root: Option<SpanStr>,
    pub strip_prefix: Option<SpanStr>,
    /// Follow symlinks that lead out of `root` (default false).
    pub follow_symlinks: Option<bool>,
    /// Serve precompressed `.gz`/`.br`/`.zst` siblings (default true).
    pub precompressed: Option<bool>,
    pub cache_control: Option<SpanStr>,
    pub expires: Option<SpanStr>,
    /// Answer with a redirect to this target (`$1`… from `path_regex`).
    pub redirect: Option<SpanStr>,
    /// 301 (default), 302, 303, 307 or 308.
    pub redirect_status: Option<Spanned<u16>>,
    /// Only reachable through `X-Accel-Redirect`.
    pub internal: Option<bool>,
    /// Ask the app for `X-Accel-Redirect` answers and serve them.
    pub accel_redirect: Option<bool>,
    /// `false`: never compress this route's responses.
    pub compress: Option<bool>,
    /// Request class (`default` when absent): pools may cap and prioritise it.
    pub class: Option<SpanStr>,
    #[serde(rename = "match", default)]
    pub matcher: Option<Spanned<FileMatch>>,
    pub timeout: Option<SpanStr>,
    #[serde(default)]
    pub add_request_headers: BTreeMap<SpanStr, SpanStr>,
    #[serde(default)]
    pub set_request_headers: BTreeMap<SpanStr, SpanStr>,
    #[serde(default)]
    pub remove_request_headers: Vec<SpanStr>,
    #[serde(default)]
    pub add_response_headers: BTreeMap<SpanStr, SpanStr>,
    /// Largest request body on this route; overrides the listener's (`"0"`: no limit).
    pub max_body_size: Option<SpanStr>,
    /// Error pages on this route, before the listener's.
    #[serde(default)]
    pub error_pages: BTreeMap<SpanStr, SpanStr>,
    /// `false`: `add_response_headers` only on success and redirect statuses.
    pub response_headers_always: Option<bool>,
}

/// The conditions of one route; all given ones must hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileMatch {
    pub listener: Option<Spanned<StringList>>,
    pub host: Option<Spanned<StringList>>,
    pub path: Option<Spanned<StringList>>,
    pub path_prefix: Option<Spanned<StringList>>,
    pub path_regex: Option<Spanned<StringList>>,
    pub method: Option<Spanned<StringList>>,
    #[serde(default)]
    pub query: BTreeMap<SpanStr, Spanned<QueryValue>>,
    #[serde(default)]
    pub header: BTreeMap<SpanStr, Spanned<StringList>>,
    #[serde(default)]
    pub param: BTreeMap<SpanStr, Spanned<StringList>>,
}

/// One string or a list of strings ("any of these").
#[derive(Debug, Default)]
pub struct StringList(pub Vec<String>);

impl<'de> Deserialize<'de> for StringList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match QueryValue::deserialize(d)? {
            QueryValue::Values(v) => Ok(StringList(v)),
            QueryValue::Present => Err(de::Error::custom(
                "expected a string or a list of strings, found a boolean",
            )),
        }
    }
}

/// A query condition: a list of accepted values, or `true` for "present with any value".
#[derive(Debug)]
pub enum QueryValue {
    Present,
    Values(Vec<String>),
}

impl<'de> Deserialize<'de> for QueryValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = QueryValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, a list of strings, or true")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                if v {
                    Ok(QueryValue::Present)
                } else {
                    Err(E::custom(
                        "`false` is not a condition; remove the key instead",
                    ))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(QueryValue::Values(vec![v.to_owned()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                if out.is_empty() {
                    return Err(de::Error::custom("an empty list can never match"));
                }
                Ok(QueryValue::Values(out))
            }
        }
        d.deserialize_any(V)
    }
}
