//! nsdebug: a Kubernetes node debugging agent.
#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]
//!
//! The data flow is one straight line, a module per stage:
//! `api` (HTTP routes and errors) -> `resolve` (what the user named -> a running
//! container pinned to its process) -> `inventory` (the node's pods, kept fresh
//! from) -> `cri` (the container runtime's gRPC API), with `process` reading the
//! host's `/proc` and `oci` the part of a container's runtime spec that an
//! exec applies. `enter` runs commands inside a target, `files` reads and
//! writes inside its root. `config` parses flags once; `serve` wires the
//! stages together and `server` runs the HTTP listener. `anchor` is the trust
//! between clients and agents: the certificate an agent publishes and clients
//! pin (the clients themselves, the kubectl plugin and the client side of the
//! API, are the workspace's `kubectl-nsdebug` and `nsdebug-client` crates).

pub mod anchor;
pub mod api;
pub mod audit;
pub mod auth;
pub mod config;
pub mod cri;
pub mod diag;
pub mod enter;
pub mod events;
pub mod files;
pub mod inventory;
pub mod login;
pub mod logs;
pub mod metrics;
pub mod oci;
pub mod portforward;
pub mod probes;
pub mod process;
pub mod recording;
pub mod resolve;
pub mod serve;
pub mod server;
pub mod session;
pub mod tls;
pub mod usage;
pub mod write_deadline;

/// An error and all its sources on one line, `outer: inner: innermost`: how every
/// error is printed at the edge (logs, HTTP messages, the exit line); the
/// clients print theirs the same way.
pub use nsdebug_client::error_chain;
