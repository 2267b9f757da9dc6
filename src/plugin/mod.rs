//! `kubectl nsdebug`: the agent from the command line, as a kubectl plugin
//! (the `kubectl-nsdebug` binary of this crate).
//!
//! This first version talks to an agent the user reaches already
//! (`--agent-url`, e.g. after `kubectl -n nsdebug port-forward`); finding the
//! target pod's node and its agent, and port-forwarding through the API
//! server in-process, are still to come. Exit codes: the command's own for
//! `exec` (124 on the agent's timeout, 127/126 when it could not start), 1
//! for a refusal or an error of the agent, 2 for usage errors.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use base64::Engine as _;
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

use crate::client::{ClientError, http_client};
use crate::config::AgentArgs;

/// The plugin's command line.
#[derive(Debug, Parser)]
#[command(
    name = "kubectl-nsdebug",
    version,
    about = "Debug pods through the nsdebug agent on their node: run commands (even in distroless \
             containers, with the agent's toolbox), read diagnostics, capture packets.",
    after_help = "Examples:\n  \
        kubectl -n nsdebug port-forward pod/nsdebug-x7k2p 7443 &\n  \
        kubectl nsdebug --insecure-skip-tls-verify exec -n shop web -- ps\n  \
        kubectl nsdebug exec -n shop hello --toolbox -- ss -tlnp\n  \
        kubectl nsdebug diag -n shop web sockets\n  \
        kubectl nsdebug capture -n shop web -w trace.pcap --filter 'tcp port 80' --duration 10s\n  \
        kubectl nsdebug ui"
)]
pub struct PluginCli {
    #[command(flatten)]
    pub agent: AgentArgs,
    #[command(subcommand)]
    pub command: PluginCommand,
}

/// A pod, as kubectl names one.
#[derive(Debug, Args)]
pub struct PodArgs {
    /// The pod.
    pub pod: String,
    /// Its namespace.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// The container (needed when the pod has several and no default).
    #[arg(short, long)]
    pub container: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Run a command in a pod's container; its output streams, its exit code
    /// is this command's.
    Exec {
        #[command(flatten)]
        pod: PodArgs,
        /// The agent's tools in the pod's namespaces, its files at /target.
        #[arg(long, conflicts_with = "net_only")]
        toolbox: bool,
        /// Root with every capability (needs the node right).
        #[arg(long)]
        privileged: bool,
        /// Only the pod's network namespace, with the agent's files.
        #[arg(long)]
        net_only: bool,
        /// Killed after this long (the agent allows up to 1h).
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// A built-in diagnostic as JSON: processes, sockets, interfaces, routes,
    /// cgroup, open-files, env, mounts.
    Diag {
        #[command(flatten)]
        pod: PodArgs,
        view: String,
    },
    /// Capture the pod's packets into a pcap file Wireshark and tshark read.
    Capture {
        #[command(flatten)]
        pod: PodArgs,
        /// Where to write (`-` for stdout).
        #[arg(short = 'w', long)]
        write: PathBuf,
        /// A BPF filter, e.g. `tcp port 80`.
        #[arg(long)]
        filter: Option<String>,
        #[arg(long, default_value = "30s")]
        duration: String,
    },
    /// Print a one-time login link for the web UI.
    Ui,
}

#[derive(Debug, thiserror::Error)]
enum PluginError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("cannot reach the agent at {url}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{0}")]
    Refused(String),
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn pod_path(agent: &AgentArgs, pod: &PodArgs, tail: &str) -> String {
    let mut url = format!(
        "{}/v1/targets/{}/{}/{tail}",
        agent.url.trim_end_matches('/'),
        pod.namespace,
        pod.pod
    );
    if let Some(container) = &pod.container {
        url.push_str(if url.contains('?') { "&" } else { "?" });
        url.push_str(&format!("container={container}"));
    }
    url
}

/// The agent's error message for a non-2xx answer.
async fn refused(response: reqwest::Response) -> PluginError {
    let code = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or_default();
    PluginError::Refused(format!(
        "the agent answered {code}: {}",
        body["message"].as_str().unwrap_or("no message")
    ))
}

