//! One test per kind of config error, each asserting the line and column.

use std::path::Path;

use super::*;

const BASE: &str = r#"
[[listeners]]
addr = "127.0.0.1:8080"

[pools.primary]
servers = ["127.0.0.1:8001", { addr = "127.0.0.1:8002", weight = 2 }]

[pools.secondary]
servers = ["127.0.0.1:8003"]
"#;

fn errors(extra: &str) -> Vec<ConfigError> {
    match parse(Path::new("t.toml"), &format!("{BASE}{extra}")) {
        Ok(_) => panic!("config should be refused:\n{extra}"),
        Err(e) => e.0,
    }
}

/// (line, col, message) of the single error `extra` causes; lines count from BASE's start.
fn one(extra: &str) -> (usize, usize, String) {
    let e = errors(extra);
    assert_eq!(e.len(), 1, "expected one error, got {e:?}");
    (e[0].line, e[0].col, e[0].msg.clone())
}

#[test]
fn valid_config_loads_with_defaults() {
    let c = parse(
        Path::new("t.toml"),
        &format!("{BASE}\n[[routes]]\nname = \"d\"\npool = \"primary\"\n"),
    )
    .expect("the test config is valid");
    assert_eq!(c.pools.len(), 2);
    assert_eq!(c.pools[0].servers[1].weight, 2);
    assert_eq!(c.server.param_body_limit, DEFAULT_PARAM_BODY_LIMIT);
    assert_eq!(c.pools[0].read_timeout, DEFAULT_READ_TIMEOUT);
    assert_eq!(&*c.listeners[0].name, "127.0.0.1:8080");
    assert!(
        c.summary()
            .contains("route 1 d -> pool primary (every request)")
    );
}

#[test]
fn syntax_error_has_position() {
    let (line, col, msg) = one("\n[[routes]]\nname = \"x\npool = \"primary\"\n");
    assert_eq!((line, col), (12, 10), "{msg}");
}

#[test]
fn unknown_key_is_refused() {
    let (line, col, msg) =
        one("\n[[routes]]\nname = \"x\"\npool = \"primary\"\nupstream = \"y\"\n");
    assert_eq!((line, col), (14, 1), "{msg}");
    assert!(msg.contains("unknown field `upstream`"), "{msg}");
}

#[test]
fn unknown_pool_names_the_defined_ones() {
    let (line, col, msg) = one("\n[[routes]]\nname = \"reports\"\npool = \"secundary\"\n");
    assert_eq!((line, col), (13, 8));
    assert_eq!(
        msg,
        "route `reports` uses pool `secundary`, which is not defined; defined pools: primary, secondary"
    );
}

#[test]
fn empty_pool_is_refused() {
    let (line, _, msg) = one("\n[pools.empty]\nservers = []\n");
    assert_eq!(line, 11, "{msg}");
    assert!(msg.contains("pool `empty` has no servers"), "{msg}");
}

#[test]
fn bad_server_address_is_refused() {
    let (line, col, msg) = one("\n[pools.bad]\nservers = [\"10.0.0.1\"]\n");
    assert_eq!((line, col), (12, 12), "{msg}");
    assert!(msg.contains("not host:port"), "{msg}");
}

#[test]
fn bad_listener_address_is_refused() {
    let (line, col, msg) = one("\n[[listeners]]\naddr = \"localhost\"\n");
    assert_eq!((line, col), (12, 8), "{msg}");
}

#[test]
fn bad_regex_is_refused() {
    let (line, col, msg) =
        one("\n[[routes]]\nname = \"r\"\npool = \"primary\"\nmatch.path_regex = \"/api/(\"\n");
    assert_eq!((line, col), (14, 20), "{msg}");
    assert!(msg.contains("does not compile"), "{msg}");
}

#[test]
fn duplicate_route_name_is_refused() {
    let (line, col, msg) = one(
        "\n[[routes]]\nname = \"r\"\npool = \"primary\"\nmatch.path = \"/a\"\n[[routes]]\nname = \"r\"\npool = \"primary\"\n",
    );
    assert_eq!((line, col), (16, 8), "{msg}");
    assert!(
        msg.contains("duplicate route name `r` (first defined on line 12)"),
        "{msg}"
    );
}

