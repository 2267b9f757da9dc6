//! `exec` without a terminal: the agent's streamed run API (stdout and
//! stderr apart, the exit code), in one pod or fanned out to every pod a
//! selector matches, each line prefixed with its pod.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use nsdebug_wire::{Profile, RunEvent, RunRequest};

use super::{PluginError, Reached, Route, RunMode, Target, pod_path};

/// Where a command's output goes.
pub trait Output {
    fn stdout(&mut self, data: &[u8]);
    fn stderr(&mut self, data: &[u8]);
    /// A message of the plugin's own about this command.
    fn note(&mut self, message: &str) {
        self.stderr(format!("kubectl-nsdebug: {message}\n").as_bytes());
    }
    fn finish(&mut self) {}
}

/// Straight to this process's stdout and stderr.
pub struct Plain;

impl Output for Plain {
    fn stdout(&mut self, data: &[u8]) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(data);
        let _ = out.flush();
    }
    fn stderr(&mut self, data: &[u8]) {
        let _ = std::io::stderr().lock().write_all(data);
    }
}

/// Whole lines, each prefixed (`[namespace/pod] `); a last line without a
/// newline is written when the command ends.
pub struct Prefixed {
    prefix: String,
    out: Vec<u8>,
    err: Vec<u8>,
}

impl Prefixed {
    pub fn new(prefix: String) -> Self {
        Self {
            prefix,
            out: Vec::new(),
            err: Vec::new(),
        }
    }

    fn flush_lines(prefix: &str, pending: &mut Vec<u8>, all: bool, to: &mut dyn Write) {
        let mut text = Vec::new();
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            text.extend_from_slice(prefix.as_bytes());
            text.extend(pending.drain(..=end));
        }
        if all && !pending.is_empty() {
            text.extend_from_slice(prefix.as_bytes());
            text.append(pending);
            text.push(b'\n');
        }
        if !text.is_empty() {
            let _ = to.write_all(&text);
            let _ = to.flush();
        }
    }
}

impl Output for Prefixed {
    fn stdout(&mut self, data: &[u8]) {
        self.out.extend_from_slice(data);
        Self::flush_lines(
            &self.prefix,
            &mut self.out,
            false,
            &mut std::io::stdout().lock(),
        );
    }
    fn stderr(&mut self, data: &[u8]) {
        self.err.extend_from_slice(data);
        Self::flush_lines(
            &self.prefix,
            &mut self.err,
            false,
            &mut std::io::stderr().lock(),
        );
    }
    fn finish(&mut self) {
        Self::flush_lines(
            &self.prefix,
            &mut self.out,
            true,
            &mut std::io::stdout().lock(),
        );
        Self::flush_lines(
            &self.prefix,
            &mut self.err,
            true,
            &mut std::io::stderr().lock(),
        );
    }
}

/// The body of a run request.
fn run_body(command: &[String], mode: RunMode, timeout: Duration) -> RunRequest {
    RunRequest {
        command: command.to_vec(),
        toolbox: mode.toolbox,
        profile: Some(if mode.privileged {
            Profile::Privileged
        } else {
            Profile::Container
        }),
        timeout_seconds: Some(timeout.as_secs_f64()),
        ..RunRequest::default()
    }
}

/// Runs `command` in the target through the streamed run API; the exit code
/// is the command's.
pub async fn exec(
    agent: &Reached,
    target: &Target<'_>,
    command: &[String],
    mode: RunMode,
    timeout: Duration,
    out: &mut dyn Output,
) -> Result<ExitCode, PluginError> {
    let code = exec_code(agent, target, command, mode, timeout, out).await?;
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

pub(super) async fn exec_code(
    agent: &Reached,
    target: &Target<'_>,
    command: &[String],
    mode: RunMode,
    timeout: Duration,
    out: &mut dyn Output,
) -> Result<i64, PluginError> {
    let path = pod_path(
        target.namespace,
        target.pod,
        target.container,
        "run?stream=true",
    );
    let request = agent
        .request(reqwest::Method::POST, &path)
        .json(&run_body(command, mode, timeout));
    let mut response = agent.send_ok(request).await?;
    let mut pending = Vec::new();
    let mut code = None;
    while let Some(chunk) = response.chunk().await.map_err(|e| agent.request_error(e))? {
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            // An event of a kind this plugin does not know is skipped.
            let Ok(event) = serde_json::from_slice::<RunEvent>(&line) else {
                continue;
            };
            match event {
                RunEvent::Stdout(chunk) => out.stdout(&chunk.bytes()),
                RunEvent::Stderr(chunk) => out.stderr(&chunk.bytes()),
                RunEvent::Exit {
                    timed_out: true, ..
                } => {
                    out.note("the command timed out and was killed");
                    code = Some(124);
                }
                RunEvent::Exit { exit_code, .. } => {
                    code = Some(exit_code.map_or(1, i64::from));
                }
                RunEvent::Error { exit_code, message } => {
                    out.note(&message);
                    code = Some(i64::from(exit_code));
                }
                RunEvent::Started { .. } => {}
            }
        }
    }
    out.finish();
    match code {
        Some(code) => Ok(code),
        None => {
            out.note("the agent ended the stream without the command's exit status");
            Ok(1)
        }
    }
}

