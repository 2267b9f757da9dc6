//! Command line and environment, parsed once into a typed [`Config`] before any
//! socket is touched. Every flag of `serve` has an environment fallback so a
//! DaemonSet can configure the agent without rewriting its command.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "nsdebug",
    version,
    about = "Kubernetes node debugging agent: finds every pod container on this node through \
             the CRI runtime and serves them over a Kubernetes-compatible HTTP API.",
    after_help = "Run `nsdebug serve --help` for the agent's flags."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: resolve pods through the CRI socket and serve the HTTP API.
    #[command(after_help = "Examples:\n  \
        nsdebug serve                                   # auto-discover the CRI socket, listen on 127.0.0.1:7443\n  \
        nsdebug serve --cri-socket /run/containerd/containerd.sock --listen 127.0.0.1:8080\n  \
        kubectl --server http://127.0.0.1:7443 get pods -A   # then use it like an API server")]
    Serve(Box<ServeArgs>),

    /// Print a one-time link that logs a browser into the agent's web UI as
    /// you (your Kubernetes token stays on the agent; the link works once and
    /// expires in a minute).
    #[command(after_help = "Examples:\n  \
        kubectl -n nsdebug port-forward pod/nsdebug-abcde 7443 &\n  \
        nsdebug login-link --certificate-authority agent.crt     # token from your kubeconfig\n  \
        nsdebug login-link --agent https://127.0.0.1:7443 --token \"$(kubectl create token my-sa)\"\n\n\
        The token comes from --token, --token-file, $NSDEBUG_TOKEN, or the current kubeconfig user's \
        token, tokenFile or exec credential plugin. agent.crt is the agent's certificate, which it \
        publishes in its node's Lease: kubectl -n nsdebug get lease NODE -o \
        jsonpath='{.metadata.annotations.nsdebug\\.io/serving-cert}'. `kubectl nsdebug ui` does all \
        of this itself.")]
    LoginLink(LoginLinkArgs),
}

/// Flags of `nsdebug login-link`.
#[derive(Debug, Args)]
pub struct LoginLinkArgs {
    #[command(flatten)]
    pub agent: AgentArgs,
}

/// How a client command reaches an agent and who it is there (shared with
/// the kubectl plugin).
pub use nsdebug_client::{AgentArgs, DEFAULT_AGENT_URL};

