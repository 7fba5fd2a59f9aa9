//! Routing through the real proxy: every condition kind, the Frappe `cmd` in all the
//! ways it arrives on the wire, and balancing spread.

mod support;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use support::*;

const RUN: &str = "frappe.desk.query_report.run";
const EXPORT: &str = "frappe.desk.reportview.export_query";

/// primary + secondary, with the seed's report routes.
async fn erp(extra_server: &str) -> (Backend, Backend, Proxy) {
    let primary = Backend::spawn("primary").await;
    let secondary = Backend::spawn("secondary").await;
    let proxy = Proxy::start(
        &Config::new()
            .toml(&format!("[server]\n{extra_server}"))
            .pool("primary", [primary.addr], "")
            .pool("secondary", [secondary.addr], "")
            .route(
                "reports",
                "secondary",
                &format!(r#"match.param.cmd = ["{RUN}", "{EXPORT}"]"#),
            )
            .route(
                "reports-api",
                "secondary",
                &format!(r#"match.path_prefix = ["/api/method/{RUN}", "/api/method/{EXPORT}"]"#),
            )
            .route("default", "primary", ""),
    )
    .await;
    (primary, secondary, proxy)
}

#[tokio::test]
async fn report_cmd_routes_to_secondary_in_every_form() {
    let (primary, secondary, proxy) = erp("").await;
    let form = "application/x-www-form-urlencoded";
    for cmd in [RUN, EXPORT] {
        assert_eq!(
            get(&proxy.url(&format!("/?cmd={cmd}"))).await.body,
            "secondary",
            "?cmd={cmd}"
        );
        assert_eq!(
            get(&proxy.url(&format!("/api/method/{cmd}?a=1")))
                .await
                .body,
            "secondary",
            "path {cmd}"
        );
        let encoded = cmd.replace('.', "%2E");
        assert_eq!(
            get(&proxy.url(&format!("/?x=1&cmd={encoded}"))).await.body,
            "secondary",
            "encoded {cmd}"
        );
        let body = format!("report_name=Stock+Balance&cmd={cmd}&filters=%7B%7D");
        assert_eq!(
            post(&proxy.url("/"), form, body.clone()).await.body,
            "secondary",
            "form {cmd}"
        );
        assert_eq!(
            secondary.last().body.as_deref(),
            Some(body.as_bytes()),
            "form body replayed"
        );
        let json = format!(r#"{{"cmd": "{cmd}", "filters": {{}}}}"#);
        assert_eq!(
            post(&proxy.url("/"), "application/json", json.clone())
                .await
                .body,
            "secondary",
            "json {cmd}"
        );
        assert_eq!(secondary.last().body.as_deref(), Some(json.as_bytes()));
        let mp = format!(
            "--b0und\r\nContent-Disposition: form-data; name=\"cmd\"\r\n\r\n{cmd}\r\n--b0und--\r\n"
        );
        assert_eq!(
            post(&proxy.url("/"), "multipart/form-data; boundary=b0und", mp)
                .await
                .body,
            "secondary",
            "multipart {cmd}"
        );
    }
    // Writes and other calls stay on the primary.
    assert_eq!(
        get(&proxy.url("/?cmd=frappe.client.save")).await.body,
        "primary"
    );
    assert_eq!(
        post(&proxy.url("/"), form, "cmd=frappe.client.save")
            .await
            .body,
        "primary"
    );
    assert_eq!(
        get(&proxy.url("/api/method/frappe.desk.query_report.running"))
            .await
            .body,
        "primary"
    );
    // A form field overrides the query; a JSON body replaces it (Frappe's form_dict).
    assert_eq!(
        post(
            &proxy.url(&format!("/?cmd={RUN}")),
            form,
            "cmd=frappe.client.save"
        )
        .await
        .body,
        "primary"
    );
    assert_eq!(
        post(
            &proxy.url(&format!("/?cmd={RUN}")),
            "application/json",
            "{}"
        )
        .await
        .body,
        "primary"
    );
    assert_eq!(
        post(&proxy.url(&format!("/?cmd={RUN}")), form, "other=1")
            .await
            .body,
        "secondary"
    );
    assert_eq!(
        post(&proxy.url(&format!("/?cmd=x&cmd={RUN}")), "text/plain", "")
            .await
            .body,
        "secondary",
        "any occurrence"
    );
    assert!(primary.hits() >= 5);
    proxy.stop().await;
}

#[tokio::test]
async fn body_larger_than_limit_routes_on_query_and_arrives_whole() {
    let (primary, secondary, proxy) = erp("param_body_limit = 1024").await;
    let form = "application/x-www-form-urlencoded";
    let mut body = format!("cmd={RUN}&pad=");
    body.push_str(&"x".repeat(300_000));
    let got = post(&proxy.url("/"), form, body.clone()).await;
    assert_eq!(got.body, "primary", "cmd beyond the look limit is not seen");
    let seen = primary.last();
    assert_eq!(seen.body_len, body.len() as u64);
    assert_eq!(seen.body_digest, Digest::of(body.as_bytes()));
    // Same body, cmd also in the query: the query decides.
    let got = post(&proxy.url(&format!("/?cmd={EXPORT}")), form, body.clone()).await;
    assert_eq!(got.body, "secondary");
    assert_eq!(secondary.last().body_digest, Digest::of(body.as_bytes()));
    // A chunked body (no Content-Length) over the limit, streamed in pieces.
    let chunks: Vec<Result<http_body::Frame<Bytes>, std::convert::Infallible>> =
        pattern_chunks(200_000)
            .map(|c| Ok(http_body::Frame::data(c)))
            .collect();
    let expected: Vec<u8> = pattern_chunks(200_000).flat_map(|c| c.to_vec()).collect();
    let req = Request::post(proxy.url("/sink"))
        .header("content-type", form)
        .body(http_body_util::StreamBody::new(futures_util::stream::iter(
            chunks,
        )))
        .unwrap();
    let resp = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http()
        .request(req)
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(primary.last().body_digest, Digest::of(&expected));
    proxy.stop().await;
}

#[tokio::test]
async fn each_condition_kind_routes() {
    let hit = Backend::spawn("hit").await;
    let miss = Backend::spawn("miss").await;
    let proxy = Proxy::start(
        &Config::bare()
            .listener("{listen0}", r#"name = "main""#)
            .listener("{listen1}", r#"name = "internal""#)
            .pool("hit", [hit.addr], "")
            .pool("miss", [miss.addr], "")
            .route("listener", "hit", r#"match.listener = "internal""#)
            .route(
                "host",
                "hit",
                r#"match.host = ["erp.example.com", "*.shop.example"]"#,
            )
            .route("path", "hit", r#"match.path = "/exact""#)
            .route("prefix", "hit", r#"match.path_prefix = "/api""#)
            .route(
                "regex",
                "hit",
                r#"match.path_regex = "/files/[0-9]+\\.pdf""#,
            )
            .route("method", "hit", r#"match.method = ["DELETE"]"#)
            .route("query", "hit", r#"match.query.report = ["Stock Balance"]"#)
            .route("query-present", "hit", "match.query.debug = true")
            .route("header", "hit", r#"match.header.x-tenant = ["gold"]"#)
            .route(
                "all-of",
                "hit",
                r#"
                match.path_prefix = "/both"
                match.method = "POST"
                "#,
            )
            .route("default", "miss", ""),
    )
    .await;
    let main = |p: &str| format!("http://{}{p}", proxy.addrs[0]);
    let with = |p: &str, k: &str, v: &str| {
        Request::get(main(p))
            .header(k, v)
            .body(Full::default())
            .unwrap()
    };
    let cases: Vec<(&str, Request<Full<Bytes>>, &str)> = vec![
        (
            "listener",
            Request::get(format!("http://{}/x", proxy.addrs[1]))
                .body(Full::default())
                .unwrap(),
            "hit",
        ),
        (
            "host exact, port ignored",
            with("/x", "host", "ERP.example.com:8080"),
            "hit",
        ),
        ("host wildcard", with("/x", "host", "a.shop.example"), "hit"),
        (
            "host wildcard bare",
            with("/x", "host", "shop.example"),
            "miss",
        ),
        ("path exact", with("/exact", "x", "1"), "hit"),
        ("path exact only", with("/exact/more", "x", "1"), "miss"),
        ("prefix", with("/api/method/x", "x", "1"), "hit"),
        ("prefix segment", with("/apix", "x", "1"), "miss"),
        ("regex whole path", with("/files/12.pdf", "x", "1"), "hit"),
        (
            "regex not partial",
            with("/files/12.pdfx", "x", "1"),
            "miss",
        ),
        (
            "method",
            Request::delete(main("/x")).body(Full::default()).unwrap(),
            "hit",
        ),
        (
            "query decoded",
            with("/x?report=Stock+Balance", "x", "1"),
            "hit",
        ),
        (
            "query percent",
            with("/x?report=Stock%20Balance", "x", "1"),
            "hit",
        ),
        ("query other", with("/x?report=Other", "x", "1"), "miss"),
        ("query present", with("/x?debug", "x", "1"), "hit"),
        ("header", with("/x", "x-tenant", "gold"), "hit"),
        ("header other", with("/x", "x-tenant", "silver"), "miss"),
        (
            "all-of",
            Request::post(main("/both")).body(Full::default()).unwrap(),
            "hit",
        ),
        ("all-of partly", with("/both", "x", "1"), "miss"),
    ];
    for (what, req, want) in cases {
        assert_eq!(send(req).await.body, want, "{what}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn no_route_is_404_with_reason() {
    let b = Backend::spawn("b").await;
    let proxy = Proxy::start(&Config::new().pool("p", [b.addr], "").route(
        "api",
        "p",
        r#"match.path_prefix = "/api""#,
    ))
    .await;
    let got = get(&proxy.url("/nope")).await;
    assert_eq!(got.status, 404);
    assert_eq!(got.body, "404 Not Found: no route matches this request\n");
    assert_eq!(b.hits(), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn weighted_round_robin_spreads_as_weighted() {
    let a = Backend::spawn("a").await;
    let b = Backend::spawn("b").await;
    let c = Backend::spawn("c").await;
    let pool = format!(
        r#"
        [pools.p]
        servers = ["{}", {{ addr = "{}", weight = 3 }}, {{ addr = "{}", weight = 2 }}]
        "#,
        a.addr, b.addr, c.addr
    );
    let proxy = Proxy::start(&Config::new().toml(&pool).route("all", "p", "")).await;
    for _ in 0..600 {
        get(&proxy.url("/")).await;
    }
    assert_eq!((a.hits(), b.hits(), c.hits()), (100, 300, 200));
    proxy.stop().await;
}

#[tokio::test]
async fn least_conn_and_random_two_avoid_a_busy_server() {
    for policy in ["least_conn", "random_two"] {
        let a = Backend::spawn("a").await;
        let b = Backend::spawn("b").await;
        let balance = format!(r#"balance = "{policy}""#);
        let proxy = Proxy::start(&Config::one_pool([a.addr, b.addr], &balance)).await;
        // Occupy one server with a slow request, then send quick ones.
        let slow = tokio::spawn(get_owned(proxy.url("/slow?ms=1500")));
        eventually("slow request reached a backend", || async {
            a.hits() + b.hits() == 1
        })
        .await;
        let busy = if a.hits() == 1 { "a" } else { "b" };
        for _ in 0..20 {
            let got = get(&proxy.url("/quick")).await;
            assert_ne!(got.body, busy, "{policy} sent a request to the busy server");
        }
        slow.await.unwrap();
        proxy.stop().await;
    }
}

async fn get_owned(url: String) -> Got {
    get(&url).await
}
