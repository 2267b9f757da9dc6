//! The test bed's demo pods, made through the CRI as the kubelet would make them.
//!
//! `cargo run -p nsdebug-testbed -- up`   create the demo pods (keeps healthy ones)
//! `cargo run -p nsdebug-testbed -- down` remove every pod the test bed made
//! `cargo run -p nsdebug-testbed -- list` show the demo pods and their state
//!
//! The socket comes from `NSDEBUG_CRI_SOCKET` (default: the test bed's).

use std::process::ExitCode;

use nsdebug_testbed::pods;

use k8s_cri::v1 as cri;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let action = std::env::args().nth(1).unwrap_or_default();
    let socket = pods::socket();
    if !socket.exists() {
        eprintln!(
            "testbed: no containerd socket at {}; run `hack/testbed.sh up` first",
            socket.display()
        );
        return ExitCode::FAILURE;
    }
    let mut client = pods::connect(&socket).await;
    match action.as_str() {
        "up" => {
            for spec in pods::demo_pods() {
                if healthy(&mut client, &spec).await {
                    println!("pod {}/{} already running", spec.namespace, spec.name);
                    continue;
                }
                let mut pod = pods::run_pod(&mut client, &spec, "demo").await;
                pod.leave_running();
                println!(
                    "pod {}/{} started (sandbox {})",
                    spec.namespace,
                    spec.name,
                    &pod.sandbox_id[..12]
                );
            }
        }
        "down" => {
            for sandbox in sandboxes(&mut client).await {
                if sandbox.annotations.contains_key(pods::TESTBED_ANNOTATION) {
                    pods::remove_sandbox(&mut client, &sandbox.id).await;
                    let meta = sandbox.metadata.unwrap_or_default();
                    println!("pod {}/{} removed", meta.namespace, meta.name);
                }
            }
        }
        "list" => {
            for sandbox in sandboxes(&mut client).await {
                let meta = sandbox.metadata.unwrap_or_default();
                let state = if sandbox.state == cri::PodSandboxState::SandboxReady as i32 {
                    "ready"
                } else {
                    "notready"
                };
                println!(
                    "{}/{}\t{state}\t{}",
                    meta.namespace,
                    meta.name,
                    &sandbox.id[..12]
                );
            }
        }
        _ => {
            eprintln!("usage: nsdebug-testbed up|down|list");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}

async fn sandboxes(
    client: &mut k8s_cri::v1::runtime_service_client::RuntimeServiceClient<
        tonic::transport::Channel,
    >,
) -> Vec<cri::PodSandbox> {
    client
        .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
        .await
        .expect("ListPodSandbox")
        .into_inner()
        .items
}

/// True when a ready sandbox of this pod runs all its containers.
async fn healthy(
    client: &mut k8s_cri::v1::runtime_service_client::RuntimeServiceClient<
        tonic::transport::Channel,
    >,
    spec: &pods::PodSpec,
) -> bool {
    let Some(sandbox) = sandboxes(client).await.into_iter().find(|s| {
        let meta = s.metadata.clone().unwrap_or_default();
        meta.namespace == spec.namespace
            && meta.name == spec.name
            && s.state == cri::PodSandboxState::SandboxReady as i32
    }) else {
        return false;
    };
    let containers = client
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                pod_sandbox_id: sandbox.id,
                ..Default::default()
            }),
        })
        .await
        .expect("ListContainers")
        .into_inner()
        .containers;
    spec.containers.iter().all(|want| {
        containers.iter().any(|c| {
            c.metadata.as_ref().is_some_and(|m| m.name == want.name)
                && c.state == cri::ContainerState::ContainerRunning as i32
        })
    })
}