#[test]
fn route_after_catch_all_is_unreachable() {
    let (line, col, msg) = one(
        "\n[[routes]]\nname = \"all\"\npool = \"primary\"\n[[routes]]\nname = \"late\"\npool = \"secondary\"\nmatch.path = \"/x\"\n",
    );
    assert_eq!((line, col), (15, 8), "{msg}");
    assert!(msg.contains("route `late` can never match"), "{msg}");
}

#[test]
fn bad_duration_is_refused() {
    let (line, col, msg) =
        one("\n[[routes]]\nname = \"r\"\npool = \"primary\"\ntimeout = \"10 parsecs\"\n");
    assert_eq!((line, col), (14, 11), "{msg}");
    assert!(msg.contains("is not a duration"), "{msg}");
}

#[test]
fn unknown_balance_policy_is_refused() {
    let (line, col, msg) = one("\n[pools.x]\nservers = [\"127.0.0.1:1\"]\nbalance = \"fastest\"\n");
    assert_eq!((line, col), (13, 11), "{msg}");
    assert!(msg.contains("round_robin"), "{msg}");
}

#[test]
fn unknown_listener_in_route_is_refused() {
    let (line, _, msg) =
        one("\n[[routes]]\nname = \"r\"\npool = \"primary\"\nmatch.listener = \"admin\"\n");
    assert_eq!(line, 14, "{msg}");
    assert!(msg.contains("listener `admin` is not defined"), "{msg}");
}

#[test]
fn all_semantic_errors_are_reported_at_once() {
    let e = errors(
        "\n[[routes]]\nname = \"a\"\npool = \"nope\"\ntimeout = \"x\"\nmatch.path_regex = \"(\"\n",
    );
    assert_eq!(e.len(), 3, "{e:?}");
    let lines: Vec<usize> = e.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![13, 14, 15]);
}

#[test]
fn fallback_loop_is_refused() {
    let e = errors(
        "\n[pools.a]\nservers = [\"127.0.0.1:1\"]\nfallback = \"b\"\n[pools.b]\nservers = [\"127.0.0.1:2\"]\nfallback = \"a\"\n",
    );
    assert_eq!(e.len(), 2, "{e:?}");
    assert_eq!((e[0].line, e[0].col), (13, 12));
    assert!(
        e[0].msg.contains("fallback pools form a loop: a -> b -> a"),
        "{}",
        e[0].msg
    );
}

#[test]
fn unknown_fallback_and_non_idempotent_retry_are_refused() {
    let (line, _, msg) = one("\n[pools.a]\nservers = [\"127.0.0.1:1\"]\nfallback = \"nope\"\n");
    assert_eq!(line, 13);
    assert!(msg.contains("fallback pool `nope` is not defined"), "{msg}");
    let (line, _, msg) = one(
        "\n[pools.a]\nservers = [\"127.0.0.1:1\"]\n[pools.a.retry]\nidempotent_methods = [\"GET\", \"POST\"]\n",
    );
    assert_eq!(line, 14);
    assert!(msg.contains("\"POST\" is not idempotent"), "{msg}");
}

#[test]
fn health_section_is_validated() {
    let e = errors(
        "\n[pools.a]\nservers = [\"127.0.0.1:1\"]\n[pools.a.health]\npath = \"no-slash\"\nexpect_status = [\"200-x\"]\nhealthy_after = 0\n",
    );
    let lines: Vec<usize> = e.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![14, 15, 16], "{e:?}");
}

#[test]
fn bad_body_size_names_the_value() {
    let (line, col, msg) =
        one("[[routes]]\nname = \"d\"\npool = \"primary\"\nmax_body_size = \"50 megs\"\n");
    assert_eq!((line, col), (13, 17), "{msg}");
    assert!(msg.contains("is not a size"), "{msg}");
}

