//! `kubectl nsdebug`: the agent from the command line, as a kubectl plugin
//! (the `kubectl-nsdebug` binary of this crate).
//!
//! Two ways to reach an agent:
//! - **through the cluster** (the default): the user's kubeconfig and
//!   credentials (`kube`), the target pod's node, the agent pod on that node,
//!   and a port-forward to it through the API server, in-process
//!   ([`cluster`]);
//! - **directly** with `--agent-url`, e.g. after `kubectl port-forward`, which
//!   is also how the agent protocol is tested against a real agent here.
//!
//! Exit codes: the command's own for `exec` (124 on the agent's timeout,
//! 127/126 when it could not start), 1 for a refusal or an error, 2 for
//! usage errors.

mod cluster;
mod cp;
mod diag;
mod interactive;
mod kubeconfig;
mod login_page;
mod portforward;
mod run;
mod trust;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde_json::Value;

pub use cluster::AgentLookup;
use cluster::{Cluster, Forward};

use nsdebug_client::AgentArgs;
use nsdebug_client::{ClientError, http_client};

/// The plugin's command line.
#[derive(Debug, Parser)]
#[command(
    name = "kubectl-nsdebug",
    version,
    about = "Debug pods through the nsdebug agent on their node: run commands (even in distroless \
             containers, with the agent's toolbox), open a shell or the web terminal, read \
             diagnostics, capture packets, copy files.",
    long_about = None,
    after_help = "The agent is found through your kubeconfig: the pod's node, the nsdebug pod on \
        that node, and a port-forward to it through the API server (you need `get pods` on the \
        target, `list pods` and `create pods/portforward` in the agent's namespace, and the \
        agent checks `create pods/exec` on the target), and `get leases` in the agent's namespace: \
        each agent publishes its certificate's SHA-256 in its node's Lease, and the plugin sends \
        your token only to the agent whose certificate matches. --agent-url talks to one agent \
        directly.\n\n\
        Examples:\n  \
        kubectl nsdebug exec -n shop web -- ps\n  \
        kubectl nsdebug exec -it -n shop web -- sh\n  \
        kubectl nsdebug shell -n shop hello          # distroless: opens the agent's toolbox\n  \
        kubectl nsdebug exec -l app=web -A -- cat /etc/resolv.conf   # every matching pod\n  \
        kubectl nsdebug diag -n shop web sockets\n  \
        kubectl nsdebug diag -n shop web dns name=kubernetes.default\n  \
        kubectl nsdebug capture -n shop web -w trace.pcap --filter 'tcp port 80' --duration 10s\n  \
        kubectl nsdebug cp shop/web:/etc/nginx ./nginx-conf\n  \
        kubectl nsdebug ui -n shop web                # web terminal in your browser\n  \
        kubectl nsdebug kubeconfig --node worker-1 -o agent.kubeconfig"
)]
pub struct PluginCli {
    #[command(flatten)]
    pub agent: AgentArgs,
    #[command(flatten)]
    pub lookup: AgentLookup,
    #[command(subcommand)]
    pub command: PluginCommand,
}

/// A pod, as kubectl names one.
#[derive(Debug, Args)]
pub struct PodArgs {
    /// The pod.
    pub pod: String,
    /// Its namespace (default: the kubeconfig context's).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// The container (needed when the pod has several and no default).
    #[arg(short, long)]
    pub container: Option<String>,
}

/// How a command runs in the container.
#[derive(Debug, Clone, Copy, Args)]
pub struct RunMode {
    /// The agent's tools in the pod's network, processes and IPC, its files
    /// at /target (`--net-only` says the same: a network view always comes
    /// with the pod's processes, never with the host's).
    #[arg(long, alias = "net-only")]
    pub toolbox: bool,
    /// Root with every capability, in the agent's tool tree (needs the node
    /// right); the container's own programs never run as node root.
    #[arg(long)]
    pub privileged: bool,
}