/// Flags of `nsdebug serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (HTTPS). Port 0 picks a free port. Reach a
    /// loopback address through `kubectl port-forward`; any other address
    /// needs TLS and Kubernetes authentication (the defaults).
    #[arg(long, env = "NSDEBUG_LISTEN", default_value = "127.0.0.1:7443")]
    pub listen: String,

    /// Also serve `/healthz`, `/livez` and `/readyz` (and nothing else) over
    /// plain HTTP here, for the kubelet's probes, which cannot reach a
    /// loopback `--listen` (e.g. 0.0.0.0:7444 in a DaemonSet).
    #[arg(long, env = "NSDEBUG_HEALTH_LISTEN", value_name = "ADDR")]
    pub health_listen: Option<String>,

    /// TLS certificate chain (PEM), e.g. from a mounted Secret; reloaded when
    /// it changes. Without it a self-signed certificate is generated at start.
    #[arg(
        long,
        env = "NSDEBUG_TLS_CERT",
        value_name = "PATH",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The certificate's private key (PEM).
    #[arg(
        long,
        env = "NSDEBUG_TLS_KEY",
        value_name = "PATH",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// Serve plain HTTP instead of TLS: loopback only, for demos and local
    /// debugging. kubectl sends no token over plain HTTP.
    #[arg(long, env = "NSDEBUG_INSECURE_HTTP")]
    pub insecure_http: bool,

    /// Who may do what: `kube` checks every request's bearer token with a
    /// TokenReview and its action with a SubjectAccessReview (the same RBAC
    /// as `kubectl exec`); `none` lets everyone do everything and is refused
    /// on anything but loopback.
    #[arg(long, env = "NSDEBUG_AUTH", value_enum, default_value_t = AuthMode::Kube)]
    pub auth: AuthMode,

    /// Kubeconfig for the TokenReview/SubjectAccessReview calls; without it
    /// the in-cluster service account is used (or $KUBECONFIG, ~/.kube/config).
    #[arg(long, env = "NSDEBUG_KUBECONFIG", value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// Audit events (audit.k8s.io/v1 JSON lines, one per decision and per
    /// session): `-` for stdout, a file path to append to, or empty for none.
    #[arg(
        long,
        env = "NSDEBUG_AUDIT_LOG",
        value_name = "PATH",
        default_value = "-"
    )]
    pub audit_log: String,

    /// Audiences a caller's token must be valid for, comma-separated (e.g.
    /// `nsdebug`): asked for in every TokenReview, and a review that answers
    /// none of them is refused. Default: the API server's own audiences, so
    /// every token kubectl would accept. Tokens bound to an audience of their
    /// own (`kubectl create token SA --audience nsdebug`, projected tokens)
    /// are useless to anyone who steals them from the agent; list the API
    /// server's audience too to keep accepting ordinary users' tokens.
    #[arg(
        long,
        env = "NSDEBUG_TOKEN_AUDIENCES",
        value_name = "AUDIENCES",
        value_delimiter = ',',
        value_parser = parse_audience
    )]
    pub token_audiences: Vec<String>,

    /// The agent's own pod (the DaemonSet sets it from the downward API):
    /// with --pod-namespace, the agent publishes its serving certificate's
    /// SHA-256 in the Lease named after its node in that namespace, which
    /// `kubectl nsdebug` pins before it sends a token.
    #[arg(
        long,
        env = "POD_NAME",
        value_name = "NAME",
        requires = "pod_namespace"
    )]
    pub pod_name: Option<String>,

    /// The agent's own namespace, where it publishes its certificate.
    #[arg(long, env = "POD_NAMESPACE", value_name = "NS", requires = "pod_name")]
    pub pod_namespace: Option<String>,

    /// How long a TokenReview or an allowed SubjectAccessReview is reused
    /// (refusals half as long), never past the token's own expiry.
    #[arg(long, env = "NSDEBUG_AUTH_CACHE_TTL", value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub auth_cache_ttl: Duration,

    /// What a user needs besides `create pods/exec` to use the privileged
    /// profile: VERB RESOURCE[/SUBRESOURCE] checked on this node's name.
    #[arg(
        long,
        env = "NSDEBUG_PRIVILEGED_PERMISSION",
        default_value = "create nodes/proxy"
    )]
    pub privileged_permission: String,

    /// CRI runtime socket. When absent, the well-known sockets of containerd,
    /// CRI-O, cri-dockerd, k3s/RKE2, MicroK8s and k0s are tried in turn under
    /// --host-root and the first that answers is used.
    #[arg(long, env = "NSDEBUG_CRI_SOCKET", value_name = "PATH")]
    pub cri_socket: Option<PathBuf>,

    /// Where the host's filesystem is visible, for socket discovery (e.g. /host
    /// when a DaemonSet mounts the host's / there).
    #[arg(
        long,
        env = "NSDEBUG_HOST_ROOT",
        value_name = "PATH",
        default_value = "/"
    )]
    pub host_root: PathBuf,

    /// Name of the Kubernetes node this agent serves; reported as the pods'
    /// spec.nodeName. Defaults to the host name.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,

    /// The host's /proc (with hostPID it is the agent's own /proc).
    #[arg(
        long,
        env = "NSDEBUG_PROC_ROOT",
        value_name = "PATH",
        default_value = "/proc"
    )]
    pub proc_root: PathBuf,

    /// Deadline of every call to the CRI runtime (e.g. 500ms, 5s).
    #[arg(long, env = "NSDEBUG_CRI_TIMEOUT", value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub cri_timeout: Duration,

    /// How often the in-memory inventory is refreshed from the runtime in the
    /// background. Lookups that miss ask the runtime at once either way.
    #[arg(long, env = "NSDEBUG_RESYNC_INTERVAL", value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub resync_interval: Duration,

    /// How often the CPU and memory of the node and its containers are
    /// sampled for the Metrics API (`kubectl top`): a CPU rate is the average
    /// over the last interval, stated as the answer's `window`.
    #[arg(long, env = "NSDEBUG_METRIC_RESOLUTION", value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub metric_resolution: Duration,

    /// Most commands running in containers at once; more get 429.
    #[arg(long, env = "NSDEBUG_MAX_SESSIONS", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_sessions: u16,

    /// Most sessions one user may have open at once; more get 429.
    #[arg(long, env = "NSDEBUG_MAX_SESSIONS_PER_USER", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_sessions_per_user: u16,

    /// An interactive session (exec, web terminal) is closed after this long
    /// in any case.
    #[arg(long, env = "NSDEBUG_MAX_SESSION_DURATION", value_name = "DURATION", default_value = "8h", value_parser = parse_duration)]
    pub max_session_duration: Duration,

    /// An interactive session with no input and no output for this long is
    /// closed.
    #[arg(long, env = "NSDEBUG_SESSION_IDLE_TIMEOUT", value_name = "DURATION", default_value = "30m", value_parser = parse_duration)]
    pub session_idle_timeout: Duration,

    /// Open client connections served at once; more wait in the kernel's
    /// accept queue until one closes (each interactive session is one).
    #[arg(long, env = "NSDEBUG_MAX_CONNECTIONS", value_name = "N", default_value_t = 2048, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// A client must send a request's line and headers within this long
    /// (TLS handshake included), or its connection is closed with 408;
    /// slow or stalled clients cannot hold connections open.
    #[arg(long, env = "NSDEBUG_REQUEST_HEADER_TIMEOUT", value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub request_header_timeout: Duration,

    /// A client that takes none of the data written to it for this long (its
    /// connection's writes stall), or a WebSocket client that answers no ping
    /// for this long, is dropped and its command killed.
    #[arg(long, env = "NSDEBUG_CLIENT_TIMEOUT", value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub client_timeout: Duration,

    /// Largest request body (run API) and WebSocket message accepted; larger
    /// ones get 413 or close the session.
    #[arg(long, env = "NSDEBUG_MAX_REQUEST_BYTES", value_name = "SIZE", default_value = "1MiB", value_parser = parse_size)]
    pub max_request_bytes: u64,

    /// Largest file transfer (files API): a file or tar archive downloaded
    /// from a container, or a file uploaded into one. Larger ones get 413; a
    /// tar archive that grows past it while streaming is cut off with an error.
    #[arg(long, env = "NSDEBUG_MAX_FILE_BYTES", value_name = "SIZE", default_value = "1GiB", value_parser = parse_size)]
    pub max_file_bytes: u64,

    /// Memory for the output of one-shot runs (the run API without
    /// ?stream=true buffers up to outputLimitBytes per stream): a run
    /// reserves three times its limit per stream (the output and its JSON
    /// rendering) before it starts; a run that does not fit gets 429.
    /// Keep it well inside the agent's memory limit.
    #[arg(long, env = "NSDEBUG_OUTPUT_BUDGET", value_name = "SIZE", default_value = "128MiB", value_parser = parse_size)]
    pub output_budget: u64,

    /// Write a Kubernetes Event on the target pod when a session starts
    /// (needs --auth kube, whose API server connection it uses, and RBAC
    /// `create events`).
    #[arg(long, env = "NSDEBUG_POD_EVENTS", value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub pod_events: bool,

    /// Record every interactive session (exec with or without a tty, web
    /// terminal) as an asciicast v2 file in this directory (`asciinema play
    /// FILE` replays it): a terminal's screen, or stdout and stderr. A
    /// session whose recording cannot be started is refused.
    #[arg(long, env = "NSDEBUG_RECORD_DIR", value_name = "PATH")]
    pub record_dir: Option<PathBuf>,

    /// Record what the user sends too (asciicast "i" events). Off by
    /// default: a password typed at a prompt that does not echo would be
    /// in the file.
    #[arg(long, env = "NSDEBUG_RECORD_INPUT", requires = "record_dir")]
    pub record_input: bool,

    /// A recording's largest size. A session that reaches it is ended (the
    /// user is told why, the audit event says "recording cap reached"):
    /// nothing goes on unrecorded.
    #[arg(long, env = "NSDEBUG_RECORD_MAX_BYTES", value_name = "SIZE", default_value = "64MiB", value_parser = parse_size)]
    pub record_max_bytes: u64,

    /// Recordings older than this are deleted (checked at start-up and hourly).
    #[arg(long, env = "NSDEBUG_RECORD_RETENTION", value_name = "DURATION", default_value = "7days", value_parser = parse_duration)]
    pub record_retention: Duration,

    /// How long a one-time web UI login link (POST /v1/login-links) stays
    /// valid.
    #[arg(long, env = "NSDEBUG_LOGIN_LINK_TTL", value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub login_link_ttl: Duration,

    /// A host name the agent answers to besides localhost, 127.0.0.1 and
    /// [::1] (any port), e.g. a name users reach it by through a proxy;
    /// repeat it or separate names with commas. Requests naming any other
    /// host are refused with 421, so a page whose name is rebound to the
    /// agent's address (DNS rebinding) gets nothing, even with --auth none.
    #[arg(
        long = "allowed-host",
        env = "NSDEBUG_ALLOWED_HOSTS",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub allowed_hosts: Vec<String>,

    /// How long a web UI login lasts at most (never past the user's token).
    #[arg(long, env = "NSDEBUG_UI_SESSION_TTL", value_name = "DURATION", default_value = "8h", value_parser = parse_duration)]
    pub ui_session_ttl: Duration,

    /// The tool tree whose programs toolbox mode and the privileged profile
    /// run inside a target (its bin, sbin, lib*, usr, etc and opt, shown
    /// read-only): a dedicated directory holding no secret of the agent,
    /// laid out by hack/image/toolbox.sh (the image ships it at /toolbox).
    /// The agent's own root is refused: it holds the agent's TLS key.
    #[arg(
        long,
        env = "NSDEBUG_TOOLBOX_ROOT",
        value_name = "PATH",
        default_value = "/toolbox"
    )]
    pub toolbox_root: PathBuf,

    /// On SIGTERM: how long live sessions (told so) may go on before they are
    /// ended. Keep it below the pod's terminationGracePeriodSeconds.
    #[arg(long, env = "NSDEBUG_SHUTDOWN_GRACE", value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// Log lines as text, or as one JSON object per line for log pipelines.
    #[arg(long, env = "NSDEBUG_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter (error, warn, info, debug, trace, or a tracing directive such as
    /// `nsdebug=debug`). Logs go to stderr.
    #[arg(long, env = "NSDEBUG_LOG", default_value = "info")]
    pub log: String,
}

