//! The trust anchor between clients and agents: which certificate is the
//! agent's, vouched for by the cluster.
//!
//! A client sends the agent its user's own API-server token, so it must know
//! the certificate it sees is the agent's before it sends a single header.
//! The agent's default certificate is self-signed (generated at start), so no
//! CA can vouch for it. Instead every agent **publishes** the SHA-256 of the
//! certificate it serves in a `coordination.k8s.io/v1` Lease named after its
//! node, in its own namespace, with its pod's name as the holder; clients
//! read that Lease through the API server (`get leases` in the agent's
//! namespace) and **pin** the fingerprint: a handshake with any other
//! certificate fails in the client before any request is written.
//!
//! Why a Lease: the agent's account then needs only `create` and `patch` on
//! leases in its own namespace, which carry no power. Publishing on its own
//! pod instead would need `patch pods` there, and RBAC cannot narrow that to
//! one generated pod name or to annotations: any agent could then rewrite
//! every other agent's pod (its image included). A Lease an agent of another
//! node overwrites only makes clients refuse that node's agent (the
//! port-forward still goes to the real pod, whose certificate then does not
//! match); it never sends them elsewhere.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The annotation of an agent's Lease that holds its certificate's SHA-256
/// (lowercase hex of the DER).
pub const FINGERPRINT_ANNOTATION: &str = "nsdebug.io/serving-cert-sha256";
/// The annotation that holds the certificate itself (PEM), for clients that
/// take a CA file (`kubectl --certificate-authority`).
pub const CERTIFICATE_ANNOTATION: &str = "nsdebug.io/serving-cert";
/// The field manager of the agent's server-side applies.
const FIELD_MANAGER: &str = "nsdebug-agent";

/// Why the certificate could not be published.
#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    #[error("failed to publish the serving certificate in Lease {namespace}/{name}")]
    Publish {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// The SHA-256 of a DER certificate, as lowercase hex.
pub fn sha256_hex(der: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, der))
}

/// A fingerprint as people write it (`AB:CD:...` as openssl prints it, or
/// plain hex), normalised to lowercase hex; `None` if it is not 32 bytes.
pub fn parse_fingerprint(text: &str) -> Option<String> {
    let hex_only: String = text.trim().chars().filter(|c| *c != ':').collect();
    let bytes = hex::decode(&hex_only).ok()?;
    (bytes.len() == 32).then(|| hex::encode(bytes))
}

/// A DER certificate as PEM.
pub fn to_pem(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
}

/// Where an agent publishes: its pod, in its namespace, on its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    pub namespace: String,
    pub pod: String,
    pub node: String,
}

impl Publication {
    /// Writes `certificate` into the node's Lease (created if missing).
    pub async fn publish(
        &self,
        client: &kube::Client,
        certificate: &CertificateDer<'_>,
    ) -> Result<(), AnchorError> {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.node.clone()),
                namespace: Some(self.namespace.clone()),
                annotations: Some(
                    [
                        (FINGERPRINT_ANNOTATION.to_string(), sha256_hex(certificate)),
                        (CERTIFICATE_ANNOTATION.to_string(), to_pem(certificate)),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.pod.clone()),
                ..Default::default()
            }),
        };
        Api::<Lease>::namespaced(client.clone(), &self.namespace)
            .patch(
                &self.node,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&lease),
            )
            .await
            .map_err(|source| AnchorError::Publish {
                namespace: self.namespace.clone(),
                name: self.node.clone(),
                source,
            })?;
        Ok(())
    }

    /// Publishes the serving certificate now and whenever it changes (a
    /// reloaded Secret), retrying a failure with a growing pause, until
    /// `cancel`.
    pub async fn keep_published(
        self,
        client: kube::Client,
        mut certificate: watch::Receiver<CertificateDer<'static>>,
        cancel: CancellationToken,
    ) {
        const FIRST_RETRY: Duration = Duration::from_secs(1);
        const LAST_RETRY: Duration = Duration::from_secs(60);
        loop {
            let current = certificate.borrow_and_update().clone();
            let mut retry = FIRST_RETRY;
            loop {
                match self.publish(&client, &current).await {
                    Ok(()) => {
                        tracing::info!(
                            lease = %format!("{}/{}", self.namespace, self.node),
                            sha256 = %sha256_hex(&current),
                            "published the serving certificate"
                        );
                        break;
                    }
                    Err(err) => tracing::warn!(
                        error = %crate::error_chain(&err),
                        retry_in = ?retry,
                        "clients will not trust this agent until its certificate is published"
                    ),
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(retry) => {}
                }
                retry = (retry * 2).min(LAST_RETRY);
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                changed = certificate.changed() => if changed.is_err() { return },
            }
        }
    }
}