/// Runs the plugin; the exit code is the command's.
pub async fn run(cli: PluginCli) -> ExitCode {
    match dispatch(cli).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("kubectl-nsdebug: {}", crate::error_chain(&err));
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: PluginCli) -> Result<ExitCode, PluginError> {
    let agent = &cli.agent;
    // An agent with `--auth none` takes no token; send one when there is.
    let token = crate::client::token(agent).ok();
    let client = http_client(agent, None)?;
    let authorized = |request: reqwest::RequestBuilder| match &token {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    let request_error = |source| PluginError::Request {
        url: agent.url.clone(),
        source,
    };
    match cli.command {
        PluginCommand::Exec {
            pod,
            toolbox,
            privileged,
            net_only,
            timeout,
            command,
        } => {
            let mut body = json!({
                "command": command,
                "toolbox": toolbox,
                "profile": if privileged { "privileged" } else { "container" },
                "timeoutSeconds": timeout.as_secs_f64(),
            });
            if net_only {
                body["namespaces"] = json!(["net"]);
            }
            let url = pod_path(agent, &pod, "run");
            let url = format!(
                "{url}{}stream=true",
                if url.contains('?') { "&" } else { "?" }
            );
            let response = authorized(client.post(&url).json(&body))
                .send()
                .await
                .map_err(request_error)?;
            if !response.status().is_success() {
                return Err(refused(response).await);
            }
            stream_run(response).await
        }
        PluginCommand::Diag { pod, view } => {
            let response = authorized(client.get(pod_path(agent, &pod, &format!("diag/{view}"))))
                .send()
                .await
                .map_err(request_error)?;
            if !response.status().is_success() {
                return Err(refused(response).await);
            }
            let body: Value = response.json().await.map_err(request_error)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&body).unwrap_or_default()
            );
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Capture {
            pod,
            write,
            filter,
            duration,
        } => {
            let mut query: Vec<(&str, String)> = vec![("duration", duration)];
            if let Some(filter) = filter {
                query.push(("filter", filter));
            }
            let response = authorized(client.get(pod_path(agent, &pod, "capture")).query(&query))
                .send()
                .await
                .map_err(request_error)?;
            if !response.status().is_success() {
                return Err(refused(response).await);
            }
            let write_error = |source| PluginError::Write {
                path: write.clone(),
                source,
            };
            let mut out: Box<dyn Write> = if write.as_os_str() == "-" {
                Box::new(std::io::stdout())
            } else {
                Box::new(std::fs::File::create(&write).map_err(write_error)?)
            };
            let mut bytes = 0usize;
            let mut response = response;
            while let Some(chunk) = response.chunk().await.map_err(request_error)? {
                bytes += chunk.len();
                out.write_all(&chunk).map_err(write_error)?;
            }
            out.flush().map_err(write_error)?;
            eprintln!(
                "kubectl-nsdebug: {bytes} bytes written to {}",
                write.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Ui => {
            let link = crate::client::login_link(agent).await?;
            println!("{}", link.url);
            eprintln!(
                "kubectl-nsdebug: open this one-time link (for {}, valid {}s)",
                link.user, link.expires_in_seconds
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Prints a streamed run's output as it comes; its exit code is returned.
async fn stream_run(mut response: reqwest::Response) -> Result<ExitCode, PluginError> {
    let mut pending = Vec::new();
    let mut code = 1;
    let url = response.url().to_string();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|source| PluginError::Request {
            url: url.clone(),
            source,
        })?
    {
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let Ok(event) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            let data = || -> Vec<u8> {
                match (event["data"].as_str(), event["dataBase64"].as_str()) {
                    (Some(text), _) => text.as_bytes().to_vec(),
                    (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
                        .decode(encoded)
                        .unwrap_or_default(),
                    _ => Vec::new(),
                }
            };
            match event["type"].as_str() {
                Some("stdout") => {
                    let mut out = std::io::stdout();
                    let _ = out.write_all(&data());
                    let _ = out.flush();
                }
                Some("stderr") => {
                    let _ = std::io::stderr().write_all(&data());
                }
                Some("exit") => {
                    code = if event["timedOut"] == true {
                        eprintln!("kubectl-nsdebug: the command timed out and was killed");
                        124
                    } else {
                        event["exitCode"].as_i64().unwrap_or(1)
                    };
                }
                Some("error") => {
                    eprintln!(
                        "kubectl-nsdebug: {}",
                        event["message"]
                            .as_str()
                            .unwrap_or("the command could not start")
                    );
                    code = event["exitCode"].as_i64().unwrap_or(1);
                }
                _ => {}
            }
        }
    }
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}