#[test]
fn missing_error_page_names_the_file_and_a_bad_status_the_key() {
    let e = errors(
        "[[routes]]\nname = \"d\"\npool = \"primary\"\nerror_pages = { 502 = \"no/such/502.html\", 302 = \"x.html\" }\n",
    );
    assert_eq!(e.len(), 2, "{e:?}");
    let msgs: Vec<&str> = e.iter().map(|e| e.msg.as_str()).collect();
    assert!(
        msgs.iter().any(|m| m.contains("not an error status")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.contains("cannot read error page") && m.contains("no/such/502.html")),
        "{msgs:?}"
    );
}

#[test]
fn route_actions_are_checked() {
    let (line, col, msg) = one("\n[[routes]]\nname = \"x\"\n");
    assert_eq!((line, col), (12, 8), "{msg}");
    assert!(msg.contains("neither where to send"), "{msg}");
    let (line, _, msg) = one(
        "\n[[routes]]\nname = \"x\"\npool = \"primary\"\nmatch.path_regex = '(.+)/'\nredirect = \"$1\"\n",
    );
    assert_eq!(line, 15, "{msg}");
    assert!(msg.contains("a route does one thing"), "{msg}");
    let (line, _, msg) = one("\n[[routes]]\nname = \"x\"\nredirect = \"$1\"\n");
    assert_eq!(line, 13, "{msg}");
    assert!(msg.contains("no `match.path_regex`"), "{msg}");
    let (line, _, msg) = one("\n[[routes]]\nname = \"x\"\nroot = \"sites/{site}\"\n");
    assert_eq!(line, 13, "{msg}");
    assert!(msg.contains("must be an absolute path"), "{msg}");
    let (line, _, msg) =
        one("\n[[routes]]\nname = \"x\"\nredirect = \"/y\"\nredirect_status = 200\n");
    assert_eq!(line, 14, "{msg}");
    assert!(msg.contains("301, 302"), "{msg}");
}

#[test]
fn sites_and_compression_are_checked() {
    let (line, _, msg) = one("\n[sites]\ndomains = { \"a.test\" = \"../x\" }\n");
    assert_eq!(line, 12, "{msg}");
    assert!(msg.contains("not a folder name"), "{msg}");
    let (line, _, msg) = one("\n[compression]\nlevel = 12\n");
    assert_eq!(line, 12, "{msg}");
    assert!(msg.contains("1 (fastest) to 9"), "{msg}");
}

#[test]
fn classes_are_numbered_and_checked() {
    let extra = "max_connections = 4\n[pools.secondary.classes.report]\nmax_connections = 3\npriority = -10\n\n[[routes]]\nname = \"r\"\npool = \"secondary\"\nclass = \"report\"\nmatch.path_prefix = \"/r\"\n[[routes]]\nname = \"d\"\npool = \"primary\"\n";
    let c = parse(Path::new("t.toml"), &format!("{BASE}{extra}")).expect("valid");
    assert_eq!(
        c.classes.iter().map(|c| &**c).collect::<Vec<_>>(),
        ["default", "report"]
    );
    assert_eq!(c.routes[0].class, 1);
    assert_eq!(c.routes[1].class, 0);
    let rule = &c.pools[1].classes[1];
    assert_eq!((rule.cap, rule.priority), (Some(3), -10));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert!(
        c.summary()
            .contains("pool secondary class report: 3 per server, priority -10")
    );

    let typo = "[pools.secondary.classes.reprot]\nmax_connections = 3\n[[routes]]\nname = \"r\"\npool = \"secondary\"\nclass = \"report\"\n";
    let (line, _, msg) = one(typo);
    assert_eq!(line, 10, "{msg}");
    assert!(
        msg.contains("class `reprot`, which no route sets; routes set: default, report"),
        "{msg}"
    );

    let above = "max_connections = 2\n[pools.secondary.classes.report]\nmax_connections = 3\n[[routes]]\nname = \"r\"\npool = \"secondary\"\nclass = \"report\"\n";
    let c = parse(Path::new("t.toml"), &format!("{BASE}{above}")).expect("valid");
    assert!(
        c.warnings[0].contains("more than the server's max_connections 2"),
        "{:?}",
        c.warnings
    );
}

