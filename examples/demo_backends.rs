//! Small demo app servers for the default config: `primary-1` on 127.0.0.1:8001,
//! `primary-2` on :8002 and `secondary` on :8003. Each answers with its own name;
//! `GET /api/method/ping` answers `{"message":"pong"}` like Frappe; the report method
//! paths wait 2 s (a slow report); `/echo` sends back the request line, headers and
//! body. Run: `cargo run --example demo_backends`, then `curl localhost:8080/...`.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

async fn answer(
    name: &'static str,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let text = if path == "/api/method/ping" {
        "{\"message\":\"pong\"}\n".to_owned()
    } else if path == "/echo" {
        let mut s = format!("{} {} {:?}\n", req.method(), req.uri(), req.version());
        for (k, v) in req.headers() {
            s.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
        }
        s.push('\n');
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        s.push_str(&String::from_utf8_lossy(&body));
        s
    } else if path.contains("query_report") || path.contains("reportview") {
        tokio::time::sleep(Duration::from_secs(2)).await;
        format!("{name}: report done after 2s ({path})\n")
    } else {
        format!("{name}: {} {path}\n", req.method())
    };
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    resp.headers_mut()
        .insert("x-backend", hyper::header::HeaderValue::from_static(name));
    Ok(resp)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let servers = [
        ("primary-1", 8001),
        ("primary-2", 8002),
        ("secondary", 8003),
    ];
    let mut tasks = Vec::new();
    for (name, port) in servers {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        println!("{name} listening on 127.0.0.1:{port}");
        tasks.push(tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let svc = service_fn(move |req| answer(name, req));
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        }));
    }
    tokio::signal::ctrl_c().await?;
    Ok(())
}
