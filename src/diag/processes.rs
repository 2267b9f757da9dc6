//! The processes of a target, read from the host's `/proc`: every process in
//! the target's PID namespace (so a pod sharing one shows all its
//! containers'), with its PID inside and on the host.
//!
//! The answer's type, [`ProcessEntry`], is the wire crate's (`nsdebug_wire::diag`).

use std::collections::HashMap;
use std::path::Path;

pub use nsdebug_wire::diag::ProcessEntry;

use super::DiagError;
use crate::process::ProcRoot;

/// The `pid` namespace link of a process, to compare.
fn pid_namespace(proc: &Path, pid: i32) -> Option<std::path::PathBuf> {
    std::fs::read_link(proc.join(pid.to_string()).join("ns/pid")).ok()
}

fn state_description(state: char) -> &'static str {
    match state {
        'R' => "running",
        'S' => "sleeping",
        'D' => "waiting on disk",
        'Z' => "zombie",
        'T' => "stopped",
        't' => "tracing stop",
        'X' | 'x' => "dead",
        'I' => "idle",
        'K' => "wakekill",
        'W' => "waking",
        'P' => "parked",
        _ => "unknown",
    }
}

/// User names by uid from an `/etc/passwd` text.
pub fn passwd_names(text: &str) -> HashMap<u32, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut fields = l.split(':');
            let name = fields.next()?;
            let uid = fields.nth(1)?.parse().ok()?;
            Some((uid, name.to_string()))
        })
        .collect()
}

/// Every process in the PID namespace of `pid`, sorted by PID inside.
pub fn list(proc_root: &ProcRoot, pid: u32) -> Result<Vec<ProcessEntry>, DiagError> {
    let proc = proc_root.path();
    let wanted = pid_namespace(proc, pid as i32).ok_or(DiagError::Gone { pid })?;
    let ticks = procfs::ticks_per_second() as f64;
    let page = procfs::page_size();
    let boot = procfs::boot_time_secs().unwrap_or(0);
    let users = proc_root
        .read_in_root(pid, "/etc/passwd", 1 << 20)
        .map(|bytes| passwd_names(&String::from_utf8_lossy(&bytes)))
        .unwrap_or_default();
    let all = procfs::process::all_processes_with_root(proc).map_err(|source| DiagError::Proc {
        what: "list processes".into(),
        source,
    })?;
    let mut found = Vec::new();
    for process in all.flatten() {
        if pid_namespace(proc, process.pid()) != Some(wanted.clone()) {
            continue;
        }
        // A process that exits while being read is simply not listed.
        let (Ok(stat), Ok(status)) = (process.stat(), process.status()) else {
            continue;
        };
        let inside = status
            .nspid
            .as_ref()
            .and_then(|ids| ids.last().copied())
            .unwrap_or(stat.pid) as u32;
        let uid = status.ruid;
        let started = boot as f64 + stat.starttime as f64 / ticks;
        found.push((
            stat.ppid,
            ProcessEntry {
                pid: inside,
                host_pid: stat.pid as u32,
                parent_pid: None,
                command: stat.comm.clone(),
                cmdline: process.cmdline().unwrap_or_default(),
                uid,
                user: users.get(&uid).cloned(),
                state: stat.state.to_string(),
                state_description: state_description(stat.state).into(),
                threads: stat.num_threads,
                rss_bytes: stat.rss * page,
                cpu_seconds: (stat.utime + stat.stime) as f64 / ticks,
                started_at: k8s_openapi::jiff::Timestamp::from_second(started as i64)
                    .map(|t| t.to_string())
                    .unwrap_or_default(),
            },
        ));
    }
    let inside_of: HashMap<u32, u32> = found.iter().map(|(_, p)| (p.host_pid, p.pid)).collect();
    let mut processes: Vec<ProcessEntry> = found
        .into_iter()
        .map(|(ppid, mut p)| {
            p.parent_pid = inside_of.get(&(ppid as u32)).copied();
            p
        })
        .collect();
    processes.sort_by_key(|p| p.pid);
    Ok(processes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_names_by_uid() {
        let names = passwd_names(
            "root:x:0:0:root:/root:/bin/sh\n# comment\nnonroot:x:65532:65532::/home/nonroot:/sbin/nologin\nbroken\n",
        );
        assert_eq!(names.get(&0).map(String::as_str), Some("root"));
        assert_eq!(names.get(&65532).map(String::as_str), Some("nonroot"));
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn this_test_process_is_listed_with_its_namespace() {
        let proc = ProcRoot::new("/proc");
        let me = std::process::id();
        let all = list(&proc, me).unwrap();
        let entry = all.iter().find(|p| p.host_pid == me).expect("listed");
        assert!(entry.rss_bytes > 0);
        assert!(entry.started_at.starts_with("20"), "{}", entry.started_at);
    }
}
