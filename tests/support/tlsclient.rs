//! TLS test helpers: self-signed certificates made with rcgen, and a client that
//! accepts any certificate and reports the one it was shown.
#![allow(dead_code)]

use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;

/// Write a self-signed certificate for `names` to `<dir>/<file>.pem` and `.key`; returns its DER.
pub fn cert(dir: &Path, file: &str, names: &[&str]) -> Vec<u8> {
    let ck =
        rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    let tmp = dir.join(format!("{file}.tmp"));
    std::fs::write(&tmp, ck.signing_key.serialize_pem()).unwrap();
    std::fs::rename(&tmp, dir.join(format!("{file}.key"))).unwrap();
    std::fs::write(&tmp, ck.cert.pem()).unwrap();
    std::fs::rename(&tmp, dir.join(format!("{file}.pem"))).unwrap();
    ck.cert.der().to_vec()
}

/// Accepts any certificate and remembers the one presented (tests only).
#[derive(Debug, Default)]
pub struct Record(pub Mutex<Option<Vec<u8>>>);

impl rustls::client::danger::ServerCertVerifier for Record {
    fn verify_server_cert(
        &self,
        end: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        *self.0.lock().unwrap() = Some(end.to_vec());
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            m,
            c,
            d,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            m,
            c,
            d,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// TLS connection with `sni` and `alpn`; returns the stream, the served cert and the ALPN result.
pub async fn tls_connect(
    addr: std::net::SocketAddr,
    sni: &str,
    alpn: &[&[u8]],
) -> (
    tokio_rustls::client::TlsStream<TcpStream>,
    Vec<u8>,
    Option<Vec<u8>>,
) {
    let rec = Arc::new(Record::default());
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(rec.clone())
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let s = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from(sni.to_owned()).unwrap(), tcp)
        .await
        .unwrap();
    let alpn = s.get_ref().1.alpn_protocol().map(|p| p.to_vec());
    let served = rec.0.lock().unwrap().clone().unwrap();
    (s, served, alpn)
}
