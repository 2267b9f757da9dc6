//! A container's resource use from its cgroups: memory (usage, limit, OOM
//! kills), CPU (usage, throttling, quota) and PIDs, on cgroup v2 and v1.
//!
//! The cgroups are those of the container's init process (`/proc/PID/cgroup`),
//! found under the hierarchies the agent itself mounts (its mountinfo), the
//! same places the enter helper joins.
//!
//! The answer's type, [`CgroupUsage`], is the wire crate's (`nsdebug_wire::diag`).

use std::path::Path;

pub use nsdebug_wire::diag::{CgroupUsage, Cpu, Memory, Pids};

use super::DiagError;
use crate::process::{CgroupDir, ProcRoot, cgroup_dirs};

fn read(dir: &Path, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(file))
        .ok()
        .map(|s| s.trim().to_string())
}

fn number(dir: &Path, file: &str) -> Option<u64> {
    read(dir, file)?.parse().ok()
}

/// `max` (v2) or a huge v1 sentinel reads as no limit.
fn limit(dir: &Path, file: &str) -> Option<u64> {
    let text = read(dir, file)?;
    if text == "max" {
        return None;
    }
    text.parse().ok().filter(|v| *v < (1u64 << 62))
}

/// A value of a flat-keyed file (`cpu.stat`, `memory.events`).
fn key(dir: &Path, file: &str, name: &str) -> Option<u64> {
    read(dir, file)?
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Usage of the unified (v2) cgroup `dir`.
pub fn read_v2(dir: &Path) -> CgroupUsage {
    let quota = read(dir, "cpu.max").and_then(|text| {
        let (quota, period) = text.split_once(' ')?;
        let quota: f64 = quota.parse().ok()?;
        let period: f64 = period.parse().ok()?;
        Some(quota / period)
    });
    CgroupUsage {
        version: 2,
        paths: vec![dir.display().to_string()],
        memory: Memory {
            usage_bytes: number(dir, "memory.current"),
            limit_bytes: limit(dir, "memory.max"),
            oom_kills: key(dir, "memory.events", "oom_kill"),
            limit_hits: key(dir, "memory.events", "max"),
        },
        cpu: Cpu {
            usage_seconds: key(dir, "cpu.stat", "usage_usec").map(|u| u as f64 / 1e6),
            periods: key(dir, "cpu.stat", "nr_periods"),
            throttled_periods: key(dir, "cpu.stat", "nr_throttled"),
            throttled_seconds: key(dir, "cpu.stat", "throttled_usec").map(|u| u as f64 / 1e6),
            limit_cpus: quota,
        },
        pids: Pids {
            current: number(dir, "pids.current"),
            limit: limit(dir, "pids.max"),
        },
    }
}

/// Usage from v1 hierarchies: `dirs` by controller.
pub fn read_v1(dirs: &[CgroupDir]) -> CgroupUsage {
    let of = |controller: &str| {
        dirs.iter()
            .find(|d| d.controllers.iter().any(|c| c == controller))
            .map(|d| d.dir.as_path())
    };
    let mut usage = CgroupUsage {
        version: 1,
        paths: dirs.iter().map(|d| d.dir.display().to_string()).collect(),
        ..Default::default()
    };
    if let Some(dir) = of("memory") {
        usage.memory = Memory {
            usage_bytes: number(dir, "memory.usage_in_bytes"),
            limit_bytes: limit(dir, "memory.limit_in_bytes"),
            oom_kills: key(dir, "memory.oom_control", "oom_kill"),
            limit_hits: number(dir, "memory.failcnt"),
        };
    }
    if let Some(dir) = of("cpuacct") {
        usage.cpu.usage_seconds = number(dir, "cpuacct.usage").map(|ns| ns as f64 / 1e9);
    }
    if let Some(dir) = of("cpu") {
        usage.cpu.periods = key(dir, "cpu.stat", "nr_periods");
        usage.cpu.throttled_periods = key(dir, "cpu.stat", "nr_throttled");
        usage.cpu.throttled_seconds =
            key(dir, "cpu.stat", "throttled_time").map(|ns| ns as f64 / 1e9);
        let quota = read(dir, "cpu.cfs_quota_us").and_then(|q| q.parse::<i64>().ok());
        let period = number(dir, "cpu.cfs_period_us");
        usage.cpu.limit_cpus = match (quota, period) {
            (Some(q), Some(p)) if q > 0 && p > 0 => Some(q as f64 / p as f64),
            _ => None,
        };
    }
    if let Some(dir) = of("pids") {
        usage.pids = Pids {
            current: number(dir, "pids.current"),
            limit: limit(dir, "pids.max"),
        };
    }
    usage
}

/// The resource use of the container whose init is `pid`.
pub fn usage(proc_root: &ProcRoot, pid: u32) -> Result<CgroupUsage, DiagError> {
    let dirs = cgroup_dirs(proc_root.path(), pid)?;
    match dirs.iter().find(|d| d.controllers.is_empty()) {
        // A v2 group with controllers enabled; on a hybrid host the v2 group
        // holds none and the v1 hierarchies count.
        Some(unified) if unified.dir.join("cgroup.controllers").exists() && dirs.len() == 1 => {
            Ok(read_v2(&unified.dir))
        }
        _ => Ok(read_v1(&dirs)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path, files: &[(&str, &str)]) {
        std::fs::create_dir_all(dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
    }

    #[test]
    fn cgroup_v2_files() {
        let tmp = tempfile::tempdir().unwrap();
        files(
            tmp.path(),
            &[
                ("memory.current", "10485760\n"),
                ("memory.max", "max\n"),
                (
                    "memory.events",
                    "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n",
                ),
                (
                    "cpu.stat",
                    "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\nnr_periods 40\nnr_throttled 4\nthrottled_usec 120000\n",
                ),
                ("cpu.max", "50000 100000\n"),
                ("pids.current", "3\n"),
                ("pids.max", "max\n"),
            ],
        );
        let usage = read_v2(tmp.path());
        assert_eq!(
            usage.memory,
            Memory {
                usage_bytes: Some(10485760),
                limit_bytes: None,
                oom_kills: Some(1),
                limit_hits: Some(3)
            }
        );
        assert_eq!(
            usage.cpu,
            Cpu {
                usage_seconds: Some(2.5),
                periods: Some(40),
                throttled_periods: Some(4),
                throttled_seconds: Some(0.12),
                limit_cpus: Some(0.5)
            }
        );
        assert_eq!(
            usage.pids,
            Pids {
                current: Some(3),
                limit: None
            }
        );
    }

    #[test]
    fn cgroup_v1_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = |name: &str| tmp.path().join(name);
        files(
            &dir("memory"),
            &[
                ("memory.usage_in_bytes", "2097152\n"),
                ("memory.limit_in_bytes", "9223372036854771712\n"),
                ("memory.failcnt", "0\n"),
                (
                    "memory.oom_control",
                    "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
                ),
            ],
        );
        files(
            &dir("cpu"),
            &[
                (
                    "cpu.stat",
                    "nr_periods 10\nnr_throttled 1\nthrottled_time 5000000\n",
                ),
                ("cpu.cfs_quota_us", "-1\n"),
                ("cpu.cfs_period_us", "100000\n"),
            ],
        );
        files(&dir("cpuacct"), &[("cpuacct.usage", "1500000000\n")]);
        files(
            &dir("pids"),
            &[("pids.current", "7\n"), ("pids.max", "1024\n")],
        );
        let dirs: Vec<CgroupDir> = ["memory", "cpu", "cpuacct", "pids"]
            .into_iter()
            .map(|c| CgroupDir {
                controllers: vec![c.to_string()],
                dir: dir(c),
            })
            .collect();
        let usage = read_v1(&dirs);
        assert_eq!(usage.version, 1);
        assert_eq!(
            usage.memory,
            Memory {
                usage_bytes: Some(2097152),
                limit_bytes: None,
                oom_kills: Some(2),
                limit_hits: Some(0)
            }
        );
        assert_eq!(
            usage.cpu,
            Cpu {
                usage_seconds: Some(1.5),
                periods: Some(10),
                throttled_periods: Some(1),
                throttled_seconds: Some(0.005),
                limit_cpus: None
            }
        );
        assert_eq!(
            usage.pids,
            Pids {
                current: Some(7),
                limit: Some(1024)
            }
        );
    }
}
