//! `cp`: files out of a container (a file, or a directory through the
//! agent's tar archive) and a file into one, through the agent's files API.
//! Downloads land under a temporary name beside the destination and are
//! renamed only once complete: a failed copy leaves nothing behind.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use futures::StreamExt as _;
use tokio::io::AsyncWriteExt as _;

use super::{PluginError, Reached, Route, Target, pod_path};

/// `[NAMESPACE/]POD:PATH`.
#[derive(Debug, PartialEq)]
struct Remote {
    namespace: Option<String>,
    pod: String,
    path: String,
}

/// A remote path, or `None` for a local one. As with kubectl cp, a local
/// path with a colon is written `./a:b`.
fn remote(text: &str) -> Option<Remote> {
    if text.starts_with('/') || text.starts_with('.') {
        return None;
    }
    let (pod, path) = text.split_once(':')?;
    if pod.is_empty() || path.is_empty() {
        return None;
    }
    let (namespace, pod) = match pod.split_once('/') {
        Some((ns, pod)) => (Some(ns.to_string()), pod.to_string()),
        None => (None, pod.to_string()),
    };
    Some(Remote {
        namespace,
        pod,
        path: path.to_string(),
    })
}

pub async fn copy(
    route: &Route,
    source: &str,
    destination: &str,
    container: Option<&str>,
) -> Result<ExitCode, PluginError> {
    match (remote(source), remote(destination)) {
        (Some(from), None) => {
            let namespace = route.namespace(from.namespace.as_deref());
            let agent = route.for_pod(&namespace, &from.pod).await?;
            let target = Target {
                namespace: &namespace,
                pod: &from.pod,
                container,
            };
            download(&agent, &target, &from.path, Path::new(destination)).await
        }
        (None, Some(to)) => {
            let namespace = route.namespace(to.namespace.as_deref());
            let agent = route.for_pod(&namespace, &to.pod).await?;
            let target = Target {
                namespace: &namespace,
                pod: &to.pod,
                container,
            };
            upload(&agent, &target, Path::new(source), &to.path).await
        }
        (Some(_), Some(_)) => Err(PluginError::Usage(
            "both paths are in pods; copy through a local file".into(),
        )),
        (None, None) => Err(PluginError::Usage(
            "one path must be in a pod: [NAMESPACE/]POD:PATH".into(),
        )),
    }
}

/// The last component of a container path.
fn base_name(path: &str) -> &str {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .unwrap_or("root")
}

/// Where a download lands: into an existing directory under the source's
/// name, else at `destination` itself (as `cp -r` does).
fn landing(destination: &Path, remote_path: &str) -> PathBuf {
    if destination.is_dir() {
        destination.join(base_name(remote_path))
    } else {
        destination.to_path_buf()
    }
}

/// A temporary name beside `path`, removed unless kept.
struct Partial {
    path: PathBuf,
    keep: bool,
}

impl Partial {
    fn beside(path: &Path) -> Self {
        let name = path
            .file_name()
            .map_or("download".into(), |n| n.to_string_lossy().into_owned());
        let mut partial = path.to_path_buf();
        partial.set_file_name(format!(".{name}.nsdebug-partial-{}", std::process::id()));
        Self {
            path: partial,
            keep: false,
        }
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

async fn download(
    agent: &Reached,
    target: &Target<'_>,
    remote_path: &str,
    destination: &Path,
) -> Result<ExitCode, PluginError> {
    let files = pod_path(target.namespace, target.pod, target.container, "files");
    let to = landing(destination, remote_path);
    let response = agent
        .send(
            agent
                .request(reqwest::Method::GET, &files)
                .query(&[("path", remote_path)]),
        )
        .await?;
    // A directory is refused as bytes (400) and asked again as a tar archive.
    let file_response = if response.status() == reqwest::StatusCode::BAD_REQUEST {
        let status: nsdebug_wire::Status = response.json().await.unwrap_or_default();
        let message = status.message;
        if !message.contains("is a directory") {
            return Err(PluginError::Refused(format!(
                "the agent answered 400: {message}"
            )));
        }
        None
    } else {
        Some(response)
    };
    let is_directory = file_response.is_none();
    let partial = Partial::beside(&to);
    let write_error = |source| PluginError::Write {
        path: to.clone(),
        source,
    };
    let bytes = if is_directory {
        let response = agent
            .send_ok(
                agent
                    .request(reqwest::Method::GET, &files)
                    .query(&[("path", remote_path), ("format", "tar")]),
            )
            .await?;
        let archive = partial.path.with_extension("tar");
        let archive_guard = Partial {
            path: archive.clone(),
            keep: false,
        };
        let bytes = save(agent, response, &archive).await.map_err(|e| match e {
            SaveError::Agent(err) => err,
            SaveError::Io(source) => write_error(source),
        })?;
        let unpack_into = partial.path.clone();
        let unpacked = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::create_dir(&unpack_into)?;
            let file = std::fs::File::open(&archive)?;
            let mut tar = tar::Archive::new(file);
            tar.set_preserve_permissions(true);
            tar.unpack(&unpack_into)
        })
        .await
        .map_err(|err| write_error(std::io::Error::other(err)))?;
        unpacked.map_err(write_error)?;
        drop(archive_guard);
        // The archive's one top entry is the directory itself.
        let top = partial.path.join(base_name(remote_path));
        std::fs::rename(&top, &to).map_err(write_error)?;
        bytes
    } else {
        let response = file_response.ok_or_else(|| PluginError::Refused("no answer".into()))?;
        if !response.status().is_success() {
            return Err(super::refused(response).await);
        }
        save(agent, response, &partial.path)
            .await
            .map_err(|e| match e {
                SaveError::Agent(err) => err,
                SaveError::Io(source) => write_error(source),
            })
            .and_then(|bytes| {
                std::fs::rename(&partial.path, &to).map_err(write_error)?;
                Ok(bytes)
            })?
    };
    eprintln!(
        "kubectl-nsdebug: {}/{}:{remote_path} -> {} ({bytes} bytes{})",
        target.namespace,
        target.pod,
        to.display(),
        if is_directory { " of tar" } else { "" }
    );
    Ok(ExitCode::SUCCESS)
}

