//! The CRI v1 client: how the agent learns what runs on its node.
//!
//! One gRPC channel over the runtime's unix socket (containerd, CRI-O, cri-dockerd,
//! k3s, ...). The channel connects lazily and reconnects by itself, so a runtime
//! restart costs the agent failed calls while it is down and nothing afterwards.
//! Every call carries a deadline: a hung runtime never hangs a request.

mod discover;
pub mod info;

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1 as api;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

pub use discover::{WELL_KNOWN_SOCKETS, discover};

/// The largest CRI answer accepted. A node with hundreds of containers answers
/// `ListContainers` with several MiB; the kubelet allows 16 MiB too.
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// A failed conversation with the container runtime.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    /// The gRPC status is kept as code and message: its own `Display` dumps
    /// transport internals that mean nothing to an operator.
    #[error("CRI call {method} to '{socket}' failed: {code:?}: {message}")]
    Call {
        method: &'static str,
        socket: PathBuf,
        code: tonic::Code,
        message: String,
    },
    #[error("no CRI runtime answered; tried {tried}")]
    NoRuntimeFound { tried: String },
    #[error("runtime answered {method} for container {container_id} with unreadable verbose info")]
    VerboseInfo {
        method: &'static str,
        container_id: String,
        #[source]
        source: info::InfoError,
    },
}

impl CriError {
    /// True when the runtime could not be reached or did not answer in time, as
    /// opposed to answering with an error.
    pub fn is_unavailable(&self) -> bool {
        match self {
            CriError::Call { code, .. } => matches!(
                code,
                tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Cancelled
                    | tonic::Code::Unknown
            ),
            CriError::NoRuntimeFound { .. } => true,
            CriError::VerboseInfo { .. } => false,
        }
    }

    /// True when the runtime said the object does not exist (it went away between
    /// a list and a status call).
    pub fn is_not_found(&self) -> bool {
        matches!(self, CriError::Call { code, .. } if *code == tonic::Code::NotFound)
    }
}

/// What the runtime says about itself.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeVersion {
    /// `containerd`, `cri-o`, `docker`: also the scheme of container ids in the
    /// Kubernetes API (`containerd://...`).
    pub name: String,
    pub version: String,
    pub api_version: String,
}

/// The status of one container, with the host PID of its init process when
/// running and what its runtime spec says an exec must apply.
#[derive(Debug, Clone)]
pub struct ContainerStatus {
    pub status: api::ContainerStatus,
    pub pid: Option<u32>,
    pub runtime_spec: crate::oci::RuntimeSpec,
}

/// A CRI v1 runtime service client bound to one socket.
#[derive(Clone)]
pub struct CriClient {
    client: RuntimeServiceClient<Channel>,
    socket: PathBuf,
}

