//! TLS for the agent's port: a certificate from files (a mounted Secret,
//! reloaded when the files change) or one generated at start-up.
//!
//! kubectl sends a bearer token only over TLS, so TLS is the default; plain
//! HTTP needs `--insecure-http` and a loopback address.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Why a certificate could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("failed to read the certificate chain from '{path}'")]
    Certificate {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("failed to read the private key from '{path}'")]
    Key {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("'{path}' holds no certificate")]
    EmptyChain { path: PathBuf },
    #[error("the private key does not suit the certificate")]
    Mismatch(#[source] rustls::Error),
    #[error("failed to generate a self-signed certificate")]
    Generate(#[source] rcgen::Error),
}

/// Where the certificate comes from.
#[derive(Debug, Clone)]
pub enum CertSource {
    Files {
        cert: PathBuf,
        key: PathBuf,
    },
    /// Self-signed at start-up for these names and addresses.
    Generated {
        names: Vec<String>,
    },
}

fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, TlsError> {
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key, &provider).map_err(TlsError::Mismatch)
}

fn load_files(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Certificate {
            path: cert.to_path_buf(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::EmptyChain {
            path: cert.to_path_buf(),
        });
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key {
        path: key.to_path_buf(),
        source,
    })?;
    certified_key(chain, key_der)
}

/// A self-signed certificate for `names` (DNS names or IP addresses).
pub fn generate(names: &[String]) -> Result<(String, String), TlsError> {
    let key = rcgen::KeyPair::generate().map_err(TlsError::Generate)?;
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(TlsError::Generate)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "nsdebug agent");
    let cert = params.self_signed(&key).map_err(TlsError::Generate)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The certificate the server presents, swappable while it runs.
#[derive(Debug)]
pub struct CertResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// The server's TLS configuration, and the certificate it serves now.
pub struct ServingTls {
    pub config: Arc<rustls::ServerConfig>,
    /// The end-entity certificate served, updated when the files are
    /// reloaded (what [`crate::anchor`] publishes).
    pub certificate: watch::Receiver<CertificateDer<'static>>,
}

/// The server's TLS configuration and, for files, a task that reloads them.
pub fn server_config(
    source: &CertSource,
    cancel: CancellationToken,
) -> Result<ServingTls, TlsError> {
    let key = match source {
        CertSource::Files { cert, key } => load_files(cert, key)?,
        CertSource::Generated { names } => {
            let (cert_pem, key_pem) = generate(names)?;
            let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|source| TlsError::Certificate {
                    path: "<generated>".into(),
                    source,
                })?;
            let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|source| {
                TlsError::Key {
                    path: "<generated>".into(),
                    source,
                }
            })?;
            certified_key(chain, key)?
        }
    };
    let (served, certificate) = watch::channel(key.cert[0].clone());
    let resolver = Arc::new(CertResolver {
        current: RwLock::new(Arc::new(key)),
    });
    if let CertSource::Files { cert, key } = source {
        tokio::spawn(reload(
            resolver.clone(),
            served,
            cert.clone(),
            key.clone(),
            cancel,
        ));
    }
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(TlsError::Mismatch)?
    .with_no_client_auth()
    .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(ServingTls {
        config: Arc::new(config),
        certificate,
    })
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Reloads the files when either changes (a Secret update swaps them); a
/// broken pair is logged and the old certificate kept.
async fn reload(
    resolver: Arc<CertResolver>,
    served: watch::Sender<CertificateDer<'static>>,
    cert: PathBuf,
    key: PathBuf,
    cancel: CancellationToken,
) {
    let mut seen = (modified(&cert), modified(&key));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        let now = (modified(&cert), modified(&key));
        if now == seen {
            continue;
        }
        seen = now;
        match load_files(&cert, &key) {
            Ok(fresh) => {
                served.send_replace(fresh.cert[0].clone());
                *resolver.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
                tracing::info!(cert = %cert.display(), "reloaded the TLS certificate");
            }
            Err(err) => {
                tracing::warn!(error = %crate::error_chain(&err), "keeping the old TLS certificate")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificates_load() {
        let (cert, key) = generate(&["localhost".into(), "127.0.0.1".into()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tls.crt"), cert).unwrap();
        std::fs::write(dir.path().join("tls.key"), key).unwrap();
        load_files(&dir.path().join("tls.crt"), &dir.path().join("tls.key")).unwrap();
    }

    #[test]
    fn generated_certificates_name_loopback_addresses_as_ip_addresses() {
        // kubectl and the plugin dial https://127.0.0.1:PORT through a
        // port-forward: the certificate must name that IP address as one.
        let (cert, _) = generate(&["localhost".into(), "127.0.0.1".into(), "::1".into()]).unwrap();
        let der = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
        let names = parsed.subject_alternative_name().unwrap().unwrap();
        let ips: Vec<&[u8]> = names
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                x509_parser::extensions::GeneralName::IPAddress(ip) => Some(*ip),
                _ => None,
            })
            .collect();
        assert!(ips.contains(&&[127u8, 0, 0, 1][..]), "{ips:?}");
        assert_eq!(ips.len(), 2, "127.0.0.1 and ::1");
    }

    #[test]
    fn a_missing_key_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _) = generate(&["localhost".into()]).unwrap();
        std::fs::write(dir.path().join("tls.crt"), cert).unwrap();
        let err =
            load_files(&dir.path().join("tls.crt"), &dir.path().join("nope.key")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("failed to read the private key from"),
            "{err}"
        );
    }
}
