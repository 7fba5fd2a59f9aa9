//! Reading a bench the way bench's own `bench/config/nginx.py` does: the common config
//! (`sites/common_site_config.json`) and every `sites/<site>/site_config.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::BenchError;

/// What the nginx config of a bench is made from.
#[derive(Debug)]
pub struct Bench {
    /// The bench directory, absolute.
    pub dir: PathBuf,
    pub dns_multitenant: bool,
    pub webserver_port: u16,
    pub socketio_port: u16,
    /// Whether `socketio_port` was in the common config (else bench init's 9000).
    pub socketio_from_config: bool,
    pub http_timeout: u64,
    pub allow_rate_limiting: bool,
    /// `gunicorn_workers` of the common config (bench writes 2 × CPU + 1 at init).
    pub gunicorn_workers: Option<u32>,
    /// `max_file_size` of the common config, bytes.
    pub max_file_size: Option<u64>,
    pub wildcard: Option<Wildcard>,
    /// Sorted by name.
    pub sites: Vec<Site>,
}

#[derive(Debug, Clone)]
pub struct Wildcard {
    /// `*.example.com` (or `.example.com`), as written.
    pub domain: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Site {
    pub name: String,
    pub nginx_port: Option<u16>,
    pub cert: Option<(PathBuf, PathBuf)>,
    pub domains: Vec<Domain>,
    /// `max_file_size` of its site_config.json, bytes (wins over the common one).
    pub max_file_size: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Domain {
    pub name: String,
    pub cert: Option<(PathBuf, PathBuf)>,
}

/// Read `dir`; every problem names its file.
pub fn read(dir: &Path) -> Result<Bench, BenchError> {
    let dir = std::path::absolute(dir).map_err(|e| BenchError::Io(dir.to_path_buf(), e))?;
    let sites_dir = dir.join("sites");
    if !sites_dir.is_dir() {
        return Err(BenchError::NoSites(sites_dir));
    }
    let common_path = sites_dir.join("common_site_config.json");
    let common = if common_path.exists() {
        json(&common_path)?
    } else {
        Value::Object(Default::default())
    };
    let mut sites = Vec::new();
    for entry in std::fs::read_dir(&sites_dir).map_err(|e| BenchError::Io(sites_dir.clone(), e))? {
        let entry = entry.map_err(|e| BenchError::Io(sites_dir.clone(), e))?;
        let conf = entry.path().join("site_config.json");
        if conf.is_file() {
            let name = entry.file_name().to_string_lossy().into_owned();
            sites.push(site(&name, &conf, &json(&conf)?)?);
        }
    }
    sites.sort_by(|a, b| a.name.cmp(&b.name));
    let get_u16 = |k: &str| {
        common
            .get(k)
            .and_then(Value::as_u64)
            .and_then(|n| u16::try_from(n).ok())
    };
    Ok(Bench {
        dns_multitenant: truthy(common.get("dns_multitenant")),
        webserver_port: get_u16("webserver_port").unwrap_or(8000),
        socketio_port: get_u16("socketio_port").unwrap_or(9000),
        socketio_from_config: get_u16("socketio_port").is_some(),
        http_timeout: common
            .get("http_timeout")
            .and_then(Value::as_u64)
            .unwrap_or(120),
        allow_rate_limiting: truthy(common.get("allow_rate_limiting")),
        gunicorn_workers: common
            .get("gunicorn_workers")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n > 0),
        max_file_size: bytes(&common, "max_file_size"),
        wildcard: wildcard(&common, &common_path)?,
        sites,
        dir,
    })
}

fn json(path: &Path) -> Result<Value, BenchError> {
    let text = std::fs::read_to_string(path).map_err(|e| BenchError::Io(path.to_path_buf(), e))?;
    let v: Value =
        serde_json::from_str(&text).map_err(|e| BenchError::Json(path.to_path_buf(), e))?;
    if !v.is_object() {
        return Err(BenchError::Invalid(
            path.to_path_buf(),
            "the file is not a JSON object".into(),
        ));
    }
    Ok(v)
}

/// A byte count as Frappe's `cint` reads it: a number or a numeric string; 0 is unset.
fn bytes(v: &Value, key: &str) -> Option<u64> {
    match v.get(key)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|n| *n > 0)
}

