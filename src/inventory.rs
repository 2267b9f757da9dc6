//! The node's pods and containers, kept in memory and fresh.
//!
//! A snapshot is two cheap list calls (`ListPodSandbox`, `ListContainers`) plus a
//! `ContainerStatus` only for containers that are new or changed state since the
//! last snapshot, and a `PodSandboxStatus` only for new sandboxes: a running
//! container's PID and a sandbox's IP never change, so they are asked for once.
//! A background task refreshes on an interval; readers that need the runtime's
//! truth (a miss, a dead PID, a listing) refresh on demand, and concurrent
//! refreshes share one round of CRI calls.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_cri::v1 as api;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::cri::{CriClient, CriError, RuntimeVersion};
use crate::oci::RuntimeSpec;
use crate::process::{ProcRoot, ProcessIdentity};

/// How many status calls run at once during a refresh.
const STATUS_CONCURRENCY: usize = 16;

/// The kubelet's annotation carrying a container's restart count.
const RESTART_COUNT_ANNOTATION: &str = "io.kubernetes.container.restartCount";

/// A container's state as the runtime reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    Created,
    Running,
    Exited,
    Unknown,
}

impl ContainerState {
    fn from_cri(state: i32) -> Self {
        match api::ContainerState::try_from(state) {
            Ok(api::ContainerState::ContainerCreated) => Self::Created,
            Ok(api::ContainerState::ContainerRunning) => Self::Running,
            Ok(api::ContainerState::ContainerExited) => Self::Exited,
            _ => Self::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Running => "running",
            Self::Exited => "exited",
            Self::Unknown => "unknown",
        }
    }
}

/// One container instance (one attempt) as the runtime last reported it.
#[derive(Debug, Clone)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub attempt: u32,
    pub image: String,
    pub image_ref: String,
    pub state: ContainerState,
    /// Unix nanoseconds; 0 when not known.
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    pub restart_count: i32,
    pub labels: HashMap<String, String>,
    pub annotations: HashMap<String, String>,
    /// The container's init process, pinned when the runtime reported it running.
    pub process: Option<ProcessIdentity>,
    /// What an exec into it must apply (seccomp, rlimits, user, ...), from the
    /// runtime's spec of the container.
    pub runtime_spec: RuntimeSpec,
    /// The file the runtime writes the container's output to, in the CRI log
    /// format (`ContainerStatus.log_path`); empty when the runtime said none.
    pub log_path: String,
}

/// One pod sandbox and its containers.
#[derive(Debug, Clone)]
pub struct Pod {
    pub sandbox_id: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub attempt: u32,
    pub ready: bool,
    /// Unix nanoseconds.
    pub created_at: i64,
    pub labels: HashMap<String, String>,
    pub annotations: HashMap<String, String>,
    /// Primary IP first; empty for host-network pods.
    pub ips: Vec<String>,
    pub containers: Vec<Container>,
}

/// Everything on the node at one moment.
#[derive(Debug)]
pub struct Snapshot {
    /// When the CRI calls behind this snapshot started.
    pub started: Instant,
    pub pods: Vec<Pod>,
}

impl Snapshot {
    fn empty() -> Self {
        Self {
            // An instant in the past so the first refresh never reuses it.
            started: Instant::now() - Duration::from_secs(3600),
            pods: Vec::new(),
        }
    }
}

/// Container facts that only change with the container's state.
#[derive(Clone)]
struct CachedStatus {
    state: ContainerState,
    container: Container,
}

#[derive(Default)]
struct Caches {
    statuses: HashMap<String, CachedStatus>,
    sandbox_ips: HashMap<String, (bool, Vec<String>)>,
}

/// The in-memory inventory of the node.
pub struct Inventory {
    cri: CriClient,
    proc_root: ProcRoot,
    runtime: RuntimeVersion,
    current: RwLock<Arc<Snapshot>>,
    refresh_lock: tokio::sync::Mutex<()>,
    caches: Mutex<Caches>,
}

impl Inventory {
    pub fn new(cri: CriClient, runtime: RuntimeVersion, proc_root: ProcRoot) -> Self {
        Self {
            cri,
            proc_root,
            runtime,
            current: RwLock::new(Arc::new(Snapshot::empty())),
            refresh_lock: tokio::sync::Mutex::new(()),
            caches: Mutex::new(Caches::default()),
        }
    }

    pub fn cri(&self) -> &CriClient {
        &self.cri
    }

    pub fn proc_root(&self) -> &ProcRoot {
        &self.proc_root
    }

    /// The runtime's name and version as it reported them at start-up.
    pub fn runtime(&self) -> &RuntimeVersion {
        &self.runtime
    }

