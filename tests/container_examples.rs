//! The container examples pass `--check`: frappe_docker's compose override (its
//! entrypoint run with the compose file's environment on the test bench) and the
//! Kubernetes ConfigMap's config. The names they use do not resolve here, which is a
//! warning, not an error: the pools wait for them.

mod support;

use std::collections::HashMap;
use std::process::Command;

use support::bench::{BIN, bench, run};

/// The `environment:` of the compose file's `frontend`, with `${X:-default}` read as
/// its default and `$$` as `$`.
fn compose_env(text: &str) -> HashMap<String, String> {
    let mut env = HashMap::new();
    let mut inside = false;
    for line in text.lines() {
        let t = line.trim();
        if t == "environment:" {
            inside = true;
            continue;
        }
        if inside && !line.starts_with("      ") {
            break;
        }
        if let Some((k, v)) = t.split_once(": ").filter(|_| inside) {
            let v = v.trim();
            let v = match v.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
                Some(inner) => inner.split_once(":-").map_or("", |(_, d)| d).to_owned(),
                None => v.to_owned(),
            };
            env.insert(k.to_owned(), v.replace("$$", "$"));
        }
    }
    env
}

#[test]
fn the_frappe_docker_override_checks_with_its_environment() {
    let dir = bench("docker");
    let compose =
        std::fs::read_to_string("examples/frappe_docker/compose.switchyard.yaml").unwrap();
    let env = compose_env(&compose);
    assert_eq!(env["BACKEND"], "backend:8000", "{env:?}");
    assert_eq!(env["FRAPPE_SITE_NAME_HEADER"], "$host", "{env:?}");
    let bin_dir = std::path::Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let conf = dir.join("out/switchyard.toml");
    let out = Command::new("sh")
        .arg("examples/frappe_docker/entrypoint.sh")
        .envs(&env)
        .env("PATH", path)
        .env("BENCH", &dir)
        .env("SWITCHYARD_CONFIG", &conf)
        .env("SWITCHYARD_CHECK", "1")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("frappe_docker's frontend on :8080"),
        "{stderr}"
    );
    assert!(
        stdout.contains("name backend:8000"),
        "--check lists the names: {stdout}"
    );
    let text = std::fs::read_to_string(&conf).unwrap();
    assert!(text.contains("addr = \"0.0.0.0:8080\""), "{text}");
    assert!(
        text.contains("servers = [\"backend:8000\"]")
            && text.contains("servers = [\"websocket:9000\"]"),
        "{text}"
    );
    assert!(
        text.contains("read_timeout = \"120s\"")
            && text.contains("max_body_size = \"50m\"   # CLIENT_MAX_BODY_SIZE"),
        "{text}"
    );
    assert!(
        text.contains("max_connections = 8"),
        "frappe_docker's gunicorn: {text}"
    );

    // FRAPPE_SITE_NAME_HEADER naming a site: every request is that site's.
    let out = Command::new(BIN)
        .args(["frappe-bench", dir.to_str().unwrap(), "--from-env"])
        .env("FRAPPE_SITE_NAME_HEADER", "erp.test")
        .env("PROXY_READ_TIMEOUT", "300")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("site = \"erp.test\"   # FRAPPE_SITE_NAME_HEADER"),
        "{text}"
    );
    assert!(
        text.contains("servers = [\"0.0.0.0:8000\"]"),
        "the image's default BACKEND: {text}"
    );
    assert!(text.contains("read_timeout = \"300s\""), "{text}");
}

/// The `switchyard.toml` of the ConfigMap, dedented.
fn configmap_toml(yaml: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in yaml.lines() {
        if line.trim_end() == "  switchyard.toml: |" {
            inside = true;
            continue;
        }
        if inside {
            if !line.is_empty() && !line.starts_with("    ") {
                break;
            }
            out.push_str(line.strip_prefix("    ").unwrap_or(""));
            out.push('\n');
        }
    }
    out
}

#[test]
fn the_kubernetes_configmap_checks() {
    let dir = bench("k8s");
    let yaml = std::fs::read_to_string("examples/kubernetes/switchyard.yaml").unwrap();
    assert!(
        yaml.contains("clusterIP: None"),
        "gunicorn behind a headless Service"
    );
    assert!(yaml.contains("path: /health/live") && yaml.contains("path: /health/ready"));
    let page = std::fs::canonicalize("examples/502.html").unwrap();
    let toml = configmap_toml(&yaml)
        .replace("/home/frappe/frappe-bench", dir.to_str().unwrap())
        .replace("/etc/switchyard/502.html", page.to_str().unwrap())
        .replace("0.0.0.0:9901", "127.0.0.1:0");
    assert!(
        toml.contains("erpnext-gunicorn-headless.erpnext.svc.cluster.local:8000"),
        "{toml}"
    );
    let file = dir.join("k8s.toml");
    std::fs::write(&file, &toml).unwrap();
    let (code, stdout, stderr) = run(&["--config", file.to_str().unwrap(), "--check"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("name erpnext-gunicorn-headless.erpnext.svc.cluster.local:8000"),
        "{stdout}"
    );
}