/// bench treats 1, true and "1" alike.
fn truthy(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_u64().is_some_and(|n| n != 0),
        Some(Value::String(s)) => matches!(s.as_str(), "1" | "true" | "True"),
        _ => false,
    }
}

fn cert_pair(v: &Value, file: &Path) -> Result<Option<(PathBuf, PathBuf)>, BenchError> {
    let cert = v.get("ssl_certificate").and_then(Value::as_str);
    let key = v.get("ssl_certificate_key").and_then(Value::as_str);
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(c), Some(k)) => {
            for p in [c, k] {
                if !Path::new(p).is_file() {
                    return Err(BenchError::Invalid(
                        file.to_path_buf(),
                        format!("certificate file {p} does not exist"),
                    ));
                }
            }
            Ok(Some((c.into(), k.into())))
        }
        _ => Err(BenchError::Invalid(
            file.to_path_buf(),
            "ssl_certificate and ssl_certificate_key must be given together".into(),
        )),
    }
}

fn site(name: &str, file: &Path, v: &Value) -> Result<Site, BenchError> {
    if !crate::sites::valid_name(name) {
        return Err(BenchError::Invalid(
            file.to_path_buf(),
            format!("site folder {name:?} is not a host name"),
        ));
    }
    let nginx_port = match v.get("nginx_port") {
        None => None,
        Some(p) => Some(
            p.as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .ok_or_else(|| {
                    BenchError::Invalid(
                        file.to_path_buf(),
                        format!("nginx_port {p} is not a port number"),
                    )
                })?,
        ),
    };
    let domains = v
        .get("domains")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|d| domain(d, file))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Site {
        name: name.to_owned(),
        nginx_port,
        cert: cert_pair(v, file)?,
        domains,
        max_file_size: bytes(v, "max_file_size"),
    })
}

/// One `domains` entry: a name, or `{ domain, ssl_certificate, ssl_certificate_key }`.
fn domain(d: &Value, file: &Path) -> Result<Domain, BenchError> {
    match d {
        Value::String(s) => Ok(Domain {
            name: s.to_ascii_lowercase(),
            cert: None,
        }),
        Value::Object(_) => Ok(Domain {
            name: d
                .get("domain")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    BenchError::Invalid(
                        file.to_path_buf(),
                        "a `domains` entry has no `domain`".into(),
                    )
                })?
                .to_ascii_lowercase(),
            cert: cert_pair(d, file)?,
        }),
        other => Err(BenchError::Invalid(
            file.to_path_buf(),
            format!("`domains` entry {other} is neither a name nor an object"),
        )),
    }
}

fn wildcard(common: &Value, file: &Path) -> Result<Option<Wildcard>, BenchError> {
    let Some(w) = common.get("wildcard") else {
        return Ok(None);
    };
    let domain = w.get("domain").and_then(Value::as_str).ok_or_else(|| {
        BenchError::Invalid(file.to_path_buf(), "`wildcard` has no `domain`".into())
    })?;
    let (cert, key) = cert_pair(w, file)?.ok_or_else(|| {
        BenchError::Invalid(
            file.to_path_buf(),
            "`wildcard` needs ssl_certificate and ssl_certificate_key".into(),
        )
    })?;
    Ok(Some(Wildcard {
        domain: domain.to_ascii_lowercase(),
        cert,
        key,
    }))
}

/// Per-site ports when not `dns_multitenant`: `nginx_port`, else 80 for the first site,
/// then 8001, 8002… (bench's `prepare_sites`); two sites on one port is an error.
pub fn ports(bench: &Bench) -> Result<BTreeMap<u16, String>, BenchError> {
    let mut taken: BTreeMap<u16, String> = BTreeMap::new();
    let conf = |s: &Site| {
        bench
            .dir
            .join("sites")
            .join(&s.name)
            .join("site_config.json")
    };
    for s in bench.sites.iter().filter(|s| s.nginx_port.is_some()) {
        let port = s.nginx_port.unwrap_or(80);
        if let Some(other) = taken.insert(port, s.name.clone()) {
            return Err(BenchError::Invalid(
                conf(s),
                format!("nginx_port {port} is also the port of site {other}"),
            ));
        }
    }
    let mut next = 80;
    for s in bench.sites.iter().filter(|s| s.nginx_port.is_none()) {
        while taken.contains_key(&next) {
            next = if next == 80 { 8001 } else { next + 1 };
        }
        taken.insert(next, s.name.clone());
    }
    Ok(taken)
}
