//! From what a user names (namespace/pod/container, or a container ID) to a
//! [`Target`]: one running container, its live init process and its namespaces.
//!
//! Lookups are answered from the in-memory inventory when it knows the container
//! and its process is still the one that was pinned; on a miss or a dead process
//! the runtime is asked again, so a restarted container is found under its new
//! PID and a PID that now belongs to someone else is never returned.
//!
//! Only an admitted request is resolved ([`crate::auth::Admitted`]): a
//! caller learns nothing about a target before the access review passed.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::Serialize;

use crate::cri::CriError;
use crate::inventory::{Container, ContainerState, Inventory, Pod, Snapshot};
use crate::oci::RuntimeSpec;
use crate::process::{NamespaceIds, ProcessIdentity};

/// The annotation `kubectl` reads to choose a pod's container when none is named.
pub const DEFAULT_CONTAINER_ANNOTATION: &str = "kubectl.kubernetes.io/default-container";

/// What a caller asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetRef {
    /// A pod's container; `None` picks the pod's default container.
    Pod {
        namespace: String,
        pod: String,
        container: Option<String>,
    },
    /// A container ID, in full or as a unique prefix.
    ContainerId(String),
}

/// A running container, pinned to its live init process.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    pub container: String,
    pub container_id: String,
    pub state: ContainerState,
    pub pid: u32,
    #[serde(skip)]
    pub process: ProcessIdentity,
    /// Inode numbers of `/proc/PID/ns/*`.
    #[schema(value_type = std::collections::BTreeMap<String, u64>)]
    pub namespaces: NamespaceIds,
    /// What an exec must apply, from the runtime's spec of the container.
    #[serde(skip)]
    pub runtime_spec: RuntimeSpec,
}

impl Target {
    /// The container's init process, as the code that joins its namespaces
    /// pins it.
    pub fn container_process(&self) -> crate::process::ContainerProcess {
        crate::process::ContainerProcess {
            pid: self.pid,
            start_time: self.process.start_time,
            container_id: self.container_id.clone(),
        }
    }
}

/// Why a lookup found no target.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("pod \"{pod}\" not found in namespace \"{namespace}\" on this node")]
    PodNotFound { namespace: String, pod: String },
    #[error("container \"{container}\" not found in pod {namespace}/{pod}; its containers are: {}", .available.join(", "))]
    ContainerNotFound {
        namespace: String,
        pod: String,
        container: String,
        available: Vec<String>,
    },
    #[error("pod {namespace}/{pod} has {} containers ({}); name one with container=NAME", .available.len(), .available.join(", "))]
    ContainerAmbiguous {
        namespace: String,
        pod: String,
        available: Vec<String>,
    },
    #[error("pod {namespace}/{pod} has no containers yet")]
    NoContainers { namespace: String, pod: String },
    #[error("no container on this node has an ID starting with \"{prefix}\"")]
    ContainerIdNotFound { prefix: String },
    #[error("container ID prefix \"{prefix}\" is ambiguous: it matches {}", .matches.join(", "))]
    ContainerIdAmbiguous {
        prefix: String,
        matches: Vec<String>,
    },
    #[error("a container ID is made of hex digits; \"{prefix}\" is not one")]
    InvalidContainerId { prefix: String },
    #[error("container \"{container}\" of pod {namespace}/{pod} is not running (state: {})", .state.as_str())]
    NotRunning {
        namespace: String,
        pod: String,
        container: String,
        state: ContainerState,
    },
    #[error(
        "the runtime reports container {container_id} running but no live process of it was found"
    )]
    NoProcess { container_id: String },
    #[error("failed to ask the container runtime")]
    Runtime(#[from] CriError),
}

/// Whose a container ID is (see [`Resolver::container_id_owner`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdOwner {
    pub namespace: String,
    pub pod: String,
    /// The container's full ID.
    pub container_id: String,
}

/// Resolves [`TargetRef`]s against the inventory.
#[derive(Clone)]
pub struct Resolver {
    inventory: Arc<Inventory>,
}

impl Resolver {
    pub fn new(inventory: Arc<Inventory>) -> Self {
        Self { inventory }
    }

    /// The target `wanted` names: from memory when the cached process is still
    /// alive, else from a fresh look at the runtime.
    pub async fn resolve(
        &self,
        wanted: &crate::auth::Admitted<TargetRef>,
    ) -> Result<Target, ResolveError> {
        let wanted = wanted.value();
        let cached = self.inventory.cached();
        // Anything but a live hit (a miss, a dead process, a stopped container)
        // may be stale: the runtime decides.
        if let Ok((pod, container)) = find(&cached, wanted)
            && let Ok(Some(target)) = self.pin(pod, container)
        {
            return Ok(target);
        }
        let fresh = self.inventory.refresh().await?;
        let (pod, container) = find(&fresh, wanted)?;
        self.pin(pod, container)?
            .ok_or_else(|| ResolveError::NoProcess {
                container_id: container.id.clone(),
            })
    }

