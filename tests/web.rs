//! Serving what nginx serves in front of Frappe, through real sockets: static files
//! (types, caching, ETag/304, Range/206/416, HEAD, precompressed), every traversal
//! form, symlinks, sites by Host and alias, X-Accel-Redirect, rewrites, compression.
//! The app server is a raw-socket peer (`support::wire`) that records what it gets.

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use support::wire::*;
use support::*;

const SECRET: &str = "db_password_s3cret";

/// A bench-like tree: `sites/` with assets (one app a symlink into `apps/`), two
/// sites with public and private files and a `site_config.json` holding a password,
/// and a symlink planted in one site's public files that points at the other's config.
struct Bench {
    dir: PathBuf,
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

/// 1 KiB of JavaScript.
fn app_js() -> Vec<u8> {
    "console.log('switchyard');\n".repeat(40).into_bytes()[..1024].to_vec()
}

impl Bench {
    fn new(tag: &str) -> Bench {
        let dir = std::env::temp_dir().join(format!("sy-web-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = dir.join("sites");
        write(&s.join("assets/app/app.js"), &app_js());
        write(&s.join("assets/app/big.css"), &vec![b'a'; 4096]);
        write(&s.join("assets/app/pre.css"), b"body{color:red}");
        write(&s.join("assets/app/pre.css.gz"), &gzip(b"body{color:red}"));
        write(&dir.join("apps/frappe/public/desk.css"), b".desk{}");
        std::os::unix::fs::symlink(dir.join("apps/frappe/public"), s.join("assets/frappe"))
            .unwrap();
        for site in ["erp.test", "hr.test"] {
            let conf = format!("{{\"db_name\":\"{site}\",\"db_password\":\"{SECRET}\"}}");
            write(&s.join(site).join("site_config.json"), conf.as_bytes());
            write(&s.join(site).join("public/files/logo.png"), site.as_bytes());
            write(
                &s.join(site).join("public/files/page.html"),
                b"<p>uploaded</p>",
            );
            write(
                &s.join(site).join("private/files/secret.pdf"),
                format!("%PDF {site} private").as_bytes(),
            );
        }
        std::os::unix::fs::symlink(
            s.join("hr.test/site_config.json"),
            s.join("erp.test/public/files/evil.json"),
        )
        .unwrap();
        Bench { dir }
    }

    fn sites(&self) -> String {
        self.dir.join("sites").display().to_string()
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// 100 KiB of JSON, as a large report answer.
fn report_json() -> Vec<u8> {
    let row = "{\"item\":\"ITEM-0001\",\"warehouse\":\"Stores - X\",\"qty\":12.5},";
    let mut s = String::from("{\"message\":[");
    while s.len() < 100 * 1024 {
        s.push_str(row);
    }
    s.push_str("{}]}");
    s.into_bytes()
}

/// The app server: private files answer with X-Accel-Redirect, `/api/report` with a
/// large JSON body, `/api/small` a short one, `/api/encoded` an already gzipped one.
async fn app() -> WireBackend {
    WireBackend::scripted(|r| {
        let target = r.line.split(' ').nth(1).unwrap_or("").to_owned();
        let reply = |head: &str, body: &[u8]| {
            let mut v = format!("HTTP/1.1 200 OK\r\n{head}Content-Length: {}\r\n\r\n", body.len()).into_bytes();
            v.extend_from_slice(body);
            vec![Step::Send(v)]
        };
        if target.starts_with("/private/files/escape") {
            return reply("X-Accel-Redirect: /protected/%2e%2e/site_config.json\r\n", b"");
        }
        if target.starts_with("/private/files/") {
            let name = target.trim_start_matches("/private/files/");
            return reply(
                &format!("X-Accel-Redirect: /protected/private/files/{name}?v=1\r\nContent-Type: application/pdf\r\nSet-Cookie: sid=abc; HttpOnly\r\nX-Frappe-Request-Id: 42\r\nCache-Control: private,max-age=3600\r\nX-Accel-Buffering: no\r\n"),
                b"",
            );
        }
        match target.as_str() {
            "/api/report" => reply("Content-Type: application/json\r\nX-Accel-Buffering: no\r\n", &report_json()),
            "/api/small" => reply("Content-Type: application/json\r\n", b"{\"message\":\"pong\"}"),
            "/api/encoded" => reply("Content-Type: application/json\r\nContent-Encoding: gzip\r\n", &gzip(&report_json())),
            _ => reply("Content-Type: text/plain\r\n", b"from the app"),
        }
    })
    .await
}

/// What `switchyard frappe-bench` makes of the bench, by hand: assets, protected files,
/// forced downloads, nginx's rewrites, and the site's public files before the app.
fn config(bench: &Bench, app: std::net::SocketAddr) -> Config {
    let sites = bench.sites();
    let public = format!(r#"root = "{sites}/{{site}}/public""#);
    Config::bare()
        .listener(
            "{listen}",
            r#"add_response_headers = { "X-Frame-Options" = "SAMEORIGIN" }"#,
        )
        .toml(
            r#"
            [sites]
            domains = { "erp-alias.test" = "erp.test" }
            [compression]
            min_length = 256
            "#,
        )
        .pool("web", [app], r#"read_timeout = "5s""#)
        .action_route(
            "assets",
            &format!(
                r#"
                match.path_prefix = "/assets"
                root = "{sites}"
                follow_symlinks = true
                cache_control = "max-age=31536000"
                "#
            ),
        )
        .action_route(
            "protected",
            &format!(
                r#"
                match.path_prefix = "/protected"
                internal = true
                root = "{sites}/{{site}}"
                strip_prefix = "/protected"
                "#
            ),
        )
        .route(
            "forced-download",
            "web",
            &format!(
                r#"
                match.path_regex = '(?i)/files/.*.(htm|html|svg|xml).*'
                {public}
                accel_redirect = true
                add_response_headers = {{ "Content-Disposition" = "attachment" }}
                "#
            ),
        )
        .action_route(
            "strip-slash",
            "match.path_regex = '(.+)/'\nredirect = \"$1\"",
        )
        .action_route(
            "strip-index",
            "match.path_regex = '(.+)/index\\.html'\nredirect = \"$1\"",
        )
        .action_route(
            "strip-html",
            "match.path_regex = '(.+)\\.html'\nredirect = \"$1\"",
        )
        .route("site", "web", &format!("{public}\naccel_redirect = true"))
}

/// One HTTP/1.x exchange on its own connection (`Connection: close` is added for
/// HTTP/1.1): the head, lower-cased field names, and the body (de-chunked).
async fn fetch(addr: std::net::SocketAddr, req: &str) -> (String, Vec<u8>) {
    let req = if req.contains("HTTP/1.1") {
        req.replacen("\r\n", "\r\nConnection: close\r\n", 1)
    } else {
        req.to_owned()
    };
    let got = raw_bytes(addr, format!("{req}\r\n").as_bytes()).await;
    let end = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&got[..end]).to_string();
    let mut body = got[end + 4..].to_vec();
    if field(&head, "transfer-encoding").as_deref() == Some("chunked") {
        body = dechunk(&body);
    }
    (head, body)
}

async fn raw_bytes(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await;
    out
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let n = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 2 + n + 2..];
    }
}

fn status(head: &str) -> u16 {
    head.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn field(head: &str, name: &str) -> Option<String> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_owned())
}

fn fields(head: &str, name: &str) -> Vec<String> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_owned())
        .collect()
}

#[tokio::test]
async fn assets_are_served_with_type_caching_etag_304_range_and_head() {
    let bench = Bench::new("assets");
    let app = app().await;
    let p = Proxy::start(&config(&bench, app.addr)).await;
    let (h, body) = fetch(
        p.addr(),
        "GET /assets/app/app.js HTTP/1.1\r\nHost: erp.test\r\n",
    )
    .await;
    assert_eq!(status(&h), 200, "{h}");
    assert_eq!(body, app_js());
    assert_eq!(
        field(&h, "content-type").as_deref(),
        Some("application/javascript")
    );
    assert_eq!(
        field(&h, "cache-control").as_deref(),
        Some("max-age=31536000")
    );
    assert_eq!(field(&h, "content-length").as_deref(), Some("1024"));
    assert_eq!(field(&h, "x-frame-options").as_deref(), Some("SAMEORIGIN"));
    let etag = field(&h, "etag").expect("an ETag");
    let modified = field(&h, "last-modified").expect("a Last-Modified");

    let (h, body) = fetch(
        p.addr(),
        &format!("GET /assets/app/app.js HTTP/1.1\r\nHost: erp.test\r\nIf-None-Match: {etag}\r\n"),
    )
    .await;
    assert_eq!(status(&h), 304, "{h}");
    assert!(body.is_empty());
    let (h, _) = fetch(
        p.addr(),
        &format!(
            "GET /assets/app/app.js HTTP/1.1\r\nHost: erp.test\r\nIf-Modified-Since: {modified}\r\n"
        ),
    )
    .await;
    assert_eq!(status(&h), 304, "{h}");

    let (h, body) = fetch(
        p.addr(),
        "GET /assets/app/app.js HTTP/1.1\r\nHost: erp.test\r\nRange: bytes=0-9\r\n",
    )
    .await;
    assert_eq!(status(&h), 206, "{h}");
    assert_eq!(
        field(&h, "content-range").as_deref(),
        Some("bytes 0-9/1024")
    );
    assert_eq!(body, app_js()[..10].to_vec());
    let (h, _) = fetch(
        p.addr(),
        "GET /assets/app/app.js HTTP/1.1\r\nHost: erp.test\r\nRange: bytes=5000-\r\n",
    )
    .await;
    assert_eq!(status(&h), 416, "{h}");

    let (h, body) = fetch(
        p.addr(),
        "HEAD /assets/app/app.js HTTP/1.1\r\nHost: erp.test\r\n",
    )
    .await;
    assert_eq!(status(&h), 200, "{h}");
    assert_eq!(field(&h, "content-length").as_deref(), Some("1024"));
    assert!(body.is_empty());

    // A missing asset is 404 (no pool on the route), and never reaches the app.
    let (h, _) = fetch(
        p.addr(),
        "GET /assets/app/nope.js HTTP/1.1\r\nHost: erp.test\r\n",
    )
    .await;
    assert_eq!(status(&h), 404, "{h}");
    // POST to a file route without a pool: 405.
    let (h, _) = fetch(
        p.addr(),
        "POST /assets/app/app.js HTTP/1.1\r\nHost: erp.test\r\nContent-Length: 0\r\n",
    )
    .await;
    assert_eq!(status(&h), 405, "{h}");
    assert_eq!(field(&h, "allow").as_deref(), Some("GET, HEAD"));
    assert!(app.requests().is_empty(), "{:?}", app.requests());
}

#[tokio::test]
async fn files_are_served_alike_to_http10_http11_and_http2_clients() {
    let bench = Bench::new("versions");
    let app = app().await;
    let p = Proxy::start(&config(&bench, app.addr)).await;
    let (h, body) = fetch(p.addr(), "GET /assets/app/app.js HTTP/1.0\r\n").await;
    assert!(h.starts_with("HTTP/1.0 200"), "{h}");
    assert_eq!(body, app_js());
    let (h, body) = fetch(
        p.addr(),
        "GET /files/logo.png HTTP/1.0\r\nHost: hr.test\r\n",
    )
    .await;
    assert_eq!(status(&h), 200, "{h}");
    assert_eq!(body, b"hr.test");

    let tcp = tokio::net::TcpStream::connect(p.addr()).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    for (uri, want) in [
        ("http://erp.test/assets/app/app.js", app_js()),
        ("http://erp-alias.test/files/logo.png", b"erp.test".to_vec()),
    ] {
        let req = Request::get(uri).body(Full::new(Bytes::new())).unwrap();
        let resp = tokio::time::timeout(WAIT, tx.send_request(req))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resp.status(), 200, "{uri}");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.to_vec(), want, "{uri}");
    }
    assert!(app.requests().is_empty());
}

