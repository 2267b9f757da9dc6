//! Renders the install offline and reads it back: `kubectl kustomize
//! manifests`, `helm template charts/nsdebug`, their YAML as JSON, each
//! object strictly typed, the agent's arguments through the agent's own
//! parser, and the differences between two renders as readable lines.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use k8s_openapi::api::core::v1::{Container, PodSpec, Volume, VolumeMount};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::support;

/// The release name and namespace every chart render uses, those of the
/// plain manifests (and what `kubectl nsdebug` looks for).
pub const RELEASE: &str = "nsdebug";

/// YAML documents as JSON values, empty documents left out (through the
/// YAML parser of the Python venv the tests already use).
pub fn yaml_documents(yaml: &[u8]) -> Vec<Value> {
    let python = support::repo().join("target/pyclient/bin/python");
    assert!(
        python.exists(),
        "run hack/test.sh: it makes the venv (PyYAML comes with kubernetes)"
    );
    let mut child = Command::new(python)
        .args([
            "-c",
            "import json, sys, yaml\n\
             print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d is not None]))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(yaml).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The objects `kubectl kustomize manifests` renders.
pub fn kustomize() -> Vec<Value> {
    let yaml = Command::new("kubectl")
        .args(["kustomize"])
        .arg(support::repo().join("manifests"))
        .output()
        .expect("kubectl is installed");
    assert!(yaml.status.success(), "{yaml:?}");
    yaml_documents(&yaml.stdout)
}

/// The chart's directory.
pub fn chart() -> PathBuf {
    support::repo().join("charts/nsdebug")
}

/// A helm command: `$NSDEBUG_HELM`, or the binary hack/helm.sh installs.
/// Helm's own configuration and cache stay under target/.
pub fn helm() -> Command {
    let path = std::env::var_os("NSDEBUG_HELM")
        .map(PathBuf::from)
        .unwrap_or_else(|| support::repo().join("target/tools/helm"));
    assert!(
        path.exists(),
        "{} is missing: run hack/helm.sh (hack/test.sh does)",
        path.display()
    );
    let home = support::repo().join("target/tools/helm-home");
    let mut command = Command::new(path);
    command
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"));
    command
}

/// `helm template` of the chart as release [`RELEASE`] with these extra
/// flags: the objects, or what helm said when it refused.
pub fn helm_template(flags: &[&str]) -> Result<Vec<Value>, String> {
    let output = helm()
        .args(["template", RELEASE])
        .arg(chart())
        .args(["--namespace", RELEASE])
        .args(flags)
        .output()
        .expect("run helm");
    if output.status.success() {
        Ok(yaml_documents(&output.stdout))
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// A values file holding `values` (JSON is YAML too).
pub fn values_file(values: &Value) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    serde_json::to_writer_pretty(&mut file, values).unwrap();
    file
}

/// `value` as a `T`, refusing any field `T` does not have: the typed object
/// serialized back must be the same JSON.
pub fn strictly<T: DeserializeOwned + Serialize>(value: &Value) -> T {
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

/// The one object of this kind.
pub fn only<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let mut found = objects.iter().filter(|o| o["kind"] == kind);
    let one = found.next().unwrap_or_else(|| panic!("no {kind}"));
    assert!(found.next().is_none(), "more than one {kind}");
    one
}

/// The agent's configuration from a container's arguments, through the
/// agent's own parser and checks (but for the CRI socket's existence), or
/// the agent's complaint.
pub fn serve_config(args: &[String]) -> Result<nsdebug::config::Config, String> {
    let cli = <nsdebug::config::Cli as clap::Parser>::try_parse_from(
        std::iter::once("nsdebug".to_string()).chain(args.iter().cloned()),
    )
    .map_err(|e| e.to_string())?;
    let nsdebug::config::Command::Serve(mut serve) = cli.command else {
        return Err(format!("{args:?} does not run `serve`"));
    };
    // The CRI socket is the node's, not this machine's: the agent checks
    // that it exists when it starts there.
    let socket = serve.cri_socket.take();
    let mut config = nsdebug::config::Config::from_args(*serve).map_err(|e| e.to_string())?;
    config.cri_socket = socket;
    Ok(config)
}

/// The mount of `container` that holds `path`, and its volume.
pub fn volume_for<'a>(
    pod: &'a PodSpec,
    container: &'a Container,
    path: &Path,
) -> (&'a VolumeMount, &'a Volume) {
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .filter(|m| path.starts_with(&m.mount_path))
        .max_by_key(|m| m.mount_path.len())
        .unwrap_or_else(|| panic!("{} is on no mounted volume", path.display()));
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .unwrap_or_else(|| panic!("mount {} has no volume", mount.name));
    (mount, volume)
}

/// Labels helm adds for its own bookkeeping (and the selector's instance),
/// which the plain manifests do not carry.
const HELM_LABELS: [&str; 4] = [
    "helm.sh/chart",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
];

/// The objects by `Kind/name`, without helm's bookkeeping labels: what two
/// installs must agree on.
pub fn substance(objects: &[Value]) -> BTreeMap<String, Value> {
    objects
        .iter()
        .map(|object| {
            let mut object = object.clone();
            for labels in [
                "/metadata/labels",
                "/spec/selector/matchLabels",
                "/spec/podSelector/matchLabels",
                "/spec/template/metadata/labels",
            ] {
                if let Some(Value::Object(labels)) = object.pointer_mut(labels) {
                    labels.retain(|key, _| !HELM_LABELS.contains(&key.as_str()));
                }
            }
            let key = format!(
                "{}/{}",
                object["kind"].as_str().unwrap(),
                object["metadata"]["name"].as_str().unwrap()
            );
            (key, object)
        })
        .collect()
}

/// Every place where `left` and `right` differ, one line each, such as
/// `DaemonSet/nsdebug.spec.template.spec.containers[0].args[2]: chart
/// "--host-root=/" != manifests "--host-root=/host"`.
pub fn differences(
    names: (&str, &str),
    path: &str,
    left: Option<&Value>,
    right: Option<&Value>,
    out: &mut Vec<String>,
) {
    let (left_name, right_name) = names;
    match (left, right) {
        (Some(Value::Object(l)), Some(Value::Object(r))) => {
            let keys: std::collections::BTreeSet<&String> = l.keys().chain(r.keys()).collect();
            for key in keys {
                let path = format!("{path}.{key}");
                differences(names, &path, l.get(key), r.get(key), out);
            }
        }
        (Some(Value::Array(l)), Some(Value::Array(r))) => {
            for i in 0..l.len().max(r.len()) {
                let path = format!("{path}[{i}]");
                differences(names, &path, l.get(i), r.get(i), out);
            }
        }
        (l, r) if l == r => {}
        (Some(l), None) => out.push(format!("{path}: only in {left_name}: {l}")),
        (None, Some(r)) => out.push(format!("{path}: only in {right_name}: {r}")),
        (Some(l), Some(r)) => {
            out.push(format!("{path}: {left_name} {l} != {right_name} {r}"));
        }
        (None, None) => {}
    }
}
