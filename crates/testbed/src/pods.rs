//! Pods on the test bed's containerd, made through the CRI the way the kubelet
//! makes them (same labels, annotations and namespace options), so the agent
//! sees exactly what it sees on a real node.
//!
//! Used by the integration tests, the benchmarks and the `nsdebug-testbed`
//! binary (the demo pods).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

pub const BUSYBOX_IMAGE: &str = "nsdebug.local/busybox:1";
pub const DISTROLESS_IMAGE: &str = "nsdebug.local/distroless-hello:1";
/// Annotation marking sandboxes made by the test bed (value: `demo` or `test`).
pub const TESTBED_ANNOTATION: &str = "nsdebug.dev/testbed";
/// A shell loop that exits at once on SIGTERM, so stopping it takes no grace period.
pub const SLEEP_FOREVER: &[&str] = &[
    "sh",
    "-c",
    "trap 'exit 0' TERM; while true; do sleep 3600 & wait $!; done",
];

/// The socket of the test bed's containerd (`hack/testbed.sh`).
pub fn socket() -> PathBuf {
    std::env::var_os("NSDEBUG_CRI_SOCKET")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/nsdebug-testbed/containerd.sock"))
}

/// A raw CRI client, for the test's own actions on the runtime.
pub async fn connect(socket: &Path) -> RuntimeServiceClient<Channel> {
    let path = socket.to_path_buf();
    let channel = Endpoint::from_static("http://testbed.invalid")
        .timeout(Duration::from_secs(30))
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        }))
        .await
        .unwrap_or_else(|err| panic!("test bed containerd at {}: {err}", socket.display()));
    RuntimeServiceClient::new(channel)
}

/// The host PID the runtime itself reports for a container (verbose
/// `ContainerStatus`, `info["info"].pid` as containerd writes it).
pub async fn cri_pid(client: &mut RuntimeServiceClient<Channel>, id: &str) -> u64 {
    let answer = client
        .container_status(cri::ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        })
        .await
        .unwrap_or_else(|err| panic!("ContainerStatus {id}: {err}"))
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&answer.info["info"]).unwrap();
    info["pid"].as_u64().unwrap()
}

/// The paths the kubelet masks in every container's `/proc` and `/sys`.
pub const KUBELET_MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// The paths the kubelet makes read-only in every container's `/proc`.
pub const KUBELET_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// A container of a [`PodSpec`].
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    /// `securityContext.runAsUser`.
    pub run_as_user: Option<i64>,
    /// `workingDir`.
    pub working_dir: Option<String>,
    /// `securityContext.seccompProfile`; `None` leaves it to the runtime (the
    /// kubelet's default is `Unconfined` in the CRI when the pod names none).
    pub seccomp: Option<SeccompProfile>,
    /// `securityContext.allowPrivilegeEscalation: false`.
    pub no_new_privs: bool,
    /// `resources.limits.memory`, in bytes.
    pub memory_limit: Option<i64>,
    /// `securityContext.capabilities.drop` (names without `CAP_`, or `ALL`).
    pub drop_capabilities: Vec<String>,
    /// `securityContext.capabilities.add` (names without `CAP_`).
    pub add_capabilities: Vec<String>,
}

/// A container's seccomp profile, as the kubelet passes it through the CRI.
#[derive(Debug, Clone)]
pub enum SeccompProfile {
    /// The runtime's own default profile.
    RuntimeDefault,
    Unconfined,
    /// A profile file on the node (`localhostProfile`, an absolute path in the CRI).
    Localhost(PathBuf),
}

impl ContainerSpec {
    pub fn new(name: &str, image: &str, command: &[&str]) -> Self {
        Self {
            name: name.into(),
            image: image.into(),
            command: command.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            run_as_user: None,
            working_dir: None,
            seccomp: None,
            no_new_privs: false,
            memory_limit: None,
            drop_capabilities: Vec::new(),
            add_capabilities: Vec::new(),
        }
    }

