//! The switchyard config for a bench: what bench's nginx template does, point for point
//! (`shared/frappe-nginx.md` §1.3 and §8), plus pools with health checks and, with
//! `--report-pool`, the report split. Each value says where it came from.

use std::fmt::Write;

use super::Options;
use super::bench::{Bench, Site};
use super::toml_text::{list, q};

/// The template's five security headers.
const SECURITY_HEADERS: &str = r#"{ "X-Frame-Options" = "SAMEORIGIN", "Strict-Transport-Security" = "max-age=63072000; includeSubDomains; preload", "X-Content-Type-Options" = "nosniff", "X-XSS-Protection" = "1; mode=block", "Referrer-Policy" = "same-origin, strict-origin-when-cross-origin" }"#;

/// The template's `gzip_types` (text/html is always included).
const GZIP_TYPES: &[&str] = &[
    "text/html",
    "application/atom+xml",
    "application/javascript",
    "application/json",
    "application/rss+xml",
    "application/vnd.ms-fontobject",
    "application/x-font-ttf",
    "application/font-woff",
    "application/x-web-app-manifest+json",
    "application/xhtml+xml",
    "application/xml",
    "font/opentype",
    "image/svg+xml",
    "image/x-icon",
    "text/css",
    "text/plain",
    "text/x-component",
    "text/javascript",
];

/// The whole config.
pub fn render(b: &Bench, o: &Options, ports: &std::collections::BTreeMap<u16, String>) -> String {
    let mut s = String::new();
    let sites_dir = b.dir.join("sites").display().to_string();
    let _ = writeln!(
        s,
        "# switchyard config for the bench {}, made by `switchyard frappe-bench`",
        b.dir.display()
    );
    let _ = writeln!(
        s,
        "# from sites/common_site_config.json and the site_config.json of: {}.",
        names(b)
    );
    let _ = writeln!(
        s,
        "# It does what `bench setup nginx` writes (see README, \"Migrating from Frappe's nginx config\").\n"
    );
    listeners(&mut s, b, o, ports);
    let _ = writeln!(
        s,
        "[server]\nheader_timeout = \"15s\"   # keepalive_timeout 15\n"
    );
    sites_and_compression(&mut s, b);
    let classes = super::capacity::classes(b, o);
    super::pools::pools(&mut s, b, o, classes.as_ref());
    routes(&mut s, b, o, &sites_dir, classes.as_ref());
    s
}

/// `[sites]` with the domain aliases of every site, and `[compression]` as bench's gzip.
fn sites_and_compression(s: &mut String, b: &Bench) {
    let _ = writeln!(
        s,
        "# Every request's site: its Host, lower-case without port, or the site a domain alias names."
    );
    let _ = writeln!(
        s,
        "# X-Frappe-Site-Name is always set to it upstream, never taken from the client."
    );
    let _ = writeln!(s, "[sites]");
    let aliases: Vec<String> = b
        .sites
        .iter()
        .flat_map(|site| {
            site.domains
                .iter()
                .map(move |d| format!("{} = {}", q(&d.name), q(&site.name)))
        })
        .collect();
    let _ = writeln!(
        s,
        "domains = {{ {} }}   # site_config.json `domains`\n",
        aliases.join(", ")
    );
    let types: Vec<String> = GZIP_TYPES.iter().map(|t| (*t).to_owned()).collect();
    let _ = writeln!(
        s,
        "[compression]   # gzip on; gzip_comp_level 5; gzip_min_length 256; gzip_types ...\nlevel = 5\nmin_length = 256\ntypes = {}\n",
        list(&types)
    );
}

fn names(b: &Bench) -> String {
    let n: Vec<&str> = b.sites.iter().map(|s| s.name.as_str()).collect();
    if n.is_empty() {
        "(no sites)".into()
    } else {
        n.join(", ")
    }
}

