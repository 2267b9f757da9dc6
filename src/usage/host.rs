//! The node's own usage and size, from the host's `/proc` (`proc(5)`): CPU
//! time from the first line of `/proc/stat`, memory from `/proc/meminfo`.
//!
//! The agent runs with `hostPID`, so its `/proc` (`--proc-root`) is the
//! host's; these files are not namespaced by PID namespaces anyway.

use std::path::{Path, PathBuf};

/// `USER_HZ`, the unit of `/proc/stat`'s times: 100 on every architecture
/// the agent builds for (x86-64, arm64; `proc(5)`, `sysconf(_SC_CLK_TCK)`).
const USER_HZ: u64 = 100;

/// A host file that could not be read or understood.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("failed to read '{path}'")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("'{path}' has no {what}")]
    Missing { path: PathBuf, what: &'static str },
}

/// The host's size: what `status.capacity` of its Node says when the agent
/// has no Node object to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// Online CPUs (the `cpuN` lines of `/proc/stat`).
    pub cpus: u64,
    /// `MemTotal`.
    pub memory_bytes: u64,
}

/// The node's cumulative busy CPU time (nanoseconds: user, nice, system,
/// irq, softirq, steal; not idle or iowait) and its memory in use
/// (`MemTotal - MemAvailable`, bytes).
pub fn usage(proc_root: &Path) -> Result<(u64, u64), HostError> {
    let stat = read(&proc_root.join("stat"))?;
    let busy = busy_jiffies(&stat).ok_or_else(|| HostError::Missing {
        path: proc_root.join("stat"),
        what: "cpu line",
    })?;
    let meminfo_path = proc_root.join("meminfo");
    let meminfo = read(&meminfo_path)?;
    let field = |name: &'static str| {
        meminfo_kib(&meminfo, name).ok_or_else(|| HostError::Missing {
            path: meminfo_path.clone(),
            what: name,
        })
    };
    let used = field("MemTotal")?.saturating_sub(field("MemAvailable")?) * 1024;
    Ok((busy * (1_000_000_000 / USER_HZ), used))
}

/// The host's CPUs and memory.
pub fn capacity(proc_root: &Path) -> Result<Capacity, HostError> {
    let stat_path = proc_root.join("stat");
    let stat = read(&stat_path)?;
    let cpus = stat
        .lines()
        .filter(|line| {
            line.strip_prefix("cpu")
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count() as u64;
    let meminfo_path = proc_root.join("meminfo");
    let memory = meminfo_kib(&read(&meminfo_path)?, "MemTotal").ok_or(HostError::Missing {
        path: meminfo_path,
        what: "MemTotal",
    })?;
    Ok(Capacity {
        cpus: cpus.max(1),
        memory_bytes: memory * 1024,
    })
}

fn read(path: &Path) -> Result<String, HostError> {
    std::fs::read_to_string(path).map_err(|source| HostError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The busy jiffies of the `cpu` line: user nice system idle iowait irq
/// softirq steal (guest time is already counted in user and nice).
fn busy_jiffies(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let at = |i: usize| fields.get(i).copied().unwrap_or(0);
    Some(at(0) + at(1) + at(2) + at(5) + at(6) + at(7))
}

/// A `/proc/meminfo` field in KiB.
fn meminfo_kib(meminfo: &str, name: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  100 5 50 1000 20 3 2 1 0 0\ncpu0 50 2 25 500 10 1 1 0 0 0\ncpu1 50 3 25 500 10 2 1 1 0 0\nintr 1 2 3\n";
    const MEMINFO: &str =
        "MemTotal:        8000000 kB\nMemFree:         1000000 kB\nMemAvailable:    6000000 kB\n";

    #[test]
    fn busy_time_leaves_out_idle_and_iowait() {
        assert_eq!(busy_jiffies(STAT), Some(100 + 5 + 50 + 3 + 2 + 1));
        assert_eq!(busy_jiffies("intr 1\n"), None);
    }

    #[test]
    fn the_host_is_read_from_its_proc() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("stat"), STAT).unwrap();
        std::fs::write(dir.path().join("meminfo"), MEMINFO).unwrap();
        let (cpu, memory) = usage(dir.path()).unwrap();
        assert_eq!(cpu, 161 * 10_000_000);
        assert_eq!(memory, 2_000_000 * 1024);
        assert_eq!(
            capacity(dir.path()).unwrap(),
            Capacity {
                cpus: 2,
                memory_bytes: 8_000_000 * 1024
            }
        );
    }
}