    /// `securityContext.capabilities.add`, such as `SYS_PTRACE`.
    pub fn add_capabilities(mut self, names: &[&str]) -> Self {
        self.add_capabilities = names.iter().map(|s| s.to_string()).collect();
        self
    }

    /// `securityContext.capabilities.drop`: `["ALL"]`, or names such as `NET_RAW`.
    pub fn drop_capabilities(mut self, names: &[&str]) -> Self {
        self.drop_capabilities = names.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn memory_limit(mut self, bytes: i64) -> Self {
        self.memory_limit = Some(bytes);
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn seccomp(mut self, profile: SeccompProfile) -> Self {
        self.seccomp = Some(profile);
        self
    }

    pub fn no_new_privs(mut self) -> Self {
        self.no_new_privs = true;
        self
    }

    pub fn working_dir(mut self, dir: &str) -> Self {
        self.working_dir = Some(dir.into());
        self
    }

    pub fn run_as_user(mut self, uid: i64) -> Self {
        self.run_as_user = Some(uid);
        self
    }

    pub fn busybox(name: &str) -> Self {
        Self::new(name, BUSYBOX_IMAGE, SLEEP_FOREVER)
    }

    pub fn distroless(name: &str) -> Self {
        Self::new(name, DISTROLESS_IMAGE, &[])
    }
}

impl SeccompProfile {
    fn to_cri(&self) -> cri::SecurityProfile {
        use cri::security_profile::ProfileType;
        let (kind, path) = match self {
            Self::RuntimeDefault => (ProfileType::RuntimeDefault, String::new()),
            Self::Unconfined => (ProfileType::Unconfined, String::new()),
            Self::Localhost(path) => (ProfileType::Localhost, path.display().to_string()),
        };
        cri::SecurityProfile {
            profile_type: kind as i32,
            localhost_ref: path,
        }
    }
}

/// A pod to create through the CRI.
#[derive(Debug, Clone)]
pub struct PodSpec {
    pub namespace: String,
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub annotations: Vec<(String, String)>,
    pub containers: Vec<ContainerSpec>,
    /// The pod's DNS settings as the kubelet passes them (cluster DNS or
    /// `dnsConfig`); `None` lets the runtime copy the node's resolv.conf.
    pub dns: Option<cri::DnsConfig>,
    /// `spec.hostPID`: the containers share the node's PID namespace.
    pub host_pid: bool,
    /// `spec.hostNetwork`: the pod uses the node's network namespace.
    pub host_network: bool,
}

impl PodSpec {
    pub fn new(namespace: &str, name: &str, containers: Vec<ContainerSpec>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            labels: Vec::new(),
            annotations: Vec::new(),
            containers,
            dns: None,
            host_pid: false,
            host_network: false,
        }
    }

    /// `spec.hostPID: true`.
    pub fn host_pid(mut self) -> Self {
        self.host_pid = true;
        self
    }

    /// `spec.hostNetwork: true`.
    pub fn host_network(mut self) -> Self {
        self.host_network = true;
        self
    }

    /// Nameservers, search domains and resolv.conf options (`ndots:5`) of
    /// the pod, which the runtime writes into its `/etc/resolv.conf`.
    pub fn dns(mut self, servers: &[&str], searches: &[&str], options: &[&str]) -> Self {
        let owned = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
        self.dns = Some(cri::DnsConfig {
            servers: owned(servers),
            searches: owned(searches),
            options: owned(options),
        });
        self
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.push((key.into(), value.into()));
        self
    }

    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.push((key.into(), value.into()));
        self
    }

    /// A stable UUID-shaped uid derived from namespace and name.
    pub fn uid(&self) -> String {
        let mut h: u128 = 0xcbf29ce484222325;
        for b in format!("{}/{}", self.namespace, self.name).bytes() {
            h = (h ^ u128::from(b)).wrapping_mul(0x0000000001000000000000000000013B);
        }
        let hex = format!("{h:032x}");
        format!(
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        )
    }

