//! A real browser and HTTP/3: headless Chromium (Debian's) loads a page over HTTP/2,
//! takes the listener's `Alt-Svc` (its profile records the h3 alternative), and loads
//! it over HTTP/3 from the same listener. Chromium only uses an Alt-Svc h3 alternative
//! whose certificate chains to a public root (ERR_QUIC_CERT_ROOT_NOT_KNOWN otherwise),
//! so the second load allows QUIC for the test origin (`--origin-to-force-quic-on`), with
//! the test certificate pinned by its key (`--ignore-certificate-errors-spki-list`).
//! Skips without /usr/bin/chromium unless SWITCHYARD_REQUIRE_CHROMIUM is set (as
//! `.ci/run` does).

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::tlsclient::cert;
use support::*;

const CHROMIUM: &str = "/usr/bin/chromium";

fn have_chromium() -> bool {
    let ok = Path::new(CHROMIUM).exists();
    if !ok {
        assert!(
            std::env::var_os("SWITCHYARD_REQUIRE_CHROMIUM").is_none(),
            "Chromium is required (SWITCHYARD_REQUIRE_CHROMIUM) but {CHROMIUM} is missing"
        );
        eprintln!("skipped: no {CHROMIUM} (apt-get install chromium)");
    }
    ok
}

fn base64(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// base64(SHA-256(SubjectPublicKeyInfo)) of a DER certificate, as Chromium pins keys.
fn spki_pin(der: &[u8]) -> String {
    let (_, c) = x509_parser::parse_x509_certificate(der).expect("a certificate");
    base64(ring::digest::digest(&ring::digest::SHA256, c.public_key().raw).as_ref())
}

/// Load `url` in headless Chromium with `profile`; the page's DOM.
async fn load(url: &str, profile: &Path, pin: &str, extra: &[String]) -> String {
    let mut cmd = tokio::process::Command::new(CHROMIUM);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--host-resolver-rules=MAP erp.test 127.0.0.1",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .arg(format!("--ignore-certificate-errors-spki-list={pin}"))
    .args(extra)
    .args(["--dump-dom", url])
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("Chromium within 60 s")
        .expect("Chromium runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn chromium_takes_the_alt_svc_and_loads_the_page_over_http3() {
    if !have_chromium() {
        return;
    }
    let d: PathBuf =
        std::env::temp_dir().join(format!("switchyard-chromium-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let der = cert(&d, "erp", &["erp.test"]);
    let log = d.join("access.log");
    let b = Backend::spawn("the page").await;
    let dd = d.display();
    let cfg = Config::bare()
        .listener("{listen}", "http3 = true")
        .toml(&format!(
            "[[listeners.tls]]\ncert = \"{dd}/erp.pem\"\nkey = \"{dd}/erp.key\"\n[log]\naccess_log = \"{}\"\n",
            log.display()
        ))
        .pool("p", [b.addr], "")
        .route("all", "p", "");
    let p = Proxy::start(&cfg).await;
    let origin = format!("erp.test:{}", p.addr().port());
    let url = format!("https://{origin}/");
    let (pin, profile) = (spki_pin(&der), d.join("profile"));

    let dom = load(&url, &profile, &pin, &[]).await;
    assert!(dom.contains("the page"), "{dom}");
    let state = std::fs::read_to_string(profile.join("Default/Network Persistent State"))
        .unwrap_or_default();
    assert!(
        state.contains("\"advertised_alpns\":[\"h3\"]")
            && state.contains(&format!("\"port\":{}", p.addr().port())),
        "Chromium recorded the h3 alternative from Alt-Svc: {state}"
    );

    let dom = load(
        &url,
        &profile,
        &pin,
        &[format!("--origin-to-force-quic-on={origin}")],
    )
    .await;
    assert!(dom.contains("the page"), "{dom}");
    eventually("an HTTP/3 line in the access log", || {
        let log = log.clone();
        async move {
            std::fs::read_to_string(&log).is_ok_and(|t| {
                t.contains("\"GET / HTTP/2.0\" 200")
                    && t.contains("\"GET / HTTP/3.0\" 200")
                    && t.contains("HeadlessChrome")
            })
        }
    })
    .await;
    p.stop().await;
    let _ = std::fs::remove_dir_all(&d);
}
