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

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use rustls::pki_types::CertificateDer;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

// The Lease's annotations are the wire contract (clients read them); the
// digest and PEM helpers are shared with the clients' pinning
// (`nsdebug_client::pin`).
use nsdebug_client::pin::{sha256_hex, to_pem};
pub use nsdebug_wire::anchor::{CERTIFICATE_ANNOTATION, FINGERPRINT_ANNOTATION};

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