    /// The pod a container ID (in full or a unique prefix) belongs to, for
    /// admission only: the access review is made on that pod, and what this
    /// says is never an answer for a caller who has not passed it.
    pub async fn container_id_owner(&self, prefix: &str) -> Result<IdOwner, ResolveError> {
        let owner = |snapshot: &Snapshot| {
            find_container_id(snapshot, prefix).map(|(pod, container)| IdOwner {
                namespace: pod.namespace.clone(),
                pod: pod.name.clone(),
                container_id: container.id.clone(),
            })
        };
        match owner(&self.inventory.cached()) {
            Ok(found) => Ok(found),
            Err(ResolveError::InvalidContainerId { prefix }) => {
                Err(ResolveError::InvalidContainerId { prefix })
            }
            // A miss or an ambiguity may be stale: the runtime decides.
            Err(_) => owner(&*self.inventory.refresh().await?),
        }
    }

    /// A target for a running container whose pinned process is still alive;
    /// `None` when the process is gone (the inventory is stale).
    fn pin(&self, pod: &Pod, container: &Container) -> Result<Option<Target>, ResolveError> {
        if container.state != ContainerState::Running {
            return Err(ResolveError::NotRunning {
                namespace: pod.namespace.clone(),
                pod: pod.name.clone(),
                container: container.name.clone(),
                state: container.state,
            });
        }
        let proc_root = self.inventory.proc_root();
        let Some(process) = container.process.filter(|p| proc_root.is_alive(*p)) else {
            return Ok(None);
        };
        let Ok(namespaces) = proc_root.namespaces(process.pid) else {
            return Ok(None);
        };
        // The namespaces were read by PID: make sure it is still the same process.
        if !proc_root.is_alive(process) {
            return Ok(None);
        }
        Ok(Some(Target {
            namespace: pod.namespace.clone(),
            pod: pod.name.clone(),
            pod_uid: pod.uid.clone(),
            container: container.name.clone(),
            container_id: container.id.clone(),
            state: container.state,
            pid: process.pid,
            process,
            namespaces,
            runtime_spec: container.runtime_spec.clone(),
        }))
    }
}

/// The pod and container instance `wanted` names in `snapshot`.
fn find<'a>(
    snapshot: &'a Snapshot,
    wanted: &TargetRef,
) -> Result<(&'a Pod, &'a Container), ResolveError> {
    match wanted {
        TargetRef::Pod {
            namespace,
            pod,
            container,
        } => {
            let pod = find_pod(snapshot, namespace, pod)?;
            let container = find_container(pod, container.as_deref())?;
            Ok((pod, container))
        }
        TargetRef::ContainerId(prefix) => find_container_id(snapshot, prefix),
    }
}

/// The pod by namespace and name. After a pod is re-created the runtime may still
/// hold the old sandbox: the ready one wins, then the newest.
pub fn find_pod_in<'a>(pods: &'a [Pod], namespace: &str, name: &str) -> Option<&'a Pod> {
    pods.iter()
        .filter(|pod| pod.namespace == namespace && pod.name == name)
        .max_by_key(|pod| (pod.ready, pod.created_at))
}

fn find_pod<'a>(
    snapshot: &'a Snapshot,
    namespace: &str,
    name: &str,
) -> Result<&'a Pod, ResolveError> {
    find_pod_in(&snapshot.pods, namespace, name).ok_or_else(|| ResolveError::PodNotFound {
        namespace: namespace.to_string(),
        pod: name.to_string(),
    })
}

fn find_container<'a>(pod: &'a Pod, name: Option<&str>) -> Result<&'a Container, ResolveError> {
    let names: BTreeSet<&str> = pod.containers.iter().map(|c| c.name.as_str()).collect();
    let name = match name {
        Some(name) => name,
        None => match (
            names.len(),
            pod.annotations.get(DEFAULT_CONTAINER_ANNOTATION),
        ) {
            (0, _) => {
                return Err(ResolveError::NoContainers {
                    namespace: pod.namespace.clone(),
                    pod: pod.name.clone(),
                });
            }
            (1, _) => names.first().copied().unwrap_or_default(),
            (_, Some(default)) => default.as_str(),
            (_, None) => {
                return Err(ResolveError::ContainerAmbiguous {
                    namespace: pod.namespace.clone(),
                    pod: pod.name.clone(),
                    available: names.iter().map(|n| n.to_string()).collect(),
                });
            }
        },
    };
    pod.latest_containers()
        .find(|c| c.name == name)
        .ok_or_else(|| ResolveError::ContainerNotFound {
            namespace: pod.namespace.clone(),
            pod: pod.name.clone(),
            container: name.to_string(),
            available: names.iter().map(|n| n.to_string()).collect(),
        })
}

