//! How far a target reaches beyond its container: whether it shares the
//! node's own PID or network namespace (`hostPID`, `hostNetwork`), and
//! whether it could capture packets itself (`CAP_NET_RAW`). A view of such a
//! target that would show the node's processes, sockets or traffic is no
//! longer what `kubectl exec` into that pod gives, so the API asks for the
//! privileged right first.
//!
//! The node's namespaces are those of PID 1 as the agent sees `/proc` (the
//! agent runs with `hostPID`, so that is the node's init), and those of
//! `kthreadd` (PID 2, when it is the kernel's thread): kernel threads live in
//! the kernel's initial namespaces, and they are still readable where an LSM
//! keeps the node's init from being inspected, even by root (the test
//! machine's init is such a process). Sharing a namespace with either is
//! sharing the node's; when neither can be read, every namespace counts as
//! shared, so the answer needs the privileged right, never less.

use crate::process::{NamespaceIds, ProcRoot, StatusError};

use super::DiagError;

/// The node's init, whose namespaces are the node's.
const NODE_INIT: u32 = 1;
/// The kernel's thread of threads, when the node's PID namespace is the
/// kernel's initial one.
const KTHREADD: u32 = 2;
/// `PF_KTHREAD` in `proc(5)` `stat` field 9 (`flags`).
const PF_KTHREAD: u64 = 0x0020_0000;

/// `CAP_NET_RAW` (`capabilities(7)`): raw and packet sockets.
const CAP_NET_RAW: u64 = 1 << 13;

/// What a target shares with the node, and what it could capture itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reach {
    /// The container's PID namespace is the node's (`hostPID`).
    pub host_pid: bool,
    /// The container's network namespace is the node's (`hostNetwork`).
    pub host_network: bool,
    /// The container's init has `CAP_NET_RAW` in its effective and its
    /// bounding set: a `tcpdump` it runs could capture.
    pub net_raw: bool,
}

impl Reach {
    /// Reads the node's namespaces and the capability sets of the target's
    /// init (`pid`, whose namespaces are `namespaces`). Blocking (`/proc`).
    pub fn of(
        proc_root: &ProcRoot,
        pid: u32,
        namespaces: &NamespaceIds,
    ) -> Result<Self, DiagError> {
        let node = node_namespaces(proc_root);
        let shared = |kind: &str| {
            node.is_empty()
                || node.iter().any(|ids| {
                    ids.get(kind)
                        .is_some_and(|id| namespaces.get(kind) == Some(id))
                })
        };
        let read = |source| DiagError::Read {
            what: format!("the capabilities of process {pid}"),
            source,
        };
        let creds = proc_root.credentials(pid).map_err(|err| match err {
            StatusError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                DiagError::Gone { pid }
            }
            StatusError::Read { source, .. } => read(source),
            StatusError::Parse { source, .. } => {
                read(std::io::Error::new(std::io::ErrorKind::InvalidData, source))
            }
        })?;
        Ok(Self {
            host_pid: shared("pid"),
            host_network: shared("net"),
            net_raw: creds.effective & creds.bounding & CAP_NET_RAW != 0,
        })
    }
}

/// The namespaces of the node's init and of `kthreadd`, those that can be
/// read (see the module comment).
fn node_namespaces(proc_root: &ProcRoot) -> Vec<NamespaceIds> {
    let kernel_thread = procfs::process::Process::new_with_root(proc_root.pid_dir(KTHREADD))
        .and_then(|p| p.stat())
        .is_ok_and(|stat| u64::from(stat.flags) & PF_KTHREAD != 0);
    let mut node: Vec<NamespaceIds> = proc_root.namespaces(NODE_INIT).ok().into_iter().collect();
    if kernel_thread && let Ok(ids) = proc_root.namespaces(KTHREADD) {
        node.push(ids);
    }
    node.retain(|ids| !ids.is_empty());
    node
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This test runs in the node's namespaces (or at least in PID 1's
    /// network one when it is not in a container of its own).
    #[test]
    fn a_process_of_the_node_shares_its_namespaces() {
        let proc_root = ProcRoot::new("/proc");
        let me = std::process::id();
        let ours = proc_root.namespaces(me).unwrap();
        let reach = Reach::of(&proc_root, me, &ours).unwrap();
        let node = node_namespaces(&proc_root);
        assert!(!node.is_empty(), "the node's init or kthreadd is readable");
        let shares = |kind: &str| node.iter().any(|ids| ids[kind] == ours[kind]);
        assert_eq!(reach.host_pid, shares("pid"));
        assert_eq!(reach.host_network, shares("net"));
        let mut elsewhere = ours.clone();
        elsewhere.insert("net".into(), 1);
        elsewhere.insert("pid".into(), 1);
        let reach = Reach::of(&proc_root, me, &elsewhere).unwrap();
        assert!(!reach.host_pid && !reach.host_network);
    }
}
