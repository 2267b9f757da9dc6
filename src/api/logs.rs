//! `GET /api/v1/namespaces/{namespace}/pods/{pod}/log`: a container's log as
//! the API server and the kubelet serve it to `kubectl logs`, read from the
//! runtime's log file by [`crate::logs`].
//!
//! | query | meaning |
//! |---|---|
//! | `container` | required when the pod has several (400 as the API server words it) |
//! | `previous` | the last exited instance in the same sandbox (400 without one) |
//! | `follow` | stream until the container stops (drained) or the client goes |
//! | `sinceSeconds`, `sinceTime` | skip older records (one of the two) |
//! | `tailLines` | the last N raw records of the file |
//! | `timestamps` | prefix lines with the record's RFC3339Nano time, nine digits |
//! | `limitBytes` | stop after N bytes of output |
//!
//! Invalid values are the API server's 422; errors before the body starts
//! are the kubelet's 400s. Authorized as `get pods/log` on the pod; every
//! read is audited and holds a session slot while it runs (a follower is a
//! session that may last hours).

use std::convert::Infallible;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use super::admission::{Right, SessionAsk, admit};
use super::query::Flag;
use super::target::Wanted;
use super::{ApiError, AppState, QueryOf, RequestInfo, query};
use crate::auth::User;
use crate::inventory::{Container, ContainerState, Pod};
use crate::logs::{End, Followed, Message, Options};
use crate::resolve::TargetRef;
use crate::session::Outcome;

pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/api/v1/namespaces/{namespace}/pods/{pod}/log",
        get(pod_log),
    )
}

/// The query of `pods/log` (`v1.PodLogOptions`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct LogQuery {
    /// Read by [`Wanted`].
    #[serde(rename = "container")]
    _container: Option<String>,
    #[serde(default)]
    follow: Flag,
    #[serde(default)]
    previous: Flag,
    since_seconds: Option<i64>,
    since_time: Option<String>,
    tail_lines: Option<i64>,
    #[serde(default)]
    timestamps: Flag,
    limit_bytes: Option<i64>,
    /// The API server's option for its connection to the kubelet; there
    /// is none here.
    #[serde(rename = "insecureSkipTLSVerifyBackend")]
    _insecure_skip_tls_verify_backend: Option<String>,
}

impl LogQuery {
    /// The read's options, validated as the API server does
    /// (`ValidatePodLogOptions`: 422), for pod `pod`, at `now_unix_nanos`.
    pub(super) fn options(&self, pod: &str, now_unix_nanos: i128) -> Result<Options, ApiError> {
        let mut problems = Vec::new();
        if let Some(tail) = self.tail_lines
            && tail < 0
        {
            problems.push(format!(
                "tailLines: Invalid value: {tail}: must be greater than or equal to 0"
            ));
        }
        if let Some(limit) = self.limit_bytes
            && limit < 1
        {
            problems.push(format!(
                "limitBytes: Invalid value: {limit}: must be greater than 0"
            ));
        }
        let since_time = self.since_time.as_deref().filter(|text| !text.is_empty());
        match (self.since_seconds, since_time) {
            (Some(_), Some(_)) => problems.push(
                ": Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified".into(),
            ),
            (Some(seconds), None) if seconds < 1 => problems.push(format!(
                "sinceSeconds: Invalid value: {seconds}: must be greater than 0"
            )),
            _ => {}
        }
        match problems.len() {
            0 => {}
            1 => {
                return Err(ApiError::invalid(
                    "PodLogOptions",
                    pod,
                    format!("PodLogOptions \"{pod}\" is invalid: {}", problems[0]),
                ));
            }
            _ => {
                return Err(ApiError::invalid(
                    "PodLogOptions",
                    pod,
                    format!(
                        "PodLogOptions \"{pod}\" is invalid: [{}]",
                        problems.join(", ")
                    ),
                ));
            }
        }
        let since_unix_nanos = match (self.since_seconds, since_time) {
            (Some(seconds), _) => Some(now_unix_nanos - i128::from(seconds) * 1_000_000_000),
            (None, Some(text)) => Some(
                crate::logs::format::Timestamp::parse(text.as_bytes())
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "sinceTime \"{text}\" is not an RFC 3339 time such as 2026-12-03T18:00:00Z"
                        ))
                    })?
                    .unix_nanos,
            ),
            (None, None) => None,
        };
        Ok(Options {
            follow: self.follow.0,
            tail: self.tail_lines.map(|n| n as u64),
            since_unix_nanos,
            timestamps: self.timestamps.0,
            limit_bytes: self.limit_bytes.map(|n| n as u64),
        })
    }
}

