//! `switchyard frappe-bench PATH`: turn a Frappe bench into a complete switchyard
//! config, the counterpart of `bench setup nginx`.
//!
//! `bench.rs` reads the bench as bench's `nginx.py` does; `render.rs` writes the config
//! (listeners, sites, routes), `pools.rs` its pools and report routes, from the
//! numbers `capacity.rs` derives (workers, the report cap, upload limits);
//! `toml_text.rs` writes TOML values; `docker.rs` reads frappe_docker's environment.
//! Nothing is written unless the whole bench reads cleanly: a missing or malformed file
//! is an error naming it.

mod bench;
mod capacity;
mod docker;
mod pools;
mod render;
mod toml_text;

use std::path::{Path, PathBuf};

pub use docker::DockerEnv;
pub use pools::REPORT_METHODS;

/// The 502 page bench ships (`bench/config/templates/502.html`), in substance.
pub const PAGE_502: &str = include_str!("../../examples/502.html");

/// Command-line choices.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// App servers for the web pool; default `127.0.0.1:<webserver_port>`.
    pub web: Vec<String>,
    /// Servers for the report pool; none = no report split.
    pub report_pool: Vec<String>,
    /// The socketio servers; default `127.0.0.1:<socketio_port>`. Several are kept
    /// sticky by cookie.
    pub socketio: Vec<String>,
    /// gunicorn workers per app server (else `gunicorn_workers`, else bench's default).
    pub workers: Option<u32>,
    /// Reports in flight per app server (else workers - 1).
    pub report_cap: Option<u32>,
    /// No request classes (the report routes only with `--report-pool`).
    pub no_classes: bool,
    /// `--from-env`: frappe_docker's `frontend` environment.
    pub docker: Option<DockerEnv>,
    /// Where the 502 page is (written by [`generate`]).
    pub page_502: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}: no such directory; is this a bench (the folder with apps/ and sites/)?")]
    NoSites(PathBuf),
    #[error("{0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
    #[error("{0}: invalid JSON: {1}")]
    Json(PathBuf, #[source] serde_json::Error),
    #[error("{0}: {1}")]
    Invalid(PathBuf, String),
}

/// The config text for the bench at `dir`, and a summary for stderr. `output` is where
/// the config will be written (the 502 page goes beside it), or `None` for stdout (the
/// page goes to `<bench>/config/switchyard-502.html`).
pub fn generate(
    dir: &Path,
    output: Option<&Path>,
    mut o: Options,
) -> Result<(String, String), BenchError> {
    let mut bench = bench::read(dir)?;
    if let Some(env) = &o.docker {
        bench.http_timeout = env.read_timeout;
        if o.web.is_empty() {
            o.web = vec![env.backend.clone()];
        }
        if o.socketio.is_empty() {
            o.socketio = vec![env.socketio.clone()];
        }
    }
    let ports = bench::ports(&bench)?;
    let page = match output {
        Some(out) => out.parent().unwrap_or(Path::new(".")).join("502.html"),
        None => bench.dir.join("config").join("switchyard-502.html"),
    };
    o.page_502 = std::path::absolute(&page).map_err(|e| BenchError::Io(page.clone(), e))?;
    let text = render::render(&bench, &o, &ports);
    if let Some(parent) = o.page_502.parent() {
        std::fs::create_dir_all(parent).map_err(|e| BenchError::Io(parent.to_path_buf(), e))?;
    }
    std::fs::write(&o.page_502, PAGE_502).map_err(|e| BenchError::Io(o.page_502.clone(), e))?;
    Ok((text, summary(&bench, &o, &ports)))
}

/// What the summary says of the request classes.
fn classes_line(b: &bench::Bench, o: &Options) -> String {
    match capacity::classes(b, o) {
        None => {
            "\nclasses: off (--no-classes): a report flood can take every gunicorn worker".into()
        }
        Some(c) => format!(
            "\nclasses: web pool max_connections {} ({}); class `report` capped at {} per app server ({}), priority -10",
            c.workers.n, c.workers.from, c.report_cap, c.cap_from
        ),
    }
}

fn summary(
    b: &bench::Bench,
    o: &Options,
    ports: &std::collections::BTreeMap<u16, String>,
) -> String {
    let mut s = format!("bench {}: {} site(s)", b.dir.display(), b.sites.len());
    if let Some(env) = &o.docker {
        s += ", frappe_docker's frontend on :8080 (--from-env)";
        for n in env.notes() {
            s += &format!("\nnote: {n}");
        }
    } else if b.dns_multitenant {
        let tls = render::tls_names(b);
        s += &format!(
            ", dns_multitenant on :80, {} name(s) over TLS on :443",
            tls.len()
        );
    } else {
        let p: Vec<String> = ports
            .iter()
            .map(|(p, site)| format!("{site} on :{p}"))
            .collect();
        s += &format!(", one port per site: {}", p.join(", "));
    }
    let aliases: usize = b.sites.iter().map(|x| x.domains.len()).sum();
    let web = if o.web.is_empty() {
        format!("127.0.0.1:{}", b.webserver_port)
    } else {
        o.web.join(", ")
    };
    let sock = if o.socketio.is_empty() {
        format!("127.0.0.1:{}", b.socketio_port)
    } else if o.socketio.len() > 1 {
        format!("{} (sticky by cookie)", o.socketio.join(", "))
    } else {
        o.socketio.join(", ")
    };
    s += &format!("\n{aliases} domain alias(es); web pool: {web}; socketio: {sock}");
    if !o.report_pool.is_empty() {
        s += &format!(
            "; report pool: {} (falls back to web)",
            o.report_pool.join(", ")
        );
    }
    s += &classes_line(b, o);
    for (site, size) in capacity::raised(b) {
        s += &format!(
            "\nuploads: max_body_size {size} for {site} (its max_file_size is above bench's 50m)"
        );
    }
    s += &format!(
        "\n502 page written to {}\nnext: switchyard --config <file> --check\n",
        o.page_502.display()
    );
    s
}
