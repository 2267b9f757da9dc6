//! [`AppState`]: what every handler can reach, built once from the config.

use std::sync::Arc;

use super::browser;
use crate::inventory::Inventory;
use crate::resolve::Resolver;
use crate::session::Sessions;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub inventory: Arc<Inventory>,
    pub resolver: Resolver,
    /// The Kubernetes node this agent serves, reported as `spec.nodeName`.
    pub node_name: Arc<str>,
    pub sessions: Sessions,
    /// Memory for buffered run output (`--output-budget`).
    pub output_budget: crate::session::OutputBudget,
    pub limits: crate::config::Limits,
    pub auth: Arc<crate::auth::Auth>,
    pub audit: Arc<crate::audit::AuditLog>,
    pub events: crate::events::PodEvents,
    pub recording: Option<crate::recording::RecordingConfig>,
    /// The filesystem whose tools toolbox mode runs (`--toolbox-root`).
    pub toolbox_root: Arc<std::path::Path>,
    pub logins: Arc<crate::login::Logins>,
    pub backoff: Arc<crate::auth::FailureBackoff>,
    /// Served over TLS (for the links the agent hands out, and its own origin).
    pub tls: bool,
    /// Host names the agent answers to besides loopback (`--allowed-host`).
    pub allowed_hosts: browser::AllowedHosts,
    /// Cancelled on SIGTERM: live sessions tell their users, and end when
    /// `shutdown_grace` has passed.
    pub draining: tokio_util::sync::CancellationToken,
    pub shutdown_grace: std::time::Duration,
    /// The way into containers, with its helpers started ahead of need.
    pub enter: crate::enter::Enter,
    /// CPU and memory readings for the Metrics API.
    pub usage: Arc<crate::usage::Sampler>,
    /// The API server, when the agent has one (`--auth kube`): where this
    /// node's Node object is read.
    pub kube: Option<kube::Client>,
}

impl AppState {
    pub fn new(
        inventory: Arc<Inventory>,
        config: &crate::config::Config,
        auth: crate::auth::Auth,
        audit: crate::audit::AuditLog,
        events: crate::events::PodEvents,
        enter: crate::enter::Enter,
        usage: Arc<crate::usage::Sampler>,
    ) -> Self {
        Self {
            resolver: Resolver::new(inventory.clone()),
            inventory,
            node_name: config.node_name.as_str().into(),
            sessions: Sessions::new(
                config.limits.max_sessions,
                config.limits.max_sessions_per_user,
            ),
            output_budget: crate::session::OutputBudget::new(config.limits.output_budget),
            limits: config.limits,
            auth: Arc::new(auth),
            audit: Arc::new(audit),
            events,
            recording: config.recording.clone(),
            toolbox_root: config.toolbox_root.as_path().into(),
            logins: Arc::new(crate::login::Logins::new(
                config.login_link_ttl,
                config.ui_session_ttl,
            )),
            backoff: Arc::default(),
            tls: config.tls.is_some(),
            allowed_hosts: browser::AllowedHosts::new(&config.allowed_hosts),
            draining: tokio_util::sync::CancellationToken::new(),
            shutdown_grace: config.shutdown_grace,
            enter,
            usage,
            kube: None,
        }
    }

    /// The API server the agent reads its node's Node from.
    pub fn with_api_server(mut self, kube: Option<kube::Client>) -> Self {
        self.kube = kube;
        self
    }
}
