//! Whom a client trusts: exactly the certificate an agent published in its
//! node's Lease (see the agent's `anchor` module and
//! `nsdebug_wire::anchor`), by its SHA-256.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// The SHA-256 of a DER certificate, as lowercase hex.
pub fn sha256_hex(der: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, der))
}

/// A DER certificate as PEM.
pub fn to_pem(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
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

    /// A self-signed certificate, as the agent generates one, in DER.
    fn certificate() -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".into()]).unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn pem_round_trips() {
        let der = certificate();
        let again = CertificateDer::from_pem_slice(to_pem(&der).as_bytes()).unwrap();
        assert_eq!(der, again);
        assert_eq!(sha256_hex(&der).len(), 64);
    }

    #[test]
    fn only_the_pinned_certificate_is_accepted() {
        let (one, other) = (certificate(), certificate());
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
