//! Files in containers over HTTP: `GET .../files` downloads a file (or a tar
//! archive of a directory), `PUT .../files` uploads one. The file system work
//! is [`crate::files`]'; this is the request, the authorization (`create
//! pods/exec`, as for exec: files hold secrets), the session limits and the
//! audit trail.

use super::target::Wanted;
use std::task::Poll;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, RequestExt, Router};
use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, AppState, QueryOf, RequestInfo, query};
use crate::auth::User;
use crate::files::{self, FileError, FileInfo, Format};
use crate::resolve::TargetRef;
use crate::session::{Outcome, Session};

pub fn routes(max_file_bytes: u64) -> Router<AppState> {
    // Uploads stream to disk under --max-file-bytes, not the router-wide
    // --max-request-bytes meant for JSON bodies.
    let body_limit = DefaultBodyLimit::max(usize::try_from(max_file_bytes).unwrap_or(usize::MAX));
    Router::new()
        .route(
            "/v1/targets/{namespace}/{pod}/files",
            get(get_in_target).put(put_in_target).layer(body_limit),
        )
        .route(
            "/v1/containers/{id}/files",
            get(get_in_target).put(put_in_target).layer(body_limit),
        )
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct FilesQuery {
    /// Read by [`Wanted`](super::target::Wanted); named here so every other
    /// name stays checked.
    #[serde(rename = "container")]
    _container: Option<String>,
    /// In the container; relative paths start at its `/`.
    #[serde(default)]
    path: String,
    /// `tar` for an archive (a directory's tree, or one file).
    format: Option<String>,
    /// Octal permission bits of an uploaded file (never setuid or setgid).
    mode: Option<String>,
}

impl FilesQuery {
    pub(super) fn format(&self) -> Result<Format, ApiError> {
        match self.format.as_deref() {
            None | Some("") => Ok(Format::Raw),
            Some("tar") => Ok(Format::Tar),
            Some(other) => Err(ApiError::bad_request(format!(
                "unknown format \"{other}\": use format=tar for a tar archive, or leave it out for the file's bytes"
            ))),
        }
    }

    pub(super) fn mode(&self) -> Result<Option<u32>, ApiError> {
        let Some(text) = self.mode.as_deref() else {
            return Ok(None);
        };
        match u32::from_str_radix(text, 8) {
            // A setuid or setgid file planted by an upload would run with its
            // owner's (often root's) rights for the container's other users:
            // refused outright rather than silently dropped, so the caller
            // knows the file is not what they asked for.
            Ok(mode) if mode & SET_ID_BITS != 0 && mode <= 0o7777 => {
                Err(ApiError::bad_request(format!(
                    "mode \"{text}\" has the setuid or setgid bit; uploads never set them (use 0755-style permission bits)"
                )))
            }
            Ok(mode) if mode <= 0o7777 => Ok(Some(mode)),
            _ => Err(ApiError::bad_request(format!(
                "mode \"{text}\" is not octal permission bits such as 0644 or 0755"
            ))),
        }
    }
}

async fn get_in_target(
    State(state): State<AppState>,
    axum::Extension(user): axum::Extension<User>,
    info: RequestInfo,
    Wanted(wanted): Wanted,
    q: QueryOf<FilesQuery>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    download(state, user, info, wanted, q).await
}

async fn put_in_target(
    State(state): State<AppState>,
    axum::Extension(user): axum::Extension<User>,
    info: RequestInfo,
    Wanted(wanted): Wanted,
    q: QueryOf<FilesQuery>,
    request: Request,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    upload(state, user, info, wanted, q, request).await
}

/// Admits the request ([`super::admission`]: authorized on the pod before
/// anything about it is revealed), resolves the target and takes a session
/// slot. A failure after the authorization is audited.
async fn start(
    state: &AppState,
    user: &User,
    info: &RequestInfo,
    wanted: &TargetRef,
    op: &'static str,
    path: &str,
) -> Result<Session, ApiError> {
    let mut session = super::admission::admit(
        state,
        user,
        info,
        wanted.clone(),
        super::admission::Right::Exec { privileged: false },
    )
    .await?
    .start_session(
        state,
        super::admission::SessionAsk {
            kind: "files",
            profile: "container",
            note: &|record| {
                record.note("file-op", op).note("file-path", path);
            },
        },
    )
    .await?;
    session.noting_target();
    Ok(session)
}

async fn download(
    state: AppState,
    user: User,
    info: RequestInfo,
    wanted: TargetRef,
    q: FilesQuery,
) -> Result<Response, ApiError> {
    let format = q.format()?;
    let op = match format {
        Format::Raw => "read",
        Format::Tar => "tar",
    };
    let session = start(&state, &user, &info, &wanted, op, &q.path).await?;
    let proc_root = state.inventory.proc_root().clone();
    let limit = state.limits.max_file_bytes;
    let process = session.target.process;
    let download = match files::download(proc_root, process, &q.path, format, limit).await {
        Ok(download) => download,
        Err(err) => return Err(super::admission::refuse(session, ApiError::from(err))),
    };
    let (_target, mut trail) = session.start(200);
    let headers = download_headers(&download.info, format);
    let length = (format == Format::Raw).then_some(download.info.size);
    // An empty file is complete before it starts (hyper may never poll).
    let mut done = length == Some(0);
    if done {
        trail.outcome = Outcome::Complete;
    }
    let (mut chunks, mut summary) = (download.chunks, download.summary);
    // The trail (`ResponseComplete` with the bytes sent and how it ended)
    // and the session slot live as long as the body: until it is done or
    // dropped (client gone).
    let body = futures::stream::poll_fn(move |cx| {
        let trail = &mut trail;
        if done {
            return Poll::Ready(None);
        }
        let (piece, ended) = match futures::ready!(chunks.poll_recv(cx)) {
            Some(Ok(data)) => {
                trail.bytes_out += data.len() as u64;
                // hyper stops polling once Content-Length bytes are out.
                let whole = Some(trail.bytes_out) == length;
                if whole {
                    trail.outcome = Outcome::Complete;
                }
                (Some(Ok(data)), whole)
            }
            Some(Err(err)) => {
                // Aborting the response is how the client learns; the log
                // and the audit trail say why.
                let reason = crate::error_chain(&err);
                tracing::warn!(error = %reason, "a download failed midway and was aborted");
                trail.outcome = Outcome::Aborted(reason);
                (Some(Err(std::io::Error::other(err))), true)
            }
            // The worker sends a summary before the end of a complete
            // download; without one it stopped early, and ending normally
            // would pass a truncated download off as whole.
            None => match summary.try_recv() {
                Ok(stats) => {
                    trail.outcome = Outcome::Complete;
                    trail.note("skipped-entries", stats.skipped);
                    (None, true)
                }
                Err(_) => {
                    trail.outcome = Outcome::Aborted("the download stopped early".into());
                    (
                        Some(Err(std::io::Error::other("the download stopped early"))),
                        true,
                    )
                }
            },
        };
        done = ended;
        Poll::Ready(piece)
    });
    Ok((headers, axum::body::Body::from_stream(body)).into_response())
}

fn download_headers(info: &FileInfo, format: Format) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let name = info.name.as_deref().unwrap_or("root");
    let (content_type, file_name) = match format {
        Format::Raw => ("application/octet-stream", name.to_string()),
        Format::Tar => ("application/x-tar", format!("{name}.tar")),
    };
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if format == Format::Raw {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(info.size));
    }
    if let Ok(value) = HeaderValue::from_str(&content_disposition(&file_name)) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    if let Ok(time) = k8s_openapi::jiff::Timestamp::from_second(info.mtime) {
        let printer = k8s_openapi::jiff::fmt::rfc2822::DateTimePrinter::new();
        if let Ok(text) = printer.timestamp_to_rfc9110_string(&time)
            && let Ok(value) = HeaderValue::from_str(&text)
        {
            headers.insert(header::LAST_MODIFIED, value);
        }
    }
    let mode = format!("{:04o}", info.mode);
    for (name, value) in [
        ("nsdebug-file-mode", mode),
        ("nsdebug-file-uid", info.uid.to_string()),
        ("nsdebug-file-gid", info.gid.to_string()),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    headers
}

