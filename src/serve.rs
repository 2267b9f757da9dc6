//! Start-up and shutdown: connect to the runtime, warm the inventory, build the
//! API's state, bind, then hand the listener to the [`crate::server`].
//!
//! Everything that can fail is tried before the port is bound, so a broken
//! configuration or an unreachable runtime exits with one clear line and never
//! leaves a half-working agent listening.

use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{self, AppState};
use crate::auth::{Auth, KubeAuth};
use crate::config::{AuthMode, Config};
use crate::cri::{self, CriClient, CriError};
use crate::inventory::Inventory;
use crate::process::ProcRoot;
use crate::server::Server;

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot reach the container runtime")]
    Runtime(#[source] CriError),
    #[error("failed to listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the HTTP server failed")]
    Serve(#[source] std::io::Error),
    #[error("cannot open the audit log '{path}'")]
    Audit {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the recording directory '{}'", path.display())]
    Recording {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up TLS")]
    Tls(#[source] crate::tls::TlsError),
    /// kube's own message already names every cause.
    #[error(
        "cannot reach the Kubernetes API for authentication (--auth kube); give --kubeconfig, run in a pod, or use --auth none on loopback: {0}"
    )]
    KubeConfig(String),
    #[error("cannot read the kubeconfig '{path}'")]
    Kubeconfig {
        path: std::path::PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
}

/// The client the agent reviews tokens and permissions with.
async fn kube_client(kubeconfig: Option<&std::path::Path>) -> Result<kube::Client, ServeError> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path).map_err(|source| {
                ServeError::Kubeconfig {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|source| ServeError::Kubeconfig {
                    path: path.to_path_buf(),
                    source,
                })?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| ServeError::KubeConfig(e.to_string()))?,
    };
    kube::Client::try_from(config).map_err(|e| ServeError::KubeConfig(e.to_string()))
}

/// Logs to stderr, filtered by `filter` (`info`, `nsdebug=debug`, ...).
pub fn init_logging(filter: &str, format: crate::config::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        crate::config::LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        // One JSON object per line, for log pipelines.
        crate::config::LogFormat::Json => logs.json().with_current_span(false).init(),
    }
}

