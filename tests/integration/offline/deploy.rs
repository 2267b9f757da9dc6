//! How the agent is installed: the plain manifests (`manifests/`, rendered
//! offline by `kubectl kustomize`) and the Helm chart (`charts/nsdebug`,
//! rendered offline by `helm template`). Every object parses into its
//! k8s-openapi type with no field left over, the DaemonSet's arguments are
//! ones the agent itself accepts, the RBAC is the least the agent needs, the
//! chart's defaults install what the manifests do, its values reach the agent
//! as the settings they name, and it refuses values the agent would.

/// Rendering the chart and the manifests (shared with `security::deployment`).
pub mod render;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Namespace, PodSpec, ServiceAccount, Toleration};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use nsdebug::config::{AuthMode, Config, LogFormat};
use nsdebug::tls::CertSource;
use serde_json::{Value, json};

use render::{RELEASE, helm, helm_template, only, strictly};

/// What every install must be, manifests or chart, whatever its values:
/// these objects and no others, each strictly its type; RBAC that only
/// reviews tokens and access, writes events and reads Nodes, bound to the agent's
/// account; a hostPID DaemonSet on every node whose arguments the agent
/// accepts, serving a loopback API with TLS and probes on the health port;
/// a Role that only writes Leases in the agent's namespace, and the pod's
/// name and namespace given to the agent so it publishes its certificate.
/// Returns the agent's pod and its configuration for more checks.
fn check_install(objects: &[Value]) -> (PodSpec, Config) {
    // (kustomize and helm order them each their own way)
    let kinds: BTreeSet<&str> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .filter(|kind| *kind != "Namespace")
        .collect();
    assert_eq!(
        objects.len() - usize::from(objects[0]["kind"] == "Namespace"),
        kinds.len()
    );
    assert_eq!(
        kinds,
        BTreeSet::from([
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "DaemonSet",
            "NetworkPolicy",
        ])
    );
    let account: ServiceAccount = strictly(only(objects, "ServiceAccount"));
    let role: ClusterRole = strictly(only(objects, "ClusterRole"));
    let binding: ClusterRoleBinding = strictly(only(objects, "ClusterRoleBinding"));
    let daemonset: DaemonSet = strictly(only(objects, "DaemonSet"));
    let ns = daemonset.metadata.namespace.clone().unwrap();
    assert_eq!(account.metadata.namespace.as_deref(), Some(ns.as_str()));
    if objects.iter().any(|o| o["kind"] == "Namespace") {
        assert_eq!(
            objects[0]["kind"], "Namespace",
            "created before its objects"
        );
        let namespace: Namespace = strictly(&objects[0]);
        assert_eq!(namespace.metadata.name.as_deref(), Some(ns.as_str()));
        let labels = namespace.metadata.labels.unwrap();
        // The agent is privileged with hostPID: nothing less admits it.
        assert_eq!(
            labels["pod-security.kubernetes.io/enforce"].as_str(),
            "privileged"
        );
    }

    // RBAC: reviews, events and its Node, nothing more, bound to the agent's account.
    let rules = flat_rules(role.rules.unwrap());
    let expected: BTreeSet<(String, String, String)> = [
        ("authentication.k8s.io", "tokenreviews", "create"),
        ("authorization.k8s.io", "subjectaccessreviews", "create"),
        ("", "events", "create"),
        ("", "nodes", "get"),
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

    // In its own namespace, Leases only (where it publishes its serving
    // certificate), bound to the agent's account.
    let lease_role: Role = strictly(only(objects, "Role"));
    let lease_binding: RoleBinding = strictly(only(objects, "RoleBinding"));
    assert_eq!(lease_role.metadata.namespace.as_deref(), Some(ns.as_str()));
    assert_eq!(
        lease_binding.metadata.namespace.as_deref(),
        Some(ns.as_str())
    );
    let expected: BTreeSet<(String, String, String)> = [
        ("coordination.k8s.io", "leases", "create"),
        ("coordination.k8s.io", "leases", "patch"),
    ]
    .into_iter()
    .map(|(g, r, v)| (g.into(), r.into(), v.into()))
    .collect();
    assert_eq!(flat_rules(lease_role.rules.unwrap()), expected);
    assert_eq!(
        (
            lease_binding.role_ref.kind.as_str(),
            lease_binding.role_ref.name.as_str()
        ),
        ("Role", lease_role.metadata.name.as_deref().unwrap())
    );
    let subject = &lease_binding.subjects.unwrap()[0];
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

    // The DaemonSet: the host's PIDs, not its network, found by the plugin.
    let spec = daemonset.spec.unwrap();
    let pod_labels = spec.template.metadata.unwrap().labels.unwrap();
    assert_eq!(pod_labels["app.kubernetes.io/name"], "nsdebug");
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.host_pid, Some(true));
    assert_ne!(pod.host_network, Some(true));
    assert_eq!(pod.service_account_name, account.metadata.name);
    let agent = &pod.containers[0];
    let resources = agent.resources.as_ref().unwrap();
    assert!(resources.requests.is_some() && resources.limits.is_some());

    // The agent knows its pod, so it publishes its certificate.
    let env = agent.env.clone().unwrap_or_default();
    for (name, field) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        let var = env.iter().find(|e| e.name == name).expect(name);
        let from = var.value_from.as_ref().and_then(|v| v.field_ref.as_ref());
        assert_eq!(from.map(|f| f.field_path.as_str()), Some(field), "{name}");
    }

    // Its arguments are ones the agent accepts, and they configure a
    // loopback API with TLS and a probe port.
    let args = agent.args.clone().unwrap();
    let config = render::serve_config(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    // The CRI socket is named, and its directory is mounted read-only from
    // the host, at the same path under /host (tests/integration/security/deployment.rs
    // checks that nothing more of the host is).
    let socket = config.cri_socket.as_ref().expect("--cri-socket");
    let (mount, volume) = render::volume_for(&pod, agent, socket);
    assert_eq!(mount.read_only, Some(true));
    let host = volume.host_path.as_ref().expect("a hostPath volume");
    assert_eq!(
        Path::new("/host").join(host.path.trim_start_matches('/')),
        socket.parent().unwrap()
    );
    // Toolbox mode runs the image's tool tree, not the agent's own root.
    assert_eq!(config.toolbox_root, Path::new("/toolbox"));
    assert!(config.listen.ip().is_loopback());
    assert!(config.tls.is_some());
    let health = config
        .health_listen
        .expect("a port for the kubelet's probes");
    for probe in [&agent.readiness_probe, &agent.liveness_probe] {
        let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
        let port = match &get.port {
            IntOrString::String(name) => {
                agent
                    .ports
                    .as_ref()
                    .unwrap()
                    .iter()
                    .find(|p| p.name.as_deref() == Some(name.as_str()))
                    .unwrap()
                    .container_port
            }
            IntOrString::Int(port) => *port,
        };
        assert_eq!(
            port,
            i32::from(health.port()),
            "probes go to --health-listen"
        );
    }
    // Only the health port admits traffic from other pods and nodes; the
    // API is reached through port-forward, which no NetworkPolicy sees.
    let policy: NetworkPolicy = strictly(only(objects, "NetworkPolicy"));
    assert_eq!(policy.metadata.namespace.as_deref(), Some(ns.as_str()));
    let policy = policy.spec.unwrap();
    let selected = policy.pod_selector.unwrap().match_labels.unwrap();
    assert!(
        selected.iter().all(|(k, v)| pod_labels.get(k) == Some(v)),
        "the policy selects the agent's pods: {selected:?}"
    );
    assert_eq!(policy.policy_types, Some(vec!["Ingress".to_string()]));
    let ingress = policy.ingress.unwrap();
    assert_eq!(ingress.len(), 1, "one rule: the health port");
    let ports = ingress[0].ports.clone().unwrap();
    assert_eq!(ports.len(), 1);
    let port = match ports[0].port.as_ref().unwrap() {
        IntOrString::String(name) => {
            agent
                .ports
                .as_ref()
                .unwrap()
                .iter()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .unwrap()
                .container_port
        }
        IntOrString::Int(port) => *port,
    };
    assert_eq!(
        port,
        i32::from(health.port()),
        "admits the health port only"
    );
    // The kubelet waits for the agent to end its sessions on SIGTERM.
    let grace = pod.termination_grace_period_seconds.unwrap();
    assert!(
        Duration::from_secs(grace.try_into().unwrap()) > config.shutdown_grace,
        "terminationGracePeriodSeconds {grace} <= --shutdown-grace {:?}",
        config.shutdown_grace
    );
    (pod, config)
}

