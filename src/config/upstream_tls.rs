//! `[pools.NAME.tls]`: TLS to the servers of a pool, its CA certificates (a PEM file,
//! or the system's) and the server name to verify, built once at load time.

use std::ops::Range;
use std::sync::Arc;

use toml::Spanned;

use super::UpstreamTls;
use super::check::{Check, relative};
use super::file::FileUpstreamTls;

/// `[pools.NAME.tls]`: trust roots (a CA file or the system's) and an optional SNI name.
pub(super) fn upstream_tls(
    cx: &mut Check<'_>,
    t: &Spanned<FileUpstreamTls>,
) -> Option<UpstreamTls> {
    let span = t.span();
    let t = t.get_ref();
    let roots = roots(cx, t, span);
    let server_name = server_name(cx, t);
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .ok()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Some(UpstreamTls {
        client: Arc::new(client),
        server_name,
    })
}

/// The CA certificates servers are verified against: `ca`, else the system's.
fn roots(cx: &mut Check<'_>, t: &FileUpstreamTls, span: Range<usize>) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    match &t.ca {
        Some(ca) => {
            let path = relative(cx.path, ca.get_ref());
            let loaded = std::fs::read(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))
                .and_then(|pem| {
                    rustls_pemfile::certs(&mut pem.as_slice())
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| format!("{}: not a PEM certificate file: {e}", path.display()))
                });
            match loaded {
                Ok(certs) if !certs.is_empty() => {
                    for c in certs {
                        if let Err(e) = roots.add(c) {
                            cx.err(
                                ca.span(),
                                format!("{}: unusable CA certificate: {e}", path.display()),
                            );
                        }
                    }
                }
                Ok(_) => cx.err(
                    ca.span(),
                    format!("{}: no certificate found", path.display()),
                ),
                Err(e) => cx.err(ca.span(), e),
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
            if roots.is_empty() {
                cx.err(
                    span.clone(),
                    "no system CA certificates found; set `ca` to a PEM file",
                );
            }
        }
    }
    roots
}

fn server_name(
    cx: &mut Check<'_>,
    t: &FileUpstreamTls,
) -> Option<rustls::pki_types::ServerName<'static>> {
    match &t.server_name {
        None => None,
        Some(n) => match rustls::pki_types::ServerName::try_from(n.get_ref().clone()) {
            Ok(s) => Some(s),
            Err(_) => {
                cx.err(
                    n.span(),
                    format!("{:?} is not a valid TLS server name", n.get_ref()),
                );
                None
            }
        },
    }
}