    fn sandbox_config(&self, kind: &str) -> cri::PodSandboxConfig {
        let uid = self.uid();
        let mut labels: HashMap<String, String> = self.labels.iter().cloned().collect();
        labels.insert("io.kubernetes.pod.name".into(), self.name.clone());
        labels.insert("io.kubernetes.pod.namespace".into(), self.namespace.clone());
        labels.insert("io.kubernetes.pod.uid".into(), uid.clone());
        let mut annotations: HashMap<String, String> = self.annotations.iter().cloned().collect();
        annotations.insert(TESTBED_ANNOTATION.into(), kind.into());
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: self.name.clone(),
                uid: uid.clone(),
                namespace: self.namespace.clone(),
                attempt: 0,
            }),
            // The kubelet sends no hostname for a hostNetwork pod: it has
            // the node's UTS namespace, and runc refuses to set one there.
            hostname: if self.host_network {
                String::new()
            } else {
                self.name.clone()
            },
            log_directory: format!(
                "/var/log/nsdebug-testbed/pods/{}_{}_{}",
                self.namespace, self.name, uid
            ),
            labels,
            annotations,
            dns_config: self.dns.clone(),
            linux: Some(cri::LinuxPodSandboxConfig {
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(kubelet_namespaces(self)),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// What the kubelet sets for a v1 pod: network and IPC per pod, PID per
/// container; the node's for `hostNetwork` and `hostPID`.
fn kubelet_namespaces(pod: &PodSpec) -> cri::NamespaceOption {
    let node_or = |host: bool, mode: cri::NamespaceMode| {
        if host {
            cri::NamespaceMode::Node as i32
        } else {
            mode as i32
        }
    };
    cri::NamespaceOption {
        network: node_or(pod.host_network, cri::NamespaceMode::Pod),
        pid: node_or(pod.host_pid, cri::NamespaceMode::Container),
        ipc: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// A pod running on the test bed. Dropping it stops and removes the pod,
/// however the test that made it ends (a failed assertion included), unless
/// [`RunningPod::leave_running`] said to keep it (the demo pods).
#[derive(Debug)]
pub struct RunningPod {
    pub spec: PodSpec,
    pub sandbox_id: String,
    /// Container ids by container name (the newest instance).
    pub containers: HashMap<String, String>,
    sandbox_config: cri::PodSandboxConfig,
    /// Whether dropping the value removes the pod.
    remove_on_drop: bool,
}

impl Drop for RunningPod {
    fn drop(&mut self) {
        if !self.remove_on_drop {
            return;
        }
        let id = std::mem::take(&mut self.sandbox_id);
        let name = format!("{}/{}", self.spec.namespace, self.spec.name);
        // Drop cannot await and may run on one of the test's runtime threads:
        // a runtime of its own, on a thread of its own.
        let removed = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|err| err.to_string())?;
            runtime.block_on(async {
                let mut client = connect(&socket()).await;
                remove_sandbox_if_present(&mut client, &id).await
            })
        })
        .join()
        .unwrap_or_else(|_| Err("the removal panicked".into()));
        if let Err(err) = removed {
            // A second panic while the test is failing would abort the run.
            if std::thread::panicking() {
                eprintln!("failed to remove the test's pod {name}: {err}");
            } else {
                panic!("failed to remove the test's pod {name}: {err}");
            }
        }
    }
}

/// Removes every sandbox named `namespace/name` (left by an earlier run).
pub async fn remove_pod_named(
    client: &mut RuntimeServiceClient<Channel>,
    namespace: &str,
    name: &str,
) {
    let sandboxes = client
        .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
        .await
        .expect("ListPodSandbox")
        .into_inner()
        .items;
    for sandbox in sandboxes {
        let meta = sandbox.metadata.unwrap_or_default();
        if meta.namespace == namespace && meta.name == name {
            remove_sandbox(client, &sandbox.id).await;
        }
    }
}

/// Stops and removes a sandbox and its containers.
pub async fn remove_sandbox(client: &mut RuntimeServiceClient<Channel>, id: &str) {
    client
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        })
        .await
        .unwrap_or_else(|err| panic!("StopPodSandbox {id}: {err}"));
    client
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        })
        .await
        .unwrap_or_else(|err| panic!("RemovePodSandbox {id}: {err}"));
}

