//! `--from-env`: the environment frappe_docker's nginx image reads
//! (`nginx-entrypoint.sh`), with that image's defaults and meanings, so switchyard can
//! replace the `frontend` service of a frappe_docker compose file unchanged.

use std::fmt::Write;

use super::toml_text::q;

/// frappe_docker's `frontend` environment.
#[derive(Debug, Clone)]
pub struct DockerEnv {
    /// `BACKEND`: gunicorn, `host:port` (default `0.0.0.0:8000`).
    pub backend: String,
    /// `SOCKETIO`: the socket.io server (default `0.0.0.0:9000`).
    pub socketio: String,
    /// `FRAPPE_SITE_NAME_HEADER`: a site name, or `None` for `$host` (the default).
    pub site: Option<String>,
    /// `UPSTREAM_REAL_IP_ADDRESS` (default `127.0.0.1`): whose forwarded client address is believed.
    pub real_ip_from: String,
    /// `UPSTREAM_REAL_IP_HEADER` (default `X-Forwarded-For`).
    pub real_ip_header: String,
    /// `UPSTREAM_REAL_IP_RECURSIVE` (default `off`).
    pub real_ip_recursive: bool,
    /// `PROXY_READ_TIMEOUT` in seconds (default 120).
    pub read_timeout: u64,
    /// `CLIENT_MAX_BODY_SIZE` (default `50m`).
    pub max_body_size: String,
}

impl DockerEnv {
    /// Read the variables through `get` (the process environment in `main`).
    pub fn read(get: impl Fn(&str) -> Option<String>) -> Result<DockerEnv, String> {
        let var = |k: &str, d: &str| {
            get(k)
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| d.to_owned())
        };
        let timeout = var("PROXY_READ_TIMEOUT", "120");
        let read_timeout =
            timeout.trim().trim_end_matches('s').parse().map_err(|_| {
                format!("PROXY_READ_TIMEOUT={timeout:?} is not a number of seconds")
            })?;
        let site = var("FRAPPE_SITE_NAME_HEADER", "$host");
        let recursive = var("UPSTREAM_REAL_IP_RECURSIVE", "off");
        Ok(DockerEnv {
            backend: var("BACKEND", "0.0.0.0:8000"),
            socketio: var("SOCKETIO", "0.0.0.0:9000"),
            site: (site != "$host" && site != "$http_host").then_some(site),
            real_ip_from: var("UPSTREAM_REAL_IP_ADDRESS", "127.0.0.1"),
            real_ip_header: var("UPSTREAM_REAL_IP_HEADER", "X-Forwarded-For"),
            real_ip_recursive: matches!(recursive.as_str(), "on" | "true" | "1"),
            read_timeout,
            max_body_size: var("CLIENT_MAX_BODY_SIZE", "50m"),
        })
    }

    /// The image's one listener, `:8080`, plain HTTP (TLS ends at the compose file's
    /// Traefik or the cluster's ingress).
    pub fn listener(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "[[listeners]]   # frappe_docker's frontend: listen 8080\nname = \"http\"\naddr = \"0.0.0.0:8080\""
        );
        match &self.site {
            Some(site) => {
                let _ = writeln!(s, "site = {}   # FRAPPE_SITE_NAME_HEADER", q(site));
            }
            None => {
                let _ = writeln!(
                    s,
                    "# FRAPPE_SITE_NAME_HEADER=$host: the site is the request's host"
                );
            }
        }
        let _ = writeln!(
            s,
            "trusted_proxies = [{}]   # UPSTREAM_REAL_IP_ADDRESS (set_real_ip_from)",
            q(&self.real_ip_from)
        );
        let _ = writeln!(
            s,
            "max_body_size = {}   # CLIENT_MAX_BODY_SIZE",
            q(&self.max_body_size)
        );
    }

    /// What the summary says of the variables switchyard reads differently.
    pub fn notes(&self) -> Vec<String> {
        let mut n = Vec::new();
        if !self.real_ip_header.eq_ignore_ascii_case("x-forwarded-for") {
            n.push(format!("UPSTREAM_REAL_IP_HEADER={}: switchyard reads the client address from X-Forwarded-For of trusted proxies only", self.real_ip_header));
        }
        if !self.real_ip_recursive {
            n.push("UPSTREAM_REAL_IP_RECURSIVE=off: switchyard always takes the rightmost untrusted X-Forwarded-For address (nginx's `on`)".into());
        }
        n
    }
}