#[test]
fn operator_mistakes_get_hints() {
    let (_, _, msg) = one("\n[pools.third]\nservers = [\"http://10.0.0.2:8000\"]\n");
    assert!(
        msg.contains("without the scheme: \"10.0.0.2:8000\""),
        "{msg}"
    );
    let (_, _, msg) = one("\n[pools.third]\nservers = [\"10.0.0.2:8000\", \"10.0.0.2:8000\"]\n");
    assert!(msg.contains("listed twice in pool `third`"), "{msg}");
    let (_, _, msg) = one("\n[[listeners]]\naddr = \"*:8081\"\n");
    assert!(msg.contains("\"0.0.0.0:8081\""), "{msg}");
    let (_, _, msg) = one("\n[[listeners]]\naddr = \"localhost:8081\"\n");
    assert!(msg.contains("\"127.0.0.1:8081\""), "{msg}");
    let (line, _, msg) = one("\n[log]\naccess_log = \"/nonexistent-dir/access.log\"\n");
    assert_eq!(line, 12, "{msg}");
    assert!(
        msg.contains("\"/nonexistent-dir/access.log\" cannot be opened"),
        "{msg}"
    );
}

#[test]
fn type_and_key_errors_get_hints() {
    let (_, _, msg) = one("read_timeout = 30\n");
    assert!(
        msg.contains("`read_timeout` is a duration like \"30s\""),
        "{msg}"
    );
    let (_, _, msg) =
        one("\n[[routes]]\nname = \"x\"\npool = \"primary\"\nmax_body_sise = \"1m\"\n");
    assert!(msg.contains("did you mean `max_body_size`?"), "{msg}");
}

#[test]
fn names_are_live_servers_unless_they_must_resolve_at_start() {
    let c = parse(
        Path::new("t.toml"),
        &format!("{BASE}\n[pools.named]\nservers = [\"backend:8000\", {{ srv = \"_http._tcp.app.test\" }}]\nresolve_interval = \"2s\"\n\n[resolver]\nnameservers = [\"10.96.0.10\", \"127.0.0.1:5353\"]\n\n[[routes]]\nname = \"d\"\npool = \"named\"\n"),
    )
    .expect("names need not resolve at load");
    let p = c.pools.iter().find(|p| &*p.name == "named").unwrap();
    assert!(p.servers.is_empty());
    assert_eq!(p.names.len(), 2);
    assert_eq!(p.names[0].to_string(), "backend:8000");
    assert_eq!(p.resolve_interval, Duration::from_secs(2));
    let ns = c.resolver.nameservers.unwrap();
    assert_eq!(ns[0].to_string(), "10.96.0.10:53");
    let (_, _, msg) =
        one("\n[pools.bad]\nservers = [\"no-such-host.invalid:80\"]\nresolve = \"at_start\"\n");
    assert!(
        msg.contains("does not resolve (resolve = \"at_start\")"),
        "{msg}"
    );
    let (_, _, msg) = one("\n[pools.bad]\nservers = [{ srv = \"not a name\" }]\n");
    assert!(msg.contains("is not a DNS name"), "{msg}");
}

#[test]
fn the_summary_names_the_workers_and_their_scheduler() {
    let runtime = |extra: &str| {
        let text =
            format!("{BASE}\n[[routes]]\nname = \"d\"\npool = \"primary\"\n[runtime]\n{extra}");
        parse(Path::new("t.toml"), &text).expect("valid").summary()
    };
    assert!(runtime("workers = 4\n").contains("\n4 workers, per-worker scheduler\n"));
    let s = runtime("workers = 2\nscheduler = \"work-stealing\"\n");
    assert!(s.contains("\n2 workers, work-stealing scheduler\n"), "{s}");
    assert!(runtime("workers = 1\n").contains("\n1 worker, one thread\n"));
}