/// Keys every listener gets: the template's server-level directives, with the upload
/// limit of the `sites` it serves.
fn common_keys(s: &mut String, b: &Bench, o: &Options, sites: &[&Site]) {
    if o.docker.is_none() {
        let (size, why) = super::capacity::body_size(b, sites.iter().copied());
        let _ = writeln!(s, "max_body_size = \"{size}\"   # {why}");
    }
    let page = o.page_502.display().to_string();
    let _ = writeln!(
        s,
        "error_pages = {{ \"502\" = {p}, \"503\" = {p} }}   # error_page 502 /502.html (503: no healthy server)",
        p = q(&page)
    );
    let _ = writeln!(s, "add_response_headers = {SECURITY_HEADERS}");
    if b.allow_rate_limiting {
        let _ = writeln!(
            s,
            "max_requests_per_host = 8   # allow_rate_limiting: limit_conn $host 8"
        );
    }
}

fn listeners(
    s: &mut String,
    b: &Bench,
    o: &Options,
    ports: &std::collections::BTreeMap<u16, String>,
) {
    if let Some(env) = &o.docker {
        env.listener(s);
        common_keys(s, b, o, &[]);
        s.push('\n');
        return;
    }
    if b.dns_multitenant {
        multitenant_listeners(s, b, o);
        return;
    }
    for (port, site) in ports {
        let site_conf = b.sites.iter().find(|x| &x.name == site);
        let why = match site_conf.and_then(|x| x.nginx_port) {
            Some(_) => "nginx_port in its site_config.json",
            None => "no nginx_port: bench's next free port",
        };
        let _ = writeln!(
            s,
            "[[listeners]]   # site {site} ({why})\nname = {}\naddr = \"0.0.0.0:{port}\"\nsite = {}",
            q(site),
            q(site)
        );
        common_keys(s, b, o, &site_conf.into_iter().collect::<Vec<_>>());
        if let Some((c, k)) = site_conf.and_then(|x| x.cert.as_ref()) {
            let _ = writeln!(
                s,
                "[[listeners.tls]]   # ssl_certificate of {site}\ncert = {}\nkey = {}",
                q(&c.display().to_string()),
                q(&k.display().to_string())
            );
        }
        s.push('\n');
    }
}

/// `dns_multitenant`: every site by name on :80, and those with a certificate on :443.
fn multitenant_listeners(s: &mut String, b: &Bench, o: &Options) {
    let all: Vec<&Site> = b.sites.iter().collect();
    for (name, addr) in [("http", "0.0.0.0:80"), ("http6", "[::]:80")] {
        let _ = writeln!(
            s,
            "[[listeners]]   # dns_multitenant: every site by name on :80\nname = \"{name}\"\naddr = \"{addr}\""
        );
        common_keys(s, b, o, &all);
        s.push('\n');
    }
    let certs = tls_certs(b);
    if certs.is_empty() {
        return;
    }
    for (name, addr) in [("https", "0.0.0.0:443"), ("https6", "[::]:443")] {
        let _ = writeln!(
            s,
            "[[listeners]]   # the sites with a certificate, on :443\nname = \"{name}\"\naddr = \"{addr}\""
        );
        common_keys(s, b, o, &all);
        for (cert, key, why) in &certs {
            let _ = writeln!(
                s,
                "[[listeners.tls]]   # {why}\ncert = {}\nkey = {}",
                q(cert),
                q(key)
            );
        }
        s.push('\n');
    }
}

/// (cert, key, where it came from) for the :443 listener: per site, per domain, wildcard.
fn tls_certs(b: &Bench) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for site in &b.sites {
        if let Some((c, k)) = &site.cert {
            out.push((
                c.display().to_string(),
                k.display().to_string(),
                format!("ssl_certificate of {}", site.name),
            ));
        }
        for d in &site.domains {
            if let Some((c, k)) = &d.cert {
                out.push((
                    c.display().to_string(),
                    k.display().to_string(),
                    format!("domain {} of {}", d.name, site.name),
                ));
            }
        }
    }
    if let Some(w) = &b.wildcard {
        out.push((
            w.cert.display().to_string(),
            w.key.display().to_string(),
            format!("wildcard certificate for {}", w.domain),
        ));
    }
    out
}