fn parse_size(text: &str) -> Result<u64, String> {
    let size: bytesize::ByteSize = text
        .parse()
        .map_err(|err| format!("not a size such as 1MiB or 500KB: {err}"))?;
    if size.as_u64() == 0 {
        return Err("must be more than zero".into());
    }
    Ok(size.as_u64())
}

fn parse_audience(text: &str) -> Result<String, String> {
    let audience = text.trim();
    if audience.is_empty() {
        return Err("an audience cannot be empty".into());
    }
    Ok(audience.to_string())
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|err| err.to_string())?;
    if duration.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(duration)
}

/// How requests are authenticated and authorized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    Kube,
    None,
}

/// A flag combination that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "--allowed-host {value:?} is not a host name: give a bare name or address such as agent.example or [fd00::1], without scheme, port or wildcard"
    )]
    AllowedHost { value: String },
    #[error("--listen '{value}' is not an IP address and port (e.g. 127.0.0.1:7443 or [::1]:7443)")]
    ListenSyntax { value: String },
    #[error("--health-listen '{value}' is not an IP address and port (e.g. 0.0.0.0:7444)")]
    HealthListenSyntax { value: String },
    #[error(
        "--listen {addr} is not a loopback address, and {what} is only allowed on loopback (127.0.0.1 or ::1); use kubectl port-forward to reach it"
    )]
    ListenNotLoopback {
        addr: SocketAddr,
        what: &'static str,
    },
    #[error(
        "--privileged-permission '{value}' is not VERB RESOURCE[/SUBRESOURCE] (e.g. 'create nodes/proxy')"
    )]
    PrivilegedPermission { value: String },
    #[error("--proc-root '{path}' is not a procfs mount (it has no '1' directory)")]
    ProcRoot { path: PathBuf },
    #[error("--cri-socket '{path}' does not exist")]
    CriSocketMissing { path: PathBuf },
    #[error("--node-name is empty and the host name could not be read")]
    NodeName,
    #[error(
        "--toolbox-root '{}' is the agent's own root filesystem, whose /etc and volumes hold the agent's secrets; point it at a dedicated tool tree (hack/image/toolbox.sh lays one out; the image has it at /toolbox)", path.display()
    )]
    ToolboxRootIsAgentRoot { path: PathBuf },
}