#[tokio::test]
async fn assets_follow_symlinks_into_apps_but_public_files_do_not_leave_their_root() {
    let bench = Bench::new("symlinks");
    let app = app().await;
    let p = Proxy::start(&config(&bench, app.addr)).await;
    let (h, body) = fetch(
        p.addr(),
        "GET /assets/frappe/desk.css HTTP/1.1\r\nHost: erp.test\r\n",
    )
    .await;
    assert_eq!(status(&h), 200, "{h}");
    assert_eq!(body, b".desk{}");
    assert_eq!(field(&h, "content-type").as_deref(), Some("text/css"));
    // The planted symlink is not followed: no file, so the request goes to the app.
    let (h, body) = fetch(
        p.addr(),
        "GET /files/evil.json HTTP/1.1\r\nHost: erp.test\r\n",
    )
    .await;
    let text = String::from_utf8_lossy(&body);
    assert!(!text.contains(SECRET), "{h}\n{text}");
    assert_eq!(text, "from the app");
}

/// A root directory is opened once a second per worker, not per request: a root
/// swapped on disk (a deploy) is served within about that. A FIFO under a root is no
/// file (opening one for reading would wait for a writer and stall the worker).
#[tokio::test]
async fn a_swapped_root_is_seen_and_a_fifo_is_not_served() {
    let bench = Bench::new("swap");
    let app = app().await;
    let p = Proxy::start(&config(&bench, app.addr)).await;
    let public = bench.dir.join("sites/erp.test/public");
    write(&public.join("files/v.txt"), b"old");
    let get = || fetch(p.addr(), "GET /files/v.txt HTTP/1.1\r\nHost: erp.test\r\n");
    assert_eq!(get().await.1, b"old");
    std::fs::rename(&public, bench.dir.join("sites/erp.test/public.old")).unwrap();
    write(&public.join("files/v.txt"), b"new");
    let swapped = std::time::Instant::now();
    eventually("the new root is served", || async {
        get().await.1 == b"new"
    })
    .await;
    assert!(
        swapped.elapsed() < std::time::Duration::from_secs(3),
        "{:?}",
        swapped.elapsed()
    );

    let fifo = public.join("files/pipe.txt");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let req = "GET /files/pipe.txt HTTP/1.1\r\nHost: erp.test\r\n";
    let (h, body) = tokio::time::timeout(WAIT, fetch(p.addr(), req))
        .await
        .expect("a FIFO under the root stalled the proxy");
    assert_eq!(status(&h), 200, "{h}");
    assert_eq!(body, b"from the app", "{h}");
}