/// A certificate verifier that accepts exactly one certificate: the one
/// whose SHA-256 is pinned. Names, dates and issuers are not checked: the
/// pin names the very certificate (a self-signed one has no issuer to trust
/// and the cluster vouches for it). The handshake's signatures are checked
/// as usual, so only the holder of its key can present it.
#[derive(Debug)]
pub struct PinnedCertificate {
    sha256: String,
    /// The fingerprint of a certificate that was refused, for the error.
    refused: Mutex<Option<String>>,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl PinnedCertificate {
    /// A verifier for the certificate whose SHA-256 is `sha256` (hex).
    pub fn new(sha256: &str) -> Arc<Self> {
        Arc::new(Self {
            sha256: sha256.to_ascii_lowercase(),
            refused: Mutex::new(None),
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        })
    }

    /// The pinned fingerprint.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The fingerprint of the last certificate refused, if any.
    pub fn refused(&self) -> Option<String> {
        self.refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A TLS client configuration that trusts this certificate only.
    pub fn client_config(self: &Arc<Self>) -> rustls::ClientConfig {
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(self.clone())
        .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config
    }
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = sha256_hex(end_entity);
        if presented == self.sha256 {
            return Ok(ServerCertVerified::assertion());
        }
        *self.refused.lock().unwrap_or_else(|e| e.into_inner()) = Some(presented.clone());
        Err(rustls::Error::General(format!(
            "the certificate's SHA-256 is {presented}, not the pinned {}",
            self.sha256
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject as _;

    #[test]
    fn fingerprints_as_openssl_prints_them() {
        let hex = "ab".repeat(32);
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(parse_fingerprint(&colons).as_deref(), Some(hex.as_str()));
        assert_eq!(parse_fingerprint(&hex).as_deref(), Some(hex.as_str()));
        assert_eq!(parse_fingerprint("abcd"), None);
        assert_eq!(parse_fingerprint("zz"), None);
    }

    #[test]
    fn pem_round_trips() {
        let (cert, _) = crate::tls::generate(&["127.0.0.1".into()]).unwrap();
        let der = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
        let again = CertificateDer::from_pem_slice(to_pem(&der).as_bytes()).unwrap();
        assert_eq!(der, again);
        assert_eq!(sha256_hex(&der).len(), 64);
    }

    #[test]
    fn only_the_pinned_certificate_is_accepted() {
        let (one, _) = crate::tls::generate(&["127.0.0.1".into()]).unwrap();
        let (other, _) = crate::tls::generate(&["127.0.0.1".into()]).unwrap();
        let one = CertificateDer::from_pem_slice(one.as_bytes()).unwrap();
        let other = CertificateDer::from_pem_slice(other.as_bytes()).unwrap();
        let pin = PinnedCertificate::new(&sha256_hex(&one).to_uppercase());
        let name = ServerName::try_from("127.0.0.1").unwrap();
        assert!(
            pin.verify_server_cert(&one, &[], &name, &[], UnixTime::now())
                .is_ok()
        );
        let err = pin
            .verify_server_cert(&other, &[], &name, &[], UnixTime::now())
            .unwrap_err();
        assert!(err.to_string().contains(&sha256_hex(&other)), "{err}");
        assert_eq!(pin.refused(), Some(sha256_hex(&other)));
    }
}
