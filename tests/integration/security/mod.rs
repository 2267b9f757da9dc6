//! The security suite: the threat model of `docs/security.md` written as
//! attacks. Each module is one class of finding; each test is an attack that
//! a tenant with `create pods/exec` on one ordinary pod (or a process inside
//! a target container, or a malicious image) would try, and asserts what that
//! attacker sees: a refusal, or only what `kubectl exec` would have given.
//!
//! Every test here was first seen failing against the code before its fix
//! (the closing notes of the issues that added them say which).

use crate::support;

mod common;

/// One admission path: authorize what the caller named before resolving,
/// like the kubelet; no state an anonymous caller can grow or poison.
mod admission;
/// Browsers: same origin, allowed hosts, JSON bodies; login links and UI
/// sessions.
mod browser;
/// The deployment grants no more than it needs.
mod deployment;
/// Diagnostics and capture act with the container's rights.
mod diagnostics;
/// The files API acts with the container's rights; container-chosen paths
/// are type-checked before they are opened.
mod files;
/// Nothing a session started outlives it.
mod lifetime;
/// Namespace subsets must not mix the container with the agent or the host.
mod namespace_subsets;
/// Port-forward: admitted requests are audited whatever follows.
mod portforward;
/// Bounded resources, and a record that holds: every interactive session
/// recorded, failing closed; a bounded audit log; no argv in Events.
mod record;
/// Privileged and toolbox sessions run only the agent's tools, from a clean
/// environment, in a tool tree holding no secret, inside the user namespace.
mod tool_tree;
/// Clients send tokens only to the agent the cluster vouches for; tokens can
/// be bound to the agent's audience.
mod trust;