/// Where `ui` and `kubeconfig` forward: a pod's node, or a node.
#[derive(Debug, Args)]
pub struct NodeTarget {
    /// A pod whose node's agent to use.
    #[arg(required_unless_present = "node", conflicts_with = "node")]
    pub pod: Option<String>,
    /// The pod's namespace (default: the kubeconfig context's).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// A node whose agent to use.
    #[arg(long)]
    pub node: Option<String>,
    /// The local port to forward from (default: any free one).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Run a command in a pod's container (or, with -l, in every matching
    /// pod at once). Its output streams and its exit code is this command's.
    #[command(after_help = "Examples:\n  \
        kubectl nsdebug exec -n shop web -- ss -tlnp\n  \
        kubectl nsdebug exec -it -n shop web -c app -- sh\n  \
        kubectl nsdebug exec -n shop hello --toolbox -- ip addr      # distroless\n  \
        kubectl nsdebug exec -l app=web --all-namespaces -- wget -qO- localhost:8080/healthz\n\n\
        With -l, each line is prefixed with [namespace/pod]; the exit code is 0 if every pod's \
        command exited 0, else the highest exit code.")]
    Exec {
        /// The pod (or -l for every pod a selector matches).
        #[arg(required_unless_present = "selector", conflicts_with = "selector")]
        pod: Option<String>,
        /// Its namespace (default: the kubeconfig context's).
        #[arg(short, long, conflicts_with = "all_namespaces")]
        namespace: Option<String>,
        /// The container (needed when the pod has several and no default).
        #[arg(short, long)]
        container: Option<String>,
        /// Run in every pod this label selector matches, in parallel.
        #[arg(short = 'l', long)]
        selector: Option<String>,
        /// With -l: pods of every namespace.
        #[arg(short = 'A', long, requires = "selector")]
        all_namespaces: bool,
        /// With -l: how many pods at once.
        #[arg(long, default_value_t = 16, requires = "selector", value_parser = clap::value_parser!(u16).range(1..=256))]
        max_parallel: u16,
        /// Pass stdin to the command.
        #[arg(short = 'i', long, conflicts_with = "selector")]
        stdin: bool,
        /// Allocate a terminal (with -i: an interactive session).
        #[arg(short = 't', long, conflicts_with = "selector")]
        tty: bool,
        #[command(flatten)]
        mode: RunMode,
        /// Killed after this long (the agent allows up to 1h); not for -i/-t.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// An interactive shell in a pod's container; in one without a shell
    /// (distroless), the agent's toolbox with the container's files at
    /// /target.
    Shell {
        #[command(flatten)]
        pod: PodArgs,
        #[command(flatten)]
        mode: RunMode,
    },
    /// A built-in diagnostic: processes, sockets, interfaces, routes,
    /// cgroup, open-files, env, mounts; probes dns, tcp, http take
    /// KEY=VALUE parameters. Tables and lines for a person; `-o json` for
    /// the agent's JSON.
    #[command(after_help = "Examples:\n  \
        kubectl nsdebug diag -n shop web processes\n  \
        kubectl nsdebug diag -n shop web sockets -o json\n  \
        kubectl nsdebug diag -n shop web env reveal=true\n  \
        kubectl nsdebug diag -n shop web dns name=kubernetes.default.svc.cluster.local\n  \
        kubectl nsdebug diag -n shop web tcp host=db port=5432\n  \
        kubectl nsdebug diag -n shop web http url=http://localhost:8080/healthz")]
    Diag {
        #[command(flatten)]
        pod: PodArgs,
        /// The view.
        view: String,
        /// The view's parameters.
        #[arg(value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// `json` prints the agent's answer as it is.
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: diag::Output,
    },
    /// Forward local ports to a pod's ports through the node's agent, as
    /// kubectl port-forward does through the API server; runs until Ctrl-C.
    #[command(after_help = "Examples:\n  \
        kubectl nsdebug port-forward -n shop web 8080          # 127.0.0.1:8080 -> 8080\n  \
        kubectl nsdebug port-forward -n shop web 9000:80 :443  # :443 picks a free local port")]
    PortForward {
        /// The pod.
        pod: String,
        /// Its namespace (default: the kubeconfig context's).
        #[arg(short, long)]
        namespace: Option<String>,
        /// `[LOCAL:]REMOTE` port pairs.
        #[arg(required = true, value_name = "[LOCAL:]REMOTE")]
        ports: Vec<String>,
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
        /// How long to capture.
        #[arg(long, default_value = "30s")]
        duration: String,
    },
    /// Copy a file or directory out of a container, or a file into one.
    #[command(
        after_help = "A remote path is [NAMESPACE/]POD:PATH, as for kubectl cp.\n\n\
        Examples:\n  \
        kubectl nsdebug cp shop/web:/etc/nginx/nginx.conf ./nginx.conf\n  \
        kubectl nsdebug cp shop/web:/var/log/app ./app-logs      # a directory\n  \
        kubectl nsdebug cp ./fix.conf shop/web:/tmp/fix.conf\n\n\
        Files are read and written as the container's user. A download lands in a temporary \
        name first and is renamed when complete."
    )]
    Cp {
        /// `[NAMESPACE/]POD:PATH` or a local path.
        source: String,
        /// `[NAMESPACE/]POD:PATH` or a local path.
        destination: String,
        /// The container.
        #[arg(short, long)]
        container: Option<String>,
    },
    /// Forward to the agent and open the web terminal in your browser with a
    /// one-time login link; runs until Ctrl-C.
    Ui {
        #[command(flatten)]
        target: NodeTarget,
        /// Print the link only; do not start a browser.
        #[arg(long)]
        no_browser: bool,
    },
    /// Write a kubeconfig whose context points plain kubectl at the agent
    /// (`kubectl get pods`, `exec`, `cp` against the node's agent), and
    /// forward to it until Ctrl-C.
    #[command(after_help = "Examples:\n  \
        kubectl nsdebug kubeconfig --node worker-1 -o /tmp/agent.kubeconfig &\n  \
        KUBECONFIG=/tmp/agent.kubeconfig kubectl get pods -A\n\n\
        The context uses your own kubeconfig user (token, tokenFile or exec plugin), which the \
        agent reviews with the API server; no secret is written. The cluster entry trusts the \
        agent's own certificate (certificate-authority-data), the one the agent published in its \
        node's Lease and the plugin verified, or the --certificate-authority given.")]
    Kubeconfig {
        #[command(flatten)]
        target: NodeTarget,
        /// Where to write it.
        #[arg(short = 'o', long, default_value = "nsdebug.kubeconfig")]
        output: PathBuf,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("cannot reach the agent at {url}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("cannot reach the agent through {via}: {why}")]
    Forwarded { via: String, why: String },
    #[error(
        "refusing the agent {namespace}/{pod} on node {node}: it presented a certificate with SHA-256 {presented}, but published {published} (Lease {namespace}/{node}); no token was sent. Something other than the agent answers on its port, or the agent restarted since: if so, try again"
    )]
    Untrusted {
        namespace: String,
        pod: String,
        node: String,
        presented: String,
        published: String,
    },
    #[error(
        "refusing the agent {namespace}/{pod} on node {node}: {why}; no token was sent (with agents serving a certificate of your own CA, pass --certificate-authority)"
    )]
    Unpublished {
        namespace: String,
        pod: String,
        node: String,
        why: String,
    },
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Cluster(String),
    #[error("{0}")]
    Usage(String),
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// An agent, reached: its URL, a client for it, the caller's token, the
/// forward that carries it (when through the cluster), and the certificate
/// it was verified to serve (when pinned through the cluster).
pub struct Reached {
    pub args: AgentArgs,
    pub http: reqwest::Client,
    pub token: Option<String>,
    pub certificate: Option<rustls::pki_types::CertificateDer<'static>>,
    forward: Option<Forward>,
}

