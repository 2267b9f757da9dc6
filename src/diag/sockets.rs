//! The sockets of a pod's network namespace (TCP and UDP over IPv4 and IPv6,
//! unix), read from `/proc/PID/net/*` of the target (which shows the
//! namespace of that process), each with the processes that hold it where
//! they are in the pod (found through their `/proc/PID/fd` links).
//!
//! The answer's types, [`SocketEntry`] and [`Holder`], are the wire crate's
//! (`nsdebug_wire::diag`).

use std::collections::HashMap;
use std::path::Path;

pub use nsdebug_wire::diag::{Holder, SocketEntry};

use super::DiagError;
use crate::process::ProcRoot;

/// Sockets by inode, from the fds of every process in the network namespace
/// of `pid`.
fn holders(proc: &Path, pid: u32) -> HashMap<u64, Vec<Holder>> {
    let wanted = std::fs::read_link(proc.join(pid.to_string()).join("ns/net")).ok();
    let mut by_inode: HashMap<u64, Vec<Holder>> = HashMap::new();
    let Ok(all) = procfs::process::all_processes_with_root(proc) else {
        return by_inode;
    };
    for process in all.flatten() {
        if std::fs::read_link(proc.join(process.pid().to_string()).join("ns/net")).ok() != wanted {
            continue;
        }
        let (Ok(stat), Ok(fds)) = (process.stat(), process.fd()) else {
            continue;
        };
        let inside = process
            .status()
            .ok()
            .and_then(|s| s.nspid)
            .and_then(|ids| ids.last().copied())
            .unwrap_or(stat.pid) as u32;
        for fd in fds.flatten() {
            if let procfs::process::FDTarget::Socket(inode) = fd.target {
                let list = by_inode.entry(inode).or_default();
                if !list.iter().any(|h| h.host_pid == stat.pid as u32) {
                    list.push(Holder {
                        pid: inside,
                        host_pid: stat.pid as u32,
                        command: stat.comm.clone(),
                    });
                }
            }
        }
    }
    by_inode
}

fn tcp_state(state: &procfs::net::TcpState) -> String {
    use procfs::net::TcpState::*;
    match state {
        Established => "ESTABLISHED",
        SynSent => "SYN-SENT",
        SynRecv => "SYN-RECV",
        FinWait1 => "FIN-WAIT-1",
        FinWait2 => "FIN-WAIT-2",
        TimeWait => "TIME-WAIT",
        Close => "CLOSE",
        CloseWait => "CLOSE-WAIT",
        LastAck => "LAST-ACK",
        Listen => "LISTEN",
        Closing => "CLOSING",
        NewSynRecv => "NEW-SYN-RECV",
    }
    .into()
}

/// Every socket of the pod's network namespace.
pub fn list(proc_root: &ProcRoot, pid: u32) -> Result<Vec<SocketEntry>, DiagError> {
    let proc = proc_root.path();
    let process = procfs::process::Process::new_with_root(proc.join(pid.to_string()))
        .map_err(|_| DiagError::Gone { pid })?;
    let read = |what: &str, source| DiagError::Proc {
        what: format!("read the pod's {what} sockets"),
        source,
    };
    let holders = holders(proc, pid);
    let held = |inode: u64| holders.get(&inode).cloned().unwrap_or_default();
    let mut sockets = Vec::new();
    for (protocol, entries) in [
        ("tcp", process.tcp().map_err(|e| read("tcp", e))?),
        ("tcp6", process.tcp6().unwrap_or_default()),
    ] {
        for e in entries {
            let listening = matches!(e.state, procfs::net::TcpState::Listen);
            sockets.push(SocketEntry {
                protocol: protocol.into(),
                state: tcp_state(&e.state),
                local: e.local_address.to_string(),
                remote: (!listening).then(|| e.remote_address.to_string()),
                inode: e.inode,
                uid: Some(e.uid),
                rx_queue: Some(e.rx_queue),
                tx_queue: Some(e.tx_queue),
                processes: held(e.inode),
            });
        }
    }
    for (protocol, entries) in [
        ("udp", process.udp().map_err(|e| read("udp", e))?),
        ("udp6", process.udp6().unwrap_or_default()),
    ] {
        for e in entries {
            let connected = !e.remote_address.ip().is_unspecified();
            sockets.push(SocketEntry {
                protocol: protocol.into(),
                state: if connected {
                    "ESTABLISHED"
                } else {
                    "UNCONNECTED"
                }
                .into(),
                local: e.local_address.to_string(),
                remote: connected.then(|| e.remote_address.to_string()),
                inode: e.inode,
                uid: Some(e.uid),
                rx_queue: Some(e.rx_queue),
                tx_queue: Some(e.tx_queue),
                processes: held(e.inode),
            });
        }
    }
    for e in process.unix().map_err(|e| read("unix", e))? {
        sockets.push(SocketEntry {
            protocol: "unix".into(),
            state: format!("{:?}", e.state).to_uppercase(),
            local: e.path.map(|p| p.display().to_string()).unwrap_or_default(),
            remote: None,
            inode: e.inode,
            uid: None,
            rx_queue: None,
            tx_queue: None,
            processes: held(e.inode),
        });
    }
    Ok(sockets)
}