/// Names served over TLS: they get a :80 → https redirect.
pub fn tls_names(b: &Bench) -> Vec<String> {
    let mut out = Vec::new();
    let wild = b
        .wildcard
        .as_ref()
        .map(|w| w.domain.trim_start_matches('*').to_owned());
    for site in &b.sites {
        let by_wildcard = |n: &str| wild.as_ref().is_some_and(|w| n.ends_with(w.as_str()));
        if site.cert.is_some() || by_wildcard(&site.name) {
            out.push(site.name.clone());
        }
        for d in &site.domains {
            if d.cert.is_some() || by_wildcard(&d.name) {
                out.push(d.name.clone());
            }
        }
    }
    out
}

fn routes(
    s: &mut String,
    b: &Bench,
    o: &Options,
    sites: &str,
    classes: Option<&super::capacity::Classes>,
) {
    https_redirect(s, b, o);
    let _ = writeln!(
        s,
        "[[routes]]   # location /assets: try_files $uri =404; a year of caching\nname = \"assets\"\nmatch.path_prefix = \"/assets\"\nroot = {}\nfollow_symlinks = true   # sites/assets/<app> are symlinks into apps/\ncache_control = \"max-age=31536000\"\n",
        q(sites)
    );
    let _ = writeln!(
        s,
        "[[routes]]   # location ~ ^/protected/(.*): internal, for X-Accel-Redirect\nname = \"protected\"\nmatch.path_prefix = \"/protected\"\ninternal = true\nroot = {}\nstrip_prefix = \"/protected\"\n",
        q(&format!("{sites}/{{site}}"))
    );
    let _ = writeln!(
        s,
        "[[routes]]   # location /socket.io: Origin rewritten, Host without port, WebSocket upgrades\nname = \"socketio\"\nmatch.path_prefix = \"/socket.io\"\npool = \"socketio\"\nset_request_headers = {{ \"Origin\" = \"{{scheme}}://{{http_host}}\", \"Host\" = \"{{host}}\" }}\n"
    );
    let public = q(&format!("{sites}/{{site}}/public"));
    let _ = writeln!(
        s,
        "[[routes]]   # location ~* ^/files/.*.(htm|html|svg|xml): forced download, no rewrites\nname = \"files-download\"\nmatch.path_regex = '(?i)/files/.*.(htm|html|svg|xml).*'\nroot = {public}\npool = \"web\"\naccel_redirect = true\nset_request_headers = {{ \"Host\" = \"{{host}}\" }}\nadd_response_headers = {{ \"Content-Disposition\" = \"attachment\" }}\n"
    );
    strip_routes(s);
    super::pools::report_routes(s, o, classes);
    let _ = writeln!(
        s,
        "[[routes]]   # location /: try_files /<site>/public/$uri @webserver\nname = \"site\"\nroot = {public}\npool = \"web\"\naccel_redirect = true   # X-Use-X-Accel-Redirect: True\nset_request_headers = {{ \"Host\" = \"{{host}}\" }}"
    );
}

/// The :80 server of TLS sites: `return 301 https://$host$request_uri`.
fn https_redirect(s: &mut String, b: &Bench, o: &Options) {
    let tls = tls_names(b);
    if b.dns_multitenant && !tls.is_empty() && o.docker.is_none() {
        let _ = writeln!(
            s,
            "[[routes]]   # :80 server for the TLS sites: return 301 https://$host$request_uri\nname = \"to-https\"\nmatch.listener = [\"http\", \"http6\"]\nmatch.host = {}\nmatch.path_regex = '(.*)'\nredirect = \"https://{{host}}$1\"\n",
            list(&tls)
        );
    }
}

/// nginx's `rewrite … permanent` rules of bench's config: trailing slash, `index.html`,
/// `.html`.
fn strip_routes(s: &mut String) {
    for (name, re, why) in [
        ("strip-slash", "(.+)/", "rewrite ^(.+)/$ $1 permanent"),
        (
            "strip-index",
            r"(.+)/index\.html",
            r"rewrite ^(.+)/index\.html$ $1 permanent",
        ),
        (
            "strip-html",
            r"(.+)\.html",
            r"rewrite ^(.+)\.html$ $1 permanent",
        ),
    ] {
        let _ = writeln!(
            s,
            "[[routes]]   # {why}\nname = \"{name}\"\nmatch.path_regex = '{re}'\nredirect = \"$1\"\n"
        );
    }
}