#[tokio::test]
async fn every_traversal_form_is_refused_and_nothing_outside_a_root_is_served() {
    let bench = Bench::new("traversal");
    let app = app().await;
    let p = Proxy::start(&config(&bench, app.addr)).await;
    let cases: &[(&str, &str, &[u16])] = &[
        ("plain", "/assets/../erp.test/site_config.json", &[200]),
        ("above the root", "/../erp.test/site_config.json", &[400]),
        (
            "deep above the root",
            "/assets/../../sites/erp.test/site_config.json",
            &[400],
        ),
        (
            "encoded dots",
            "/assets/%2e%2e/erp.test/site_config.json",
            &[200],
        ),
        ("encoded dots above", "/%2e%2e/%2e%2e/etc/passwd", &[400]),
        (
            "double encoded",
            "/assets/%252e%252e/erp.test/site_config.json",
            &[400],
        ),
        (
            "encoded slash",
            "/assets/..%2ferp.test%2fsite_config.json",
            &[400],
        ),
        (
            "encoded backslash",
            "/assets/..%5cerp.test%5csite_config.json",
            &[400],
        ),
        ("NUL", "/assets/app/app.js%00.png", &[400]),
        ("public to config", "/files/../../site_config.json", &[400]),
        ("public to its config", "/files/../site_config.json", &[200]),
        ("symlink", "/files/evil.json", &[200]),
        (
            "private by url",
            "/private/files/../../site_config.json",
            &[404],
        ),
    ];
    for (what, path, statuses) in cases {
        for host in ["erp.test", "hr.test"] {
            let (h, body) = fetch(
                p.addr(),
                &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n"),
            )
            .await;
            let text = String::from_utf8_lossy(&body);
            assert!(
                !text.contains(SECRET),
                "{what}: {path} leaked a site config:\n{h}\n{text}"
            );
            assert!(statuses.contains(&status(&h)), "{what}: {path}: {h}");
            if status(&h) == 200 {
                // Normalised inside the site's public root, not found there: the app's answer.
                assert_eq!(text, "from the app", "{what}");
            }
        }
    }
    // A Host that is not a folder name gives no site: nothing is served from a site
    // root, and no site header goes upstream.
    let (h, body) = fetch(
        p.addr(),
        "GET /site_config.json HTTP/1.1\r\nHost: ..\r\nX-Frappe-Site-Name: erp.test\r\n",
    )
    .await;
    assert_eq!(status(&h), 200, "{h}");
    assert!(!String::from_utf8_lossy(&body).contains(SECRET));
    let last = app.requests().pop().unwrap();
    assert!(
        last.values("x-frappe-site-name").is_empty(),
        "{:?}",
        last.headers
    );
}

