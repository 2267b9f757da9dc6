//! Command line and environment, parsed once into a typed [`Config`] before any
//! socket is touched. Every flag of `serve` has an environment fallback so a
//! DaemonSet can configure the agent without rewriting its command.

use std::net::SocketAddr;
use std::path::PathBuf;
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
    Serve(ServeArgs),
}

/// Flags of `nsdebug serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on. Plain HTTP without authentication is all there is
    /// for now, so only loopback addresses are accepted (reach the agent
    /// through `kubectl port-forward`). Port 0 picks a free port.
    #[arg(long, env = "NSDEBUG_LISTEN", default_value = "127.0.0.1:7443")]
    pub listen: String,

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

    /// Most commands running in containers at once; more get 429.
    #[arg(long, env = "NSDEBUG_MAX_SESSIONS", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_sessions: u16,

    /// Log filter (error, warn, info, debug, trace, or a tracing directive such as
    /// `nsdebug=debug`). Logs go to stderr.
    #[arg(long, env = "NSDEBUG_LOG", default_value = "info")]
    pub log: String,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|err| err.to_string())?;
    if duration.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(duration)
}

/// A flag combination that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--listen '{value}' is not an IP address and port (e.g. 127.0.0.1:7443 or [::1]:7443)")]
    ListenSyntax { value: String },
    #[error(
        "--listen {addr} is not a loopback address: without TLS and authentication the agent only listens on loopback (127.0.0.1 or ::1); use kubectl port-forward to reach it"
    )]
    ListenNotLoopback { addr: SocketAddr },
    #[error("--proc-root '{path}' is not a procfs mount (it has no '1' directory)")]
    ProcRoot { path: PathBuf },
    #[error("--cri-socket '{path}' does not exist")]
    CriSocketMissing { path: PathBuf },
    #[error("--node-name is empty and the host name could not be read")]
    NodeName,
}

/// The validated configuration of `nsdebug serve`.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub cri_socket: Option<PathBuf>,
    pub host_root: PathBuf,
    pub node_name: String,
    pub proc_root: PathBuf,
    pub cri_timeout: Duration,
    pub resync_interval: Duration,
    pub max_sessions: usize,
    pub log: String,
}

impl Config {
    /// Checks everything that can be checked without the runtime.
    pub fn from_args(args: ServeArgs) -> Result<Self, ConfigError> {
        let listen: SocketAddr = args.listen.parse().map_err(|_| ConfigError::ListenSyntax {
            value: args.listen.clone(),
        })?;
        if !listen.ip().is_loopback() {
            return Err(ConfigError::ListenNotLoopback { addr: listen });
        }
        if !args.proc_root.join("1").is_dir() {
            return Err(ConfigError::ProcRoot {
                path: args.proc_root,
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
        Ok(Self {
            listen,
            cri_socket: args.cri_socket,
            host_root: args.host_root,
            node_name,
            proc_root: args.proc_root,
            cri_timeout: args.cri_timeout,
            resync_interval: args.resync_interval,
            max_sessions: usize::from(args.max_sessions),
            log: args.log,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve_args(extra: &[&str]) -> Result<ServeArgs, clap::Error> {
        let argv = ["nsdebug", "serve"].iter().chain(extra);
        Cli::try_parse_from(argv).map(|cli| match cli.command {
            Command::Serve(args) => args,
        })
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
    fn non_loopback_listen_is_refused() {
        let err =
            Config::from_args(serve_args(&["--listen", "0.0.0.0:7443"]).unwrap()).unwrap_err();
        assert!(matches!(err, ConfigError::ListenNotLoopback { .. }));
        let err = Config::from_args(serve_args(&["--listen", "localhost"]).unwrap()).unwrap_err();
        assert!(matches!(err, ConfigError::ListenSyntax { .. }));
    }

    #[test]
    fn bad_durations_are_usage_errors() {
        assert!(serve_args(&["--cri-timeout", "soon"]).is_err());
        assert!(serve_args(&["--resync-interval", "0s"]).is_err());
        let args = serve_args(&["--cri-timeout", "250ms"]).unwrap();
        assert_eq!(args.cri_timeout, Duration::from_millis(250));
    }
}
