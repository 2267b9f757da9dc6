//! Real `v1.Pod` objects built from what the runtime reports, and the
//! `meta.k8s.io/v1` `Table` that `kubectl get` asks for.
//!
//! The runtime knows less than the API server (no spec beyond names and images,
//! no owner references): what it does know is reported the way the kubelet
//! reports it, so `kubectl get`, `-o yaml` and `-l` read it unchanged.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

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

fn time(unix_nanos: i64) -> Option<Time> {
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

/// Kubernetes' `duration.HumanDuration`, the AGE column's format.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let minutes = secs / 60;
    let hours = secs / 3600;
    let with = |big: u64, unit: &str, small: u64, small_unit: &str| {
        if small == 0 {
            format!("{big}{unit}")
        } else {
            format!("{big}{unit}{small}{small_unit}")
        }
    };
    if secs < 120 {
        format!("{secs}s")
    } else if minutes < 10 {
        with(minutes, "m", secs % 60, "s")
    } else if minutes < 180 {
        format!("{minutes}m")
    } else if hours < 8 {
        with(hours, "h", minutes % 60, "m")
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        with(hours / 24, "d", hours % 24, "h")
    } else if hours < 24 * 365 * 2 {
        format!("{}d", hours / 24)
    } else if hours < 24 * 365 * 8 {
        with(hours / 24 / 365, "y", (hours / 24) % 365, "d")
    } else {
        format!("{}y", hours / 24 / 365)
    }
}

/// How much of each object a `Table` row carries (`?includeObject=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

/// The `Table` kubectl prints for `get pods`, with the API server's columns.
pub fn table(pods: &[&Pod], node_name: &str, runtime: &str, include: IncludeObject) -> Value {
    let now = SystemTime::now();
    let column = |name: &str, kind: &str, format: &str, priority: i32, description: &str| json!({"name": name, "type": kind, "format": format, "priority": priority, "description": description});
    let rows: Vec<Value> = pods
        .iter()
        .map(|pod| {
            let latest: Vec<&Container> = pod.latest_containers().collect();
            let ready = latest
                .iter()
                .filter(|c| c.state == ContainerState::Running)
                .count();
            let restarts: i32 = latest.iter().map(|c| c.restart_count).sum();
            let created = SystemTime::UNIX_EPOCH
                + Duration::from_nanos(u64::try_from(pod.created_at).unwrap_or(0));
            let age = now
                .duration_since(created)
                .map(human_duration)
                .unwrap_or_else(|_| "0s".into());
            let object = to_pod(pod, node_name, runtime);
            let embedded = match include {
                IncludeObject::None => Value::Null,
                IncludeObject::Metadata => json!({
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": object.metadata,
                }),
                IncludeObject::Object => with_type_meta(
                    serde_json::to_value(&object).unwrap_or_default(),
                    "Pod",
                    "v1",
                ),
            };
            json!({
                "cells": [
                    pod.name,
                    format!("{ready}/{}", latest.len()),
                    status_column(pod),
                    restarts.to_string(),
                    age,
                    pod.ips.first().map(String::as_str).unwrap_or("<none>"),
                    node_name,
                    "<none>",
                    "<none>",
                ],
                "object": embedded,
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": [
            column("Name", "string", "name", 0, "Name must be unique within a namespace."),
            column("Ready", "string", "", 0, "The aggregate readiness state of this pod for accepting traffic."),
            column("Status", "string", "", 0, "The aggregate status of the containers in this pod."),
            column("Restarts", "string", "", 0, "The number of times the containers in this pod have been restarted."),
            column("Age", "string", "", 0, "Time since the pod sandbox was created."),
            column("IP", "string", "", 1, "The IP address assigned to the pod."),
            column("Node", "string", "", 1, "The node the pod runs on."),
            column("Nominated Node", "string", "", 1, "Always <none>: the agent does not schedule."),
            column("Readiness Gates", "string", "", 1, "Always <none>: the runtime knows no readiness gates."),
        ],
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_match_kubernetes() {
        let cases = [
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (125, "2m5s"),
            (600, "10m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 60, "3h1m"),
            (47 * 3600, "47h"),
            (50 * 3600, "2d2h"),
            (10 * 86400, "10d"),
            (3 * 365 * 86400, "3y"),
            (9 * 365 * 86400, "9y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(Duration::from_secs(secs)), want, "{secs}s");
        }
    }
}
