//! What one process of a target holds and sees: its open files, its
//! environment (secret-looking values redacted unless asked), its mounts.
//! The process is named by its PID inside the container (default: the
//! container's init).
//!
//! The answers' types, [`OpenFile`], [`EnvVar`] and [`Mount`], are the wire
//! crate's (`nsdebug_wire::diag`).

use std::path::Path;

pub use nsdebug_wire::diag::{EnvVar, Mount, OpenFile};

use super::DiagError;
use crate::process::ProcRoot;

/// The host PID of the process with PID `inside` in the PID namespace of
/// `init` (the target's init process), if it is one of the container's own:
/// in its cgroup and its mount namespace too. The PID namespace alone is not
/// enough: a `hostPID` pod's is the node's, a pod that shares one shows its
/// other containers', and an nsdebug toolbox or privileged session runs in
/// it. Any other process is "not there", whether it exists or not.
pub fn host_pid(
    proc_root: &ProcRoot,
    init: u32,
    container_id: &str,
    inside: Option<u32>,
) -> Result<u32, DiagError> {
    let Some(wanted) = inside else {
        return Ok(init);
    };
    let processes = super::processes::list(proc_root, init)?;
    processes
        .iter()
        .find(|p| p.pid == wanted)
        .map(|p| p.host_pid)
        .filter(|host| {
            proc_root
                .cgroup_mentions(*host, container_id)
                .unwrap_or(false)
        })
        // And in its mount namespace: a toolbox or privileged session runs
        // in the container's PID namespace and cgroup too, as node root or
        // with the caller's secrets in its environment, in a mount
        // namespace of its own; it is not the container's to read.
        .filter(|host| {
            proc_root
                .same_namespace(*host, init, "mnt")
                .unwrap_or(false)
        })
        .ok_or(DiagError::NoSuchProcess { pid: wanted })
}

fn process(proc: &Path, pid: u32) -> Result<procfs::process::Process, DiagError> {
    procfs::process::Process::new_with_root(proc.join(pid.to_string()))
        .map_err(|_| DiagError::Gone { pid })
}

/// The open file descriptors of host PID `pid`.
pub fn open_files(proc_root: &ProcRoot, pid: u32) -> Result<Vec<OpenFile>, DiagError> {
    use procfs::process::FDTarget;
    let fds = process(proc_root.path(), pid)?
        .fd()
        .map_err(|source| DiagError::Proc {
            what: format!("read the open files of process {pid}"),
            source,
        })?;
    let mut files: Vec<OpenFile> = fds
        .flatten()
        .map(|fd| {
            let (kind, target) = match fd.target {
                FDTarget::Path(path) => ("file", path.display().to_string()),
                FDTarget::Socket(inode) => ("socket", format!("socket:[{inode}]")),
                FDTarget::Net(inode) => ("socket", format!("net:[{inode}]")),
                FDTarget::Pipe(inode) => ("pipe", format!("pipe:[{inode}]")),
                FDTarget::AnonInode(name) => ("anon_inode", format!("anon_inode:{name}")),
                FDTarget::MemFD(name) => ("memfd", format!("/memfd:{name}")),
                FDTarget::Other(name, inode) => ("other", format!("{name}:[{inode}]")),
                FDTarget::Unknown(name, data) => ("other", format!("{name}:{data}")),
            };
            OpenFile {
                fd: fd.fd,
                kind: kind.into(),
                target,
            }
        })
        .collect();
    files.sort_by_key(|f| f.fd);
    Ok(files)
}

/// Name fragments of variables whose values are hidden unless asked for.
const SECRET_WORDS: &[&str] = &[
    "PASS",
    "SECRET",
    "TOKEN",
    "KEY",
    "CREDENTIAL",
    "AUTH",
    "PRIVATE",
    "CERT",
    "PWD",
    "SESSION",
    "COOKIE",
    "DSN",
    "SIGNATURE",
    "SALT",
];

/// True for a name that looks like it holds a secret (`DB_PASSWORD`,
/// `AWS_SECRET_ACCESS_KEY`, `GITHUB_TOKEN`...). `PWD` the working directory
/// is not one.
pub fn looks_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    upper != "PWD" && upper != "OLDPWD" && SECRET_WORDS.iter().any(|w| upper.contains(w))
}

/// The environment of host PID `pid`, in order.
pub fn environment(proc_root: &ProcRoot, pid: u32, reveal: bool) -> Result<Vec<EnvVar>, DiagError> {
    let bytes = std::fs::read(proc_root.path().join(pid.to_string()).join("environ")).map_err(
        |source| DiagError::Read {
            what: format!("the environment of process {pid}"),
            source,
        },
    )?;
    Ok(crate::process::parse_environ(&bytes)
        .into_iter()
        .map(|(name, value)| {
            let redacted = !reveal && looks_secret(&name);
            EnvVar {
                value: (!redacted).then_some(value),
                name,
                redacted,
            }
        })
        .collect())
}

/// The mounts host PID `pid` sees, as `/proc/PID/mountinfo` lists them.
pub fn mounts(proc_root: &ProcRoot, pid: u32) -> Result<Vec<Mount>, DiagError> {
    let infos = process(proc_root.path(), pid)?
        .mountinfo()
        .map_err(|source| DiagError::Proc {
            what: format!("read the mounts of process {pid}"),
            source,
        })?;
    Ok(infos
        .0
        .into_iter()
        .map(|m| {
            let options: Vec<String> = m
                .mount_options
                .iter()
                .map(|(k, v)| match v {
                    Some(v) => format!("{k}={v}"),
                    None => k.clone(),
                })
                .collect();
            Mount {
                read_only: options.iter().any(|o| o == "ro"),
                mount_point: m.mount_point.display().to_string(),
                fs_type: m.fs_type,
                source: m.mount_source,
                options,
                root: m.root,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_looking_names() {
        for secret in [
            "DB_PASSWORD",
            "aws_secret_access_key",
            "GITHUB_TOKEN",
            "API_KEY",
            "TLS_CERT_FILE",
            "SENTRY_DSN",
        ] {
            assert!(looks_secret(secret), "{secret}");
        }
        for plain in ["PATH", "HOME", "PWD", "HOSTNAME", "LANG", "PORT"] {
            assert!(!looks_secret(plain), "{plain}");
        }
    }
}