/// Runs the agent until SIGINT or SIGTERM.
pub async fn run(config: Config) -> Result<(), ServeError> {
    let (client, runtime) = match &config.cri_socket {
        Some(socket) => {
            let client = CriClient::new(socket, config.cri_timeout);
            let runtime = client.version().await.map_err(ServeError::Runtime)?;
            (client, runtime)
        }
        None => cri::discover(&config.host_root, config.cri_timeout)
            .await
            .map_err(ServeError::Runtime)?,
    };
    tracing::info!(
        socket = %client.socket().display(),
        runtime = %runtime.name,
        version = %runtime.version,
        "connected to the container runtime"
    );
    let inventory = Arc::new(Inventory::new(
        client,
        runtime,
        ProcRoot::new(&config.proc_root),
    ));
    let snapshot = inventory.refresh().await.map_err(ServeError::Runtime)?;
    tracing::info!(pods = snapshot.pods.len(), node = %config.node_name, "inventory ready");

    let cancel = CancellationToken::new();
    let kube = match config.auth {
        AuthMode::Kube => Some(kube_client(config.kubeconfig.as_deref()).await?),
        AuthMode::None => None,
    };
    let auth = match &kube {
        Some(client) => Auth::Kube(Box::new(KubeAuth::new(
            client.clone(),
            &config.node_name,
            config.privileged_permission.clone(),
            config.auth_cache_ttl,
            config.token_audiences.clone(),
        ))),
        None => Auth::None,
    };
    let events = crate::events::PodEvents::new(
        kube.clone().filter(|_| config.pod_events),
        &config.node_name,
    );
    if let Some(recording) = &config.recording {
        recording
            .prepare()
            .map_err(|source| ServeError::Recording {
                path: recording.dir.clone(),
                source,
            })?;
    }
    let audit =
        crate::audit::AuditLog::open(&config.audit_log).map_err(|source| ServeError::Audit {
            path: config.audit_log.clone(),
            source,
        })?;
    let serving = match &config.tls {
        Some(source) => {
            Some(crate::tls::server_config(source, cancel.clone()).map_err(ServeError::Tls)?)
        }
        None => None,
    };
    let tls = serving
        .as_ref()
        .map(|serving| TlsAcceptor::from(serving.config.clone()));

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(ServeError::Serve)?;
    // Bound before the agent says it listens, so probes never race it.
    let health = match config.health_listen {
        Some(addr) => Some((
            addr,
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Bind { addr, source })?,
        )),
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    // The one line on stdout: scripts and tests read the bound address from it.
    println!("nsdebug listening on {scheme}://{addr}");
    let _ = std::io::stdout().flush();
    if tls.is_none() {
        tracing::warn!(%addr, "serving plain HTTP (--insecure-http): loopback only, and kubectl sends no token over it");
    }
    if config.auth == AuthMode::None {
        tracing::warn!(%addr, "NO AUTHENTICATION (--auth none): anyone who reaches this port is root in every container");
    }

    let tasks = TaskTracker::new();
    tasks.spawn(
        inventory
            .clone()
            .keep_fresh(config.resync_interval, cancel.clone()),
    );

    if let Some(recording) = &config.recording {
        tasks.spawn(recording.clone().keep_pruned(cancel.clone()));
    }
    // Clients trust this agent once it has published its certificate.
    match (&config.publication, &kube, serving) {
        (Some(publication), Some(client), Some(serving)) => {
            tasks.spawn(publication.clone().keep_published(
                client.clone(),
                serving.certificate,
                cancel.clone(),
            ));
        }
        (Some(_), _, _) => tracing::warn!(
            "not publishing a serving certificate (plain HTTP or --auth none): the plugin will not trust this agent"
        ),
        (None, _, _) => tracing::info!(
            "not publishing a serving certificate (no POD_NAME and POD_NAMESPACE): clients need --certificate-authority"
        ),
    }
    // Helpers waiting before the first request, so it pays no exec either.
    let enter = crate::enter::Enter::new();
    enter.refill_in_background();
    let usage = Arc::new(crate::usage::Sampler::new(inventory.clone()));
    tasks.spawn(
        usage
            .clone()
            .keep_sampling(config.metric_resolution, cancel.clone()),
    );
    let state =
        AppState::new(inventory, &config, auth, audit, events, enter, usage).with_api_server(kube);
    tasks.spawn(state.audit.clone().keep_summarizing(cancel.clone()));
    if let Some((addr, health)) = health {
        let probes = crate::probes::HealthListener::new(api::health_router(state.clone()));
        tasks.spawn(probes.serve_until(health, cancel.clone()));
        tracing::info!(%addr, "serving health checks over plain HTTP");
    }
    let sessions = state.sessions.clone();
    let draining = state.draining.clone();
    let app = api::router(state);
    let shutdown = shutdown_signal();
    let server = Server::new(app, tls, &config.limits);
    server.accept_until(listener, shutdown).await;
    // No new connections from here. Live sessions are told and get the
    // grace period to finish; what still runs then ends with the process
    // (its helper sees the agent go and kills every process of the session).
    draining.cancel();
    if sessions.active() > 0 {
        tracing::info!(
            sessions = sessions.active(),
            grace = %humantime::format_duration(config.shutdown_grace),
            "waiting for live sessions"
        );
    }
    if !sessions.ended_within(config.shutdown_grace).await {
        tracing::warn!(
            sessions = sessions.active(),
            "grace period over: ending live sessions"
        );
    }
    cancel.cancel();
    tasks.close();
    tasks.wait().await;
    server.drain().await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the agent still stops when killed.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}
