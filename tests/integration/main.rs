//! The integration tests: one binary, one module per area, each starting the
//! real agent against the real containerd test bed (`hack/testbed.sh`) and
//! real pods, driven by real clients. docs/testing.md says what each module
//! covers and how to run one (`cargo test --test integration MODULE::`).
//!
//! Tests run in parallel threads of this one process, so none may rely on a
//! process of its own: each makes pods in a namespace of its own
//! (`support::test_namespace`), starts its own agent on a free port, and
//! changes no process-wide state (environment, working directory). The pods
//! a test makes are removed when it ends, however it ends
//! (`nsdebug_testbed::pods::RunningPod`).
//!
//! `tests/runtime_outage.rs` is a binary of its own: it stops containerd,
//! which every test here uses.

/// The harness: the test bed crate's library.
use nsdebug_testbed as support;

mod auth;
mod capture;
mod cli;
mod diag;
mod exec;
mod faults;
mod files;
mod fuzz_api;
mod hostile;
mod image;
mod inventory;
mod kubectl;
mod logs;
mod metrics;
mod metrics_api;
mod offline;
mod openapi;
mod plugin;
mod plugin_cluster;
mod portforward;
mod probe;
mod profile;
mod resolve;
mod run;
/// The security suite: the threat model of docs/security.md as attacks.
mod security;
mod toolbox;
mod ui;