#[tokio::test]
async fn sites_map_by_host_and_alias_and_the_site_header_is_never_the_clients() {
    let bench = Bench::new("sites");
    let app = app().await;
    let p = Proxy::start(&config(&bench, app.addr)).await;
    for (host, site) in [
        ("ERP.test:8080", "erp.test"),
        ("erp-alias.test", "erp.test"),
        ("hr.test", "hr.test"),
    ] {
        let (h, body) = fetch(
            p.addr(),
            &format!("GET /files/logo.png HTTP/1.1\r\nHost: {host}\r\n"),
        )
        .await;
        assert_eq!(status(&h), 200, "{h}");
        assert_eq!(body, site.as_bytes(), "{host}");
        let (h, _) = fetch(p.addr(), &format!("GET /api/small HTTP/1.1\r\nHost: {host}\r\nX-Frappe-Site-Name: evil.test\r\nX-Use-X-Accel-Redirect: no\r\n")).await;
        assert_eq!(status(&h), 200, "{h}");
        let r = app.requests().pop().unwrap();
        assert_eq!(r.line, "GET /api/small HTTP/1.1");
        assert_eq!(
            r.values("x-frappe-site-name"),
            vec![site.to_owned()],
            "{host}"
        );
        assert_eq!(r.values("x-use-x-accel-redirect"), vec!["True".to_owned()]);
        assert_eq!(
            r.values("host"),
            vec![host.to_owned()],
            "the Host goes upstream as sent"
        );
    }
}