impl CriClient {
    /// A client for the runtime at `socket`. Nothing is dialled until the first
    /// call; every call fails with `DeadlineExceeded` after `timeout`.
    pub fn new(socket: &Path, timeout: Duration) -> Self {
        // The URI is required by tonic but unused: the connector below dials the socket.
        let endpoint = Endpoint::from_static("http://cri.invalid")
            .connect_timeout(timeout)
            .timeout(timeout);
        let path = socket.to_path_buf();
        let channel = endpoint.connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        }));
        let client = RuntimeServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Self {
            client,
            socket: socket.to_path_buf(),
        }
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn call_error(&self, method: &'static str) -> impl FnOnce(tonic::Status) -> CriError + '_ {
        move |status| CriError::Call {
            method,
            socket: self.socket.clone(),
            code: status.code(),
            message: status.message().to_string(),
        }
    }

    /// `Version`: the cheapest call, used to probe that the runtime answers.
    pub async fn version(&self) -> Result<RuntimeVersion, CriError> {
        let answer = timed(
            "Version",
            self.client.clone().version(api::VersionRequest {
                version: "v1".into(),
            }),
        )
        .await
        .map_err(self.call_error("Version"))?
        .into_inner();
        Ok(RuntimeVersion {
            name: answer.runtime_name,
            version: answer.runtime_version,
            api_version: answer.runtime_api_version,
        })
    }

    /// `ListPodSandbox`: every pod sandbox, ready or not.
    pub async fn list_pod_sandboxes(&self) -> Result<Vec<api::PodSandbox>, CriError> {
        Ok(timed(
            "ListPodSandbox",
            self.client
                .clone()
                .list_pod_sandbox(api::ListPodSandboxRequest { filter: None }),
        )
        .await
        .map_err(self.call_error("ListPodSandbox"))?
        .into_inner()
        .items)
    }

    /// `ListContainers`: every container of every sandbox, in any state.
    pub async fn list_containers(&self) -> Result<Vec<api::Container>, CriError> {
        Ok(timed(
            "ListContainers",
            self.client
                .clone()
                .list_containers(api::ListContainersRequest { filter: None }),
        )
        .await
        .map_err(self.call_error("ListContainers"))?
        .into_inner()
        .containers)
    }

    /// `ContainerStatus{verbose}`: the status plus the host PID of a running
    /// container and its runtime spec.
    pub async fn container_status(&self, container_id: &str) -> Result<ContainerStatus, CriError> {
        let answer = timed(
            "ContainerStatus",
            self.client
                .clone()
                .container_status(api::ContainerStatusRequest {
                    container_id: container_id.to_string(),
                    verbose: true,
                }),
        )
        .await
        .map_err(self.call_error("ContainerStatus"))?
        .into_inner();
        let pid = info::host_pid(&answer.info).map_err(|source| CriError::VerboseInfo {
            method: "ContainerStatus",
            container_id: container_id.to_string(),
            source,
        })?;
        let runtime_spec = info::runtime_spec(&answer.info);
        let status = answer.status.unwrap_or_default();
        Ok(ContainerStatus {
            status,
            pid,
            runtime_spec,
        })
    }

    /// `ListContainerStats`: the cumulative CPU time, memory working set and
    /// the time of measurement of every running container, as the runtime
    /// reads them from the containers' cgroups.
    pub async fn list_container_stats(&self) -> Result<Vec<api::ContainerStats>, CriError> {
        Ok(timed(
            "ListContainerStats",
            self.client
                .clone()
                .list_container_stats(api::ListContainerStatsRequest { filter: None }),
        )
        .await
        .map_err(self.call_error("ListContainerStats"))?
        .into_inner()
        .stats)
    }

    /// `PodSandboxStatus`: the pod's IP addresses (primary first), empty for pods
    /// on the host network or without a network yet.
    pub async fn pod_sandbox_ips(&self, sandbox_id: &str) -> Result<Vec<String>, CriError> {
        let answer = timed(
            "PodSandboxStatus",
            self.client
                .clone()
                .pod_sandbox_status(api::PodSandboxStatusRequest {
                    pod_sandbox_id: sandbox_id.to_string(),
                    verbose: false,
                }),
        )
        .await
        .map_err(self.call_error("PodSandboxStatus"))?
        .into_inner();
        let network = answer.status.and_then(|status| status.network);
        Ok(network
            .map(|net| {
                std::iter::once(net.ip)
                    .chain(net.additional_ips.into_iter().map(|ip| ip.ip))
                    .filter(|ip| !ip.is_empty())
                    .collect()
            })
            .unwrap_or_default())
    }
}

/// Awaits one CRI call, recording its latency and outcome in the metrics.
async fn timed<T>(
    method: &'static str,
    call: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    let started = std::time::Instant::now();
    let result = call.await;
    crate::metrics::cri_call(method, started.elapsed(), result.is_ok());
    result
}

impl std::fmt::Debug for CriClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CriClient")
            .field("socket", &self.socket)
            .finish()
    }
}
