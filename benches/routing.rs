//! Route matching over a realistic 20-route Frappe-style table (built from TOML, as in
//! production), a 5,000-site multi-tenant table (the host index), plus one balancer
//! pick. Run: `cargo bench --bench routing`.

use std::hint::black_box;
use std::path::Path;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, Method};
use switchyard::routing::{BodyParams, BodyState, RequestView, RouteTable, decode_path};

fn table() -> (RouteTable, switchyard::config::Config) {
    let mut toml = String::from(
        "[[listeners]]\naddr = \"127.0.0.1:8080\"\n[pools.primary]\nservers = [\"127.0.0.1:8001\", \"127.0.0.1:8002\"]\n[pools.secondary]\nservers = [\"127.0.0.1:8003\"]\n",
    );
    toml.push_str("[[routes]]\nname = \"reports-cmd\"\npool = \"secondary\"\nmatch.param.cmd = [\"frappe.desk.query_report.run\", \"frappe.desk.query_report.export_query\", \"frappe.desk.reportview.get\", \"frappe.desk.reportview.export_query\"]\n");
    toml.push_str("[[routes]]\nname = \"reports-api\"\npool = \"secondary\"\nmatch.path_regex = '/api(/v1|/v2)?/method/(frappe\\.desk\\.query_report\\.(run|export_query)|frappe\\.desk\\.reportview\\.(get|get_list|get_count|export_query))/?'\n");
    for i in 0..8 {
        toml.push_str(&format!("[[routes]]\nname = \"site{i}\"\npool = \"primary\"\nmatch.host = [\"site{i}.example.com\", \"*.tenant{i}.example.com\"]\nmatch.path_prefix = \"/app\"\n"));
    }
    for i in 0..6 {
        toml.push_str(&format!("[[routes]]\nname = \"api{i}\"\npool = \"primary\"\nmatch.path_prefix = \"/api/resource/Doc{i}\"\nmatch.method = [\"GET\", \"POST\"]\n"));
    }
    toml.push_str("[[routes]]\nname = \"tenant-hdr\"\npool = \"secondary\"\nmatch.header.x-tenant = \"gold\"\n");
    toml.push_str("[[routes]]\nname = \"debug\"\npool = \"secondary\"\nmatch.query.debug = true\n");
    toml.push_str("[[routes]]\nname = \"files\"\npool = \"primary\"\nmatch.path_regex = \"/files/.*\\\\.(pdf|png)\"\n");
    toml.push_str("[[routes]]\nname = \"default\"\npool = \"primary\"\n");
    let cfg =
        switchyard::config::parse(Path::new("bench.toml"), &toml).expect("bench config is valid");
    assert_eq!(cfg.routes.len(), 20);
    (RouteTable::new(cfg.routes.clone()), cfg)
}

fn bench_route(c: &mut Criterion) {
    let (t, cfg) = table();
    let headers = HeaderMap::new();
    let form = BodyParams {
        json: false,
        fields: vec![("cmd".into(), "frappe.desk.query_report.export_query".into())],
    };
    let cases: Vec<(&str, &str, Option<&str>, &Method, BodyState<'_>)> = vec![
        (
            "query-cmd-hit",
            "/",
            Some("cmd=frappe.desk.query_report.run"),
            &Method::GET,
            BodyState::Absent,
        ),
        (
            "api-path-regex-hit",
            "/api/method/frappe.desk.reportview.get",
            None,
            &Method::POST,
            BodyState::Absent,
        ),
        (
            "body-cmd-hit",
            "/",
            None,
            &Method::POST,
            BodyState::Parsed(&form),
        ),
        (
            "transaction-default",
            "/api/method/frappe.client.save",
            None,
            &Method::POST,
            BodyState::Absent,
        ),
        (
            "percent-encoded-path",
            "/api/method/frappe%2Edesk.reportview.get",
            None,
            &Method::GET,
            BodyState::Absent,
        ),
    ];
    let mut g = c.benchmark_group("route/20");
    for (name, path, query, method, body) in cases {
        g.bench_with_input(BenchmarkId::from_parameter(name), &(), |b, _| {
            b.iter(|| {
                let p = decode_path(black_box(path));
                let view = RequestView {
                    listener: 0,
                    method,
                    host: Some("erp.example.com"),
                    path: &p,
                    query: black_box(query),
                    headers: &headers,
                    body,
                };
                black_box(t.route(&view, 0))
            })
        });
    }
    g.finish();

    let metrics = std::sync::Arc::new(switchyard::metrics::Metrics::new());
    let snap = switchyard::state::Snapshot::build(&cfg, 1, &mut Default::default(), metrics, None);
    let view = &snap.views[0];
    c.bench_function("pick/round_robin/2", |b| {
        b.iter(|| {
            black_box(
                snap.pools[0]
                    .pick(view, switchyard::upstream::PickKey::None, &[], 0)
                    .map(|e| e.addr),
            )
        })
    });
}

/// A multi-tenant bench: 5,000 sites, one `match.host` route each, then a default.
/// With the host index the first, the last and an unknown site cost the same.
fn bench_sites(c: &mut Criterion) {
    let mut toml = String::from(
        "[[listeners]]\naddr = \"127.0.0.1:8080\"\n[pools.primary]\nservers = [\"127.0.0.1:8001\"]\n",
    );
    for i in 0..5000 {
        toml.push_str(&format!(
            "[[routes]]\nname = \"site{i}\"\npool = \"primary\"\nmatch.host = \"site{i}.example.com\"\n"
        ));
    }
    toml.push_str("[[routes]]\nname = \"default\"\npool = \"primary\"\n");
    let cfg = switchyard::config::parse(Path::new("sites.toml"), &toml).expect("valid");
    let t = RouteTable::new(cfg.routes.clone());
    let headers = HeaderMap::new();
    let mut g = c.benchmark_group("route/5000-sites");
    for (name, host) in [
        ("first", "site0.example.com"),
        ("last", "site4999.example.com"),
        ("unknown", "nosuch.example.com"),
    ] {
        g.bench_with_input(BenchmarkId::from_parameter(name), &(), |b, _| {
            b.iter(|| {
                let view = RequestView {
                    listener: 0,
                    method: &Method::GET,
                    host: Some(black_box(host)),
                    path: "/app",
                    query: None,
                    headers: &headers,
                    body: BodyState::Absent,
                };
                black_box(t.route(&view, 0))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_route, bench_sites);
criterion_main!(benches);
