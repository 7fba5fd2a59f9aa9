//! The pools of the generated config and the routes of the report split: gunicorn's
//! web pool with its request classes (reports never take the last worker), socket.io
//! (sticky by cookie when there are several nodes), and the report pool of
//! `--report-pool`. Each value says where it came from.

use std::fmt::Write;

use super::Options;
use super::bench::{Bench, Site};
use super::capacity::Classes;
use super::toml_text::{list, q};

/// Frappe's read-only report methods (§4.2).
pub const REPORT_METHODS: &[&str] = &[
    "frappe.desk.query_report.run",
    "frappe.desk.query_report.export_query",
    "frappe.desk.reportview.get",
    "frappe.desk.reportview.get_list",
    "frappe.desk.reportview.get_count",
    "frappe.desk.reportview.export_query",
    "frappe.desk.reportview.get_sidebar_stats",
    "frappe.desk.reportview.get_stats",
    "frappe.desk.notifications.get_open_count",
];

/// Frappe's ping on the first site: the site config loads and the DB answers. A
/// probe that waits behind busy workers does not count (`busy = "alive"`).
fn health(s: &mut String, pool: &str, site: Option<&Site>) {
    let Some(site) = site else { return };
    let _ = writeln!(
        s,
        "[pools.{pool}.health]   # Frappe's ping: the site config loads and the DB answers\npath = \"/api/method/ping\"\nhost = {}\nbody_contains = \"pong\"\ninterval = \"5s\"\n",
        q(&site.name)
    );
}

/// The web pool's limit and `report` class (none with `--no-classes`).
fn web_classes(s: &mut String, b: &Bench, classes: Option<&Classes>) {
    let Some(c) = classes else {
        return;
    };
    let _ = writeln!(
        s,
        "max_connections = {}   # requests at once per app server: gunicorn's sync workers ({})\nqueue_timeout = \"{}s\"   # a request waits for a worker as long as it may run (http_timeout)\n",
        c.workers.n, c.workers.from, b.http_timeout
    );
    let _ = writeln!(
        s,
        "[pools.web.classes.report]   # reports never take the last worker: transactions stay fast\nmax_connections = {}   # {}\npriority = -10   # waiting transactions go first\n",
        c.report_cap, c.cap_from
    );
}

pub(super) fn pools(s: &mut String, b: &Bench, o: &Options, classes: Option<&Classes>) {
    let web = if o.web.is_empty() {
        vec![format!("127.0.0.1:{}", b.webserver_port)]
    } else {
        o.web.clone()
    };
    let from = if o.web.is_empty() {
        "webserver_port of common_site_config.json"
    } else {
        "--web"
    };
    let _ = writeln!(
        s,
        "[pools.web]   # gunicorn ({from})\nservers = {}\nread_timeout = \"{}s\"   # http_timeout",
        list(&web),
        b.http_timeout
    );
    web_classes(s, b, classes);
    if classes.is_none() {
        s.push('\n');
    }
    health(s, "web", b.sites.first());
    socketio(s, b, o);
    if !o.report_pool.is_empty() {
        let cap = if classes.is_some() {
            " (capped there by its `report` class)"
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "[pools.reports]   # --report-pool: the read-only report methods\nservers = {}\nread_timeout = \"{}s\"\nfallback = \"web\"   # reports keep working when the report servers are down{cap}\n",
            list(&o.report_pool),
            b.http_timeout.max(600)
        );
        health(s, "reports", b.sites.first());
    }
}

/// The socketio pool: one node, or several kept sticky by cookie (long-polling and the
/// WebSocket upgrade of one client must reach the node that issued its `sid`).
fn socketio(s: &mut String, b: &Bench, o: &Options) {
    let nodes = if o.socketio.is_empty() {
        vec![format!("127.0.0.1:{}", b.socketio_port)]
    } else {
        o.socketio.clone()
    };
    let from = match (o.socketio.is_empty(), b.socketio_from_config) {
        (false, _) => "--socketio",
        (true, true) => "socketio_port of common_site_config.json",
        (true, false) => "bench init's default port 9000",
    };
    let _ = writeln!(
        s,
        "[pools.socketio]   # node socketio ({from})\nservers = {}\nread_timeout = \"60s\"   # nginx's default proxy_read_timeout\n",
        list(&nodes)
    );
    if nodes.len() > 1 {
        let _ = writeln!(
            s,
            "[pools.socketio.sticky]   # several nodes: each client stays on the node that knows its session\ncookie = \"switchyard_socketio\"\npath = \"/socket.io\"\n"
        );
    }
}

/// The report methods in `cmd` (query, form, multipart, JSON) and under
/// `/api/method/`: to the reports pool with `--report-pool`, else to the web pool; in
/// class `report` unless `--no-classes`. Nothing without either.
pub(super) fn report_routes(s: &mut String, o: &Options, classes: Option<&Classes>) {
    let split = !o.report_pool.is_empty();
    if !split && classes.is_none() {
        return;
    }
    let (pool, why) = if split {
        ("reports", "--report-pool")
    } else {
        ("web", "class report")
    };
    let class = if classes.is_some() {
        "class = \"report\"   # capped per app server: see [pools.web.classes.report]\n"
    } else {
        ""
    };
    let methods: Vec<String> = REPORT_METHODS.iter().map(|m| (*m).to_owned()).collect();
    let _ = writeln!(
        s,
        "[[routes]]   # {why}: a report `cmd` in the query, a form, multipart or JSON body\nname = \"reports-cmd\"\npool = \"{pool}\"\n{class}accel_redirect = true\nset_request_headers = {{ \"Host\" = \"{{host}}\" }}\nmatch.param.cmd = {}\n",
        list(&methods)
    );
    let alt: Vec<String> = REPORT_METHODS
        .iter()
        .map(|m| m.replace('.', r"\."))
        .collect();
    let _ = writeln!(
        s,
        "[[routes]]   # {why}: /api/method/<report method> (v1, v2 too)\nname = \"reports-api\"\npool = \"{pool}\"\n{class}accel_redirect = true\nset_request_headers = {{ \"Host\" = \"{{host}}\" }}\nmatch.path_regex = '/api(/v1|/v2)?/method/({})/?'\n",
        alt.join("|")
    );
}
