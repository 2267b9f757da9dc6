//! Which agent the plugin trusts with the user's token: the one whose
//! certificate its node's Lease names (the agent's `anchor` module, `nsdebug_wire::anchor`).
//!
//! Before any request, the plugin reads the agent's Lease through the API
//! server, checks that the agent pod it forwards to wrote it, and shakes
//! hands once through the forward with a verifier that accepts only the
//! published certificate. A mismatch ends there, with both fingerprints in
//! the error: no request line, no header, no token was sent. Every later
//! connection (the HTTP client's, kube's for interactive sessions, plain
//! kubectl's through `kubeconfig`) trusts that certificate only.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use rustls::pki_types::{CertificateDer, ServerName};

use super::PluginError;
use super::cluster::{AgentPod, Cluster, Forward};
use nsdebug_client::pin::PinnedCertificate;
use nsdebug_wire::anchor::{FINGERPRINT_ANNOTATION, parse_fingerprint};

/// The fingerprint the agent `agent` published.
pub async fn published(cluster: &Cluster, agent: &AgentPod) -> Result<String, PluginError> {
    let namespace = cluster.agent_namespace();
    let unpublished = |why: String| PluginError::Unpublished {
        namespace: namespace.to_string(),
        pod: agent.name.clone(),
        node: agent.node.clone(),
        why,
    };
    let lease = Api::<Lease>::namespaced(cluster.client(), namespace)
        .get_opt(&agent.node)
        .await
        .map_err(|err| {
            let hint = match &err {
                kube::Error::Api(status) if status.code == 403 => {
                    format!(" (reading it needs `get leases` in namespace {namespace})")
                }
                _ => String::new(),
            };
            cluster.api_error(
                format!(
                    "the certificate the agent {namespace}/{} published in Lease {namespace}/{}{hint}",
                    agent.name, agent.node
                ),
                err,
            )
        })?
        .ok_or_else(|| {
            unpublished(format!(
                "it has not published its serving certificate (there is no Lease {namespace}/{})",
                agent.node
            ))
        })?;
    let holder = lease
        .spec
        .as_ref()
        .and_then(|spec| spec.holder_identity.as_deref())
        .unwrap_or_default();
    if holder != agent.name {
        return Err(unpublished(format!(
            "the Lease {namespace}/{} was published by {holder:?}, not by it: it has not published its certificate yet (try again in a moment)",
            agent.node
        )));
    }
    let annotation = lease
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(FINGERPRINT_ANNOTATION))
        .map(String::as_str)
        .unwrap_or_default();
    parse_fingerprint(annotation).ok_or_else(|| {
        unpublished(format!(
            "its Lease {namespace}/{} has no SHA-256 in {FINGERPRINT_ANNOTATION} ({annotation:?})",
            agent.node
        ))
    })
}

/// One TLS handshake through `forward` that accepts only `pin`'s
/// certificate; nothing is written after it. The agent's certificate.
pub async fn handshake(
    cluster: &Cluster,
    agent: &AgentPod,
    forward: &Forward,
    pin: &Arc<PinnedCertificate>,
) -> Result<CertificateDer<'static>, PluginError> {
    let unreachable = |why: String| PluginError::Forwarded {
        via: forward.description().to_string(),
        why: forward.last_error().unwrap_or(why),
    };
    let tcp = tokio::net::TcpStream::connect(forward.addr)
        .await
        .map_err(|err| unreachable(err.to_string()))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(pin.client_config()));
    let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
    match connector.connect(name, tcp).await {
        Ok(tls) => {
            let (_, session) = tls.get_ref();
            session
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|cert| cert.clone().into_owned())
                .ok_or_else(|| unreachable("the agent presented no certificate".into()))
        }
        Err(err) => match pin.refused() {
            Some(presented) => Err(PluginError::Untrusted {
                namespace: cluster.agent_namespace().to_string(),
                pod: agent.name.clone(),
                node: agent.node.clone(),
                presented,
                published: pin.sha256().to_string(),
            }),
            None => Err(unreachable(err.to_string())),
        },
    }
}
