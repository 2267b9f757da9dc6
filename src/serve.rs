//! Start-up and shutdown: connect to the runtime, warm the inventory, bind, serve.
//!
//! Everything that can fail is tried before the port is bound, so a broken
//! configuration or an unreachable runtime exits with one clear line and never
//! leaves a half-working agent listening.

use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{self, AppState};
use crate::config::Config;
use crate::cri::{self, CriClient, CriError};
use crate::inventory::Inventory;
use crate::process::ProcRoot;

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
}

/// Logs to stderr, filtered by `filter` (`info`, `nsdebug=debug`, ...).
pub fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
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

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(ServeError::Serve)?;
    // The one line on stdout: scripts and tests read the bound address from it.
    println!("nsdebug listening on http://{addr}");
    let _ = std::io::stdout().flush();
    tracing::warn!(%addr, "serving plain HTTP without authentication: loopback only");

    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    tasks.spawn(
        inventory
            .clone()
            .keep_fresh(config.resync_interval, cancel.clone()),
    );

    let sessions = crate::session::Sessions::new(config.max_sessions);
    // Helpers waiting before the first request, so it pays no exec either.
    crate::enter::refill_in_background();
    let app = api::router(AppState::new(inventory, &config.node_name, sessions));
    let shutdown = cancel.clone();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            shutdown.cancel();
        })
        .await;
    cancel.cancel();
    tasks.close();
    tasks.wait().await;
    tracing::info!("stopped");
    served.map_err(ServeError::Serve)
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
