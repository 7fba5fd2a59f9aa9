//! A Frappe bench for the `frappe-bench` tests: the fixture under
//! `tests/fixtures/frappe-bench` copied to a temporary directory (plus a TLS site
//! whose certificate is made here), the real binary to run on it, and the generated
//! config's listeners moved to loopback ports.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::tlsclient::cert;

pub const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// Copy a tree, keeping symlinks as symlinks.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let kind = e.file_type().unwrap();
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src).unwrap(), &dst).unwrap();
        } else if kind.is_dir() {
            copy_tree(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// The fixture bench in a temporary directory, with `shop.test` on TLS.
pub fn bench(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sy-bench-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    copy_tree(Path::new("tests/fixtures/frappe-bench"), &dir);
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    cert(&certs, "shop.test", &["shop.test"]);
    let conf = format!(
        "{{\"db_name\": \"_shop\", \"db_password\": \"shop_db_s3cret\", \"ssl_certificate\": \"{0}/shop.test.pem\", \"ssl_certificate_key\": \"{0}/shop.test.key\"}}",
        certs.display()
    );
    std::fs::write(dir.join("sites/shop.test/site_config.json"), conf).unwrap();
    dir
}

pub fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Listener addresses become the test's loopback ports.
pub fn on_loopback(config: &str) -> String {
    config
        .replace("\"0.0.0.0:80\"", "\"{listen0}\"")
        .replace("\"[::]:80\"", "\"{listen1}\"")
        .replace("\"0.0.0.0:443\"", "\"{listen2}\"")
        .replace("\"[::]:443\"", "\"{listen3}\"")
}
