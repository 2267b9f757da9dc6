//! The wire contract between the nsdebug agent and its clients: what goes
//! over HTTP and WebSocket, as types both sides share, so that the agent,
//! the kubectl plugin, the OpenAPI document and the fuzz targets cannot
//! disagree about a field name.
//!
//! - [`status`]: the Kubernetes `v1.Status` every error (and the exec
//!   stream's last frame) is, with kube-core-style builders.
//! - [`run`]: a one-shot run's request body, its answer and the events of a
//!   streamed run (`?stream=true`, NDJSON).
//! - [`diag`]: the built-in diagnostics' answers (`GET .../diag/{view}`),
//!   one item type per view, and the probes' answers ([`diag::probe`]).
//! - [`exec`]: the remote-command framing (`v5.channel.k8s.io`): channel
//!   numbers, subprotocols, the resize message.
//! - [`anchor`]: the trust-anchor Lease clients read to pin an agent's
//!   certificate.
//!
//! The crate is small and portable on purpose (serde only; utoipa schemas
//! behind the `openapi` feature): the plugin builds it for macOS and Windows.

pub mod anchor;
pub mod diag;
pub mod exec;
pub mod run;
pub mod status;

pub use run::{Profile, RunEvent, RunRequest, RunResult};
pub use status::Status;
