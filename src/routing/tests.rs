use http::{HeaderMap, Method};
use regex::Regex;

use super::*;

fn route(name: &str, matcher: Matcher) -> Route {
    Route {
        name: name.into(),
        pool: Some(0),
        action: Action::Proxy,
        internal: false,
        accel_redirect: false,
        compress: true,
        class: 0,
        matcher,
        timeout: None,
        add_request_headers: vec![],
        set_request_headers: vec![],
        remove_request_headers: vec![],
        add_response_headers: vec![],
        max_body_size: None,
        error_pages: vec![],
        response_headers_always: true,
    }
}

fn view<'a>(headers: &'a HeaderMap, path: &'a str, query: Option<&'a str>) -> RequestView<'a> {
    RequestView {
        listener: 0,
        method: &Method::GET,
        host: Some("Erp.Example.com"),
        path,
        query,
        headers,
        body: BodyState::Absent,
    }
}

fn pick(table: &RouteTable, req: &RequestView<'_>) -> Option<String> {
    match table.route(req, 0) {
        Decision::Route(i) => Some(table.get(i).map(|r| r.name.to_string()).unwrap_or_default()),
        Decision::NeedBody(_) => Some("NEED_BODY".into()),
        Decision::NoRoute => None,
    }
}

#[test]
fn prefix_is_segment_aware() {
    assert!(prefix_matches("/api", "/api"));
    assert!(prefix_matches("/api", "/api/x"));
    assert!(!prefix_matches("/api", "/apix"));
    assert!(prefix_matches("/api/", "/api/x"));
    assert!(prefix_matches("/", "/anything"));
}

#[test]
fn host_exact_and_wildcard_ignore_case() {
    assert!(HostMatch::parse("erp.example.com").matches("ERP.example.COM"));
    let w = HostMatch::parse("*.example.com");
    assert!(w.matches("a.example.com"));
    assert!(w.matches("a.b.Example.com"));
    assert!(!w.matches("example.com"));
    assert!(!w.matches("badexample.com"));
}

#[test]
fn strip_port_handles_ipv6() {
    assert_eq!(strip_port("a.com:8080"), "a.com");
    assert_eq!(strip_port("[::1]:80"), "[::1]");
    assert_eq!(strip_port("a.com"), "a.com");
}

#[test]
fn first_declared_wins_and_regex_is_full_match() {
    let t = RouteTable::new(vec![
        route(
            "re",
            Matcher {
                regex: Some(Regex::new("^(?:(?:/files/[a-z]+))$").expect("valid test input")),
                ..Default::default()
            },
        ),
        route(
            "api",
            Matcher {
                prefixes: vec!["/api".into()],
                ..Default::default()
            },
        ),
        route("all", Matcher::default()),
    ]);
    let h = HeaderMap::new();
    assert_eq!(
        pick(&t, &view(&h, "/files/abc", None)).as_deref(),
        Some("re")
    );
    assert_eq!(
        pick(&t, &view(&h, "/files/abc1", None)).as_deref(),
        Some("all")
    );
    assert_eq!(pick(&t, &view(&h, "/api/x", None)).as_deref(), Some("api"));
    assert_eq!(pick(&t, &view(&h, "/apix", None)).as_deref(), Some("all"));
}

#[test]
fn query_values_are_decoded_and_any_occurrence_counts() {
    let t = RouteTable::new(vec![
        route(
            "q",
            Matcher {
                query: vec![(
                    "cmd".into(),
                    ValueMatch::AnyOf(vec!["frappe.desk.query_report.run".into()]),
                )],
                ..Default::default()
            },
        ),
        route(
            "present",
            Matcher {
                query: vec![("debug".into(), ValueMatch::Present)],
                ..Default::default()
            },
        ),
    ]);
    let h = HeaderMap::new();
    let q = Some("a=1&cmd=x&cmd=frappe%2Edesk.query_report%2Erun");
    assert_eq!(pick(&t, &view(&h, "/", q)).as_deref(), Some("q"));
    assert_eq!(
        pick(&t, &view(&h, "/", Some("debug"))).as_deref(),
        Some("present")
    );
    assert_eq!(pick(&t, &view(&h, "/", Some("cmd=y"))), None);
}