enum SaveError {
    Agent(PluginError),
    Io(std::io::Error),
}

/// Streams an answer into a new file; its size.
async fn save(agent: &Reached, response: reqwest::Response, path: &Path) -> Result<u64, SaveError> {
    let mut file = tokio::fs::File::create_new(path)
        .await
        .map_err(SaveError::Io)?;
    let mut bytes = 0u64;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| SaveError::Agent(agent.request_error(e)))?;
        bytes += chunk.len() as u64;
        file.write_all(&chunk).await.map_err(SaveError::Io)?;
    }
    file.sync_all().await.map_err(SaveError::Io)?;
    Ok(bytes)
}

async fn upload(
    agent: &Reached,
    target: &Target<'_>,
    source: &Path,
    remote_path: &str,
) -> Result<ExitCode, PluginError> {
    let read_error = |source_err| PluginError::Read {
        path: source.into(),
        source: source_err,
    };
    let metadata = tokio::fs::metadata(source).await.map_err(read_error)?;
    if metadata.is_dir() {
        return Err(PluginError::Usage(format!(
            "{} is a directory; the agent takes one file at a time (copy a tar archive and unpack it in the container)",
            source.display()
        )));
    }
    // Into a directory when the path ends with a slash, as cp does.
    let remote_path = if remote_path.ends_with('/') {
        let name = source
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!("{remote_path}{name}")
    } else {
        remote_path.to_string()
    };
    let file = tokio::fs::File::open(source).await.map_err(read_error)?;
    let mode = format!("{:o}", upload_mode(&metadata));
    let files = pod_path(target.namespace, target.pod, target.container, "files");
    let response = agent
        .send_ok(
            agent
                .request(reqwest::Method::PUT, &files)
                .query(&[("path", remote_path.as_str()), ("mode", mode.as_str())])
                .header(reqwest::header::CONTENT_LENGTH, metadata.len())
                .body(reqwest::Body::wrap_stream(
                    tokio_util::io::ReaderStream::new(file),
                )),
        )
        .await?;
    let answer: serde_json::Value = response.json().await.unwrap_or_default();
    eprintln!(
        "kubectl-nsdebug: {} -> {}/{}:{} ({} bytes)",
        source.display(),
        target.namespace,
        target.pod,
        answer["path"].as_str().unwrap_or(&remote_path),
        answer["size"].as_u64().unwrap_or(metadata.len())
    );
    Ok(ExitCode::SUCCESS)
}

/// The mode an uploaded file gets. The agent refuses setuid and setgid bits
/// on uploads; like `tar` extracting as a user who may not keep them, they
/// are left out. Windows has no mode: a file is writable by its owner or
/// read-only.
fn upload_mode(metadata: &std::fs::Metadata) -> u32 {
    #[cfg(unix)]
    {
        std::os::unix::fs::PermissionsExt::mode(&metadata.permissions()) & 0o1777
    }
    #[cfg(not(unix))]
    {
        if metadata.permissions().readonly() {
            0o444
        } else {
            0o644
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_paths_are_read_as_kubectl_cp_does() {
        assert_eq!(
            remote("shop/web:/etc/hosts"),
            Some(Remote {
                namespace: Some("shop".into()),
                pod: "web".into(),
                path: "/etc/hosts".into()
            })
        );
        assert_eq!(
            remote("web:tmp/x").map(|r| (r.namespace, r.pod)),
            Some((None, "web".into()))
        );
        assert_eq!(remote("./a:b"), None);
        assert_eq!(remote("/tmp/a:b"), None);
        assert_eq!(remote("plain"), None);
        assert_eq!(remote("web:"), None);
    }

    #[test]
    fn base_names() {
        assert_eq!(base_name("/etc/nginx/"), "nginx");
        assert_eq!(base_name("/etc/hosts"), "hosts");
        assert_eq!(base_name("/"), "root");
    }
}