    /// The last snapshot, without asking the runtime.
    pub fn cached(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A snapshot at least as new as this call: the runtime is asked unless a
    /// refresh that started after this call began has already finished.
    pub async fn refresh(&self) -> Result<Arc<Snapshot>, CriError> {
        let asked = Instant::now();
        let _guard = self.refresh_lock.lock().await;
        let current = self.cached();
        if current.started >= asked {
            return Ok(current);
        }
        let snapshot = Arc::new(self.take_snapshot().await?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = snapshot.clone();
        Ok(snapshot)
    }

    async fn take_snapshot(&self) -> Result<Snapshot, CriError> {
        let started = Instant::now();
        let (sandboxes, containers) =
            tokio::try_join!(self.cri.list_pod_sandboxes(), self.cri.list_containers())?;

        let (known, known_ips) = {
            let caches = self.caches.lock().unwrap_or_else(|e| e.into_inner());
            (caches.statuses.clone(), caches.sandbox_ips.clone())
        };

        // The futures are built up front: a stream closure borrowing `self` makes
        // the future not `Send` (rust-lang/rust#102211).
        let container_calls: Vec<_> = containers
            .into_iter()
            .map(|listed| self.container(listed, &known))
            .collect();
        let statuses: Vec<(String, Container)> = futures::stream::iter(container_calls)
            .buffer_unordered(STATUS_CONCURRENCY)
            .try_filter_map(|found| async move { Ok(found) })
            .try_collect()
            .await?;

        let sandbox_calls: Vec<_> = sandboxes
            .iter()
            .map(|sandbox| {
                let ready = sandbox.state == api::PodSandboxState::SandboxReady as i32;
                self.sandbox_ips(sandbox.id.clone(), ready, &known_ips)
            })
            .collect();
        let sandbox_ips: Vec<(String, bool, Vec<String>)> = futures::stream::iter(sandbox_calls)
            .buffer_unordered(STATUS_CONCURRENCY)
            .try_collect()
            .await?;

        let mut by_sandbox: HashMap<String, Vec<Container>> = HashMap::new();
        {
            let mut caches = self.caches.lock().unwrap_or_else(|e| e.into_inner());
            caches.statuses = statuses
                .iter()
                .map(|(_, c)| {
                    let cached = CachedStatus {
                        state: c.state,
                        container: c.clone(),
                    };
                    (c.id.clone(), cached)
                })
                .collect();
            caches.sandbox_ips = sandbox_ips
                .iter()
                .map(|(id, ready, ips)| (id.clone(), (*ready, ips.clone())))
                .collect();
        }
        for (sandbox_id, container) in statuses {
            by_sandbox.entry(sandbox_id).or_default().push(container);
        }
        let mut ips: HashMap<String, Vec<String>> = sandbox_ips
            .into_iter()
            .map(|(id, _, ips)| (id, ips))
            .collect();

        let mut pods: Vec<Pod> = sandboxes
            .into_iter()
            .map(|sandbox| {
                let meta = sandbox.metadata.unwrap_or_default();
                let mut containers = by_sandbox.remove(&sandbox.id).unwrap_or_default();
                sort_containers(&mut containers);
                Pod {
                    ips: ips.remove(&sandbox.id).unwrap_or_default(),
                    sandbox_id: sandbox.id,
                    namespace: meta.namespace,
                    name: meta.name,
                    uid: meta.uid,
                    attempt: meta.attempt,
                    ready: sandbox.state == api::PodSandboxState::SandboxReady as i32,
                    created_at: sandbox.created_at,
                    labels: sandbox.labels,
                    annotations: sandbox.annotations,
                    containers,
                }
            })
            .collect();
        pods.sort_by(|a, b| {
            (&a.namespace, &a.name, a.created_at).cmp(&(&b.namespace, &b.name, b.created_at))
        });
        Ok(Snapshot { started, pods })
    }

    /// The full record of a listed container: from the cache when its state has
    /// not changed, else from `ContainerStatus`. `None` when it vanished meanwhile.
    async fn container(
        &self,
        listed: api::Container,
        known: &HashMap<String, CachedStatus>,
    ) -> Result<Option<(String, Container)>, CriError> {
        let state = ContainerState::from_cri(listed.state);
        // A running container whose PID could not be pinned is asked for again.
        if let Some(cached) = known.get(&listed.id)
            && cached.state == state
            && (state != ContainerState::Running || cached.container.process.is_some())
        {
            return Ok(Some((listed.pod_sandbox_id, cached.container.clone())));
        }
        let answer = match self.cri.container_status(&listed.id).await {
            Ok(answer) => answer,
            Err(err) if err.is_not_found() => return Ok(None),
            Err(err @ CriError::VerboseInfo { .. }) => {
                tracing::warn!(container = %listed.id, error = %crate::error_chain(&err), "no PID for container");
                crate::cri::ContainerStatus {
                    status: api::ContainerStatus::default(),
                    pid: None,
                    runtime_spec: RuntimeSpec::NotReported,
                }
            }
            Err(err) => return Err(err),
        };
        let status = answer.status;
        let meta = listed.metadata.unwrap_or_default();
        // The status call may have raced a state change; its answer is the newer one.
        let state = if status.id.is_empty() {
            state
        } else {
            ContainerState::from_cri(status.state)
        };
        let process = match (state, answer.pid) {
            (ContainerState::Running, Some(pid)) => self.pin_process(&listed.id, pid),
            _ => None,
        };
        let restart_count = listed
            .annotations
            .get(RESTART_COUNT_ANNOTATION)
            .and_then(|count| count.parse().ok())
            .unwrap_or(meta.attempt as i32);
        let image = status
            .image
            .map(|image| image.image)
            .filter(|image| !image.is_empty())
            .or_else(|| listed.image.map(|image| image.image))
            .unwrap_or_default();
        let container = Container {
            id: listed.id,
            name: meta.name,
            attempt: meta.attempt,
            image,
            image_ref: if status.image_ref.is_empty() {
                listed.image_ref
            } else {
                status.image_ref
            },
            state,
            created_at: listed.created_at,
            started_at: status.started_at,
            finished_at: status.finished_at,
            exit_code: status.exit_code,
            reason: status.reason,
            message: status.message,
            restart_count,
            labels: listed.labels,
            annotations: listed.annotations,
            process,
            runtime_spec: answer.runtime_spec,
            log_path: status.log_path,
        };
        Ok(Some((listed.pod_sandbox_id, container)))
    }

    /// Pins the runtime's PID for a running container to one process. The PID is
    /// rejected when its cgroup does not name the container: the container died
    /// and the number was reused between the runtime's answer and this read.
    fn pin_process(&self, container_id: &str, pid: u32) -> Option<ProcessIdentity> {
        let identity = match self.proc_root.identity(pid) {
            Ok(identity) => identity,
            Err(err) => {
                tracing::debug!(container = container_id, error = %crate::error_chain(&err), "container process already gone");
                return None;
            }
        };
        match self.proc_root.cgroup_mentions(pid, container_id) {
            Ok(true) => Some(identity),
            Ok(false) => {
                tracing::warn!(
                    container = container_id,
                    pid,
                    "the runtime's PID is not in the container's cgroup; not using it"
                );
                None
            }
            Err(err) => {
                tracing::debug!(container = container_id, error = %crate::error_chain(&err), "container process already gone");
                None
            }
        }
    }

    async fn sandbox_ips(
        &self,
        sandbox_id: String,
        ready: bool,
        known: &HashMap<String, (bool, Vec<String>)>,
    ) -> Result<(String, bool, Vec<String>), CriError> {
        if let Some((was_ready, ips)) = known.get(&sandbox_id)
            && *was_ready == ready
        {
            return Ok((sandbox_id, ready, ips.clone()));
        }
        let ips = match self.cri.pod_sandbox_ips(&sandbox_id).await {
            Ok(ips) => ips,
            Err(err) if err.is_not_found() => Vec::new(),
            Err(err) => return Err(err),
        };
        Ok((sandbox_id, ready, ips))
    }

    /// Refreshes every `interval` until `cancel` fires, logging when the runtime
    /// goes away and when it comes back.
    pub async fn keep_fresh(self: Arc<Self>, interval: Duration, cancel: CancellationToken) {
        let mut healthy = true;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            match self.refresh().await {
                Ok(_) if !healthy => {
                    healthy = true;
                    tracing::info!(socket = %self.cri.socket().display(), "container runtime answers again");
                }
                Ok(_) => {}
                Err(err) if healthy => {
                    healthy = false;
                    tracing::warn!(error = %crate::error_chain(&err), "container runtime stopped answering; serving the last known inventory to lookups");
                }
                Err(_) => {}
            }
        }
    }
}

impl Pod {
    /// Pod labels without the ones the kubelet adds to every sandbox.
    pub fn user_labels(&self) -> BTreeMap<String, String> {
        self.labels
            .iter()
            .filter(|(key, _)| !KUBELET_SANDBOX_LABELS.contains(&key.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The newest instance of each container name, in the pod's order.
    pub fn latest_containers(&self) -> impl Iterator<Item = &Container> {
        // Instances of one name are adjacent, oldest first: the last of each run wins.
        self.containers
            .iter()
            .enumerate()
            .filter_map(|(i, c)| match self.containers.get(i + 1) {
                Some(next) if next.name == c.name => None,
                _ => Some(c),
            })
    }

    /// The instance before the newest one of container `name`, if the runtime still has it.
    pub fn previous_instance(&self, name: &str) -> Option<&Container> {
        let mut same: Vec<&Container> = self.containers.iter().filter(|c| c.name == name).collect();
        same.pop();
        same.pop()
    }
}

/// Orders a pod's containers as the pod declares them (the kubelet creates
/// them in that order), each name's instances together, oldest attempt first.
fn sort_containers(containers: &mut [Container]) {
    let mut first_created: HashMap<String, i64> = HashMap::new();
    for c in containers.iter() {
        let first = first_created.entry(c.name.clone()).or_insert(c.created_at);
        *first = (*first).min(c.created_at);
    }
    containers.sort_by(|a, b| {
        (first_created[&a.name], &a.name, a.attempt).cmp(&(
            first_created[&b.name],
            &b.name,
            b.attempt,
        ))
    });
}

/// Labels the kubelet sets on every sandbox, which are not the pod's own labels.
const KUBELET_SANDBOX_LABELS: &[&str] = &[
    "io.kubernetes.pod.name",
    "io.kubernetes.pod.namespace",
    "io.kubernetes.pod.uid",
    "io.kubernetes.container.name",
];