#[tokio::test]
async fn x_accel_redirect_serves_the_private_file_with_only_the_six_headers_kept() {
    let bench = Bench::new("accel");
    let app = app().await;
    let p = Proxy::start(&config(&bench, app.addr)).await;
    let (h, body) = fetch(
        p.addr(),
        "GET /private/files/secret.pdf HTTP/1.1\r\nHost: erp-alias.test\r\n",
    )
    .await;
    assert_eq!(status(&h), 200, "{h}");
    assert_eq!(body, b"%PDF erp.test private");
    assert_eq!(
        field(&h, "content-type").as_deref(),
        Some("application/pdf")
    );
    assert_eq!(
        field(&h, "set-cookie").as_deref(),
        Some("sid=abc; HttpOnly")
    );
    assert_eq!(
        field(&h, "cache-control").as_deref(),
        Some("private,max-age=3600")
    );
    assert!(field(&h, "x-frappe-request-id").is_none(), "{h}");
    assert!(!h.to_ascii_lowercase().contains("x-accel"), "{h}");
    assert!(
        field(&h, "etag").is_some() && field(&h, "last-modified").is_some(),
        "{h}"
    );
    assert_eq!(field(&h, "x-frame-options").as_deref(), Some("SAMEORIGIN"));
    let r = app.requests().pop().unwrap();
    assert_eq!(r.values("x-use-x-accel-redirect"), vec!["True".to_owned()]);
    assert_eq!(r.values("x-frappe-site-name"), vec!["erp.test".to_owned()]);

    // Range and HEAD carry over to the file; a POST becomes GET.
    let (h, body) = fetch(
        p.addr(),
        "GET /private/files/secret.pdf HTTP/1.1\r\nHost: erp.test\r\nRange: bytes=0-3\r\n",
    )
    .await;
    assert_eq!(status(&h), 206, "{h}");
    assert_eq!(body, b"%PDF");
    let (h, body) = fetch(
        p.addr(),
        "HEAD /private/files/secret.pdf HTTP/1.1\r\nHost: erp.test\r\n",
    )
    .await;
    assert_eq!(status(&h), 200, "{h}");
    assert!(body.is_empty());
    let (h, body) = fetch(
        p.addr(),
        "POST /private/files/secret.pdf HTTP/1.1\r\nHost: hr.test\r\nContent-Length: 0\r\n",
    )
    .await;
    assert_eq!(status(&h), 200, "{h}");
    assert_eq!(body, b"%PDF hr.test private");

    // The internal route is not reachable directly, and a `..` target is refused.
    let (h, body) = fetch(
        p.addr(),
        "GET /protected/private/files/secret.pdf HTTP/1.1\r\nHost: erp.test\r\n",
    )
    .await;
    assert_eq!(status(&h), 404, "{h}");
    assert!(!String::from_utf8_lossy(&body).contains("PDF"));
    let (h, body) = fetch(
        p.addr(),
        "GET /private/files/escape HTTP/1.1\r\nHost: erp.test\r\n",
    )
    .await;
    assert_eq!(status(&h), 404, "{h}");
    assert!(!String::from_utf8_lossy(&body).contains(SECRET));
    // X-Accel-* never reaches a client on any proxied answer.
    let (h, _) = fetch(p.addr(), "GET /api/small HTTP/1.1\r\nHost: erp.test\r\n").await;
    assert!(!h.to_ascii_lowercase().contains("x-accel"), "{h}");
}

