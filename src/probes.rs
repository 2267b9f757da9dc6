//! The health listener (`--health-listen`): the kubelet's probes must get
//! through whatever else reaches the port, and anyone in the cluster does.
//!
//! It shares nothing with the API's listener: no connection limit that
//! makes new connections wait (a peer holding every slot would starve the
//! probe until the kubelet restarts the agent), but a small set of live
//! connections in which a new one evicts the oldest, a short time to send
//! the request head, and a short life for every connection. A probe opens
//! a connection and asks at once, so it is served while idle or slow peers
//! are dropped to make room.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Connections served at once; one more evicts the oldest.
const CONNECTIONS: usize = 32;
/// Time a peer has to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(2);
/// A connection's whole life (a scraper keeping one alive reconnects).
const LIFETIME: Duration = Duration::from_secs(10);
/// Writes that make no progress for this long end the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the accept loop waits after a failed accept (EMFILE and such).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves the health router on its own listener.
pub struct HealthListener {
    app: axum::Router,
    /// Live connections by age: the first is the oldest.
    live: Arc<Mutex<BTreeMap<u64, CancellationToken>>>,
    connections: TaskTracker,
}

impl HealthListener {
    pub fn new(app: axum::Router) -> Self {
        Self {
            app,
            live: Arc::default(),
            connections: TaskTracker::new(),
        }
    }

    /// Accepts and serves connections until `stop`.
    pub async fn serve_until(self, listener: TcpListener, stop: CancellationToken) {
        let mut next_id = 0u64;
        loop {
            let (stream, peer) = tokio::select! {
                () = stop.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        tracing::debug!(error = %err, "health listener: accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
            };
            let id = next_id;
            next_id += 1;
            let ends = self.admit(id, stop.child_token());
            let live = self.live.clone();
            let app = self.app.clone();
            let _ = stream.set_nodelay(true);
            let stream = crate::write_deadline::WriteDeadline::new(stream, WRITE_TIMEOUT);
            self.connections.spawn(async move {
                let served = crate::server::serve_connection(stream, peer, app, HEAD_TIMEOUT);
                tokio::select! {
                    () = ends.cancelled() => {}
                    _ = tokio::time::timeout(LIFETIME, served) => {}
                }
                live.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
            });
        }
        self.connections.close();
        self.connections.wait().await;
    }

    /// Registers connection `id`, evicting the oldest when full; the token
    /// ends the connection.
    fn admit(&self, id: u64, ends: CancellationToken) -> CancellationToken {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        while live.len() >= CONNECTIONS {
            if let Some((_, oldest)) = live.pop_first() {
                oldest.cancel();
            }
        }
        live.insert(id, ends.clone());
        ends
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_connection_evicts_the_oldest() {
        let health = HealthListener::new(axum::Router::new());
        let stop = CancellationToken::new();
        let tokens: Vec<_> = (0..CONNECTIONS as u64 + 2)
            .map(|id| health.admit(id, stop.child_token()))
            .collect();
        assert!(tokens[0].is_cancelled() && tokens[1].is_cancelled());
        assert!(tokens[2..].iter().all(|t| !t.is_cancelled()));
        assert_eq!(health.live.lock().unwrap().len(), CONNECTIONS);
    }
}
