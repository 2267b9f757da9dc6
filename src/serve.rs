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
    crate::enter::refill_in_background();
    let state = AppState::new(inventory, &config, auth, audit, events);
    tasks.spawn(state.audit.clone().keep_summarizing(cancel.clone()));
    if let Some((addr, health)) = health {
        let probes = crate::probes::HealthListener::new(api::health_router(state.clone()));
        tasks.spawn(probes.serve_until(health, cancel.clone()));
        tracing::info!(%addr, "serving health checks over plain HTTP");
    }
    let sessions = state.sessions.clone();
    let draining = state.draining.clone();
    let app = api::router(state);
    let connections = TaskTracker::new();
    let shutdown = shutdown_signal();
    let served = Served {
        app,
        tls,
        // At most this many connections at once; the next wait in the
        // kernel's accept queue, so a flood of clients cannot run the agent
        // out of descriptors or memory.
        slots: Arc::new(tokio::sync::Semaphore::new(config.limits.max_connections)),
        header_timeout: config.limits.request_header_timeout,
        client_timeout: config.limits.client_timeout,
        connections: connections.clone(),
    };
    served.accept_until(listener, shutdown).await;
    // No new connections from here. Live sessions are told and get the
    // grace period to finish; what still runs then ends with the process
    // (its helper sees the agent go and kills every process of the session).
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

/// A listener's connections: what serves them and how many at once.
struct Served {
    app: axum::Router,
    tls: Option<TlsAcceptor>,
    slots: Arc<tokio::sync::Semaphore>,
    header_timeout: Duration,
    /// Writes that make no progress for this long end the connection.
    client_timeout: Duration,
    connections: TaskTracker,
}

impl Served {
    /// Accepts and serves connections until `stop` completes.
    async fn accept_until(
        self,
        listener: TcpListener,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let mut accept_errors = AcceptErrors::default();
        tokio::pin!(stop);
        loop {
            let slot = tokio::select! {
                _ = &mut stop => break,
                slot = self.slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => break,
                },
            };
            let (stream, peer) = tokio::select! {
                _ = &mut stop => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Out of descriptors and the like: the error repeats
                        // until a connection closes, so wait a little rather
                        // than spin, and say so once in a while.
                        accept_errors.note(&err);
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
            };
            let app = self.app.clone();
            let tls = self.tls.clone();
            let header_timeout = self.header_timeout;
            let _ = stream.set_nodelay(true);
            // Under TLS too: a client that stops reading stalls the socket.
            let stream = WriteDeadline::new(stream, self.client_timeout);
            self.connections.spawn(async move {
                let _slot = slot;
                match tls {
                    Some(tls) => match tokio::time::timeout(header_timeout, tls.accept(stream))
                        .await
                    {
                        Ok(Ok(stream)) => serve_connection(stream, peer, app, header_timeout).await,
                        Ok(Err(err)) => {
                            tracing::debug!(%peer, error = %err, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    },
                    None => serve_connection(stream, peer, app, header_timeout).await,
                }
            });
        }
    }
}

/// How long the accept loop waits after a failed accept (EMFILE and such).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Failed accepts, logged at most every ten seconds with their count.
#[derive(Default)]
struct AcceptErrors {
    since_logged: u64,
    logged_at: Option<std::time::Instant>,
}

impl AcceptErrors {
    fn note(&mut self, err: &std::io::Error) {
        self.since_logged += 1;
        let due = self
            .logged_at
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(10));
        if due {
            tracing::warn!(error = %err, failures = self.since_logged, "accepting connections fails; retrying");
            self.since_logged = 0;
            self.logged_at = Some(std::time::Instant::now());
        }
    }
}
/// How long requests in flight may finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves HTTP/1.1 (with upgrades, for exec) on one connection.
pub(crate) async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    app: axum::Router,
    header_timeout: Duration,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            tower::ServiceExt::oneshot(app.clone(), request)
        });
    let Some(stream) = first_head(stream, header_timeout).await else {
        return;
    };
    let result = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
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

/// Reads a connection's first request head before hyper does, so that a
/// client too slow to send it gets a `408` (hyper's own header timeout, which
/// still guards the requests after it, closes without a word). `None` when
/// the connection is done: closed early, or answered 408. What was read is
/// replayed to hyper.
async fn first_head<S>(mut stream: S, timeout: Duration) -> Option<Rewind<S>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut head = Vec::with_capacity(1024);
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => {
                    let from = head.len().saturating_sub(3);
                    head.extend_from_slice(&chunk[..n]);
                    // A whole head, or more than hyper takes (it answers 431).
                    if head[from..].windows(4).any(|w| w == b"\r\n\r\n")
                        || head.len() > MAX_HEADER_BYTES
                    {
                        return true;
                    }
                }
            }
        }
    };
    let outcome = tokio::time::timeout(timeout, read).await;
    let refusal = match outcome {
        Ok(true) if head.len() > MAX_HEADER_BYTES => Some((
            "431 Request Header Fields Too Large",
            format!(
                "the request line and headers are more than {MAX_HEADER_BYTES} bytes; the agent takes at most {MAX_HEADER_BYTES}"
            ),
            "RequestHeaderFieldsTooLarge",
        )),
        Err(_) if !head.is_empty() => Some((
            "408 Request Timeout",
            format!(
                "the request's line and headers did not arrive within {}",
                humantime::format_duration(timeout)
            ),
            "Timeout",
        )),
        _ => None,
    };
    if let Some((status, message, reason)) = refusal {
        let code: u16 = status[..3].parse().unwrap_or(400);
        let body = nsdebug_wire::Status::failure(message, reason)
            .with_code(code)
            .to_json();
        let answer = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = stream.write_all(answer.as_bytes()).await;
            let _ = stream.shutdown().await;
        })
        .await;
        return None;
    }
    match outcome {
        Ok(true) => Some(Rewind {
            prefix: head,
            at: 0,
            inner: stream,
        }),
        _ => None,
    }
}

/// A stream whose first bytes were read already: they are read again first.
struct Rewind<S> {
    prefix: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = buf.remaining().min(self.prefix.len() - self.at);
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            if self.at == self.prefix.len() {
                self.prefix = Vec::new();
                self.at = 0;
            }
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
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
