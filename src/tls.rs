//! TLS termination with rustls. Certificates are loaded when a config is loaded (so
//! `--check` finds a bad file) and a reload re-reads them, so a renewed certificate is
//! served from the next handshake on; open connections are untouched.
//!
//! SNI picks the certificate whose subject alternative names match the requested name:
//! an exact name first, then a `*.example.com` wildcard (one label). The first
//! certificate is the default for unknown or missing SNI. TLS 1.2 and 1.3 only, ALPN
//! `h2` and `http/1.1`, rustls' safe defaults, session resumption through the
//! in-memory session cache.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, version};

/// One certificate with the names it covers (lower-case; wildcards kept as `*.x`).
#[derive(Debug)]
struct Entry {
    names: Vec<String>,
    key: Arc<CertifiedKey>,
}

#[derive(Debug)]
struct SniResolver {
    entries: Vec<Entry>,
}

impl SniResolver {
    fn pick(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = sni.map(str::to_ascii_lowercase) {
            if let Some(e) = self.entries.iter().find(|e| e.names.contains(&name)) {
                return Some(e.key.clone());
            }
            let parent = name.split_once('.').map(|(_, rest)| format!("*.{rest}"));
            if let Some(w) = parent
                && let Some(e) = self.entries.iter().find(|e| e.names.contains(&w))
            {
                return Some(e.key.clone());
            }
        }
        self.entries.first().map(|e| e.key.clone())
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(hello.server_name())
    }
}

/// The DNS names a certificate covers (SANs, or the CN when there are none).
fn names_of(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, x)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    let mut names: Vec<String> = match x.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|g| match g {
                x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if names.is_empty() {
        names.extend(
            x.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_ascii_lowercase),
        );
    }
    names
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// A certificate or key file that cannot be used: which pair, which file, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    /// Index of the (certificate, key) pair.
    pub pair: usize,
    /// The key file is at fault (else the certificate file).
    pub in_key: bool,
    pub message: String,
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Load one certificate chain and its private key; the error says which file failed.
fn load_pair(cert: &Path, key: &Path) -> Result<Entry, (bool, String)> {
    let (certs, names) = load_certs(cert).map_err(|e| (false, e))?;
    let ck = load_key(key, certs).map_err(|e| (true, e))?;
    ck.keys_match().map_err(|e| {
        let msg = format!(
            "{} does not belong to {}: {e}",
            key.display(),
            cert.display()
        );
        (true, msg)
    })?;
    Ok(Entry {
        names,
        key: Arc::new(ck),
    })
}

/// A PEM certificate chain and the names its first certificate is for.
fn load_certs(cert: &Path) -> Result<(Vec<CertificateDer<'static>>, Vec<String>), String> {
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut read(cert)?.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not a PEM certificate file: {e}", cert.display()))?;
    let first = certs.first().ok_or_else(|| {
        format!(
            "{}: no certificate found (expected PEM \"BEGIN CERTIFICATE\")",
            cert.display()
        )
    })?;
    let names = names_of(first);
    Ok((certs, names))
}

/// The private key in `key`, with `certs`.
fn load_key(key: &Path, certs: Vec<CertificateDer<'static>>) -> Result<CertifiedKey, String> {
    let provider = rustls::crypto::ring::default_provider();
    let der: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut read(key)?.as_slice())
        .map_err(|e| format!("{}: not a PEM key file: {e}", key.display()))?
        .ok_or_else(|| {
            format!(
                "{}: no private key found (expected PEM PKCS#8, PKCS#1 or SEC1)",
                key.display()
            )
        })?;
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| format!("{}: unsupported private key: {e}", key.display()))?;
    Ok(CertifiedKey::new(certs, signing))
}