#[test]
fn manifests_are_valid_and_least_privilege() {
    let objects = render::kustomize();
    assert_eq!(objects[0]["kind"], "Namespace");
    let (_, config) = check_install(&objects);
    assert_eq!(config.auth, AuthMode::Kube);
}

#[test]
fn chart_passes_helm_lint_strict() {
    // With its defaults and with every value set.
    let values = render::values_file(&every_value_set());
    for flags in [&[][..], &["--values", values.path().to_str().unwrap()]] {
        let output = helm()
            .args(["lint", "--strict", "--namespace", RELEASE])
            .arg(render::chart())
            .args(flags)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("1 chart(s) linted, 0 chart(s) failed"),
            "helm lint --strict {flags:?}:\n{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn chart_defaults_are_a_valid_install() {
    let objects = helm_template(&[]).unwrap();
    // helm install --create-namespace makes the namespace.
    assert!(objects.iter().all(|o| o["kind"] != "Namespace"));
    let (_, config) = check_install(&objects);
    assert_eq!(config.auth, AuthMode::Kube);
    assert!(matches!(config.tls, Some(CertSource::Generated { .. })));
    assert!(config.recording.is_none());

    // Asked to, the chart makes it, labelled to admit the agent.
    let objects = helm_template(&["--set", "namespace.create=true"]).unwrap();
    check_install(&objects);
}

#[test]
fn chart_defaults_install_what_the_manifests_do() {
    let manifests = render::substance(&render::kustomize());
    let mut chart = helm_template(&[]).unwrap();
    // The manifests own their namespace; the chart does when asked.
    let with_namespace = helm_template(&["--set", "namespace.create=true"]).unwrap();
    chart.insert(0, only(&with_namespace, "Namespace").clone());
    let chart = render::substance(&chart);

    assert_eq!(
        chart.keys().collect::<Vec<_>>(),
        manifests.keys().collect::<Vec<_>>(),
        "the same objects"
    );
    let mut differences = Vec::new();
    for (name, object) in &chart {
        render::differences(
            ("chart", "manifests"),
            name,
            Some(object),
            manifests.get(name),
            &mut differences,
        );
    }
    assert!(
        differences.is_empty(),
        "charts/nsdebug (default values) and manifests/ differ:\n  {}",
        differences.join("\n  ")
    );
}

/// RBAC rules as (API group, resource, verb) triples.
fn flat_rules(rules: Vec<PolicyRule>) -> BTreeSet<(String, String, String)> {
    rules
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
        .collect()
}

/// Values that differ from every default, each one the agent can check.
fn every_value_set() -> Value {
    json!({
        "image": {
            "repository": "registry.example/nsdebug",
            "tag": "0.2.0",
            "pullPolicy": "Always",
            "pullSecrets": ["registry-login"],
        },
        "criSocket": "/run/k3s/containerd/containerd.sock",
        "auth": "none",
        "tokenAudiences": ["nsdebug", "https://kubernetes.default.svc.cluster.local"],
        "tls": { "existingSecret": "nsdebug-tls" },
        "recording": {
            "enabled": true,
            "hostPath": "/srv/nsdebug/recordings",
            "maxBytes": "16MiB",
            "retention": "3days",
        },
        "limits": {
            "maxSessions": 32,
            "maxSessionsPerUser": 2,
            "maxSessionDuration": "2h",
            "sessionIdleTimeout": "10m",
            "maxRequestBytes": "2MiB",
            "maxFileBytes": 104857600,
            "maxConnections": 512,
            "requestHeaderTimeout": "5s",
            "clientTimeout": "10m",
        },
        "podEvents": false,
        "logFormat": "json",
        "shutdownGraceSeconds": 20,
        "terminationGracePeriodSeconds": 45,
        "extraArgs": ["--cri-timeout=2s"],
        "resources": { "requests": { "cpu": "50m", "memory": "64Mi" }, "limits": { "memory": "1Gi" } },
        "tolerations": [
            { "key": "dedicated", "operator": "Equal", "value": "debug", "effect": "NoSchedule" }
        ],
        "nodeSelector": { "kubernetes.io/os": "linux" },
        "priorityClassName": "system-node-critical",
    })
}

#[test]
fn chart_values_become_the_agents_settings() {
    let values = every_value_set();
    let file = render::values_file(&values);
    let objects = helm_template(&["--values", file.path().to_str().unwrap()]).unwrap();
    let (pod, config) = check_install(&objects);
    let agent = &pod.containers[0];

    assert_eq!(config.auth, AuthMode::None);
    assert_eq!(
        config.token_audiences,
        ["nsdebug", "https://kubernetes.default.svc.cluster.local"]
    );
    assert_eq!(config.log_format, LogFormat::Json);
    assert!(!config.pod_events);
    let limits = config.limits;
    assert_eq!(
        (
            limits.max_sessions,
            limits.max_sessions_per_user,
            limits.max_session_duration,
            limits.session_idle_timeout,
            limits.max_request_bytes,
            limits.max_file_bytes,
        ),
        (
            32,
            2,
            Duration::from_secs(2 * 3600),
            Duration::from_secs(600),
            2 << 20,
            100 << 20,
        )
    );
    assert_eq!(
        (
            limits.max_connections,
            limits.request_header_timeout,
            limits.client_timeout,
        ),
        (512, Duration::from_secs(5), Duration::from_secs(600))
    );
    assert_eq!(config.shutdown_grace, Duration::from_secs(20));
    assert_eq!(pod.termination_grace_period_seconds, Some(45));
    assert_eq!(config.cri_timeout, Duration::from_secs(2), "extraArgs");

    // The runtime's socket, its directory mounted from the host.
    let socket = config.cri_socket.as_ref().unwrap();
    assert_eq!(
        socket,
        Path::new("/host/run/k3s/containerd/containerd.sock")
    );
    let (_, volume) = render::volume_for(&pod, agent, socket);
    assert_eq!(
        volume.host_path.as_ref().unwrap().path,
        "/run/k3s/containerd"
    );

    // The certificate is the Secret's, where the arguments point.
    let Some(CertSource::Files { cert, key }) = &config.tls else {
        panic!("{:?}: not the mounted certificate", config.tls);
    };
    for (path, file) in [(cert, "tls.crt"), (key, "tls.key")] {
        let (mount, volume) = render::volume_for(&pod, agent, path);
        let secret = volume.secret.as_ref().expect("a Secret volume");
        assert_eq!(secret.secret_name.as_deref(), Some("nsdebug-tls"));
        // A kubernetes.io/tls Secret's keys are the files' names.
        assert_eq!(
            path.strip_prefix(&mount.mount_path).unwrap(),
            Path::new(file)
        );
        assert_eq!(mount.read_only, Some(true));
        assert_eq!(secret.default_mode, Some(0o400), "readable by root only");
    }

    // Recordings go to the node's directory.
    let recording = config.recording.as_ref().expect("recording on");
    assert_eq!(
        (recording.max_bytes, recording.retention),
        (16 << 20, Duration::from_secs(3 * 86400))
    );
    let (mount, volume) = render::volume_for(&pod, agent, &recording.dir);
    assert_eq!(mount.mount_path, recording.dir.to_str().unwrap());
    assert_ne!(mount.read_only, Some(true));
    let host = volume.host_path.as_ref().expect("a hostPath volume");
    assert_eq!(
        (host.path.as_str(), host.type_.as_deref()),
        ("/srv/nsdebug/recordings", Some("DirectoryOrCreate"))
    );

    // Where and how the pods run.
    assert_eq!(
        agent.image.as_deref(),
        Some("registry.example/nsdebug:0.2.0")
    );
    assert_eq!(agent.image_pull_policy.as_deref(), Some("Always"));
    let pull: Vec<&str> = pod
        .image_pull_secrets
        .iter()
        .flatten()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(pull, ["registry-login"]);
    let tolerations: Vec<Toleration> =
        serde_json::from_value(values["tolerations"].clone()).unwrap();
    assert_eq!(pod.tolerations, Some(tolerations));
    assert_eq!(
        serde_json::to_value(&pod.node_selector).unwrap(),
        values["nodeSelector"]
    );
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    assert_eq!(
        serde_json::to_value(&agent.resources).unwrap(),
        values["resources"]
    );
}

#[test]
fn chart_refuses_bad_values() {
    let cases = [
        (
            "limits.maxSessionsPerUser=-1",
            "at '/limits/maxSessionsPerUser': minimum: got -1, want 1",
        ),
        (
            "auth=anonymous",
            "at '/auth': value must be one of <nil>, 'kube', 'none'",
        ),
        (
            "logFormat=yaml",
            "at '/logFormat': value must be one of <nil>, 'text', 'json'",
        ),
        (
            "limits.maxSesions=4",
            "at '/limits': additional properties 'maxSesions' not allowed",
        ),
        (
            "recording.hostPath=recordings",
            "at '/recording/hostPath': 'recordings' does not match pattern",
        ),
        (
            "criSocket=run/containerd/containerd.sock",
            "at '/criSocket': 'run/containerd/containerd.sock' does not match pattern",
        ),
        (
            "criSocket=/run/cri-dockerd.sock",
            "criSocket /run/cri-dockerd.sock is directly in /run",
        ),
        (
            "criSocket=/run/containerd/../containerd.sock",
            "is not a clean path",
        ),
        (
            "shutdownGraceSeconds=30",
            "terminationGracePeriodSeconds (30) must be larger than shutdownGraceSeconds (30)",
        ),
    ];
    for (value, message) in cases {
        let Err(refusal) = helm_template(&["--set", value]) else {
            panic!("helm accepted --set {value}");
        };
        assert!(
            refusal.contains(message),
            "--set {value}: expected {message:?} in:\n{refusal}"
        );
    }
}

/// The agent's configuration from a chart rendered with `set value` (e.g.
/// `--set-string limits.maxRequestBytes=2MiB`), or helm's refusal.
fn rendered_setting(set: &str, value: &str) -> Result<Config, String> {
    let objects = helm_template(&[set, value])?;
    let daemonset: DaemonSet = strictly(only(&objects, "DaemonSet"));
    let args = daemonset.spec.unwrap().template.spec.unwrap().containers[0]
        .args
        .clone()
        .unwrap();
    Ok(render::serve_config(&args).unwrap_or_else(|e| panic!("{value}: {args:?}: {e}")))
}

#[test]
fn schema_and_agent_agree_on_durations_and_sizes() {
    // What the schema lets through, the agent reads as meant.
    let durations = [
        ("90s", 90),
        ("30m", 30 * 60),
        ("8h", 8 * 3600),
        ("7days", 7 * 86400),
        ("2d", 2 * 86400),
        ("1w", 7 * 86400),
        ("1h30m", 5400),
        ("1h 30m", 5400),
    ];
    for (text, seconds) in durations {
        let value = format!("limits.maxSessionDuration={text}");
        let config = rendered_setting("--set-string", &value).unwrap();
        assert_eq!(
            config.limits.max_session_duration,
            Duration::from_secs(seconds),
            "{text}"
        );
    }
    let sizes = [
        ("--set-string", "1048576", 1 << 20),
        ("--set", "4096", 4096),
        ("--set-string", "512KiB", 512 << 10),
        ("--set-string", "2 MiB", 2 << 20),
        ("--set-string", "64mib", 64 << 20),
        ("--set-string", "1GB", 1_000_000_000),
        ("--set-string", "3k", 3000),
    ];
    for (set, text, bytes) in sizes {
        let value = format!("limits.maxRequestBytes={text}");
        let config = rendered_setting(set, &value).unwrap();
        assert_eq!(config.limits.max_request_bytes, bytes, "{text}");
    }

    // What the agent would refuse at start, the schema refuses at install.
    let refused = [
        ("--set-string", "limits.maxSessionDuration", "soon"),
        ("--set-string", "limits.maxSessionDuration", "0s"),
        ("--set-string", "limits.maxSessionDuration", "90"),
        ("--set-string", "limits.maxSessionDuration", ""),
        ("--set-string", "limits.maxRequestBytes", "0"),
        ("--set", "limits.maxRequestBytes", "0"),
        ("--set-string", "limits.maxRequestBytes", "0KiB"),
        ("--set-string", "limits.maxRequestBytes", "lots"),
        ("--set-string", "limits.maxRequestBytes", "-1"),
        ("--set-string", "limits.maxRequestBytes", "1XB"),
    ];
    for (set, key, text) in refused {
        let flag = match key {
            "limits.maxSessionDuration" => "--max-session-duration",
            _ => "--max-request-bytes",
        };
        let agent = render::serve_config(&["serve".into(), format!("{flag}={text}")]);
        assert!(agent.is_err(), "the agent accepts {flag}={text}");
        let Err(refusal) = rendered_setting(set, &format!("{key}={text}")) else {
            panic!("helm accepts {set} {key}={text}, which the agent refuses");
        };
        let at = format!("at '/{}'", key.replace('.', "/"));
        assert!(refusal.contains(&at), "{set} {key}={text}:\n{refusal}");
    }
}

#[test]
fn chart_notes_say_how_to_reach_the_agent() {
    let output = helm()
        .args(["install", "--dry-run=client", RELEASE])
        .arg(render::chart())
        .args(["--namespace", RELEASE])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let notes = &stdout[stdout.find("NOTES:").expect("NOTES")..];
    // The selector it tells finds the agent's pods.
    let objects = helm_template(&[]).unwrap();
    let daemonset: DaemonSet = strictly(only(&objects, "DaemonSet"));
    let labels = daemonset
        .spec
        .unwrap()
        .template
        .metadata
        .unwrap()
        .labels
        .unwrap();
    let selector = labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>();
    let told = notes
        .split_whitespace()
        .skip_while(|word| *word != "-l")
        .nth(1)
        .expect("a label selector");
    let mut told: Vec<String> = told.split(',').map(String::from).collect();
    told.sort();
    assert_eq!(told, selector);
    for line in [
        "kubectl -n nsdebug port-forward \"$AGENT\" 7443",
        "kubectl nsdebug ui -n NS POD",
    ] {
        assert!(notes.contains(line), "{line:?} not in:\n{notes}");
    }
}