/// `attachment; filename="..."` (RFC 6266), with an RFC 8187 `filename*`
/// when the name is not plain ASCII.
fn content_disposition(name: &str) -> String {
    let plain: String = name
        .chars()
        .map(|c| match c {
            ' '..='~' if c != '"' && c != '\\' => c,
            _ => '_',
        })
        .collect();
    let mut value = format!("attachment; filename=\"{plain}\"");
    if plain != name {
        value.push_str("; filename*=UTF-8''");
        for byte in name.bytes() {
            if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
                value.push(char::from(byte));
            } else {
                value.push_str(&format!("%{byte:02X}"));
            }
        }
    }
    value
}

async fn upload(
    state: AppState,
    user: User,
    info: RequestInfo,
    wanted: TargetRef,
    q: FilesQuery,
    request: Request,
) -> Result<Response, ApiError> {
    let mode = q.mode()?;
    if q.format.is_some() {
        return Err(ApiError::bad_request(
            "format applies to downloads; an upload is one file's bytes",
        ));
    }
    let limit = state.limits.max_file_bytes;
    let session = start(&state, &user, &info, &wanted, "write", &q.path).await?;
    let declared = content_length(request.headers());
    if declared.is_some_and(|length| length > limit) {
        let err = ApiError::from(FileError::UploadTooLarge {
            path: q.path.clone(),
            limit,
        });
        return Err(super::admission::refuse(session, err));
    }
    let path = q.path.clone();
    let body = request
        .with_limited_body()
        .into_body()
        .into_data_stream()
        .map(move |chunk: Result<Bytes, axum::Error>| {
            chunk.map_err(|err| body_error(err, &path, limit))
        });
    let proc_root = state.inventory.proc_root().clone();
    let (target, mut trail) = session.start(200);
    let result = files::upload(proc_root, target.process, &q.path, mode, limit, body).await;
    match result {
        Ok(written) => {
            let code = if written.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            trail.bytes_in = written.size;
            trail.outcome = Outcome::Complete;
            trail.answered(code.as_u16());
            drop(trail);
            let answer = json!({
                "path": written.path,
                "size": written.size,
                "created": written.created,
                "mode": format!("{:04o}", written.mode),
                "uid": written.uid,
                "gid": written.gid,
            });
            Ok((code, Json(answer)).into_response())
        }
        Err(err) => {
            let err = ApiError::from(err);
            trail.failed(err.code().as_u16(), err.message());
            Err(err)
        }
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// A request body that failed: over the route's limit, or cut off.
fn body_error(err: axum::Error, path: &str, limit: u64) -> FileError {
    let inner = err.into_inner();
    if inner.is::<http_body_util::LengthLimitError>() {
        FileError::UploadTooLarge {
            path: path.into(),
            limit,
        }
    } else {
        FileError::UploadCut {
            path: path.into(),
            reason: crate::error_chain(&*inner),
        }
    }
}

/// `S_ISUID | S_ISGID` (`inode(7)`).
const SET_ID_BITS: u32 = 0o6000;

impl From<FileError> for ApiError {
    fn from(err: FileError) -> Self {
        let message = err.to_string();
        match err {
            FileError::TargetGone { .. } => Self::conflict(message),
            FileError::NotFound { .. } | FileError::ParentNotFound { .. } => {
                Self::not_found(message)
            }
            FileError::BadPath { .. }
            | FileError::NotADirectory { .. }
            | FileError::IsDirectory { .. }
            | FileError::WriteToDirectory { .. }
            | FileError::NotRegularFile { .. }
            | FileError::SymlinkLoop { .. }
            | FileError::TooDeep { .. }
            | FileError::UploadCut { .. } => Self::bad_request(message),
            FileError::PermissionDenied { .. } => Self::forbidden(message),
            FileError::MountPoint { .. } | FileError::ReadOnly { .. } => Self::conflict(message),
            FileError::NoSpace { .. } => Self::insufficient_storage(message),
            FileError::FileTooLarge { .. }
            | FileError::ArchiveTooLarge { .. }
            | FileError::UploadTooLarge { .. } => Self::too_large(message),
            // About the container's file, not the agent: the cause is said.
            FileError::Io { .. } | FileError::Shrank { .. } | FileError::ClientGone => {
                Self::internal_with(crate::error_chain(&err))
            }
            FileError::OpenRoot { .. }
            | FileError::Credentials { .. }
            | FileError::BecomeUser { .. }
            | FileError::BecomeCapabilities(_)
            | FileError::Thread(_) => Self::internal(&err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_names() {
        assert_eq!(
            content_disposition("os-release"),
            "attachment; filename=\"os-release\""
        );
        assert_eq!(
            content_disposition("é \"x\".txt"),
            "attachment; filename=\"_ _x_.txt\"; filename*=UTF-8''%C3%A9%20%22x%22.txt"
        );
    }

    #[test]
    fn modes_and_formats() {
        let q = |mode: &str, format: &str| FilesQuery {
            mode: Some(mode.into()),
            format: Some(format.into()),
            ..Default::default()
        };
        assert_eq!(q("0755", "tar").mode().unwrap(), Some(0o755));
        assert_eq!(q("1777", "tar").mode().unwrap(), Some(0o1777));
        for set_id in ["4755", "2755", "6755", "04711"] {
            let err = q(set_id, "").mode().unwrap_err();
            assert!(err.message().contains("setuid"), "{set_id}");
        }
        assert!(q("0999", "").mode().is_err());
        assert!(q("17777", "").mode().is_err());
        assert_eq!(q("644", "").format().unwrap(), Format::Raw);
        assert!(q("644", "zip").format().is_err());
    }
}