fn find_container_id<'a>(
    snapshot: &'a Snapshot,
    prefix: &str,
) -> Result<(&'a Pod, &'a Container), ResolveError> {
    // Accept the Kubernetes form `containerd://ID` as well as the bare ID.
    let prefix = prefix.split_once("://").map_or(prefix, |(_, id)| id);
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ResolveError::InvalidContainerId {
            prefix: prefix.to_string(),
        });
    }
    let matches: Vec<(&Pod, &Container)> = snapshot
        .pods
        .iter()
        .flat_map(|pod| pod.containers.iter().map(move |c| (pod, c)))
        .filter(|(_, c)| c.id.starts_with(prefix))
        .collect();
    match matches.as_slice() {
        [] => Err(ResolveError::ContainerIdNotFound {
            prefix: prefix.to_string(),
        }),
        [one] => Ok(*one),
        many => Err(ResolveError::ContainerIdAmbiguous {
            prefix: prefix.to_string(),
            matches: many.iter().map(|(_, c)| c.id.clone()).collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::Instant;

    fn container(id: &str, name: &str, attempt: u32, state: ContainerState) -> Container {
        Container {
            id: id.into(),
            name: name.into(),
            attempt,
            image: "img".into(),
            image_ref: String::new(),
            state,
            created_at: 0,
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            restart_count: attempt as i32,
            labels: HashMap::new(),
            annotations: HashMap::new(),
            process: None,
            runtime_spec: crate::oci::RuntimeSpec::NotReported,
            log_path: String::new(),
        }
    }

    fn pod(name: &str, containers: Vec<Container>) -> Pod {
        Pod {
            sandbox_id: format!("sb-{name}"),
            namespace: "ns".into(),
            name: name.into(),
            uid: "uid".into(),
            attempt: 0,
            ready: true,
            created_at: 1,
            labels: HashMap::new(),
            annotations: HashMap::new(),
            ips: vec![],
            containers,
        }
    }

    fn snapshot(pods: Vec<Pod>) -> Snapshot {
        Snapshot {
            started: Instant::now(),
            pods,
        }
    }

    fn by_pod(pod: &str, container: Option<&str>) -> TargetRef {
        TargetRef::Pod {
            namespace: "ns".into(),
            pod: pod.into(),
            container: container.map(Into::into),
        }
    }

    #[test]
    fn only_container_is_the_default_and_newest_attempt_wins() {
        let snap = snapshot(vec![pod(
            "one",
            vec![
                container("aa01", "app", 0, ContainerState::Exited),
                container("aa02", "app", 1, ContainerState::Running),
            ],
        )]);
        let (_, c) = find(&snap, &by_pod("one", None)).unwrap();
        assert_eq!(c.id, "aa02");
    }

    #[test]
    fn several_containers_need_a_name_or_the_annotation() {
        let mut two = pod(
            "two",
            vec![
                container("bb01", "logger", 0, ContainerState::Running),
                container("bb02", "web", 0, ContainerState::Running),
            ],
        );
        let snap = snapshot(vec![two.clone()]);
        let err = find(&snap, &by_pod("two", None)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "pod ns/two has 2 containers (logger, web); name one with container=NAME"
        );
        two.annotations
            .insert(DEFAULT_CONTAINER_ANNOTATION.into(), "web".into());
        let snap = snapshot(vec![two]);
        assert_eq!(find(&snap, &by_pod("two", None)).unwrap().1.id, "bb02");
        let err = find(&snap, &by_pod("two", Some("db"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "container \"db\" not found in pod ns/two; its containers are: logger, web"
        );
    }

    #[test]
    fn container_id_prefixes() {
        let snap = snapshot(vec![
            pod(
                "a",
                vec![container("abc123", "x", 0, ContainerState::Running)],
            ),
            pod(
                "b",
                vec![container("abd456", "y", 0, ContainerState::Running)],
            ),
        ]);
        let id = |s: &str| TargetRef::ContainerId(s.into());
        assert_eq!(find(&snap, &id("abc")).unwrap().0.name, "a");
        assert_eq!(find(&snap, &id("containerd://abd4")).unwrap().0.name, "b");
        assert!(matches!(
            find(&snap, &id("ab")),
            Err(ResolveError::ContainerIdAmbiguous { .. })
        ));
        assert!(matches!(
            find(&snap, &id("ff")),
            Err(ResolveError::ContainerIdNotFound { .. })
        ));
        assert!(matches!(
            find(&snap, &id("../x")),
            Err(ResolveError::InvalidContainerId { .. })
        ));
    }

    #[test]
    fn ready_sandbox_wins_over_an_old_one() {
        let mut old = pod("p", vec![]);
        old.ready = false;
        old.created_at = 5;
        old.sandbox_id = "old".into();
        let mut new = pod("p", vec![]);
        new.created_at = 3;
        new.sandbox_id = "new".into();
        let snap = snapshot(vec![old, new]);
        assert_eq!(find_pod(&snap, "ns", "p").unwrap().sandbox_id, "new");
    }
}