/// What `exec -l` runs where.
pub struct FanOut<'a> {
    pub selector: &'a str,
    /// `None`: every namespace.
    pub namespace: Option<&'a str>,
    pub container: Option<&'a str>,
    pub mode: RunMode,
    pub timeout: Duration,
    pub command: &'a [String],
    pub max_parallel: usize,
}

/// One pod's result.
struct Outcome {
    name: String,
    /// The exit code, or why it did not run.
    result: Result<i64, String>,
}

/// Runs the command in every running pod the selector matches, in parallel,
/// with one agent (and forward) per node.
pub async fn fan_out(route: &Route, fan: FanOut<'_>) -> Result<ExitCode, PluginError> {
    let pods = match route {
        Route::Cluster(cluster, _) => cluster.pods(fan.namespace, fan.selector).await?,
        Route::Direct(_) => agent_pods(route, &fan).await?,
    };
    let mut running = Vec::new();
    for pod in pods {
        let name = pod_name(&pod);
        let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
        if phase.as_deref() == Some("Running") {
            running.push(pod);
        } else {
            eprintln!(
                "kubectl-nsdebug: skipping {name}: {}",
                phase.map_or("no phase".to_string(), |p| format!("phase {p}"))
            );
        }
    }
    if running.is_empty() {
        let where_ = fan
            .namespace
            .map_or("any namespace".to_string(), |ns| format!("namespace {ns}"));
        return Err(PluginError::Usage(format!(
            "no running pod matches {:?} in {where_}",
            fan.selector
        )));
    }
    let total = running.len();
    // One agent per node, reached once; pods of a node whose agent cannot
    // be reached fail with the reason.
    let nodes = super::cluster::by_node(running);
    let mut agents = Vec::new();
    for (node, pods) in nodes {
        let agent = route
            .for_node(&node, 0)
            .await
            .map_err(|e| nsdebug_client::error_chain(&e));
        agents.push((agent, pods));
    }
    let mut work = Vec::new();
    for (agent, pods) in &agents {
        for pod in pods {
            work.push((agent, pod));
        }
    }
    let outcomes: Vec<Outcome> = futures::stream::iter(work)
        .map(|(agent, pod)| async {
            let name = pod_name(pod);
            let mut out = Prefixed::new(format!("[{name}] "));
            let result = match agent {
                Err(why) => Err(why.clone()),
                Ok(agent) => {
                    let target = Target {
                        namespace: pod.metadata.namespace.as_deref().unwrap_or("default"),
                        pod: pod.metadata.name.as_deref().unwrap_or_default(),
                        container: fan.container,
                    };
                    exec_code(agent, &target, fan.command, fan.mode, fan.timeout, &mut out)
                        .await
                        .map_err(|e| nsdebug_client::error_chain(&e))
                }
            };
            if let Err(why) = &result {
                out.note(why);
            }
            Outcome { name, result }
        })
        .buffer_unordered(fan.max_parallel)
        .collect()
        .await;
    let failed: Vec<String> = outcomes
        .iter()
        .filter_map(|o| match &o.result {
            Ok(0) => None,
            Ok(code) => Some(format!("{} (exit {code})", o.name)),
            Err(_) => Some(format!("{} (did not run)", o.name)),
        })
        .collect();
    let code = outcomes
        .iter()
        .map(|o| o.result.as_ref().map_or(1, |c| *c))
        .max()
        .unwrap_or(0);
    if failed.is_empty() {
        eprintln!("kubectl-nsdebug: {total} pods, all exited 0");
    } else {
        let mut failed = failed;
        failed.sort();
        eprintln!(
            "kubectl-nsdebug: {total} pods, {} exited 0, {} did not: {}",
            total - failed.len(),
            failed.len(),
            failed.join(", ")
        );
    }
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

fn pod_name(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or("?")
    )
}

/// With `--agent-url`, the pods are that agent's: its Kubernetes-style pod
/// list takes the same label selector.
async fn agent_pods(route: &Route, fan: &FanOut<'_>) -> Result<Vec<Pod>, PluginError> {
    let agent = route.for_node("", 0).await?;
    let path = match fan.namespace {
        Some(ns) => format!("/api/v1/namespaces/{ns}/pods"),
        None => "/api/v1/pods".to_string(),
    };
    let response = agent
        .send_ok(
            agent
                .request(reqwest::Method::GET, &path)
                .query(&[("labelSelector", fan.selector)]),
        )
        .await?;
    let list: k8s_openapi::List<Pod> = response.json().await.map_err(|e| agent.request_error(e))?;
    // Every pod is on this agent's node, whatever it is called.
    Ok(list
        .items
        .into_iter()
        .map(|mut pod| {
            let spec = pod.spec.get_or_insert_with(Default::default);
            spec.node_name.get_or_insert_with(|| "agent".into());
            pod
        })
        .collect())
}