/// Stops and removes a sandbox and its containers unless it is gone already
/// (a test may remove its pod itself).
async fn remove_sandbox_if_present(
    client: &mut RuntimeServiceClient<Channel>,
    id: &str,
) -> Result<(), String> {
    match client
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        })
        .await
    {
        Ok(_) => {}
        Err(status) if status.code() == tonic::Code::NotFound => return Ok(()),
        Err(status) => return Err(format!("StopPodSandbox {id}: {status}")),
    }
    client
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        })
        .await
        .map(|_| ())
        .map_err(|status| format!("RemovePodSandbox {id}: {status}"))
}

/// Creates the pod (replacing any pod of the same name) and starts its
/// containers. The pod is removed when the returned value is dropped.
pub async fn run_pod(
    client: &mut RuntimeServiceClient<Channel>,
    spec: &PodSpec,
    kind: &str,
) -> RunningPod {
    remove_pod_named(client, &spec.namespace, &spec.name).await;
    let sandbox_config = spec.sandbox_config(kind);
    let sandbox_id = client
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(sandbox_config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_or_else(|err| panic!("RunPodSandbox {}/{}: {err}", spec.namespace, spec.name))
        .into_inner()
        .pod_sandbox_id;
    forget_stale_neighbour(client, &sandbox_id).await;
    let mut pod = RunningPod {
        spec: spec.clone(),
        sandbox_id,
        containers: HashMap::new(),
        sandbox_config,
        remove_on_drop: true,
    };
    for container in &spec.containers {
        pod.start_container(client, container, 0).await;
    }
    pod
}

/// A new pod may get the address of one removed moments ago: the host's
/// neighbour (ARP) entry for it still names the old pod's MAC, and packets
/// from the host go nowhere until it expires. The bridge plugin sends no
/// gratuitous ARP, so the test bed forgets the entry itself.
async fn forget_stale_neighbour(client: &mut RuntimeServiceClient<Channel>, sandbox_id: &str) {
    let status = client
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: sandbox_id.into(),
            verbose: false,
        })
        .await
        .map(|r| r.into_inner().status);
    let ip = match status {
        Ok(Some(status)) => status.network.map(|n| n.ip).unwrap_or_default(),
        _ => String::new(),
    };
    if !ip.is_empty() {
        let _ = std::process::Command::new("ip")
            .args(["neigh", "flush", "to", &ip])
            .status();
    }
}