#[test]
fn params_need_body_then_body_overrides_query() {
    let t = RouteTable::new(vec![
        route(
            "reports",
            Matcher {
                params: vec![("cmd".into(), vec!["run".into()])],
                ..Default::default()
            },
        ),
        route("all", Matcher::default()),
    ]);
    let h = HeaderMap::new();
    let mut v = view(&h, "/", Some("cmd=run"));
    assert_eq!(t.route(&v, 0), Decision::Route(0), "no body: query decides");
    v.body = BodyState::Unread;
    assert_eq!(t.route(&v, 0), Decision::NeedBody(0));
    let form = BodyParams {
        json: false,
        fields: vec![("cmd".into(), "other".into())],
    };
    v.body = BodyState::Parsed(&form);
    assert_eq!(
        t.route(&v, 0),
        Decision::Route(1),
        "form field overrides query"
    );
    let json = BodyParams {
        json: true,
        fields: vec![],
    };
    v.body = BodyState::Parsed(&json);
    assert_eq!(
        t.route(&v, 0),
        Decision::Route(1),
        "JSON body replaces query"
    );
    let unrelated = BodyParams {
        json: false,
        fields: vec![("x".into(), "1".into())],
    };
    v.body = BodyState::Parsed(&unrelated);
    assert_eq!(
        t.route(&v, 0),
        Decision::Route(0),
        "form without cmd: query counts"
    );
    v.body = BodyState::Skipped;
    assert_eq!(
        t.route(&v, 0),
        Decision::Route(0),
        "skipped body: query counts"
    );
}

#[test]
fn header_listener_method_and_path_conditions() {
    let t = RouteTable::new(vec![route(
        "all-of",
        Matcher {
            listeners: vec![1],
            methods: vec![Method::GET],
            paths: vec!["/exact".into()],
            headers: vec![(http::header::ACCEPT, vec!["application/json".into()])],
            hosts: vec![HostMatch::parse("*.example.com")],
            ..Default::default()
        },
    )]);
    let mut h = HeaderMap::new();
    h.insert(
        http::header::ACCEPT,
        "application/json".parse().expect("valid test input"),
    );
    let mut v = view(&h, "/exact", None);
    assert_eq!(pick(&t, &v), None, "wrong listener");
    v.listener = 1;
    assert_eq!(pick(&t, &v).as_deref(), Some("all-of"));
    v.method = &Method::POST;
    assert_eq!(pick(&t, &v), None, "wrong method");
}

#[test]
fn decode_path_only_when_encoded() {
    assert!(matches!(decode_path("/a/b"), std::borrow::Cow::Borrowed(_)));
    assert_eq!(
        decode_path("/api/method/frappe%2Edesk"),
        "/api/method/frappe.desk"
    );
}

#[test]
fn header_templates_expand_placeholders() {
    let t = HeaderTemplate::parse("{scheme}://{http_host}").expect("valid test input");
    let vars = TemplateVars {
        host: "ERP.example.com",
        http_host: "ERP.example.com:8443",
        scheme: "https",
        client_ip: [10, 0, 0, 9].into(),
        site: None,
    };
    assert_eq!(
        t.render(&vars).expect("valid test input"),
        "https://ERP.example.com:8443"
    );
    assert_eq!(
        HeaderTemplate::parse("{host}")
            .expect("valid test input")
            .render(&vars)
            .expect("valid test input"),
        "erp.example.com"
    );
    assert_eq!(
        HeaderTemplate::parse("ip={client_ip};")
            .expect("valid test input")
            .render(&vars)
            .expect("valid test input"),
        "ip=10.0.0.9;"
    );
    assert!(
        HeaderTemplate::parse("{nope}")
            .unwrap_err()
            .contains("unknown placeholder")
    );
    assert!(HeaderTemplate::parse("{host").is_err());
}

/// The host index finds the same first route as a linear scan of every route, over
/// random tables of exact, wildcard and host-less routes with other conditions mixed in.
#[test]
fn host_index_agrees_with_a_linear_scan() {
    let mut rng = fastrand::Rng::with_seed(0x4057);
    let names = [
        "a.test",
        "b.test",
        "x.a.test",
        "y.x.a.test",
        "A.Test",
        "c.other",
    ];
    let patterns = [
        "a.test",
        "b.test",
        "*.a.test",
        "*.test",
        "*.x.a.test",
        "c.other",
        "*.other",
    ];
    for _ in 0..300 {
        let routes: Vec<Route> = (0..rng.usize(1..12))
            .map(|i| {
                let mut m = Matcher::default();
                for _ in 0..rng.usize(0..3) {
                    m.hosts
                        .push(HostMatch::parse(patterns[rng.usize(..patterns.len())]));
                }
                if rng.bool() {
                    m.prefixes.push(["/app", "/api"][rng.usize(..2)].to_owned());
                }
                route(&format!("r{i}"), m)
            })
            .collect();
        let table = RouteTable::indexed(routes.clone());
        let headers = HeaderMap::new();
        for host in names.iter().map(|h| Some(*h)).chain([None]) {
            for path in ["/app/x", "/api/y", "/z"] {
                let mut req = view(&headers, path, None);
                req.host = host;
                for from in 0..routes.len() {
                    let linear = routes
                        .iter()
                        .enumerate()
                        .skip(from)
                        .find(|(_, r)| r.matcher.check(&req) == Verdict::Yes)
                        .map_or(Decision::NoRoute, |(i, _)| Decision::Route(i));
                    assert_eq!(
                        table.route(&req, from),
                        linear,
                        "{host:?} {path} from {from}"
                    );
                }
            }
        }
    }
}