impl Reached {
    pub fn base(&self) -> &str {
        self.args.url().trim_end_matches('/')
    }

    /// A request with the caller's token.
    pub fn request(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
    ) -> reqwest::RequestBuilder {
        let request = self
            .http
            .request(method, format!("{}{path_and_query}", self.base()));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// A transport error, explained by the forward's own when there is one.
    pub fn request_error(&self, source: reqwest::Error) -> PluginError {
        match &self.forward {
            Some(forward) => PluginError::Forwarded {
                via: forward.description().to_string(),
                why: forward
                    .last_error()
                    .unwrap_or_else(|| nsdebug_client::error_chain(&source)),
            },
            None => PluginError::Request {
                url: self.args.url().to_string(),
                source,
            },
        }
    }

    /// Sends a request; a transport error is explained.
    pub async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, PluginError> {
        request.send().await.map_err(|err| self.request_error(err))
    }

    /// Sends a request that must succeed; the agent's message otherwise.
    pub async fn send_ok(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, PluginError> {
        let response = self.send(request).await?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(refused(response).await)
        }
    }
}

/// How the plugin reaches agents: one given URL, or through the cluster.
pub enum Route {
    Direct(AgentArgs),
    Cluster(Box<Cluster>, AgentArgs),
}

impl Route {
    pub async fn new(cli: &PluginCli) -> Result<Self, PluginError> {
        if cli.agent.url.is_some() {
            return Ok(Route::Direct(cli.agent.clone()));
        }
        let cluster = Cluster::connect(&cli.agent, &cli.lookup).await?;
        Ok(Route::Cluster(Box::new(cluster), cli.agent.clone()))
    }

