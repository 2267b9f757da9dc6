//! `exec -i`/`-t` and `shell`: the agent's Kubernetes remote-command
//! endpoint (what `kubectl exec` uses), through kube's own client for it,
//! with this terminal in raw mode and its size following the window.

use std::process::ExitCode;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::{Api, AttachParams, TerminalSize};
use kube::config::KubeConfigOptions;
use tokio::io::AsyncWriteExt as _;

use super::{PluginError, Reached, RunMode, Target};

/// The shell `shell` starts: bash when the container has it.
const SHELL: &[&str] = &[
    "sh",
    "-c",
    "if command -v bash >/dev/null 2>&1; then exec bash; else exec sh; fi",
];

/// A kube client aimed at the agent; `mode` rides along as the agent's own
/// query parameters on exec requests.
pub(crate) async fn agent_client(
    agent: &Reached,
    mode: RunMode,
) -> Result<kube::Client, PluginError> {
    let user = super::kubeconfig::token_user(agent.token.clone().unwrap_or_default());
    let kubeconfig = super::kubeconfig::for_agent(
        &agent.args,
        agent.certificate.as_ref(),
        user,
        "nsdebug",
        "default",
    );
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|err| PluginError::Cluster(format!("a client for the agent: {err}")))?;
    config.read_timeout = None;
    config.write_timeout = None;
    let mut extra = form_urlencoded::Serializer::new(String::new());
    if mode.toolbox {
        extra.append_pair("toolbox", "true");
    }
    if mode.privileged {
        extra.append_pair("profile", "privileged");
    }
    let extra = extra.finish();
    let add_mode =
        tower::util::MapRequestLayer::new(move |mut request: http::Request<kube::client::Body>| {
            if !extra.is_empty() {
                let uri = format!("{}&{extra}", request.uri());
                if let Ok(uri) = uri.parse() {
                    *request.uri_mut() = uri;
                }
            }
            request
        });
    let builder = kube::client::ClientBuilder::try_from(config)
        .map_err(|err| PluginError::Cluster(format!("a client for the agent: {err}")))?;
    Ok(builder.with_layer(&add_mode).build())
}

/// This terminal in raw mode until dropped (crossterm: termios on Unix,
/// the console mode on Windows).
struct RawMode(bool);

impl RawMode {
    fn enter() -> Self {
        use std::io::IsTerminal as _;
        Self(std::io::stdin().is_terminal() && crossterm::terminal::enable_raw_mode().is_ok())
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if self.0 {
            let _ = crossterm::terminal::disable_raw_mode();
        }
    }
}

fn window_size() -> Option<TerminalSize> {
    let (width, height) = crossterm::terminal::size().ok()?;
    (width > 0 && height > 0).then_some(TerminalSize { width, height })
}

/// When the terminal may have changed size: `SIGWINCH` on Unix; Windows
/// has no such signal, so there a short poll (only changes are sent).
struct SizeChanges {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
    #[cfg(not(unix))]
    poll: tokio::time::Interval,
}

impl SizeChanges {
    fn new() -> Option<Self> {
        #[cfg(unix)]
        {
            let kind = tokio::signal::unix::SignalKind::window_change();
            tokio::signal::unix::signal(kind)
                .ok()
                .map(|signal| Self { signal })
        }
        #[cfg(not(unix))]
        {
            Some(Self {
                poll: tokio::time::interval(std::time::Duration::from_millis(250)),
            })
        }
    }

    /// Waits for the next possible change; `false` when there will be none.
    async fn next(&mut self) -> bool {
        #[cfg(unix)]
        {
            self.signal.recv().await.is_some()
        }
        #[cfg(not(unix))]
        {
            self.poll.tick().await;
            true
        }
    }
}

/// How a remote command ended: its exit code and the agent's message.
struct Ended {
    code: i64,
    message: Option<String>,
}

fn ended(status: Option<Status>) -> Ended {
    // kube hands the status frame over as k8s-openapi's Status; it is read
    // as the wire contract's, which knows where the exit code is.
    let status = status
        .and_then(|status| serde_json::to_value(status).ok())
        .and_then(|value| serde_json::from_value::<nsdebug_wire::Status>(value).ok());
    let Some(status) = status else {
        return Ended {
            code: 1,
            message: Some("the agent ended the session without the command's status".into()),
        };
    };
    if status.is_success() {
        return Ended {
            code: 0,
            message: None,
        };
    }
    Ended {
        code: status.exit_code().map_or(1, i64::from),
        message: (!status.message.is_empty()).then_some(status.message),
    }
}

