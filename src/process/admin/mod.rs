//! The admin API, on its own listener (default 127.0.0.1:9901), JSON unless noted:
//!
//! - `GET /health`: 200 when every pool has a healthy server (itself or down its
//!   fallback chain), else 503; a per-pool summary.
//! - `GET /upstreams`: every pool and server with state, probe results, ejections,
//!   in-flight requests, counters and latency EWMA.
//! - `POST /upstreams/{pool}/{server}/drain` and `/enable`: take a server out of
//!   rotation and back (in-flight requests finish). Needs `Authorization: Bearer
//!   <token>`; refused outright when no token is configured.
//! - `GET /metrics`: Prometheus text exposition.
//! - `GET /config`: generation, load time and the last reload error (with line:col);
//!   `POST /config/reload` (token) reloads now.
//!
//! `status.rs` builds the JSON of `/upstreams` and `/config`.

mod status;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

use self::status::{config_status, upstreams};
use crate::health::{Event, Events};
use crate::state::{SharedState, Snapshot};

/// What the admin handlers need.
#[derive(Debug)]
pub struct Admin {
    pub state: Arc<SharedState>,
    pub events: Events,
    pub reloads: super::trigger::Reloads,
    /// Flips when the process starts stopping, lame duck included: `/health/live`
    /// and `/health/ready` fail from then on.
    pub failing: watch::Receiver<bool>,
    /// The client connection cap (`/connections`, `/metrics`).
    pub cap: Arc<crate::conn_cap::ConnectionCap>,
}

/// Serve the admin API until `stop` flips.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, mut stop: watch::Receiver<bool>) {
    loop {
        let (stream, _) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => return,
        };
        let admin = admin.clone();
        // The proxy listeners' header timeout bounds a slow or silent admin client too.
        let wait = admin.state.load().server.header_timeout;
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(handle(req, &admin).await) }
            });
            let mut b = auto::Builder::new(TokioExecutor::new());
            b.http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(wait);
            let _ = b.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

/// Resolves once `stop` flips (without holding its guard across an await).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn reply(status: StatusCode, v: &Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{v:#}\n"))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

async fn handle(req: Request<Incoming>, admin: &Admin) -> Response<Full<Bytes>> {
    let snap = admin.state.load();
    let path = req.uri().path().to_owned();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    // HEAD is GET without the body (hyper leaves the body out).
    let method = if req.method() == Method::HEAD {
        &Method::GET
    } else {
        req.method()
    };
    match (method, segs.as_slice()) {
        (&Method::GET, ["health"]) => health(&snap, None),
        (&Method::GET, ["health", "ready"]) if *admin.failing.borrow() => stopping(),
        (&Method::GET, ["health", "ready"]) => health(&snap, pool_param(&req).as_deref()),
        (&Method::GET, ["health", "live"]) => live(admin),
        (&Method::GET, ["upstreams"]) => {
            reply(StatusCode::OK, &upstreams(&snap, &admin.state.names))
        }
        (&Method::GET, ["config"]) => reply(StatusCode::OK, &config_status(&admin.reloads)),
        (&Method::POST, ["config", "reload"]) => match authorize(&req, &snap) {
            Err(resp) => *resp,
            Ok(()) => reload(admin).await,
        },
        (&Method::GET, ["metrics"]) => metrics(&snap, &admin.cap),
        (&Method::GET, ["connections"]) => reply(StatusCode::OK, &connections(admin)),
        (&Method::POST, ["upstreams", pool, server, action @ ("drain" | "enable")]) => {
            match authorize(&req, &snap) {
                Err(resp) => *resp,
                Ok(()) => set_server(admin, pool, server, *action == "drain").await,
            }
        }
        (_, s) if allowed(s).is_some() => not_allowed(req.method(), &path, s),
        _ => reply(
            StatusCode::NOT_FOUND,
            &json!({"error": "unknown admin endpoint", "endpoints": ["GET /health", "GET /upstreams", "GET /metrics", "GET /config", "POST /config/reload", "POST /upstreams/{pool}/{server}/drain", "POST /upstreams/{pool}/{server}/enable"]}),
        ),
    }
}

/// `?pool=NAME` of `/health/ready`.
fn pool_param(req: &Request<Incoming>) -> Option<String> {
    let q = req.uri().query()?;
    form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == "pool")
        .map(|(_, v)| v.into_owned())
}

/// `POST /config/reload`: reload now and answer with the outcome.
async fn reload(admin: &Admin) -> Response<Full<Bytes>> {
    match admin.reloads.reload_now().await {
        Ok(g) => reply(StatusCode::OK, &json!({"generation": g, "applied": true})),
        Err(e) => reply(
            StatusCode::BAD_REQUEST,
            &json!({"applied": false, "error": e}),
        ),
    }
}

/// `GET /connections`: client connections against the cap.
fn connections(admin: &Admin) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let cap = &admin.cap;
    json!({
        "open": cap.open(),
        "max_connections": cap.max,
        "at_cap": cap.open() >= cap.max,
        "capped": cap.capped.load(Relaxed),
        "reclaimed_idle": cap.reclaimed.load(Relaxed),
        "descriptors": super::limits::nofile(),
    })
}

