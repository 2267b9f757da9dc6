//! Real `v1.Pod` objects built from what the runtime reports, and the
//! `meta.k8s.io/v1` `Table` that `kubectl get` asks for.
//!
//! The runtime knows less than the API server (no spec beyond names and images,
//! no owner references): what it does know is reported the way the kubelet
//! reports it, so `kubectl get`, `-o yaml` and `-l` read it unchanged.

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;
use std::collections::BTreeMap;

use super::table::{self, Column, IncludeObject, Row};

use crate::inventory::{Container, ContainerState, Pod};

/// What the API server would call the pod's phase, from its containers' states.
pub fn phase(pod: &Pod) -> &'static str {
    let latest: Vec<&Container> = pod.latest_containers().collect();
    if latest.iter().any(|c| c.state == ContainerState::Running) {
        "Running"
    } else if latest.is_empty()
        || latest
            .iter()
            .any(|c| matches!(c.state, ContainerState::Created | ContainerState::Unknown))
    {
        "Pending"
    } else if latest.iter().all(|c| c.exit_code == 0) {
        "Succeeded"
    } else {
        "Failed"
    }
}

/// A Kubernetes `Time` from Unix nanoseconds; `None` for 0 (unknown).
pub fn time(unix_nanos: i64) -> Option<Time> {
    (unix_nanos > 0)
        .then(|| Timestamp::from_nanosecond(i128::from(unix_nanos)).ok())
        .flatten()
        .map(Time)
}

