//! Packet capture over HTTP: `GET .../capture` streams a pcap or pcapng file
//! of a pod's traffic, usable as `curl ... > trace.pcap` and as a download.
//!
//! A capture reveals whatever the pod sends and receives (tokens, cookies),
//! so it needs what `kubectl exec` needs (`create pods/exec`). It opens a raw
//! socket with the agent's rights, so it is what `kubectl exec` gives only
//! when the container could capture itself: its init has `CAP_NET_RAW` (in
//! its effective and bounding sets) and the pod has a network of its own.
//! A container without `CAP_NET_RAW`, or a `hostNetwork` pod (whose traffic
//! is the node's), also needs the privileged right (`create nodes/proxy` by
//! default). A capture is audited as a session (`ResponseStarted`, then `ResponseComplete` with the packets,
//! bytes and why it ended) and counts against the session limits. The
//! capture itself is `diag::capture`.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use serde::Deserialize;

use super::target::Wanted;
use super::{ApiError, AppState};
use crate::diag::capture::{self, CaptureError, CaptureSpec, Ending, Format, LiveCapture, Piece};
use crate::enter::Profile;
use crate::resolve::{Target, TargetRef};
use crate::session::{Outcome, SessionTrail};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/targets/{namespace}/{pod}/capture",
            get(capture_in_target),
        )
        .route("/v1/containers/{id}/capture", get(capture_in_target))
}

/// The query of `GET .../capture`: every value as text, parsed here so a bad
/// one gets a message saying what is allowed.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaptureQuery {
    /// Read by [`Wanted`](super::target::Wanted); named here so every other
    /// name stays checked.
    #[serde(rename = "container")]
    _container: Option<String>,
    filter: Option<String>,
    interface: Option<String>,
    snaplen: Option<String>,
    duration: Option<String>,
    packets: Option<String>,
    bytes: Option<String>,
    format: Option<String>,
}

type QueryResult = super::QueryOf<CaptureQuery>;

async fn capture_in_target(
    State(state): State<AppState>,
    axum::Extension(user): axum::Extension<crate::auth::User>,
    info: super::RequestInfo,
    Wanted(wanted): Wanted,
    q: QueryResult,
) -> Result<Response, ApiError> {
    let q = super::query(q)?;
    let spec = parse_spec(&q)?;
    capture(state, user, info, wanted, spec).await
}

/// The privileged right, when a capture of `target` would be more than the
/// container could capture itself (see the module comment).
async fn beyond_the_container(
    state: &AppState,
    user: &crate::auth::User,
    target: &Target,
) -> Result<(), ApiError> {
    let reach = super::admission::target_reach(state, target).await?;
    let why = if reach.host_network {
        format!(
            "pod {}/{} uses the node's network namespace (hostNetwork): a capture there sees the node's traffic",
            target.namespace, target.pod
        )
    } else if !reach.net_raw {
        format!(
            "container \"{}\" of pod {}/{} has no CAP_NET_RAW (in its effective and bounding sets): it could not capture packets itself",
            target.container, target.namespace, target.pod
        )
    } else {
        return Ok(());
    };
    super::admission::authorize_privileged_for(state, user, &why).await
}

/// A query value that is there and not blank.
fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// The capture the query asks for, with the defaults filled in, or a 400.
fn parse_spec(q: &CaptureQuery) -> Result<CaptureSpec, ApiError> {
    let mut spec = CaptureSpec::default();
    let bad = |name: &str, what: &str, err: &dyn std::fmt::Display| {
        ApiError::bad_request(format!("{name}: not {what}: {err}"))
    };
    if let Some(interface) = given(&q.interface) {
        spec.interface = interface.to_string();
    }
    if let Some(filter) = &q.filter {
        spec.filter = filter.trim().to_string();
    }
    if let Some(text) = given(&q.snaplen) {
        let snaplen: u32 = text
            .parse()
            .map_err(|e| bad("snaplen", "a number of bytes", &e))?;
        // tcpdump's -s 0: whole packets.
        spec.snaplen = if snaplen == 0 {
            capture::MAX_SNAPLEN
        } else {
            snaplen
        };
    }
    if let Some(text) = given(&q.duration) {
        spec.duration = match text.parse::<u64>() {
            Ok(seconds) => Duration::from_secs(seconds),
            Err(_) => humantime::parse_duration(text)
                .map_err(|e| bad("duration", "a duration such as 30s or 2m", &e))?,
        };
    }
    if let Some(text) = given(&q.packets) {
        spec.packets = text
            .parse()
            .map_err(|e| bad("packets", "a number of packets", &e))?;
    }
    if let Some(text) = given(&q.bytes) {
        spec.bytes = text
            .parse::<bytesize::ByteSize>()
            .map_err(|e| bad("bytes", "a size such as 100MiB or 500KB", &e))?
            .as_u64();
    }
    if let Some(text) = given(&q.format) {
        spec.format = Format::parse(text).map_err(ApiError::bad_request)?;
    }
    spec.validate().map_err(ApiError::bad_request)?;
    Ok(spec)
}

