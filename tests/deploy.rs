//! The plain manifests (`manifests/`, rendered offline by `kubectl kustomize`):
//! every object parses into its k8s-openapi type with no field left over,
//! the DaemonSet's arguments are ones the agent itself accepts, and the RBAC
//! is the least the agent needs.

mod support;

use std::collections::BTreeSet;
use std::process::Command;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The objects `kubectl kustomize manifests` renders, as JSON (through the
/// YAML parser of the Python venv the tests already use).
fn rendered() -> Vec<Value> {
    let yaml = Command::new("kubectl")
        .args(["kustomize"])
        .arg(support::repo().join("manifests"))
        .output()
        .expect("kubectl is installed");
    assert!(yaml.status.success(), "{yaml:?}");
    let python = support::repo().join("target/pyclient/bin/python");
    assert!(
        python.exists(),
        "run hack/test.sh: it makes the venv (PyYAML comes with kubernetes)"
    );
    let mut child = Command::new(python)
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(sys.stdin))))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&yaml.stdout).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    serde_json::from_slice(&output.stdout).unwrap()
}

/// `value` as a `T`, refusing any field `T` does not have: the typed object
/// serialized back must be the same JSON.
fn strictly<T: DeserializeOwned + Serialize>(value: &Value) -> T {
    let typed: T =
        serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{}: {e}", value["kind"]));
    let mut back = serde_json::to_value(&typed).unwrap();
    // k8s-openapi leaves apiVersion/kind to its Resource trait.
    back["apiVersion"] = value["apiVersion"].clone();
    back["kind"] = value["kind"].clone();
    assert_eq!(
        &back, value,
        "{} has fields its type does not know",
        value["kind"]
    );
    typed
}

#[test]
fn manifests_are_valid_and_least_privilege() {
    let objects = rendered();
    let kinds: Vec<&str> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "DaemonSet"
        ]
    );
    let find = |kind: &str| objects.iter().find(|o| o["kind"] == kind).unwrap();
    let namespace: Namespace = strictly(find("Namespace"));
    let ns = namespace.metadata.name.unwrap();
    let account: ServiceAccount = strictly(find("ServiceAccount"));
    let role: ClusterRole = strictly(find("ClusterRole"));
    let binding: ClusterRoleBinding = strictly(find("ClusterRoleBinding"));
    let daemonset: DaemonSet = strictly(find("DaemonSet"));

    // RBAC: reviews and events, nothing more, bound to the agent's account.
    let rules: BTreeSet<(String, String, String)> = role
        .rules
        .unwrap()
        .into_iter()
        .flat_map(|r| {
            let groups = r.api_groups.unwrap_or_default();
            let resources = r.resources.unwrap_or_default();
            let verbs = r.verbs;
            groups.into_iter().flat_map(move |g| {
                let verbs = verbs.clone();
                resources.clone().into_iter().flat_map(move |res| {
                    let g = g.clone();
                    verbs
                        .clone()
                        .into_iter()
                        .map(move |v| (g.clone(), res.clone(), v))
                })
            })
        })
        .collect();
    let expected: BTreeSet<(String, String, String)> = [
        ("authentication.k8s.io", "tokenreviews", "create"),
        ("authorization.k8s.io", "subjectaccessreviews", "create"),
        ("", "events", "create"),
    ]
    .into_iter()
    .map(|(g, r, v)| (g.into(), r.into(), v.into()))
    .collect();
    assert_eq!(rules, expected);
    let subject = &binding.subjects.unwrap()[0];
    assert_eq!(
        (
            subject.kind.as_str(),
            subject.name.as_str(),
            subject.namespace.as_deref()
        ),
        (
            "ServiceAccount",
            account.metadata.name.as_deref().unwrap(),
            Some(ns.as_str())
        )
    );
    assert_eq!(binding.role_ref.name, role.metadata.name.unwrap());

    // The DaemonSet: every node, the host's PIDs, not its network.
    assert_eq!(daemonset.metadata.namespace.as_deref(), Some(ns.as_str()));
    let pod = daemonset.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.host_pid, Some(true));
    assert_ne!(pod.host_network, Some(true));
    assert_eq!(pod.service_account_name, account.metadata.name);
    let tolerations = pod.tolerations.unwrap();
    assert!(
        tolerations
            .iter()
            .any(|t| t.operator.as_deref() == Some("Exists") && t.key.is_none())
    );
    let agent = &pod.containers[0];
    let resources = agent.resources.as_ref().unwrap();
    assert!(resources.requests.is_some() && resources.limits.is_some());
    // The CRI sockets are mounted read-only.
    let run = agent
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.mount_path == "/host/run")
        .unwrap();
    assert_eq!(run.read_only, Some(true));

    // Its arguments are ones the agent accepts, and they configure a
    // loopback API with TLS and Kubernetes auth and a probe port.
    let args = agent.args.clone().unwrap();
    let cli = <nsdebug::config::Cli as clap::Parser>::try_parse_from(
        std::iter::once("nsdebug".to_string()).chain(args.iter().cloned()),
    )
    .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    let nsdebug::config::Command::Serve(serve) = cli.command else {
        panic!("the DaemonSet runs `serve`");
    };
    let config = nsdebug::config::Config::from_args(*serve).unwrap();
    assert!(config.listen.ip().is_loopback());
    assert!(config.tls.is_some());
    assert_eq!(config.auth, nsdebug::config::AuthMode::Kube);
    let health = config
        .health_listen
        .expect("a port for the kubelet's probes");
    for probe in [&agent.readiness_probe, &agent.liveness_probe] {
        let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
        let port = match &get.port {
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(name) => {
                agent
                    .ports
                    .as_ref()
                    .unwrap()
                    .iter()
                    .find(|p| p.name.as_deref() == Some(name.as_str()))
                    .unwrap()
                    .container_port
            }
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(port) => *port,
        };
        assert_eq!(
            port,
            i32::from(health.port()),
            "probes go to --health-listen"
        );
    }
}