/// A server config for `pairs` of (certificate, key) files; the first is the default.
pub fn server_config(pairs: &[(PathBuf, PathBuf)]) -> Result<Arc<ServerConfig>, FileError> {
    let entries = pairs
        .iter()
        .enumerate()
        .map(|(pair, (c, k))| {
            load_pair(c, k).map_err(|(in_key, message)| FileError {
                pair,
                in_key,
                message,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut cfg =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&version::TLS13, &version::TLS12])
            .map_err(|e| FileError {
                pair: 0,
                in_key: false,
                message: e.to_string(),
            })?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SniResolver { entries }));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The QUIC server config of an `http3` listener: the listener's certificates and
/// SNI (the same resolver), ALPN `h3`, early data only if `early_data` (0-RTT), and
/// the transport limits: `max_streams` request streams at once, closed after `idle`.
/// quinn enforces RFC 9000's amplification limit (three times the bytes received
/// from an address not yet validated) on every connection.
pub fn quic_server_config(
    base: &ServerConfig,
    early_data: bool,
    max_streams: u32,
    idle: std::time::Duration,
) -> Result<Arc<quinn::ServerConfig>, String> {
    let mut tls = base.clone();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    // quinn takes 0 or u32::MAX: early data is bounded by QUIC's flow control instead.
    tls.max_early_data_size = if early_data { u32::MAX } else { 0 };
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(Arc::new(tls))
        .map_err(|e| format!("cannot serve QUIC with this TLS config: {e}"))?;
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(max_streams.into())
        // The client's control and QPACK streams, and a few more (grease).
        .max_concurrent_uni_streams(16u32.into())
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(idle).map_err(|e| format!("idle timeout: {e}"))?,
        ));
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    cfg.transport_config(Arc::new(transport));
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, tag: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let ck = rcgen::generate_simple_self_signed(
            names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .expect("test certificate files");
        let (c, k) = (
            dir.join(format!("{tag}.pem")),
            dir.join(format!("{tag}.key")),
        );
        std::fs::write(&c, ck.cert.pem()).expect("test certificate files");
        std::fs::write(&k, ck.signing_key.serialize_pem()).expect("test certificate files");
        (c, k)
    }

    #[test]
    fn sni_prefers_exact_then_wildcard_then_default() {
        let dir = std::env::temp_dir().join(format!("switchyard-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("test certificate files");
        let a = load_pair(
            &pair(&dir, "a", &["erp.example.com"]).0,
            &pair(&dir, "a", &["erp.example.com"]).1,
        )
        .expect("test certificate files");
        assert_eq!(a.names, vec!["erp.example.com"]);
        let (c1, k1) = pair(&dir, "one", &["erp.example.com"]);
        let (c2, k2) = pair(&dir, "two", &["*.example.com"]);
        let r = SniResolver {
            entries: vec![
                load_pair(&c1, &k1).expect("test certificate files"),
                load_pair(&c2, &k2).expect("test certificate files"),
            ],
        };
        let first =
            |k: Option<Arc<CertifiedKey>>| k.expect("test certificate files").cert[0].clone();
        assert_eq!(
            first(r.pick(Some("ERP.example.com"))),
            r.entries[0].key.cert[0]
        );
        assert_eq!(
            first(r.pick(Some("shop.example.com"))),
            r.entries[1].key.cert[0]
        );
        assert_eq!(
            first(r.pick(Some("a.b.example.com"))),
            r.entries[0].key.cert[0],
            "wildcard covers one label"
        );
        assert_eq!(first(r.pick(None)), r.entries[0].key.cert[0]);
        let err = server_config(&[(c1.clone(), k2.clone())]).unwrap_err();
        assert!(
            err.message.contains("does not belong to") && err.in_key,
            "{err}"
        );
        let err = server_config(&[(c1.clone(), dir.join("missing.key"))]).unwrap_err();
        assert!(err.message.contains("missing.key") && err.in_key, "{err}");
        let err =
            server_config(&[(c2.clone(), k2.clone()), (dir.join("missing.pem"), k1)]).unwrap_err();
        assert!(
            err.message.contains("missing.pem") && !err.in_key && err.pair == 1,
            "{err}"
        );
    }
}