#[tokio::test]
async fn rewrites_redirect_with_the_query_kept_but_not_the_forced_download_files() {
    let bench = Bench::new("rewrites");
    let app = app().await;
    let p = Proxy::start(&config(&bench, app.addr)).await;
    for (path, location) in [
        ("/app/?a=1&b=2", "/app?a=1&b=2"),
        ("/docs/index.html", "/docs"),
        ("/about.html?x=%20y", "/about?x=%20y"),
        ("/api/method/x/", "/api/method/x"),
    ] {
        let (h, _) = fetch(
            p.addr(),
            &format!("GET {path} HTTP/1.1\r\nHost: erp.test\r\n"),
        )
        .await;
        assert_eq!(status(&h), 301, "{path}: {h}");
        assert_eq!(field(&h, "location").as_deref(), Some(location), "{path}");
    }
    // `/` itself is not a trailing slash to strip.
    let (h, _) = fetch(p.addr(), "GET / HTTP/1.1\r\nHost: erp.test\r\n").await;
    assert_eq!(status(&h), 200, "{h}");
    // Uploaded HTML is served as an attachment, not redirected (nginx's nested location).
    let (h, body) = fetch(
        p.addr(),
        "GET /files/page.html HTTP/1.1\r\nHost: erp.test\r\n",
    )
    .await;
    assert_eq!(status(&h), 200, "{h}");
    assert_eq!(body, b"<p>uploaded</p>");
    assert_eq!(
        fields(&h, "content-disposition"),
        vec!["attachment".to_owned()]
    );
    assert_eq!(field(&h, "content-type").as_deref(), Some("text/html"));
}