/// Runs `command` with this terminal's stdin (and a terminal when `tty`).
async fn attach(
    agent: &Reached,
    target: &Target<'_>,
    command: &[String],
    mode: RunMode,
    stdin: bool,
    tty: bool,
) -> Result<Ended, PluginError> {
    let client = agent_client(agent, mode).await?;
    let pods: Api<Pod> = Api::namespaced(client, target.namespace);
    let params = AttachParams {
        container: target.container.map(str::to_string),
        stdin,
        stdout: true,
        stderr: !tty,
        tty,
        ..AttachParams::default()
    };
    let mut process = pods
        .exec(target.pod, command.to_vec(), &params)
        .await
        .map_err(|err| match err {
            kube::Error::Api(status) => PluginError::Refused(format!(
                "the agent answered {}: {}",
                status.code, status.message
            )),
            other => PluginError::Forwarded {
                via: agent.args.url().to_string(),
                why: nsdebug_client::error_chain(&other),
            },
        })?;
    let raw = (tty && stdin).then(RawMode::enter);
    let status = process.take_status();
    if let Some(mut input) = process.stdin() {
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut tokio::io::stdin(), &mut input).await;
            let _ = input.shutdown().await;
        });
    }
    if let Some(mut sizes) = process.terminal_size() {
        tokio::spawn(async move {
            use futures::SinkExt as _;
            let Some(mut changes) = SizeChanges::new() else {
                return;
            };
            let mut sent = None;
            loop {
                if let Some(size) = window_size()
                    && sent != Some((size.width, size.height))
                {
                    sent = Some((size.width, size.height));
                    if sizes.send(size).await.is_err() {
                        return;
                    }
                }
                if !changes.next().await {
                    return;
                }
            }
        });
    }
    let stdout = process.stdout().map(|mut out| {
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut out, &mut tokio::io::stdout()).await;
        })
    });
    let stderr = process.stderr().map(|mut err| {
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut err, &mut tokio::io::stderr()).await;
        })
    });
    let status = match status {
        Some(status) => status.await,
        None => None,
    };
    for pump in [stdout, stderr].into_iter().flatten() {
        let _ = pump.await;
    }
    drop(raw);
    Ok(ended(status))
}

/// `exec -i`/`-t`: the exit code is the command's.
pub async fn exec(
    agent: &Reached,
    target: &Target<'_>,
    command: &[String],
    mode: RunMode,
    stdin: bool,
    tty: bool,
) -> Result<ExitCode, PluginError> {
    let end = attach(agent, target, command, mode, stdin, tty).await?;
    Ok(report(end))
}

fn report(end: Ended) -> ExitCode {
    if end.code != 0
        && let Some(message) = end.message
    {
        eprintln!("kubectl-nsdebug: {message}");
    }
    ExitCode::from(u8::try_from(end.code).unwrap_or(1))
}

/// `shell`: an interactive shell in the container, or the toolbox's when
/// the container has none. Whether it has one is asked first with a one-shot
/// `sh -c 'exit 0'` (which stdin is not given to).
pub async fn shell(
    agent: &Reached,
    target: &Target<'_>,
    mode: RunMode,
) -> Result<ExitCode, PluginError> {
    let mut mode = mode;
    if !mode.toolbox {
        let probe: Vec<String> = ["sh", "-c", "exit 0"].map(String::from).to_vec();
        let timeout = std::time::Duration::from_secs(30);
        let code = super::run::exec_code(agent, target, &probe, mode, timeout, &mut Quiet).await?;
        if code == 127 {
            eprintln!(
                "kubectl-nsdebug: the container has no shell; opening the agent's toolbox in its namespaces (the container's files are at /target)"
            );
            mode.toolbox = true;
        }
    }
    let shell: Vec<String> = SHELL.iter().map(|s| s.to_string()).collect();
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdin());
    let end = attach(agent, target, &shell, mode, true, tty).await?;
    Ok(report(end))
}

/// Output nobody sees.
struct Quiet;

impl super::run::Output for Quiet {
    fn stdout(&mut self, _: &[u8]) {}
    fn stderr(&mut self, _: &[u8]) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_frame_ends_with_its_exit_code_and_message() {
        let frame = |status: nsdebug_wire::Status| {
            serde_json::from_str::<Status>(&status.in_stream().to_json()).ok()
        };
        let success = ended(frame(nsdebug_wire::Status::success()));
        assert_eq!((success.code, success.message), (0, None));
        let exit = ended(frame(nsdebug_wire::Status::non_zero_exit(3, "exit code 3")));
        assert_eq!(
            (exit.code, exit.message.as_deref()),
            (3, Some("exit code 3"))
        );
        let refused = ended(frame(nsdebug_wire::Status::for_code(409, "not running")));
        assert_eq!(
            (refused.code, refused.message.as_deref()),
            (1, Some("not running"))
        );
        assert_eq!(ended(None).code, 1);
    }
}