fn sorted(map: &std::collections::HashMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!map.is_empty()).then(|| map.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

fn container_state(c: &Container, runtime: &str) -> core::ContainerState {
    match c.state {
        ContainerState::Running => core::ContainerState {
            running: Some(core::ContainerStateRunning {
                started_at: time(c.started_at),
            }),
            ..Default::default()
        },
        ContainerState::Exited => core::ContainerState {
            terminated: Some(core::ContainerStateTerminated {
                container_id: Some(format!("{runtime}://{}", c.id)),
                exit_code: c.exit_code,
                finished_at: time(c.finished_at),
                message: (!c.message.is_empty()).then(|| c.message.clone()),
                reason: (!c.reason.is_empty()).then(|| c.reason.clone()),
                started_at: time(c.started_at),
                ..Default::default()
            }),
            ..Default::default()
        },
        ContainerState::Created | ContainerState::Unknown => core::ContainerState {
            waiting: Some(core::ContainerStateWaiting {
                reason: Some(
                    if c.state == ContainerState::Created {
                        "ContainerCreating"
                    } else {
                        "Unknown"
                    }
                    .to_string(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        },
    }
}

/// The pod as a `v1.Pod`, as if read from the API server.
pub fn to_pod(pod: &Pod, node_name: &str, runtime: &str) -> core::Pod {
    let latest: Vec<&Container> = pod.latest_containers().collect();
    let statuses: Vec<core::ContainerStatus> = latest
        .iter()
        .map(|c| core::ContainerStatus {
            name: c.name.clone(),
            container_id: Some(format!("{runtime}://{}", c.id)),
            image: c.image.clone(),
            image_id: c.image_ref.clone(),
            ready: c.state == ContainerState::Running,
            started: Some(c.state == ContainerState::Running),
            restart_count: c.restart_count,
            state: Some(container_state(c, runtime)),
            last_state: pod
                .previous_instance(&c.name)
                .map(|prev| container_state(prev, runtime)),
            ..Default::default()
        })
        .collect();
    let all_ready = !latest.is_empty() && latest.iter().all(|c| c.state == ContainerState::Running);
    let condition = |kind: &str, ok: bool| core::PodCondition {
        type_: kind.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        ..Default::default()
    };
    core::Pod {
        metadata: ObjectMeta {
            name: Some(pod.name.clone()),
            namespace: Some(pod.namespace.clone()),
            uid: Some(pod.uid.clone()),
            labels: Some(pod.user_labels()).filter(|l| !l.is_empty()),
            annotations: sorted(&pod.annotations),
            creation_timestamp: time(pod.created_at),
            ..Default::default()
        },
        spec: Some(core::PodSpec {
            node_name: Some(node_name.to_string()),
            containers: latest
                .iter()
                .map(|c| core::Container {
                    name: c.name.clone(),
                    image: Some(c.image.clone()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
        status: Some(core::PodStatus {
            phase: Some(phase(pod).to_string()),
            pod_ip: pod.ips.first().cloned(),
            pod_ips: Some(
                pod.ips
                    .iter()
                    .map(|ip| core::PodIP { ip: ip.clone() })
                    .collect(),
            )
            .filter(|ips: &Vec<core::PodIP>| !ips.is_empty()),
            start_time: time(pod.created_at),
            container_statuses: Some(statuses),
            conditions: Some(vec![
                condition("PodScheduled", true),
                condition("Initialized", true),
                condition("ContainersReady", all_ready && pod.ready),
                condition("Ready", all_ready && pod.ready),
            ]),
            ..Default::default()
        }),
    }
}

/// Adds `kind` and `apiVersion`, which k8s-openapi leaves to its `Resource` trait.
pub fn with_type_meta(mut value: Value, kind: &str, api_version: &str) -> Value {
    if let Some(object) = value.as_object_mut() {
        object.insert("kind".into(), kind.into());
        object.insert("apiVersion".into(), api_version.into());
    }
    value
}

/// The STATUS column of `kubectl get pods`, computed as the API server's printer does.
fn status_column(pod: &Pod) -> String {
    let mut reason = phase(pod).to_string();
    let mut has_running = false;
    for c in pod.latest_containers() {
        match c.state {
            ContainerState::Created => reason = "ContainerCreating".into(),
            ContainerState::Unknown => reason = "Unknown".into(),
            ContainerState::Exited if !c.reason.is_empty() => reason = c.reason.clone(),
            ContainerState::Exited => reason = format!("ExitCode:{}", c.exit_code),
            ContainerState::Running => has_running = true,
        }
    }
    if has_running && reason == "Completed" {
        reason = "Running".into();
    }
    if !pod.ready && reason == "Running" {
        reason = "NotReady".into();
    }
    reason
}

/// The `Table` kubectl prints for `get pods`, with the API server's columns.
pub fn table(pods: &[&Pod], node_name: &str, runtime: &str, include: IncludeObject) -> Value {
    let rows = pods
        .iter()
        .map(|pod| {
            let latest: Vec<&Container> = pod.latest_containers().collect();
            let ready = latest
                .iter()
                .filter(|c| c.state == ContainerState::Running)
                .count();
            let restarts: i32 = latest.iter().map(|c| c.restart_count).sum();
            let object = to_pod(pod, node_name, runtime);
            Row {
                cells: vec![
                    pod.name.clone().into(),
                    format!("{ready}/{}", latest.len()).into(),
                    status_column(pod).into(),
                    restarts.to_string().into(),
                    table::age(pod.created_at).into(),
                    pod.ips
                        .first()
                        .map(String::as_str)
                        .unwrap_or("<none>")
                        .into(),
                    node_name.into(),
                    "<none>".into(),
                    "<none>".into(),
                ],
                metadata: object.metadata.clone(),
                object: Box::new(move || {
                    with_type_meta(
                        serde_json::to_value(&object).unwrap_or_default(),
                        "Pod",
                        "v1",
                    )
                }),
            }
        })
        .collect();
    table::table(POD_COLUMNS, rows, include)
}

const POD_COLUMNS: &[Column] = &[
    Column {
        name: "Name",
        format: "name",
        priority: 0,
        description: "Name must be unique within a namespace.",
    },
    Column {
        name: "Ready",
        format: "",
        priority: 0,
        description: "The aggregate readiness state of this pod for accepting traffic.",
    },
    Column {
        name: "Status",
        format: "",
        priority: 0,
        description: "The aggregate status of the containers in this pod.",
    },
    Column {
        name: "Restarts",
        format: "",
        priority: 0,
        description: "The number of times the containers in this pod have been restarted.",
    },
    Column {
        name: "Age",
        format: "",
        priority: 0,
        description: "Time since the pod sandbox was created.",
    },
    Column {
        name: "IP",
        format: "",
        priority: 1,
        description: "The IP address assigned to the pod.",
    },
    Column {
        name: "Node",
        format: "",
        priority: 1,
        description: "The node the pod runs on.",
    },
    Column {
        name: "Nominated Node",
        format: "",
        priority: 1,
        description: "Always <none>: the agent does not schedule.",
    },
    Column {
        name: "Readiness Gates",
        format: "",
        priority: 1,
        description: "Always <none>: the runtime knows no readiness gates.",
    },
];
