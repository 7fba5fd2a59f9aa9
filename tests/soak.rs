//! The soak in its short form (`benches/load/soak.py --duration 60`, the 30-minute run
//! is by hand): mixed HTTP/1.1, HTTP/2, TLS, WebSocket, static-file and write clients
//! against the real binary while the config reloads every 10 s, an app server is killed
//! and restarted every 20 s and a health endpoint flaps. It passes when RSS stays
//! within 10% of its level after warm-up, descriptors return to their baseline, no
//! idempotent request failed outside a kill, and no write reached an app server twice.

mod support;

use std::process::Command;

use support::bench::BIN;
use support::tlsclient::cert;

#[test]
fn a_minute_of_mixed_traffic_and_chaos_leaks_nothing_and_duplicates_no_write() {
    let dir = std::env::temp_dir().join(format!("sy-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    cert(&dir, "soak", &["127.0.0.1", "localhost"]);
    let out = Command::new("python3")
        .args(["benches/load/soak.py", "--duration", "60", "--bin", BIN])
        .arg("--cert")
        .arg(dir.join("soak.pem"))
        .arg("--key")
        .arg(dir.join("soak.key"))
        .output()
        .expect("python3 (and curl) run the soak; .ci/run installs them");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the soak failed: {stdout}");
    assert!(stdout.contains("\"writes_duplicated\": 0"), "{stdout}");
}
