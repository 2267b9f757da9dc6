//! Start-up and shutdown: connect to the runtime, warm the inventory, bind, serve.
//!
//! Everything that can fail is tried before the port is bound, so a broken
//! configuration or an unreachable runtime exits with one clear line and never
//! leaves a half-working agent listening.

use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;

use std::time::Duration;

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
use crate::write_deadline::WriteDeadline;

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
        ))),
        None => Auth::None,
    };
    let events =
        crate::events::PodEvents::new(kube.filter(|_| config.pod_events), &config.node_name);
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
    let tls = match &config.tls {
        Some(source) => Some(TlsAcceptor::from(
            crate::tls::server_config(source, cancel.clone()).map_err(ServeError::Tls)?,
        )),
        None => None,
    };

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
    // Helpers waiting before the first request, so it pays no exec either.
    crate::enter::refill_in_background();
    let state = AppState::new(inventory, &config, auth, audit, events);
    if let Some((addr, health)) = health {
        let router = api::health_router(state.clone());
        let stop = cancel.clone();
        tasks.spawn(async move {
            let served = axum::serve(health, router)
                .with_graceful_shutdown(async move { stop.cancelled().await });
            if let Err(err) = served.await {
                tracing::warn!(error = %err, "the health listener failed");
            }
        });
        tracing::info!(%addr, "serving health checks over plain HTTP");
    }
    let sessions = state.sessions.clone();
    let draining = state.draining.clone();
    let app = api::router(state);
    let connections = TaskTracker::new();
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of descriptors and the like: keep serving the others.
                    tracing::warn!(error = %err, "accept failed");
                    continue;
                }
            },
        };
        let app = app.clone();
        let tls = tls.clone();
        let _ = stream.set_nodelay(true);
        let stream = WriteDeadline::new(stream, config.limits.client_timeout);
        connections.spawn(async move {
            match tls {
                Some(tls) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                        Ok(Ok(stream)) => serve_connection(stream, peer, app).await,
                        Ok(Err(err)) => {
                            tracing::debug!(%peer, error = %err, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
                None => serve_connection(stream, peer, app).await,
            }
        });
    }
    // No new connections from here. Live sessions are told and get the
    // grace period to finish; what still runs then ends with the process
    // (its helper sees the agent go and kills the command's process group).
    draining.cancel();
    let grace_ends = tokio::time::Instant::now() + config.shutdown_grace;
    if sessions.active() > 0 {
        tracing::info!(
            sessions = sessions.active(),
            grace = %humantime::format_duration(config.shutdown_grace),
            "waiting for live sessions"
        );
    }
    while sessions.active() > 0 && tokio::time::Instant::now() < grace_ends {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if sessions.active() > 0 {
        tracing::warn!(
            sessions = sessions.active(),
            "grace period over: ending live sessions"
        );
    }
    cancel.cancel();
    tasks.close();
    tasks.wait().await;
    connections.close();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, connections.wait()).await;
    tracing::info!("stopped");
    Ok(())
}

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long requests in flight may finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves HTTP/1.1 (with upgrades, for exec) on one connection.
async fn serve_connection<S>(stream: S, peer: SocketAddr, app: axum::Router)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            tower::ServiceExt::oneshot(app.clone(), request)
        });
    let result = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .with_upgrades()
        .await;
    if let Err(err) = result {
        tracing::debug!(%peer, error = %err, "connection ended with an error");
    }
}

/// Largest request head (request line and headers); larger gets 431.
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

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