/// The validated configuration of `nsdebug serve`.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub health_listen: Option<SocketAddr>,
    /// `None`: plain HTTP (`--insecure-http`).
    pub tls: Option<crate::tls::CertSource>,
    pub auth: AuthMode,
    pub kubeconfig: Option<PathBuf>,
    pub auth_cache_ttl: Duration,
    /// Audiences tokens must have (empty: the API server's).
    pub token_audiences: Vec<String>,
    /// Where this agent publishes its serving certificate, if it knows its pod.
    pub publication: Option<crate::anchor::Publication>,
    pub audit_log: String,
    pub privileged_permission: Permission,
    pub cri_socket: Option<PathBuf>,
    pub host_root: PathBuf,
    pub node_name: String,
    pub proc_root: PathBuf,
    pub cri_timeout: Duration,
    pub resync_interval: Duration,
    pub metric_resolution: Duration,
    pub limits: Limits,
    pub pod_events: bool,
    pub recording: Option<crate::recording::RecordingConfig>,
    pub login_link_ttl: Duration,
    pub ui_session_ttl: Duration,
    /// Host names answered besides loopback (`--allowed-host`).
    pub allowed_hosts: Vec<String>,
    pub toolbox_root: PathBuf,
    pub log: String,
    pub log_format: LogFormat,
    pub shutdown_grace: Duration,
}

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// What one client and one session may use.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_sessions: usize,
    pub max_sessions_per_user: usize,
    pub max_session_duration: Duration,
    pub session_idle_timeout: Duration,
    /// How long a client may take no data, or a WebSocket leave a ping unanswered.
    pub client_timeout: Duration,
    pub max_request_bytes: usize,
    /// Largest file downloaded (tar archives included) or uploaded.
    pub max_file_bytes: u64,
    /// Client connections served at once.
    pub max_connections: usize,
    /// Memory for buffered run output, agent-wide.
    pub output_budget: u64,
    /// Time a client has to send a request head.
    pub request_header_timeout: Duration,
}

