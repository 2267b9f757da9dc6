//! The trust anchor's format: every agent publishes the SHA-256 of the
//! certificate it serves in a `coordination.k8s.io/v1` Lease named after its
//! node, in its own namespace, with its pod's name as the holder; clients
//! read it and pin the fingerprint (the agent's `anchor` module says why a
//! Lease).

/// The annotation of an agent's Lease that holds its certificate's SHA-256
/// (lowercase hex of the DER).
pub const FINGERPRINT_ANNOTATION: &str = "nsdebug.io/serving-cert-sha256";

/// The annotation that holds the certificate itself (PEM), for clients that
/// take a CA file (`kubectl --certificate-authority`).
pub const CERTIFICATE_ANNOTATION: &str = "nsdebug.io/serving-cert";

/// A fingerprint as people write it (`AB:CD:...` as openssl prints it, or
/// plain hex), normalised to lowercase hex; `None` if it is not 32 bytes.
pub fn parse_fingerprint(text: &str) -> Option<String> {
    let hex_only: String = text.trim().chars().filter(|c| *c != ':').collect();
    if hex_only.len() != 64 || !hex_only.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    Some(hex_only.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_as_openssl_prints_them() {
        let hex = "ab".repeat(32);
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(parse_fingerprint(&colons).as_deref(), Some(hex.as_str()));
        assert_eq!(parse_fingerprint(&hex).as_deref(), Some(hex.as_str()));
        assert_eq!(parse_fingerprint("abcd"), None);
        assert_eq!(parse_fingerprint("zz"), None);
        assert_eq!(parse_fingerprint(&"é".repeat(32)), None);
    }
}