    /// The namespace when none is given: the kubeconfig context's.
    pub fn namespace(&self, given: Option<&str>) -> String {
        match (given, self) {
            (Some(ns), _) => ns.to_string(),
            (None, Route::Cluster(cluster, _)) => cluster.namespace.clone(),
            (None, Route::Direct(_)) => "default".to_string(),
        }
    }

    /// The agent that serves `namespace/pod`.
    pub async fn for_pod(&self, namespace: &str, pod: &str) -> Result<Reached, PluginError> {
        match self {
            Route::Direct(args) => direct(args),
            Route::Cluster(cluster, args) => {
                let pod = cluster.pod(namespace, pod).await?;
                let agent = cluster.agent_for(&pod).await?;
                forwarded(cluster, args, &agent, 0).await
            }
        }
    }

    /// The agent on `node`.
    pub async fn for_node(&self, node: &str, port: u16) -> Result<Reached, PluginError> {
        match self {
            Route::Direct(args) => direct(args),
            Route::Cluster(cluster, args) => {
                let agent = cluster.agent_on(node).await?;
                forwarded(cluster, args, &agent, port).await
            }
        }
    }
}

fn direct(args: &AgentArgs) -> Result<Reached, PluginError> {
    // An agent with `--auth none` takes no token; send one when there is.
    let token = nsdebug_client::token(args).ok();
    Ok(Reached {
        http: http_client(args, None)?,
        args: args.clone(),
        token,
        certificate: None,
        forward: None,
    })
}

async fn forwarded(
    cluster: &Cluster,
    args: &AgentArgs,
    agent: &cluster::AgentPod,
    port: u16,
) -> Result<Reached, PluginError> {
    // The agent reviews the caller's own bearer token: it goes only to the
    // agent the cluster vouches for.
    let token = nsdebug_client::token(args)?;
    let forward = cluster.forward(agent, port).await?;
    let mut args = args.clone();
    args.url = Some(forward.url());
    if args.insecure_skip_tls_verify || args.certificate_authority.is_some() {
        if args.insecure_skip_tls_verify {
            eprintln!(
                "kubectl-nsdebug: WARNING: --insecure-skip-tls-verify: your token goes to whatever answers on the agent's port, unverified"
            );
        }
        return Ok(Reached {
            http: http_client(&args, None)?,
            args,
            token: Some(token),
            certificate: None,
            forward: Some(forward),
        });
    }
    let published = trust::published(cluster, agent).await?;
    let pin = nsdebug_client::pin::PinnedCertificate::new(&published);
    let certificate = trust::handshake(cluster, agent, &forward, &pin).await?;
    Ok(Reached {
        http: nsdebug_client::pinned_client(&pin, None)?,
        args,
        token: Some(token),
        certificate: Some(certificate),
        forward: Some(forward),
    })
}

/// The agent's path of a pod's resource, with the container when given.
pub fn pod_path(namespace: &str, pod: &str, container: Option<&str>, tail: &str) -> String {
    let mut path = format!("/v1/targets/{namespace}/{pod}/{tail}");
    if let Some(container) = container {
        path.push(if path.contains('?') { '&' } else { '?' });
        path.push_str(
            &form_urlencoded::Serializer::new(String::new())
                .append_pair("container", container)
                .finish(),
        );
    }
    path
}

/// The agent's error message for a non-2xx answer.
pub async fn refused(response: reqwest::Response) -> PluginError {
    let code = response.status().as_u16();
    let status: nsdebug_wire::Status = response.json().await.unwrap_or_default();
    let message = if status.message.is_empty() {
        "no message"
    } else {
        &status.message
    };
    PluginError::Refused(format!("the agent answered {code}: {message}"))
}

/// Runs the plugin; the exit code is the command's.
pub async fn run(cli: PluginCli) -> ExitCode {
    match dispatch(cli).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("kubectl-nsdebug: {}", nsdebug_client::error_chain(&err));
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: PluginCli) -> Result<ExitCode, PluginError> {
    let route = Route::new(&cli).await?;
    match cli.command {
        PluginCommand::Exec {
            pod,
            namespace,
            container,
            selector,
            all_namespaces,
            max_parallel,
            stdin,
            tty,
            mode,
            timeout,
            command,
        } => {
            if let Some(selector) = selector {
                let namespace = (!all_namespaces).then(|| route.namespace(namespace.as_deref()));
                let fan = run::FanOut {
                    selector: &selector,
                    namespace: namespace.as_deref(),
                    container: container.as_deref(),
                    mode,
                    timeout,
                    command: &command,
                    max_parallel: usize::from(max_parallel),
                };
                return run::fan_out(&route, fan).await;
            }
            let pod = pod.unwrap_or_default();
            let namespace = route.namespace(namespace.as_deref());
            let agent = route.for_pod(&namespace, &pod).await?;
            let target = Target {
                namespace: &namespace,
                pod: &pod,
                container: container.as_deref(),
            };
            if stdin || tty {
                interactive::exec(&agent, &target, &command, mode, stdin, tty).await
            } else {
                let mut out = run::Plain;
                run::exec(&agent, &target, &command, mode, timeout, &mut out).await
            }
        }
        PluginCommand::Shell { pod, mode } => {
            let namespace = route.namespace(pod.namespace.as_deref());
            let agent = route.for_pod(&namespace, &pod.pod).await?;
            let target = Target {
                namespace: &namespace,
                pod: &pod.pod,
                container: pod.container.as_deref(),
            };
            interactive::shell(&agent, &target, mode).await
        }
        PluginCommand::Diag {
            pod,
            view,
            params,
            output,
        } => {
            let namespace = route.namespace(pod.namespace.as_deref());
            let agent = route.for_pod(&namespace, &pod.pod).await?;
            let mut query = Vec::new();
            for param in &params {
                let (key, value) = param
                    .split_once('=')
                    .ok_or_else(|| PluginError::Usage(format!("{param:?} is not KEY=VALUE")))?;
                query.push((key.to_string(), value.to_string()));
            }
            let path = pod_path(
                &namespace,
                &pod.pod,
                pod.container.as_deref(),
                &format!("diag/{view}"),
            );
            let response = agent
                .send_ok(agent.request(reqwest::Method::GET, &path).query(&query))
                .await?;
            let body: Value = response.json().await.map_err(|e| agent.request_error(e))?;
            print!("{}", diag::render(&view, &body, output));
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::PortForward {
            pod,
            namespace,
            ports,
        } => {
            let namespace = route.namespace(namespace.as_deref());
            let agent = route.for_pod(&namespace, &pod).await?;
            portforward::forward(&agent, &namespace, &pod, &ports).await
        }
        PluginCommand::Capture {
            pod,
            write,
            filter,
            duration,
        } => {
            let namespace = route.namespace(pod.namespace.as_deref());
            let agent = route.for_pod(&namespace, &pod.pod).await?;
            let mut query: Vec<(&str, String)> = vec![("duration", duration)];
            if let Some(filter) = filter {
                query.push(("filter", filter));
            }
            let path = pod_path(&namespace, &pod.pod, pod.container.as_deref(), "capture");
            let mut response = agent
                .send_ok(agent.request(reqwest::Method::GET, &path).query(&query))
                .await?;
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
            while let Some(chunk) = response.chunk().await.map_err(|e| agent.request_error(e))? {
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
        PluginCommand::Cp {
            source,
            destination,
            container,
        } => cp::copy(&route, &source, &destination, container.as_deref()).await,
        PluginCommand::Ui { target, no_browser } => {
            let stop = Stop::listen()?;
            let agent = node_target(&route, &target).await?;
            let token = agent.token.clone().unwrap_or_default();
            let link =
                nsdebug_client::request_login_link(&agent.http, agent.base(), &token).await?;
            announce(&agent);
            if no_browser {
                println!("{}", link.url);
                eprintln!(
                    "kubectl-nsdebug: a one-time login link for {} (valid {}s)",
                    link.user, link.expires_in_seconds
                );
                return hold(agent, stop).await;
            }
            // Never the link itself on the browser's command line (other
            // users read it in /proc): a private page that leads to it.
            let page = login_page::LoginPage::write(&link.url)?;
            println!("{}", page.path().display());
            eprintln!(
                "kubectl-nsdebug: a one-time login link for {} (valid {}s) is in {}, readable by you alone and removed when the link expires",
                link.user,
                link.expires_in_seconds,
                page.path().display()
            );
            if let Err(err) = open::that_detached(page.path()) {
                eprintln!(
                    "kubectl-nsdebug: could not start a browser ({err}); open {} yourself",
                    page.path().display()
                );
            }
            let expired =
                tokio::time::sleep(std::time::Duration::from_secs(link.expires_in_seconds));
            if agent.forward.is_none() {
                // Nothing to hold: wait for the browser to have read the page.
                let mut stop = stop;
                tokio::select! {
                    _ = expired => {}
                    _ = stop.wait() => {}
                }
                drop(page);
                return Ok(ExitCode::SUCCESS);
            }
            tokio::spawn(async move {
                expired.await;
                drop(page);
            });
            hold(agent, stop).await
        }
        PluginCommand::Kubeconfig { target, output } => {
            let stop = Stop::listen()?;
            let agent = node_target(&route, &target).await?;
            let context = match (&route, &target.node, &target.pod) {
                (_, Some(node), _) => format!("nsdebug-{node}"),
                (_, None, Some(pod)) => format!("nsdebug-{pod}"),
                _ => "nsdebug".to_string(),
            };
            let namespace = route.namespace(target.namespace.as_deref());
            let user = kubeconfig::user(&cli.agent)?;
            let config = kubeconfig::for_agent(
                &agent.args,
                agent.certificate.as_ref(),
                user,
                &context,
                &namespace,
            );
            let text = serde_json::to_string_pretty(&config).unwrap_or_default();
            kubeconfig::write_private(&output, text.as_bytes())?;
            eprintln!(
                "kubectl-nsdebug: wrote {} (context {context}); in another terminal:\n  KUBECONFIG={} kubectl get pods -A",
                output.display(),
                output.display()
            );
            announce(&agent);
            hold(agent, stop).await
        }
    }
}

/// The agent `ui` and `kubeconfig` forward to.
async fn node_target(route: &Route, target: &NodeTarget) -> Result<Reached, PluginError> {
    match (&target.node, &target.pod) {
        (Some(node), _) => route.for_node(node, target.port).await,
        (None, Some(pod)) => {
            let namespace = route.namespace(target.namespace.as_deref());
            match route {
                Route::Direct(args) => direct(args),
                Route::Cluster(cluster, args) => {
                    let pod = cluster.pod(&namespace, pod).await?;
                    let agent = cluster.agent_for(&pod).await?;
                    forwarded(cluster, args, &agent, target.port).await
                }
            }
        }
        (None, None) => Err(PluginError::Usage("name a pod or --node".into())),
    }
}

/// A container, as the user named it.
pub struct Target<'a> {
    pub namespace: &'a str,
    pub pod: &'a str,
    pub container: Option<&'a str>,
}

/// Says where the forward listens.
fn announce(agent: &Reached) {
    if let Some(forward) = &agent.forward {
        eprintln!(
            "kubectl-nsdebug: forwarding {} to {}; Ctrl-C stops",
            forward.url(),
            forward.description()
        );
    }
}

/// Ctrl-C, and SIGTERM on Unix, listened for from before anything is
/// printed: a signal sent as soon as the link or the forward's address shows
/// ends the plugin cleanly (exit 0), not by the signal's default action.
struct Stop {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(windows)]
    ctrl_c: tokio::signal::windows::CtrlC,
}

impl Stop {
    fn listen() -> Result<Self, PluginError> {
        let failed = |err: std::io::Error| {
            PluginError::Cluster(format!("cannot listen for Ctrl-C or SIGTERM: {err}"))
        };
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt()).map_err(failed)?,
                terminate: signal(SignalKind::terminate()).map_err(failed)?,
            })
        }
        #[cfg(windows)]
        {
            Ok(Self {
                ctrl_c: tokio::signal::windows::ctrl_c().map_err(failed)?,
            })
        }
    }

    /// Until Ctrl-C (or SIGTERM).
    async fn wait(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        // Windows has no SIGTERM; closing the console is Ctrl-C's kin.
        #[cfg(windows)]
        let _ = self.ctrl_c.recv().await;
    }
}

/// Keeps a forward up until Ctrl-C or SIGTERM.
async fn hold(agent: Reached, mut stop: Stop) -> Result<ExitCode, PluginError> {
    if agent.forward.is_none() {
        return Ok(ExitCode::SUCCESS);
    }
    stop.wait().await;
    drop(agent);
    Ok(ExitCode::SUCCESS)
}
