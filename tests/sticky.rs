//! Sticky sessions by cookie (`[pools.NAME.sticky]`): the first answer names its
//! server in an opaque cookie; requests with it stay on that server over keep-alive,
//! new connections and HTTP/2, move (with a new cookie) when it leaves, and a forged
//! or stale value is ignored, never an error.

mod support;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::*;

fn config(a: &Backend, b: &Backend) -> Config {
    Config::one_pool([a.addr, b.addr], "").toml(
        r#"
        [pools.p.sticky]
        cookie = "sy"
        "#,
    )
}

/// (status, body, Set-Cookie or "") of a GET with `cookie` over `client`.
async fn with_cookie(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    url: &str,
    cookie: Option<&str>,
) -> (u16, String, String) {
    let mut req = Request::get(url);
    if let Some(c) = cookie {
        req = req.header("cookie", format!("other=1; {c}"));
    }
    let resp = client
        .request(req.body(Full::default()).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let set = resp
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned(), set)
}

/// `name=value` of a Set-Cookie.
fn pair(set: &str) -> String {
    set.split(';').next().unwrap().to_owned()
}

#[tokio::test]
async fn a_cookie_keeps_a_client_on_its_server_across_connections_and_protocols() {
    let (a, b) = (Backend::spawn("a").await, Backend::spawn("b").await);
    let proxy = Proxy::start(&config(&a, &b)).await;
    let h1 = client();
    let (status, first, set) = with_cookie(&h1, &proxy.url("/x"), None).await;
    assert_eq!(status, 200);
    let value = set.strip_prefix("sy=").unwrap().split(';').next().unwrap();
    assert_eq!(value.len(), 32, "{set}");
    assert!(value.bytes().all(|c| c.is_ascii_hexdigit()), "{set}");
    assert!(!set.contains(&a.addr.to_string()) && !set.contains(&b.addr.to_string()));
    assert!(
        set.ends_with("; Path=/; HttpOnly; SameSite=Lax"),
        "no Secure over plain HTTP: {set}"
    );
    let cookie = pair(&set);
    // Keep-alive: every request to the same server, no new cookie.
    for _ in 0..10 {
        let got = with_cookie(&h1, &proxy.url("/x"), Some(&cookie)).await;
        assert_eq!(
            (got.0, got.1.as_str(), got.2.as_str()),
            (200, first.as_str(), "")
        );
    }
    // New connections, HTTP/1.0 on the raw socket.
    for _ in 0..6 {
        let req = format!("GET /x HTTP/1.0\r\nHost: a\r\nCookie: {cookie}\r\n\r\n");
        let got = raw(proxy.addr(), req.as_bytes()).await;
        assert!(got.starts_with("HTTP/1.0 200"), "{got}");
        assert!(got.ends_with(&first), "{got}");
        assert!(!got.to_ascii_lowercase().contains("set-cookie"), "{got}");
    }
    // HTTP/2.
    let h2 = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    for _ in 0..6 {
        let got = with_cookie(&h2, &proxy.url("/x"), Some(&cookie)).await;
        assert_eq!((got.0, got.1.as_str()), (200, first.as_str()));
    }
    // Without the cookie the balancer spreads, and each answer names its server.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let (_, body, set) = with_cookie(&client(), &proxy.url("/x"), None).await;
        assert!(set.starts_with("sy="), "{set}");
        seen.insert(body);
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn forged_and_stale_values_are_ignored_and_a_leaving_server_moves_its_clients() {
    let (mut a, b) = (Backend::spawn("a").await, Backend::spawn("b").await);
    let proxy = Proxy::start(&config(&a, &b)).await;
    let c = client();
    for forged in [
        "sy=00000000000000000000000000000000",
        "sy=",
        "sy=%zz;;=",
        "sy=\"quoted\"",
    ] {
        let (status, _, set) = with_cookie(&c, &proxy.url("/x"), Some(forged)).await;
        assert_eq!(status, 200, "{forged}");
        assert!(
            set.starts_with("sy="),
            "a forged value gets a real one: {set}"
        );
    }
    // Find a's cookie.
    let cookie_of = |name: &'static str| {
        let (c, url) = (client(), proxy.url("/x"));
        async move {
            for _ in 0..20 {
                let (_, body, set) = with_cookie(&c, &url, None).await;
                if body == name {
                    return pair(&set);
                }
            }
            panic!("{name} never answered");
        }
    };
    let on_a = cookie_of("a").await;
    assert_eq!(with_cookie(&c, &proxy.url("/x"), Some(&on_a)).await.1, "a");
    a.kill().await;
    let (status, body, set) = with_cookie(&c, &proxy.url("/x"), Some(&on_a)).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "b"),
        "a GET moves past the dead server"
    );
    assert!(
        set.starts_with("sy=") && pair(&set) != on_a,
        "a new cookie names b: {set}"
    );
    let on_b = pair(&set);
    for _ in 0..5 {
        let got = with_cookie(&c, &proxy.url("/x"), Some(&on_b)).await;
        assert_eq!((got.1.as_str(), got.2.as_str()), ("b", ""));
    }
    proxy.stop().await;
}

#[tokio::test]
async fn a_bad_sticky_section_is_refused_with_its_place() {
    let dir = std::env::temp_dir().join(format!("sy-sticky-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(
        &file,
        "[[listeners]]\naddr = \"127.0.0.1:0\"\n\n[pools.p]\nservers = [\"127.0.0.1:9\"]\n\n[pools.p.sticky]\ncookie = \"a b\"\nsame_site = \"sometimes\"\n\n[[routes]]\nname = \"all\"\npool = \"p\"\n",
    )
    .unwrap();
    let err = switchyard::config::load(&file).unwrap_err().to_string();
    assert!(err.contains("bad.toml:8:10"), "{err}");
    assert!(err.contains("cookie name \"a b\" must be a token"), "{err}");
    assert!(err.contains("bad.toml:9:13"), "{err}");
    assert!(err.contains("same_site \"sometimes\""), "{err}");
}
