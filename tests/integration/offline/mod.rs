//! Tests that need neither root nor the test bed: they run the agent binary
//! without a runtime, and render the chart and the manifests. The unit tier
//! (`bash hack/test.sh --unit`) runs them with `cargo test --test integration
//! offline::`.

/// The command line before any runtime is reached.
mod cli;
/// How the agent is installed: the manifests and the Helm chart.
pub mod deploy;