impl Config {
    /// Checks everything that can be checked without the runtime.
    pub fn from_args(args: ServeArgs) -> Result<Self, ConfigError> {
        let listen: SocketAddr = args.listen.parse().map_err(|_| ConfigError::ListenSyntax {
            value: args.listen.clone(),
        })?;
        if !listen.ip().is_loopback() {
            if args.insecure_http {
                return Err(ConfigError::ListenNotLoopback {
                    addr: listen,
                    what: "--insecure-http",
                });
            }
            if args.auth == AuthMode::None {
                return Err(ConfigError::ListenNotLoopback {
                    addr: listen,
                    what: "--auth none",
                });
            }
        }
        let allowed_hosts: Vec<String> = args
            .allowed_hosts
            .iter()
            .map(|name| name.trim().to_string())
            .filter(|name| !name.is_empty())
            .collect();
        if let Some(bad) = allowed_hosts.iter().find(|name| {
            name.contains(['/', ':', '*', '@']) && !(name.starts_with('[') && name.ends_with(']'))
                || name.chars().any(char::is_whitespace)
        }) {
            return Err(ConfigError::AllowedHost { value: bad.clone() });
        }
        let privileged_permission = Permission::parse(&args.privileged_permission).ok_or(
            ConfigError::PrivilegedPermission {
                value: args.privileged_permission.clone(),
            },
        )?;
        if !args.proc_root.join("1").is_dir() {
            return Err(ConfigError::ProcRoot {
                path: args.proc_root,
            });
        }
        // `/`, however spelt (`/.`, `//`, a link to it).
        if args
            .toolbox_root
            .canonicalize()
            .unwrap_or(args.toolbox_root.clone())
            == Path::new("/")
        {
            return Err(ConfigError::ToolboxRootIsAgentRoot {
                path: args.toolbox_root,
            });
        }
        if let Some(path) = &args.cri_socket
            && !path.exists()
        {
            return Err(ConfigError::CriSocketMissing { path: path.clone() });
        }
        let node_name = match args.node_name.filter(|n| !n.trim().is_empty()) {
            Some(name) => name,
            None => nix::unistd::gethostname()
                .ok()
                .and_then(|name| name.into_string().ok())
                .filter(|name| !name.is_empty())
                .ok_or(ConfigError::NodeName)?,
        };
        let tls = (!args.insecure_http).then(|| match (args.tls_cert, args.tls_key) {
            (Some(cert), Some(key)) => crate::tls::CertSource::Files { cert, key },
            _ => crate::tls::CertSource::Generated {
                names: certificate_names(&listen),
            },
        });
        let health_listen = match &args.health_listen {
            Some(text) => Some(text.parse().map_err(|_| ConfigError::HealthListenSyntax {
                value: text.clone(),
            })?),
            None => None,
        };
        Ok(Self {
            listen,
            health_listen,
            tls,
            auth: args.auth,
            kubeconfig: args.kubeconfig,
            auth_cache_ttl: args.auth_cache_ttl,
            token_audiences: args.token_audiences,
            publication: match (args.pod_name, args.pod_namespace) {
                (Some(pod), Some(namespace)) if !pod.is_empty() && !namespace.is_empty() => {
                    Some(crate::anchor::Publication {
                        namespace,
                        pod,
                        node: node_name.clone(),
                    })
                }
                _ => None,
            },
            audit_log: args.audit_log,
            privileged_permission,
            cri_socket: args.cri_socket,
            host_root: args.host_root,
            node_name,
            proc_root: args.proc_root,
            cri_timeout: args.cri_timeout,
            resync_interval: args.resync_interval,
            metric_resolution: args.metric_resolution,
            limits: Limits {
                max_sessions: usize::from(args.max_sessions),
                max_sessions_per_user: usize::from(args.max_sessions_per_user),
                max_session_duration: args.max_session_duration,
                session_idle_timeout: args.session_idle_timeout,
                client_timeout: args.client_timeout,
                max_request_bytes: usize::try_from(args.max_request_bytes).unwrap_or(usize::MAX),
                max_file_bytes: args.max_file_bytes,
                max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
                output_budget: args.output_budget,
                request_header_timeout: args.request_header_timeout,
            },
            pod_events: args.pod_events,
            recording: args
                .record_dir
                .map(|dir| crate::recording::RecordingConfig {
                    dir,
                    max_bytes: args.record_max_bytes,
                    input: args.record_input,
                    retention: args.record_retention,
                }),
            login_link_ttl: args.login_link_ttl,
            ui_session_ttl: args.ui_session_ttl,
            allowed_hosts,
            toolbox_root: args.toolbox_root,
            log: args.log,
            log_format: args.log_format,
            shutdown_grace: args.shutdown_grace,
        })
    }
}