#[tokio::test]
async fn compression_applies_to_proxied_and_static_answers_and_skips_what_it_must() {
    let bench = Bench::new("gzip");
    let app = app().await;
    let p = Proxy::start(&config(&bench, app.addr)).await;
    let (h, body) = fetch(
        p.addr(),
        "GET /api/report HTTP/1.1\r\nHost: erp.test\r\nAccept-Encoding: gzip, deflate\r\n",
    )
    .await;
    assert_eq!(status(&h), 200, "{h}");
    assert_eq!(
        field(&h, "content-encoding").as_deref(),
        Some("gzip"),
        "{h}"
    );
    assert!(
        fields(&h, "vary")
            .iter()
            .any(|v| v.eq_ignore_ascii_case("accept-encoding")),
        "{h}"
    );
    assert!(field(&h, "content-length").is_none());
    assert!(body.len() < report_json().len() / 5, "{} bytes", body.len());
    assert_eq!(gunzip(&body), report_json());
    // The app got the request unchanged (Accept-Encoding passes through).
    let r = app.requests().pop().unwrap();
    assert_eq!(
        r.values("accept-encoding"),
        vec!["gzip, deflate".to_owned()]
    );

    let (h, body) = fetch(
        p.addr(),
        "GET /api/report HTTP/1.1\r\nHost: erp.test\r\nAccept-Encoding: br\r\n",
    )
    .await;
    assert_eq!(field(&h, "content-encoding").as_deref(), Some("br"), "{h}");
    assert!(body.len() < report_json().len() / 5);
    // Not accepted, too small, already encoded, HTTP/1.0: sent as they are.
    let (h, body) = fetch(p.addr(), "GET /api/report HTTP/1.1\r\nHost: erp.test\r\n").await;
    assert!(field(&h, "content-encoding").is_none(), "{h}");
    assert_eq!(
        fields(&h, "vary"),
        vec!["accept-encoding".to_owned()],
        "{h}"
    );
    assert_eq!(body, report_json());
    let (h, body) = fetch(
        p.addr(),
        "GET /api/small HTTP/1.1\r\nHost: erp.test\r\nAccept-Encoding: gzip\r\n",
    )
    .await;
    assert!(field(&h, "content-encoding").is_none(), "{h}");
    assert_eq!(body, b"{\"message\":\"pong\"}");
    let (h, body) = fetch(
        p.addr(),
        "GET /api/encoded HTTP/1.1\r\nHost: erp.test\r\nAccept-Encoding: br, gzip\r\n",
    )
    .await;
    assert_eq!(
        fields(&h, "content-encoding"),
        vec!["gzip".to_owned()],
        "{h}"
    );
    assert_eq!(gunzip(&body), report_json());
    let (h, body) = fetch(
        p.addr(),
        "GET /api/report HTTP/1.0\r\nHost: erp.test\r\nAccept-Encoding: gzip\r\n",
    )
    .await;
    assert!(field(&h, "content-encoding").is_none(), "{h}");
    assert_eq!(body, report_json());

    // Static files: compressed on the fly, with a weak ETag; a precompressed sibling
    // is sent as it is.
    let (h, body) = fetch(
        p.addr(),
        "GET /assets/app/app.js HTTP/1.1\r\nHost: erp.test\r\nAccept-Encoding: gzip\r\n",
    )
    .await;
    assert_eq!(
        field(&h, "content-encoding").as_deref(),
        Some("gzip"),
        "{h}"
    );
    let weak = field(&h, "etag").expect("an ETag");
    assert!(weak.starts_with("W/"), "{h}");
    assert_eq!(gunzip(&body), app_js());
    let (h, _) = fetch(
        p.addr(),
        &format!("GET /assets/app/app.js HTTP/1.1\r\nHost: erp.test\r\nAccept-Encoding: gzip\r\nIf-None-Match: {weak}\r\n"),
    )
    .await;
    assert_eq!(status(&h), 304, "the weak ETag revalidates: {h}");
    let (h, body) = fetch(
        p.addr(),
        "GET /assets/app/pre.css HTTP/1.1\r\nHost: erp.test\r\nAccept-Encoding: gzip\r\n",
    )
    .await;
    assert_eq!(
        field(&h, "content-encoding").as_deref(),
        Some("gzip"),
        "{h}"
    );
    assert_eq!(field(&h, "content-type").as_deref(), Some("text/css"));
    assert_eq!(gunzip(&body), b"body{color:red}");
}