impl RunningPod {
    async fn start_container(
        &mut self,
        client: &mut RuntimeServiceClient<Channel>,
        container: &ContainerSpec,
        attempt: u32,
    ) -> String {
        let mut labels = HashMap::new();
        labels.insert(
            "io.kubernetes.container.name".into(),
            container.name.clone(),
        );
        labels.insert("io.kubernetes.pod.name".into(), self.spec.name.clone());
        labels.insert(
            "io.kubernetes.pod.namespace".into(),
            self.spec.namespace.clone(),
        );
        labels.insert("io.kubernetes.pod.uid".into(), self.spec.uid());
        let mut annotations = HashMap::new();
        annotations.insert(
            "io.kubernetes.container.restartCount".into(),
            attempt.to_string(),
        );
        let config = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: container.name.clone(),
                attempt,
            }),
            image: Some(cri::ImageSpec {
                image: container.image.clone(),
                ..Default::default()
            }),
            command: container.command.clone(),
            working_dir: container.working_dir.clone().unwrap_or_default(),
            envs: container
                .env
                .iter()
                .map(|(key, value)| cri::KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
            labels,
            annotations,
            log_path: format!("{}/{attempt}.log", container.name),
            linux: Some(cri::LinuxContainerConfig {
                security_context: Some(cri::LinuxContainerSecurityContext {
                    namespace_options: Some(kubelet_namespaces(&self.spec)),
                    capabilities: (!container.drop_capabilities.is_empty()
                        || !container.add_capabilities.is_empty())
                    .then(|| cri::Capability {
                        drop_capabilities: container.drop_capabilities.clone(),
                        add_capabilities: container.add_capabilities.clone(),
                        ..Default::default()
                    }),
                    run_as_user: container.run_as_user.map(|value| cri::Int64Value { value }),
                    // What the kubelet asks of every container without
                    // `procMount: Unmasked` (pkg/securitycontext).
                    masked_paths: KUBELET_MASKED_PATHS.iter().map(|p| p.to_string()).collect(),
                    readonly_paths: KUBELET_READONLY_PATHS
                        .iter()
                        .map(|p| p.to_string())
                        .collect(),
                    seccomp: container.seccomp.as_ref().map(SeccompProfile::to_cri),
                    no_new_privs: container.no_new_privs,
                    ..Default::default()
                }),
                resources: container
                    .memory_limit
                    .map(|bytes| cri::LinuxContainerResources {
                        memory_limit_in_bytes: bytes,
                        ..Default::default()
                    }),
            }),
            ..Default::default()
        };
        let id = client
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: self.sandbox_id.clone(),
                config: Some(config),
                sandbox_config: Some(self.sandbox_config.clone()),
            })
            .await
            .unwrap_or_else(|err| panic!("CreateContainer {}: {err}", container.name))
            .into_inner()
            .container_id;
        client
            .start_container(cri::StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .unwrap_or_else(|err| panic!("StartContainer {}: {err}", container.name));
        self.containers.insert(container.name.clone(), id.clone());
        id
    }

    /// The current container id of `name`.
    pub fn id(&self, name: &str) -> &str {
        &self.containers[name]
    }

    /// Stops container `name` (SIGTERM, then SIGKILL after `grace_secs`).
    pub async fn stop(
        &self,
        client: &mut RuntimeServiceClient<Channel>,
        name: &str,
        grace_secs: i64,
    ) {
        client
            .stop_container(cri::StopContainerRequest {
                container_id: self.id(name).into(),
                timeout: grace_secs,
            })
            .await
            .unwrap_or_else(|err| panic!("StopContainer {name}: {err}"));
    }

    /// What the kubelet does on a restart: a new container instance with the
    /// next attempt number and restart count. Returns the new container id.
    pub async fn restart(
        &mut self,
        client: &mut RuntimeServiceClient<Channel>,
        name: &str,
        attempt: u32,
    ) -> String {
        let spec = self
            .spec
            .containers
            .iter()
            .find(|c| c.name == name)
            .cloned()
            .unwrap_or_else(|| panic!("no container {name}"));
        self.start_container(client, &spec, attempt).await
    }

    /// Stops and removes the pod now (dropping it does the same). If the
    /// runtime fails to, this panics and the drop tries once more.
    pub async fn remove(mut self, client: &mut RuntimeServiceClient<Channel>) {
        remove_sandbox(client, &self.sandbox_id).await;
        self.remove_on_drop = false;
    }

    /// Keeps the pod running after this value is dropped (the demo pods).
    pub fn leave_running(&mut self) {
        self.remove_on_drop = false;
    }
}

/// The demo pods of `hack/testbed.sh demo`: a shell pod, a distroless pod and a
/// two-container pod, in two namespaces.
pub fn demo_pods() -> Vec<PodSpec> {
    vec![
        PodSpec::new("default", "busybox", vec![ContainerSpec::busybox("shell")])
            .label("app", "busybox")
            .label("tier", "debug"),
        PodSpec::new("shop", "hello", vec![ContainerSpec::distroless("hello")])
            .label("app", "hello")
            .label("tier", "backend"),
        PodSpec::new(
            "shop",
            "web",
            vec![
                ContainerSpec::distroless("web"),
                ContainerSpec::busybox("logger"),
            ],
        )
        .label("app", "web")
        .label("tier", "frontend")
        .annotation("kubectl.kubernetes.io/default-container", "web"),
    ]
}