/// `GET /metrics`: the Prometheus text format 0.0.4.
fn metrics(snap: &Snapshot, cap: &crate::conn_cap::ConnectionCap) -> Response<Full<Bytes>> {
    use std::sync::atomic::Ordering::Relaxed;
    let m = &snap.metrics;
    m.connections_max
        .set(i64::try_from(cap.max).unwrap_or(i64::MAX));
    let capped = cap.capped.load(Relaxed);
    m.connections_capped
        .inc_by(capped.saturating_sub(m.connections_capped.get()));
    let reclaimed = cap.reclaimed.load(Relaxed);
    m.connections_reclaimed
        .inc_by(reclaimed.saturating_sub(m.connections_reclaimed.get()));
    let text = snap.metrics.render(&snap.pools, &snap.views, &snap.classes);
    let mut r = Response::new(Full::new(Bytes::from(text)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// `POST /upstreams/POOL/SERVER/drain` (or `enable`), carried out by the health manager.
async fn set_server(admin: &Admin, pool: &str, server: &str, drain: bool) -> Response<Full<Bytes>> {
    let Ok(addr) = server.parse::<SocketAddr>() else {
        return reply(
            StatusCode::BAD_REQUEST,
            &json!({"error": format!("{server:?} is not an IP:port address")}),
        );
    };
    let (tx, rx) = oneshot::channel();
    let ev = Event::Admin {
        pool: pool.to_owned(),
        addr,
        drain,
        reply: tx,
    };
    let stopped = || {
        reply(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"error": "health manager stopped"}),
        )
    };
    if !admin.events.send_wait(ev).await {
        return stopped();
    }
    match rx.await {
        Ok(Ok(state)) => reply(
            StatusCode::OK,
            &json!({"pool": pool, "server": server, "state": state}),
        ),
        Ok(Err(e)) => reply(StatusCode::NOT_FOUND, &json!({"error": e})),
        Err(_) => stopped(),
    }
}

/// 405 with `Allow` for a known endpoint asked with the wrong method.
fn not_allowed(method: &Method, path: &str, segs: &[&str]) -> Response<Full<Bytes>> {
    let mut r = reply(
        StatusCode::METHOD_NOT_ALLOWED,
        &json!({"error": format!("{method} is not allowed on {path}")}),
    );
    if let Some(a) = allowed(segs) {
        r.headers_mut()
            .insert(header::ALLOW, http::HeaderValue::from_static(a));
    }
    r
}

/// The methods a known admin path takes (`None`: no such path).
fn allowed(segs: &[&str]) -> Option<&'static str> {
    match segs {
        ["health" | "upstreams" | "config" | "metrics" | "connections"]
        | ["health", "live" | "ready"] => Some("GET, HEAD"),
        ["config", "reload"] | ["upstreams", _, _, "drain" | "enable"] => Some("POST"),
        _ => None,
    }
}

/// Bearer-token check in constant time; no token configured refuses every change.
fn authorize(req: &Request<Incoming>, snap: &Snapshot) -> Result<(), Box<Response<Full<Bytes>>>> {
    let Some(token) = &snap.admin_token else {
        return Err(Box::new(reply(
            StatusCode::FORBIDDEN,
            &json!({"error": "changes are disabled: set [admin] token or token_env"}),
        )));
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let same = given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        return Ok(());
    }
    let mut r = reply(
        StatusCode::UNAUTHORIZED,
        &json!({"error": "missing or wrong bearer token"}),
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Bearer"),
    );
    Err(Box::new(r))
}

fn serving(snap: &Snapshot, first: usize) -> bool {
    let mut at = Some(first);
    for _ in 0..=snap.pools.len() {
        let Some(i) = at else { return false };
        if snap.view(i).is_some_and(|v| !v.is_empty()) {
            return true;
        }
        at = snap.pools.get(i).and_then(|p| p.cfg.fallback);
    }
    false
}

/// Liveness: the process is up and accepting, and not draining. No backend counts, so
/// a VIP is not dropped on both load balancers when the cause is shared.
fn live(admin: &Admin) -> Response<Full<Bytes>> {
    if *admin.failing.borrow() {
        return stopping();
    }
    reply(StatusCode::OK, &json!({"status": "live"}))
}

fn stopping() -> Response<Full<Bytes>> {
    reply(
        StatusCode::SERVICE_UNAVAILABLE,
        &json!({"status": "stopping"}),
    )
}

/// Readiness: every pool (or `only` that one) has a healthy server, itself or down
/// its fallback chain.
fn health(snap: &Snapshot, only: Option<&str>) -> Response<Full<Bytes>> {
    if let Some(name) = only
        && !snap.pools.iter().any(|p| &*p.name == name)
    {
        return reply(
            StatusCode::NOT_FOUND,
            &json!({"error": format!("no pool named {name:?}")}),
        );
    }
    let mut ok = true;
    let pools: Vec<Value> = snap
        .pools
        .iter()
        .filter(|p| only.is_none_or(|n| *p.name == *n))
        .map(|p| {
            let view = snap.view(p.index);
            let panic = view.is_some_and(|v| v.panic);
            let healthy = p
                .endpoints
                .iter()
                .filter(|e| e.stats.status().state == crate::upstream::ServerState::Healthy)
                .count();
            let serves = serving(snap, p.index);
            ok &= serves;
            json!({
                "pool": &*p.name,
                "healthy": healthy,
                "panic": panic,
                "servers": p.endpoints.len(),
                "fallback": p.cfg.fallback.and_then(|f| snap.pools.get(f)).map(|f| &*f.name),
                "serving": serves,
            })
        })
        .collect();
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    reply(
        status,
        &json!({"status": if ok { "ok" } else { "degraded" }, "generation": snap.generation, "pools": pools}),
    )
}
