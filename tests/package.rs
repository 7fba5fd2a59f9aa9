//! What the Debian package (`cargo deb`, see Cargo.toml) and its systemd units give a
//! fresh machine: the binary, the config as a conffile, units that agree with that
//! config and are hardened, a logrotate snippet; and that the installed pieces work.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn dist(p: &str) -> PathBuf {
    Path::new(ROOT).join("dist").join(p)
}

/// The packaged config with its access log and control socket moved under `dir` (a
/// test writes nothing to /var/log or /run).
fn config_text(packaged: &Path, dir: &Path) -> String {
    std::fs::read_to_string(packaged)
        .unwrap()
        .replace(
            "/var/log/switchyard/access.log",
            &dir.join("access.log").display().to_string(),
        )
        .replace(
            "/run/switchyard/control.sock",
            &dir.join("control.sock").display().to_string(),
        )
}

/// The socket unit listens exactly where the packaged config does: systemd would
/// otherwise hold an address no listener serves, and switchyard fail to bind its own.
#[test]
fn the_socket_unit_matches_the_packaged_config() {
    let unit = std::fs::read_to_string(dist("systemd/switchyard.socket")).unwrap();
    let sockets: BTreeSet<String> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("ListenStream="))
        .map(str::to_owned)
        .collect();
    let dir = std::env::temp_dir();
    let cfg = switchyard::config::parse(
        Path::new("switchyard.toml"),
        &config_text(&dist("switchyard.toml"), &dir),
    )
    .unwrap();
    let mut wanted: BTreeSet<String> = cfg.listeners.iter().map(|l| l.addr.to_string()).collect();
    wanted.extend(cfg.admin.addr.map(|a| a.to_string()));
    assert_eq!(sockets, wanted);
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Build the package around the test binary, look inside, unpack it, and run what it
/// installs: `--check` on the conffile, the service's command line serving requests,
/// `systemd-analyze security` on the unit, `logrotate -d` on the snippet.
#[tokio::test]
async fn the_debian_package_installs_a_working_hardened_service() {
    let has_deb = Command::new("cargo")
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_deb {
        eprintln!("SKIPPED package test: cargo-deb not installed (cargo install cargo-deb)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("sy-deb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("target/release")).unwrap();
    std::fs::copy(BIN, dir.join("target/release/switchyard")).unwrap();
    let deb = dir.join("switchyard.deb");
    run(Command::new("cargo")
        .args(["deb", "--no-build", "--no-strip", "--fast", "--output"])
        .arg(&deb)
        .current_dir(ROOT)
        .env("CARGO_TARGET_DIR", dir.join("target")));

    let files = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    for f in [
        "./usr/bin/switchyard",
        "./etc/switchyard/switchyard.toml",
        "./etc/logrotate.d/switchyard",
        "./usr/lib/systemd/system/switchyard.service",
        "./usr/lib/systemd/system/switchyard.socket",
        "./usr/share/doc/switchyard/README.md",
        "./usr/share/doc/switchyard/examples/keepalived/keepalived.conf",
    ] {
        assert!(files.contains(f), "{f} missing:\n{files}");
    }
    let conffiles = run(Command::new("dpkg-deb")
        .arg("-I")
        .arg(&deb)
        .arg("conffiles"));
    assert!(
        conffiles.contains("/etc/switchyard/switchyard.toml"),
        "{conffiles}"
    );
    let postinst = run(Command::new("dpkg-deb").arg("-I").arg(&deb).arg("postinst"));
    assert!(
        postinst.contains("deb-systemd-helper enable switchyard.service"),
        "{postinst}"
    );

    let root = dir.join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    let bin = root.join("usr/bin/switchyard");
    let cfg = dir.join("switchyard.toml");
    std::fs::write(
        &cfg,
        config_text(&root.join("etc/switchyard/switchyard.toml"), &dir),
    )
    .unwrap();
    let summary = run(Command::new(&bin).arg("--config").arg(&cfg).arg("--check"));
    assert!(summary.contains("127.0.0.1:8080"), "{summary}");
    serves(&bin, &cfg).await;

    let unit = root.join("usr/lib/systemd/system/switchyard.service");
    let unit_text = std::fs::read_to_string(&unit).unwrap();
    assert!(
        unit_text
            .contains("ExecStart=/usr/bin/switchyard --config /etc/switchyard/switchyard.toml")
    );
    exposure_is_low(&unit);
    if Command::new("logrotate").arg("--version").output().is_ok() {
        run(Command::new("logrotate")
            .arg("-d")
            .arg(root.join("etc/logrotate.d/switchyard")));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The unit's command line on the unpacked config: it serves (502 without an app
/// server, naming the reason) and its liveness check answers.
async fn serves(bin: &Path, cfg: &Path) {
    let port_free = std::net::TcpListener::bind("127.0.0.1:8080").is_ok()
        && std::net::TcpListener::bind("127.0.0.1:9901").is_ok();
    if !port_free {
        eprintln!("SKIPPED serving the packaged config: 127.0.0.1:8080 or :9901 is in use");
        return;
    }
    let mut child = Command::new(bin)
        .arg("--config")
        .arg(cfg)
        .args(["--log-level", "warn"])
        .spawn()
        .unwrap();
    eventually("the packaged config serves", || async {
        tokio::net::TcpStream::connect("127.0.0.1:9901")
            .await
            .is_ok()
    })
    .await;
    assert_eq!(get("http://127.0.0.1:9901/health/live").await.status, 200);
    let got = get("http://127.0.0.1:8080/").await;
    assert_eq!(got.status, 502, "{}", got.body);
    let _ = child.kill();
    let _ = child.wait();
}

/// `systemd-analyze security` rates the unit well under 5 (where systemd-analyze is).
fn exposure_is_low(unit: &Path) {
    let Ok(out) = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(unit)
        .output()
    else {
        eprintln!("SKIPPED systemd-analyze security: not installed");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let level = text
        .lines()
        .find_map(|l| l.split("exposure level for switchyard.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok());
    eprintln!("systemd-analyze security: {level:?}");
    match level {
        Some(l) => assert!(l < 3.0, "exposure {l}:\n{text}"),
        None => eprintln!("SKIPPED: no exposure level in {text:?}"),
    }
}