/// An RBAC permission: a verb on a resource, optionally a subresource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission {
    pub verb: String,
    pub resource: String,
    pub subresource: Option<String>,
}

impl Permission {
    /// `create nodes/proxy` -> verb `create`, resource `nodes`, subresource `proxy`.
    pub fn parse(text: &str) -> Option<Self> {
        let mut words = text.split_whitespace();
        let (verb, target, None) = (words.next()?, words.next()?, words.next()) else {
            return None;
        };
        let (resource, subresource) = match target.split_once('/') {
            Some((r, s)) if !r.is_empty() && !s.is_empty() => (r, Some(s.to_string())),
            Some(_) => return None,
            None => (target, None),
        };
        Some(Self {
            verb: verb.to_string(),
            resource: resource.to_string(),
            subresource,
        })
    }
}

/// Names a generated certificate covers: localhost, loopback, the listen
/// address and the pod's IP (`POD_IP`, set by the DaemonSet).
fn certificate_names(listen: &SocketAddr) -> Vec<String> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let extra = [Some(listen.ip().to_string()), std::env::var("POD_IP").ok()];
    for name in extra.into_iter().flatten() {
        if !name.is_empty()
            && !name.starts_with("0.0.0.0")
            && name != "::"
            && !names.contains(&name)
        {
            names.push(name);
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve_args(extra: &[&str]) -> Result<ServeArgs, clap::Error> {
        let argv = ["nsdebug", "serve"].iter().chain(extra);
        Cli::try_parse_from(argv).map(|cli| match cli.command {
            Command::Serve(args) => *args,
            Command::LoginLink(_) => unreachable!("parsed `serve`"),
        })
    }

    #[test]
    fn the_agents_root_is_no_tool_tree() {
        for root in ["/", "//", "/.", "/usr/.."] {
            let err = Config::from_args(
                serve_args(&["--node-name", "n1", "--toolbox-root", root]).unwrap(),
            )
            .unwrap_err();
            assert!(
                err.to_string()
                    .contains("is the agent's own root filesystem"),
                "{root}: {err}"
            );
        }
        let config = Config::from_args(serve_args(&["--node-name", "n1"]).unwrap()).unwrap();
        assert_eq!(config.toolbox_root, Path::new("/toolbox"));
    }

    #[test]
    fn defaults_are_loopback_and_proc() {
        let config = Config::from_args(serve_args(&["--node-name", "n1"]).unwrap()).unwrap();
        assert_eq!(config.listen, "127.0.0.1:7443".parse().unwrap());
        assert_eq!(config.proc_root, PathBuf::from("/proc"));
        assert_eq!(config.node_name, "n1");
        assert_eq!(config.cri_timeout, Duration::from_secs(5));
    }

    #[test]
    fn non_loopback_listen_needs_tls_and_auth() {
        // TLS and Kubernetes authentication (the defaults) may listen anywhere.
        let ok = Config::from_args(
            serve_args(&["--listen", "0.0.0.0:7443", "--node-name", "n"]).unwrap(),
        )
        .unwrap();
        assert!(ok.tls.is_some());
        for insecure in [&["--insecure-http"][..], &["--auth", "none"][..]] {
            let mut args = vec!["--listen", "0.0.0.0:7443"];
            args.extend_from_slice(insecure);
            let err = Config::from_args(serve_args(&args).unwrap()).unwrap_err();
            assert!(
                matches!(err, ConfigError::ListenNotLoopback { .. }),
                "{insecure:?}"
            );
        }
        let err = Config::from_args(serve_args(&["--listen", "localhost"]).unwrap()).unwrap_err();
        assert!(matches!(err, ConfigError::ListenSyntax { .. }));
    }

    #[test]
    fn token_audiences_are_a_comma_list() {
        let config = Config::from_args(serve_args(&["--node-name", "n"]).unwrap()).unwrap();
        assert!(config.token_audiences.is_empty());
        let args = serve_args(&[
            "--token-audiences",
            "nsdebug, https://kubernetes.default.svc",
        ]);
        assert_eq!(
            args.unwrap().token_audiences,
            ["nsdebug", "https://kubernetes.default.svc"]
        );
        assert!(serve_args(&["--token-audiences", "nsdebug,,x"]).is_err());
    }

    #[test]
    fn the_agent_publishes_only_knowing_its_pod() {
        let config = Config::from_args(
            serve_args(&[
                "--node-name",
                "n1",
                "--pod-name",
                "nsdebug-abc",
                "--pod-namespace",
                "ops",
            ])
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            config.publication,
            Some(crate::anchor::Publication {
                namespace: "ops".into(),
                pod: "nsdebug-abc".into(),
                node: "n1".into(),
            })
        );
        assert!(serve_args(&["--pod-name", "nsdebug-abc"]).is_err());
    }

    #[test]
    fn bad_durations_are_usage_errors() {
        assert!(serve_args(&["--cri-timeout", "soon"]).is_err());
        assert!(serve_args(&["--resync-interval", "0s"]).is_err());
        let args = serve_args(&["--cri-timeout", "250ms"]).unwrap();
        assert_eq!(args.cri_timeout, Duration::from_millis(250));
    }

    #[test]
    fn file_size_cap() {
        let config = Config::from_args(serve_args(&["--node-name", "n"]).unwrap()).unwrap();
        assert_eq!(config.limits.max_file_bytes, 1 << 30);
        let args = serve_args(&["--max-file-bytes", "64KiB"]).unwrap();
        assert_eq!(args.max_file_bytes, 64 * 1024);
        assert!(serve_args(&["--max-file-bytes", "0"]).is_err());
        assert!(serve_args(&["--max-file-bytes", "lots"]).is_err());
    }

    /// docs/configuration.md is the manual of `nsdebug serve`: every flag has a
    /// table row (`| `--flag` | `ENV` | `default` | ...`) naming its env var and
    /// default, and the page names no flag the command lacks. Adding, renaming
    /// or removing a flag without the page fails here.
    #[test]
    fn configuration_doc_matches_the_serve_flags() {
        use clap::CommandFactory;

        let doc = include_str!("../docs/configuration.md");
        let cli = Cli::command();
        let serve = cli
            .find_subcommand("serve")
            .expect("`nsdebug serve` exists");
        let mut problems = Vec::new();
        let mut longs = std::collections::BTreeSet::new();
        for arg in serve.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            longs.insert(long.to_owned());
            let flag = format!("`--{long}`");
            let rows: Vec<&str> = doc
                .lines()
                .filter(|line| line.starts_with(&format!("| {flag} |")))
                .collect();
            let [row] = rows[..] else {
                problems.push(format!("{flag}: {} table rows, want one", rows.len()));
                continue;
            };
            if let Some(env) = arg.get_env() {
                let env = format!("`{}`", env.to_string_lossy());
                if !row.contains(&env) {
                    problems.push(format!("{flag}: its row does not name {env}"));
                }
            }
            for default in arg.get_default_values() {
                let default = format!("`{}`", default.to_string_lossy());
                if !row.contains(&default) {
                    problems.push(format!(
                        "{flag}: its row does not give the default {default}"
                    ));
                }
            }
        }
        // Every `--word` on the page (not `--` alone) must be a flag of `serve`.
        for (at, _) in doc.match_indices("--") {
            let name: String = doc[at + 2..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            let preceded_by_dash = doc[..at].ends_with('-');
            if name.is_empty()
                || preceded_by_dash
                || !name.starts_with(|c: char| c.is_ascii_alphabetic())
            {
                continue;
            }
            if name != "help" && !longs.contains(&name) {
                problems.push(format!(
                    "the page names --{name}, which `nsdebug serve` lacks"
                ));
            }
        }
        assert!(
            problems.is_empty(),
            "docs/configuration.md and `nsdebug serve --help` disagree:\n  {}",
            problems.join("\n  ")
        );
    }
}

#[cfg(test)]
mod permission_tests {
    use super::Permission;

    #[test]
    fn permissions() {
        let p = Permission::parse("create nodes/proxy").unwrap();
        assert_eq!(
            (
                p.verb.as_str(),
                p.resource.as_str(),
                p.subresource.as_deref()
            ),
            ("create", "nodes", Some("proxy"))
        );
        assert_eq!(Permission::parse("get nodes").unwrap().subresource, None);
        for bad in ["", "create", "create nodes/", "create /proxy", "a b c"] {
            assert!(Permission::parse(bad).is_none(), "{bad:?}");
        }
    }
}
