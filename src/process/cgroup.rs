//! Where a process's cgroups are: the directories, under the hierarchies the
//! calling process itself mounts (its mountinfo), of the groups
//! `/proc/PID/cgroup` names. The enter helper joins them and the cgroup
//! diagnostic reads them, so the fact lives here, below both.

use std::path::{Path, PathBuf};

/// Why a process's cgroup directories could not be found.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("failed to read the agent's mountinfo")]
    OwnMounts(#[source] procfs::ProcError),
    #[error("failed to read the cgroups of process {pid}")]
    Cgroups {
        pid: u32,
        #[source]
        source: procfs::ProcError,
    },
}

/// One cgroup of a process: the controllers of its hierarchy (empty for the
/// v2 unified one) and its directory.
#[derive(Debug, Clone)]
pub struct CgroupDir {
    pub controllers: Vec<String>,
    pub dir: PathBuf,
}

/// The cgroup directories of `pid` under the calling process's mounts; a
/// hierarchy this mount namespace does not mount is left out.
pub fn cgroup_dirs(proc: &Path, pid: u32) -> Result<Vec<CgroupDir>, CgroupError> {
    let own = procfs::process::Process::myself()
        .and_then(|me| me.mountinfo())
        .map_err(CgroupError::OwnMounts)?;
    let groups = procfs::process::Process::new_with_root(proc.join(pid.to_string()))
        .and_then(|p| p.cgroups())
        .map_err(|source| CgroupError::Cgroups { pid, source })?;
    let mut dirs = Vec::new();
    for group in groups.0 {
        let mount = own.0.iter().find(|m| {
            if group.controllers.is_empty() {
                m.fs_type == "cgroup2"
            } else {
                m.fs_type == "cgroup"
                    && group.controllers.iter().all(|c| match c.split_once('=') {
                        // A named hierarchy: `name=systemd` is the option `name`.
                        Some((key, value)) => {
                            m.super_options.get(key) == Some(&Some(value.to_string()))
                        }
                        None => m.super_options.contains_key(c.as_str()),
                    })
            }
        });
        if let Some(mount) = mount {
            dirs.push(CgroupDir {
                controllers: group.controllers,
                dir: mount
                    .mount_point
                    .join(group.pathname.trim_start_matches('/')),
            });
        }
    }
    Ok(dirs)
}