#[tokio::test]
async fn a_listener_pins_its_site_for_roots_headers_and_templates() {
    let bench = Bench::new("pinned");
    let app = app().await;
    let sites = bench.sites();
    let toml = Config::bare()
        .listener("{listen}", r#"site = "hr.test""#)
        .toml("[sites]")
        .pool("web", [app.addr], "")
        .action_route(
            "files",
            &format!(
                r#"
                match.path_prefix = "/files"
                root = "{sites}/{{site}}/public"
                expires = "1h"
                "#
            ),
        )
        .route(
            "app",
            "web",
            r#"set_request_headers = { "X-Tenant" = "tenant={site}" }"#,
        );
    let p = Proxy::start(&toml).await;
    let (h, body) = fetch(
        p.addr(),
        "GET /files/logo.png HTTP/1.1\r\nHost: erp.test\r\n",
    )
    .await;
    assert_eq!(status(&h), 200, "{h}");
    assert_eq!(body, b"hr.test", "the listener's site wins over Host");
    assert_eq!(field(&h, "cache-control").as_deref(), Some("max-age=3600"));
    let expires = field(&h, "expires").expect("Expires");
    let at = httpdate::parse_http_date(&expires).unwrap();
    let ahead = at.duration_since(std::time::SystemTime::now()).unwrap();
    assert!(
        ahead.as_secs() > 3500 && ahead.as_secs() <= 3600,
        "{expires}"
    );
    let (h, _) = fetch(
        p.addr(),
        "GET /x HTTP/1.0\r\nX-Frappe-Site-Name: erp.test\r\n",
    )
    .await;
    assert_eq!(status(&h), 200, "{h}");
    let r = app.requests().pop().unwrap();
    assert_eq!(r.values("x-frappe-site-name"), vec!["hr.test".to_owned()]);
    assert_eq!(r.values("x-tenant"), vec!["tenant=hr.test".to_owned()]);
}

#[tokio::test]
async fn upstream_response_heads_up_to_128_kib_pass() {
    let big = "a".repeat(100 * 1024);
    let app = WireBackend::scripted(move |_| {
        vec![Step::Send(
            format!("HTTP/1.1 200 OK\r\nX-Big: {big}\r\nContent-Length: 2\r\n\r\nok").into_bytes(),
        )]
    })
    .await;
    let p = Proxy::start(&Config::one_pool([app.addr], "")).await;
    let (h, body) = fetch(p.addr(), "GET / HTTP/1.1\r\nHost: a\r\n").await;
    assert_eq!(status(&h), 200, "{}", &h[..80.min(h.len())]);
    assert_eq!(field(&h, "x-big").map(|v| v.len()), Some(100 * 1024));
    assert_eq!(body, b"ok");
}

#[tokio::test]
async fn max_requests_per_host_refuses_the_excess_with_503() {
    let app = WireBackend::scripted(|_| {
        let mut steps = vec![Step::Sleep(std::time::Duration::from_millis(400))];
        steps.extend(ok());
        steps
    })
    .await;
    let p = Proxy::start(
        &Config::bare()
            .listener("{listen}", "max_requests_per_host = 1")
            .pool("p", [app.addr], "")
            .route("all", "p", ""),
    )
    .await;
    let addr = p.addr();
    let slow =
        tokio::spawn(async move { fetch(addr, "GET /a HTTP/1.1\r\nHost: one.test\r\n").await });
    eventually("the first request reaches the app", || {
        let n = app.requests().len();
        async move { n == 1 }
    })
    .await;
    let (h, _) = fetch(addr, "GET /b HTTP/1.1\r\nHost: ONE.test\r\n").await;
    assert_eq!(status(&h), 503, "{h}");
    let (h, _) = fetch(addr, "GET /c HTTP/1.1\r\nHost: two.test\r\n").await;
    assert_eq!(status(&h), 200, "another host is not limited: {h}");
    assert_eq!(status(&slow.await.unwrap().0), 200);
    let (h, _) = fetch(addr, "GET /d HTTP/1.1\r\nHost: one.test\r\n").await;
    assert_eq!(status(&h), 200, "released when the answer ended: {h}");
}