async fn capture(
    state: AppState,
    user: crate::auth::User,
    info: super::RequestInfo,
    wanted: TargetRef,
    mut spec: CaptureSpec,
) -> Result<Response, ApiError> {
    let mut session = super::admission::admit(
        &state,
        &user,
        &info,
        wanted,
        super::admission::Right::Exec { privileged: false },
    )
    .await?
    .start_session(
        &state,
        super::admission::SessionAsk {
            kind: "capture",
            profile: "privileged",
            note: &|_| {},
        },
    )
    .await?;
    if let Err(err) = beyond_the_container(&state, &user, &session.target).await {
        return Err(super::admission::refuse(session, err));
    }
    let target = &session.target;
    spec.description = format!(
        "network namespace of pod {}/{} (container {})",
        target.namespace, target.pod, target.container
    );
    let process = target.container_process();
    session
        .noting_target()
        .note("namespaces", "net")
        .note("capture-filter", &spec.filter)
        .note("capture-interface", &spec.interface)
        .note("capture-format", spec.format.as_str())
        .note("capture-snaplen", spec.snaplen)
        .note(
            "capture-limits",
            format!(
                "{}, {} packets, {} bytes",
                humantime::format_duration(spec.duration),
                spec.packets,
                spec.bytes
            ),
        );
    let format = spec.format;
    let live = match capture::start(spec.clone(), process).await {
        Ok(live) => live,
        Err(err) => return Err(super::admission::refuse(session, capture_error(err))),
    };
    // A capture runs with the agent's own privileges (a raw socket), not a
    // command with the container's: the Event says so.
    let audit_id = session.id();
    let event = state.events.prepare(&crate::events::SessionStart {
        user: &user,
        target: &session.target,
        kind: "capture",
        audit_id: &audit_id,
        profile: Profile::Privileged,
        tty: false,
        what: format!(
            "packet capture on interface {} with filter {:?}",
            spec.interface, spec.filter
        ),
    });
    session.announcing(event);
    let (target, trail) = session.start(200);
    let disposition = format!(
        "attachment; filename=\"{}\"",
        file_name(&target, format, k8s_openapi::jiff::Timestamp::now())
    );
    let mut response = axum::body::Body::from_stream(body(live, trail)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(response)
}

/// `NS-POD-TIME.pcap`: names are DNS labels, the time has no separators.
fn file_name(target: &Target, format: Format, now: k8s_openapi::jiff::Timestamp) -> String {
    let safe = |text: &str| -> String {
        text.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!(
        "{}-{}-{}.{}",
        safe(&target.namespace),
        safe(&target.pod),
        now.strftime("%Y%m%dT%H%M%SZ"),
        format.as_str()
    )
}

fn capture_error(err: CaptureError) -> ApiError {
    match err {
        CaptureError::Enter(inner) if inner.is_target_gone() => {
            ApiError::conflict(crate::error_chain(&inner))
        }
        CaptureError::Interface { .. } | CaptureError::Filter { .. } => {
            ApiError::bad_request(err.to_string())
        }
        // libpcap's reason (no CAP_NET_RAW, ...) is about the node, and
        // tells its operator what to fix.
        CaptureError::Open { .. } => {
            tracing::error!(error = %err, "opening a capture failed");
            ApiError::internal_with(err.to_string())
        }
        other => ApiError::internal(&other),
    }
}

/// What the session's audit trail learns from the stream as it goes.
struct CaptureTrail {
    trail: SessionTrail,
    packets: u64,
    dropped: u64,
}

impl CaptureTrail {
    fn sent(&mut self, data: &[u8], packets: u64) {
        self.trail.bytes_out += data.len() as u64;
        self.packets += packets;
    }

    fn ended(&mut self, ending: &Ending) {
        self.trail.outcome = Outcome::Stopped(ending.reason.to_string());
        self.dropped = ending.kernel_dropped + ending.client_dropped;
    }
}

impl Drop for CaptureTrail {
    // Before the trail's own drop writes `ResponseComplete`.
    fn drop(&mut self) {
        self.trail
            .note("capture-packets", self.packets)
            .note("capture-dropped", self.dropped);
    }
}

/// The file as the body: every chunk as it comes, then the tail. Dropped
/// (the client went away) it stops the capture and closes the trail with
/// `client disconnected`.
fn body(
    live: LiveCapture,
    trail: SessionTrail,
) -> impl futures::Stream<Item = Result<Bytes, Infallible>> {
    let trail = CaptureTrail {
        trail,
        packets: 0,
        dropped: 0,
    };
    futures::stream::unfold((live, trail), |(mut live, mut trail)| async move {
        loop {
            let chunk = match live.next().await? {
                Piece::Chunk(chunk) => chunk,
                Piece::End(ending) => {
                    trail.ended(&ending);
                    ending.tail
                }
            };
            if chunk.data.is_empty() {
                continue;
            }
            trail.sent(&chunk.data, chunk.packets);
            return Some((Ok(Bytes::from(chunk.data)), (live, trail)));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(query: &str) -> Result<CaptureSpec, String> {
        let q: CaptureQuery = serde_urlencoded_like(query);
        parse_spec(&q).map_err(|e| e.message().to_string())
    }

    fn serde_urlencoded_like(query: &str) -> CaptureQuery {
        let uri: axum::http::Uri = format!("/?{query}").parse().unwrap();
        axum::extract::Query::try_from_uri(&uri).unwrap().0
    }

    #[test]
    fn defaults_and_values() {
        let defaults = spec("").unwrap();
        assert_eq!(defaults.interface, "any");
        assert_eq!(defaults.duration, Duration::from_secs(30));
        assert_eq!(defaults.packets, 10_000);
        assert_eq!(defaults.bytes, 64 << 20);
        assert_eq!(defaults.snaplen, 262_144);
        assert_eq!(defaults.format, Format::Pcap);
        let given = spec(
            "filter=tcp+port+80&duration=2m&packets=5&bytes=100MiB&snaplen=96&format=pcapng&interface=eth0",
        )
        .unwrap();
        assert_eq!(given.filter, "tcp port 80");
        assert_eq!(given.duration, Duration::from_secs(120));
        assert_eq!(given.bytes, 100 << 20);
        assert_eq!((given.packets, given.snaplen), (5, 96));
        assert_eq!(given.format, Format::PcapNg);
        assert_eq!(given.interface, "eth0");
        assert_eq!(
            spec("duration=45").unwrap().duration,
            Duration::from_secs(45)
        );
        assert_eq!(spec("snaplen=0").unwrap().snaplen, 262_144);
    }

    #[test]
    fn bad_values_say_what_is_allowed() {
        assert!(
            spec("duration=forever")
                .unwrap_err()
                .starts_with("duration: not a duration")
        );
        assert_eq!(
            spec("duration=11m").unwrap_err(),
            "duration must be more than 0 and at most 10m"
        );
        assert!(spec("bytes=2GiB").unwrap_err().starts_with("bytes must be"));
        assert!(
            spec("packets=-1")
                .unwrap_err()
                .starts_with("packets: not a number")
        );
        assert!(spec("format=json").unwrap_err().contains("pcap or pcapng"));
        assert!(
            spec("interface=a/b")
                .unwrap_err()
                .contains("not an interface name")
        );
    }

    #[test]
    fn file_names() {
        let target = Target {
            namespace: "shop".into(),
            pod: "web".into(),
            pod_uid: String::new(),
            container: "web".into(),
            container_id: "abc".into(),
            state: crate::inventory::ContainerState::Running,
            pid: 1,
            process: crate::process::ProcessIdentity {
                pid: 1,
                start_time: 1,
            },
            namespaces: Default::default(),
            runtime_spec: Default::default(),
        };
        let now: k8s_openapi::jiff::Timestamp = "2026-11-29T03:02:12Z".parse().unwrap();
        assert_eq!(
            file_name(&target, Format::PcapNg, now),
            "shop-web-20261129T030212Z.pcapng"
        );
    }
}
