//! A container's reading straight from its cgroup, for when the runtime's
//! `ListContainerStats` fails: cumulative CPU time and the working set, as
//! the runtime itself computes them (`cgroups(7)`; the kernel's
//! `Documentation/admin-guide/cgroup-v2.rst`).
//!
//! - cgroup v2: `cpu.stat` `usage_usec`; `memory.current` minus
//!   `memory.stat` `inactive_file`.
//! - cgroup v1: `cpuacct.usage` (nanoseconds); `memory.usage_in_bytes` minus
//!   `memory.stat` `total_inactive_file`.

use std::path::Path;

use crate::process::{CgroupDir, cgroup_dirs};

/// The cumulative CPU nanoseconds and the working set (bytes) of the
/// container whose init is `pid`, or `None` when its cgroup cannot be read.
pub fn reading(proc_root: &Path, pid: u32) -> Option<(u64, u64)> {
    let dirs = cgroup_dirs(proc_root, pid).ok()?;
    match dirs.iter().find(|d| d.controllers.is_empty()) {
        Some(unified) if unified.dir.join("cgroup.controllers").exists() && dirs.len() == 1 => {
            read_v2(&unified.dir)
        }
        _ => read_v1(&dirs),
    }
}

fn read_v2(dir: &Path) -> Option<(u64, u64)> {
    let cpu = key(&read(dir, "cpu.stat")?, "usage_usec")? * 1000;
    let current: u64 = read(dir, "memory.current")?.trim().parse().ok()?;
    let inactive = key(&read(dir, "memory.stat")?, "inactive_file").unwrap_or(0);
    Some((cpu, current.saturating_sub(inactive)))
}

fn read_v1(dirs: &[CgroupDir]) -> Option<(u64, u64)> {
    let of = |controller: &str| {
        dirs.iter()
            .find(|d| d.controllers.iter().any(|c| c == controller))
            .map(|d| d.dir.as_path())
    };
    let cpu = read(of("cpuacct")?, "cpuacct.usage")?.trim().parse().ok()?;
    let memory = of("memory")?;
    let usage: u64 = read(memory, "memory.usage_in_bytes")?.trim().parse().ok()?;
    let inactive = key(&read(memory, "memory.stat")?, "total_inactive_file").unwrap_or(0);
    Some((cpu, usage.saturating_sub(inactive)))
}

fn read(dir: &Path, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(file)).ok()
}

/// A value of a flat-keyed file (`cpu.stat`, `memory.stat`).
fn key(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
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
    fn v2_working_set_leaves_out_inactive_file_pages() {
        let tmp = tempfile::tempdir().unwrap();
        files(
            tmp.path(),
            &[
                ("cpu.stat", "usage_usec 2500000\nuser_usec 2000000\n"),
                ("memory.current", "10485760\n"),
                (
                    "memory.stat",
                    "anon 1000\nfile 4096\ninactive_file 1048576\n",
                ),
            ],
        );
        assert_eq!(read_v2(tmp.path()), Some((2_500_000_000, 9_437_184)));
    }

    #[test]
    fn this_machine_reads_the_tests_own_cgroup() {
        let (cpu, memory) = reading(Path::new("/proc"), std::process::id())
            .expect("the test's own cgroup is readable");
        assert!(cpu > 0 && memory > 0, "cpu {cpu} ns, memory {memory} B");
    }

    #[test]
    fn v1_reads_cpuacct_and_memory() {
        let tmp = tempfile::tempdir().unwrap();
        let (cpu, memory) = (tmp.path().join("cpu"), tmp.path().join("memory"));
        files(&cpu, &[("cpuacct.usage", "123456789\n")]);
        files(
            &memory,
            &[
                ("memory.usage_in_bytes", "8192\n"),
                ("memory.stat", "inactive_file 9\ntotal_inactive_file 4096\n"),
            ],
        );
        let dirs = [
            CgroupDir {
                controllers: vec!["cpu".into(), "cpuacct".into()],
                dir: cpu,
            },
            CgroupDir {
                controllers: vec!["memory".into()],
                dir: memory,
            },
        ];
        assert_eq!(read_v1(&dirs), Some((123_456_789, 4096)));
    }
}