async fn pod_log(
    State(state): State<AppState>,
    axum::Extension(user): axum::Extension<User>,
    info: RequestInfo,
    Wanted(wanted): Wanted,
    q: QueryOf<LogQuery>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let previous = q.previous.0;
    let follow = q.follow.0;
    let admission = admit(&state, &user, &info, wanted, Right::Logs).await?;
    let ask = SessionAsk {
        kind: "logs",
        profile: "container",
        note: &|record| {
            record.note("follow", follow).note("previous", previous);
        },
    };
    let find = async |wanted: &TargetRef| {
        let TargetRef::Pod {
            namespace,
            pod,
            container,
        } = wanted
        else {
            return Err(ApiError::internal_with("a pod's log route named no pod"));
        };
        let options = q.options(pod, now_unix_nanos())?;
        let snapshot = state.inventory.refresh().await?;
        let found =
            crate::resolve::find_pod_in(&snapshot.pods, namespace, pod).ok_or_else(|| {
                ApiError::object_not_found("pods", pod, format!("pods \"{pod}\" not found"))
            })?;
        let chosen = choose(found, container.as_deref(), previous)?.clone();
        let followed = Followed {
            cri: state.inventory.cri().clone(),
            container_id: chosen.id.clone(),
        };
        let reading = crate::logs::start(chosen.log_path.clone().into(), options, followed)
            .await
            .map_err(|err| {
                ApiError::bad_request(format!(
                    "failed to open log file \"{}\": {}",
                    chosen.log_path, err.source
                ))
            })?;
        Ok((chosen, reading))
    };
    let ((chosen, reading), mut trail) = admission.start_read(&state, ask, find).await?;
    trail
        .note("container", &chosen.name)
        .note("container-id", &chosen.id)
        .note("log-path", &chosen.log_path);
    trail.started();
    // The trail lives as long as the body: dropped when the read ends or
    // the client goes, it writes the read's `ResponseComplete`.
    let body = futures::stream::unfold(Some((reading, trail)), |state| async move {
        let (mut reading, mut trail) = state?;
        match reading.recv().await? {
            Message::Data(bytes) => {
                trail.bytes_out += bytes.len() as u64;
                Some((Ok::<_, Infallible>(bytes), Some((reading, trail))))
            }
            Message::End(end) => {
                trail.outcome = outcome(end);
                None
            }
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "text/plain")],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}

/// How a read's end reads in its audit trail.
fn outcome(end: End) -> Outcome {
    match end {
        End::Complete => Outcome::Complete,
        End::ClientGone => Outcome::ClientDisconnected,
        End::Failed(_) => Outcome::Failed(end.describe()),
        End::ContainerStopped | End::LimitReached => Outcome::Stopped(end.describe()),
    }
}

fn now_unix_nanos() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// The container instance whose log is read, chosen as the API server and
/// the kubelet do, with their messages: `name` is required when the pod has
/// several containers; `previous` is the instance before the newest one of
/// that name, which must have exited.
fn choose<'a>(pod: &'a Pod, name: Option<&str>, previous: bool) -> Result<&'a Container, ApiError> {
    let names: Vec<&str> = pod.latest_containers().map(|c| c.name.as_str()).collect();
    let name = match name {
        Some(name) => name,
        None if names.len() == 1 => names[0],
        None => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {}, choose one of: [{}]",
                pod.name,
                names.join(" ")
            )));
        }
    };
    let Some(latest) = pod.latest_containers().find(|c| c.name == name) else {
        return Err(ApiError::bad_request(format!(
            "container {name} is not valid for pod {}",
            pod.name
        )));
    };
    let chosen = if previous {
        pod.previous_instance(name)
            .filter(|c| c.state == ContainerState::Exited)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "previous terminated container \"{name}\" in pod \"{}\" not found",
                    pod.name
                ))
            })?
    } else {
        latest
    };
    if !previous && chosen.state == ContainerState::Created {
        return Err(ApiError::bad_request(format!(
            "container \"{name}\" in pod \"{}\" is waiting to start: ContainerCreating",
            pod.name
        )));
    }
    if chosen.log_path.is_empty() {
        return Err(ApiError::bad_request(format!(
            "container \"{name}\" in pod \"{}\" is not available",
            pod.name
        )));
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn container(name: &str, attempt: u32, state: ContainerState) -> Container {
        Container {
            id: format!("{name}-{attempt}"),
            name: name.into(),
            attempt,
            image: "img".into(),
            image_ref: String::new(),
            state,
            created_at: 0,
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            restart_count: attempt as i32,
            labels: HashMap::new(),
            annotations: HashMap::new(),
            process: None,
            runtime_spec: crate::oci::RuntimeSpec::NotReported,
            log_path: format!("/logs/{name}/{attempt}.log"),
        }
    }

    fn pod(containers: Vec<Container>) -> Pod {
        Pod {
            sandbox_id: "sb".into(),
            namespace: "shop".into(),
            name: "web".into(),
            uid: "uid".into(),
            attempt: 0,
            ready: true,
            created_at: 0,
            labels: HashMap::new(),
            annotations: HashMap::new(),
            ips: Vec::new(),
            containers,
        }
    }

    fn chosen(pod: &Pod, name: Option<&str>, previous: bool) -> String {
        match choose(pod, name, previous) {
            Ok(c) => c.id.clone(),
            Err(err) => format!("{} {}", err.code().as_u16(), err.message()),
        }
    }

    #[test]
    fn the_container_is_chosen_with_the_api_servers_messages() {
        let one = pod(vec![container("app", 0, ContainerState::Running)]);
        assert_eq!(chosen(&one, None, false), "app-0");
        let two = pod(vec![
            container("app", 0, ContainerState::Running),
            container("side", 0, ContainerState::Running),
        ]);
        assert_eq!(
            chosen(&two, None, false),
            "400 a container name must be specified for pod web, choose one of: [app side]"
        );
        assert_eq!(chosen(&two, Some("side"), false), "side-0");
        assert_eq!(
            chosen(&two, Some("nope"), false),
            "400 container nope is not valid for pod web"
        );
    }

    #[test]
    fn previous_is_the_exited_instance_before_the_newest() {
        let restarted = pod(vec![
            container("app", 0, ContainerState::Exited),
            container("app", 1, ContainerState::Exited),
            container("app", 2, ContainerState::Running),
        ]);
        assert_eq!(chosen(&restarted, Some("app"), true), "app-1");
        assert_eq!(chosen(&restarted, Some("app"), false), "app-2");
        let fresh = pod(vec![container("app", 0, ContainerState::Running)]);
        assert_eq!(
            chosen(&fresh, Some("app"), true),
            "400 previous terminated container \"app\" in pod \"web\" not found"
        );
        let waiting = pod(vec![container("app", 0, ContainerState::Created)]);
        assert_eq!(
            chosen(&waiting, None, false),
            "400 container \"app\" in pod \"web\" is waiting to start: ContainerCreating"
        );
    }

    fn options(query: &str) -> Result<Options, String> {
        let uri: axum::http::Uri = format!("/x?{query}").parse().unwrap();
        let q = axum::extract::Query::<LogQuery>::try_from_uri(&uri)
            .map_err(|e| e.body_text())?
            .0;
        q.options("web", 10_000_000_000_000)
            .map_err(|err| format!("{} {}", err.code().as_u16(), err.message()))
    }

    #[test]
    fn options_are_read_as_kubectl_sends_them() {
        let read = options(
            "container=app&follow=true&tailLines=5&timestamps=true&limitBytes=100&sinceSeconds=600",
        )
        .unwrap();
        assert_eq!(
            read,
            Options {
                follow: true,
                tail: Some(5),
                since_unix_nanos: Some(10_000_000_000_000 - 600_000_000_000),
                timestamps: true,
                limit_bytes: Some(100),
            }
        );
        let since = options("sinceTime=2026-12-03T18%3A00%3A00Z").unwrap();
        assert_eq!(since.since_unix_nanos, Some(1_796_320_800 * 1_000_000_000));
    }

    #[test]
    fn invalid_options_are_the_api_servers_422() {
        assert_eq!(
            options("tailLines=-1").unwrap_err(),
            "422 PodLogOptions \"web\" is invalid: tailLines: Invalid value: -1: must be greater than or equal to 0"
        );
        assert_eq!(
            options("sinceSeconds=0").unwrap_err(),
            "422 PodLogOptions \"web\" is invalid: sinceSeconds: Invalid value: 0: must be greater than 0"
        );
        assert_eq!(
            options("sinceSeconds=5&sinceTime=2026-12-03T18:00:00Z&limitBytes=0").unwrap_err(),
            "422 PodLogOptions \"web\" is invalid: [limitBytes: Invalid value: 0: must be greater than 0, : Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified]"
        );
        assert!(
            options("sinceTime=yesterday")
                .unwrap_err()
                .starts_with("400 ")
        );
        assert!(options("tailLines=many").is_err());
    }
}
