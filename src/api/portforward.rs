//! `kubectl port-forward` against the agent: `…/pods/{pod}/portforward` in
//! the three forms clients use ([`crate::portforward`] carries them):
//!
//! | request | form |
//! |---|---|
//! | `GET`, WebSocket offering `SPDY/3.1+portforward.k8s.io` (kubectl 1.31+) | SPDY/3.1 inside binary WebSocket messages |
//! | `POST`, `Upgrade: SPDY/3.1` (kubectl's fallback, `KUBECTL_PORT_FORWARD_WEBSOCKETS=false`) | SPDY/3.1 on the upgraded connection |
//! | `GET ?ports=…`, WebSocket `v4.channel.k8s.io` (the Python client, the plugin) | one connection per port on channels `2i`/`2i+1` |
//!
//! All three are `create pods/portforward` on the pod, checked before the
//! upgrade (a refusal is the Status kubectl prints), and a session: a slot
//! of the session limits, audited with its ports, connections and bytes,
//! ended by the agent's shutdown. A `hostNetwork` pod's ports are the
//! node's, so forwarding to one also needs the privileged right.

use axum::Router;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};

use super::admission::{self, Right, SessionAsk};
use super::{ApiError, AppState, RequestInfo};
use crate::auth::User;
use crate::portforward::tunnel::Ended;
use crate::portforward::{Context, Counters, channels, dialer::Dialer, tunnel};
use crate::resolve::TargetRef;
use crate::session::{Outcome, Session, SessionTrail};

pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/api/v1/namespaces/{namespace}/pods/{pod}/portforward",
        get(websocket).post(spdy),
    )
}

/// The WebSocket subprotocol of kubectl's SPDY tunnel.
const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// The channel form's subprotocols; a client offering none gets binary v4.
const CHANNEL_PROTOCOLS: &[&str] = &["v4.channel.k8s.io", "v4.base64.channel.k8s.io"];
/// kubectl's largest WebSocket message is a 32 KiB DATA frame; the Python
/// client's a 1 MiB chunk.
const MAX_MESSAGE: usize = 2 << 20;

/// The subprotocols a WebSocket request offers.
fn offered(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// Ports the base64 form carries: its channel is one ASCII digit
/// (`'0' + channel`), so channels 0-9, five ports.
const MAX_BASE64_PORTS: usize = 5;

/// `?ports=80&ports=8080` or `?ports=80,8080`, as the kubelet reads them,
/// for a client offering the `offered` subprotocols.
fn parse_ports(query: &str, offered: &[String]) -> Result<Vec<u16>, ApiError> {
    let mut ports = Vec::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if key != "ports" {
            continue;
        }
        for port in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match port.parse::<u16>() {
                Ok(port) if port != 0 => ports.push(port),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "invalid port \"{port}\": ports must be 1-65535"
                    )));
                }
            }
        }
    }
    if ports.is_empty() {
        return Err(ApiError::bad_request(
            "query parameter \"ports\" is required",
        ));
    }
    if ports.len() > channels::MAX_PORTS {
        return Err(ApiError::bad_request(format!(
            "at most {} ports may be forwarded over one WebSocket",
            channels::MAX_PORTS
        )));
    }
    // The protocol the upgrade will select: the first of ours offered.
    let selected = CHANNEL_PROTOCOLS
        .iter()
        .find(|ours| offered.iter().any(|p| p == *ours));
    if selected.is_some_and(|p| p.contains("base64")) && ports.len() > MAX_BASE64_PORTS {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_BASE64_PORTS} ports may be forwarded over v4.base64.channel.k8s.io"
        )));
    }
    Ok(ports)
}

/// The container whose process the session's dialer joins: the pod's
/// network is every container's (the kubelet enters the sandbox; the agent
/// needs a running process of the pod), so the pod's default container when
/// it runs, else its first running one. `None` leaves the choice (and the
/// error when there is none) to the resolver. Asked after the access review.
async fn network_container(state: &AppState, namespace: &str, name: &str) -> Option<String> {
    use crate::inventory::ContainerState;
    use crate::resolve::{DEFAULT_CONTAINER_ANNOTATION, find_pod_in};
    let mut snapshot = state.inventory.cached();
    if find_pod_in(&snapshot.pods, namespace, name).is_none() {
        snapshot = state.inventory.refresh().await.ok()?;
    }
    let pod = find_pod_in(&snapshot.pods, namespace, name)?;
    let default = pod.annotations.get(DEFAULT_CONTAINER_ANNOTATION);
    let mut running = pod
        .latest_containers()
        .filter(|c| c.state == ContainerState::Running);
    let first = running.next()?;
    let chosen = std::iter::once(first)
        .chain(running)
        .find(|c| Some(&c.name) == default)
        .unwrap_or(first);
    Some(chosen.name.clone())
}

/// Steps 3-5 after the access review: the session, the privileged right
/// for a `hostNetwork` pod, and the dialer in the pod's network.
async fn open(
    state: &AppState,
    user: &User,
    (namespace, pod): (&str, &str),
    admission: admission::Admission,
    form: &'static str,
) -> Result<(Session, Context), ApiError> {
    let admission = match network_container(state, namespace, pod).await {
        Some(container) => admission.in_container(container),
        None => admission,
    };
    let mut session = admission
        .start_session(
            state,
            SessionAsk {
                kind: "portforward",
                profile: "container",
                note: &|record| {
                    record.note("portforward", form);
                },
            },
        )
        .await?;
    let target = session.target.clone();
    let reach = match admission::target_reach(state, &target).await {
        Ok(reach) => reach,
        Err(err) => return Err(admission::refuse(session, err)),
    };
    if reach.host_network {
        let why = format!(
            "pod {}/{} uses the node's network namespace (hostNetwork): its ports are the node's",
            target.namespace, target.pod
        );
        if let Err(err) = admission::authorize_privileged_for(state, user, &why).await {
            return Err(admission::refuse(session, err));
        }
    }
    let net = target.namespaces.get("net").copied();
    let dialer = match Dialer::start(target.container_process(), net).await {
        Ok(dialer) => dialer,
        Err(err) if err.is_target_gone() => {
            let err = ApiError::conflict(format!(
                "pod {}/{} stopped while its network was being entered",
                target.namespace, target.pod
            ));
            return Err(admission::refuse(session, err));
        }
        Err(err) => return Err(admission::refuse(session, ApiError::internal(&err))),
    };
    session.noting_target();
    let ctx = Context {
        dialer: std::sync::Arc::new(dialer),
        counters: std::sync::Arc::new(Counters::default()),
        pod: format!("{}/{}", target.namespace, target.pod),
        uid: target.pod_uid.clone(),
    };
    Ok((session, ctx))
}

/// What ends a session besides its client: shutdown, the longest session,
/// the idle timeout (nothing open, nothing moving).
async fn stop(state: AppState, counters: std::sync::Arc<Counters>) -> Ended {
    tokio::select! {
        () = state.draining.cancelled() => Ended::Shutdown,
        () = tokio::time::sleep(state.limits.max_session_duration) => Ended::MaxDuration,
        () = crate::portforward::idle(&counters, state.limits.session_idle_timeout) => Ended::Idle,
    }
}

/// The audit trail's end of a session.
fn finish(mut trail: SessionTrail, ctx: &Context, ended: Ended) {
    use std::sync::atomic::Ordering::Relaxed;
    let counters = &ctx.counters;
    trail.bytes_in = counters.bytes_in.load(Relaxed);
    trail.bytes_out = counters.bytes_out.load(Relaxed);
    trail
        .note("ports", counters.port_list())
        .note("connections", counters.connections.load(Relaxed))
        .note("failed-connections", counters.failed.load(Relaxed));
    trail.outcome = match ended {
        Ended::ClientClosed | Ended::Done => Outcome::Complete,
        Ended::Protocol(why) => Outcome::Aborted(why),
        Ended::Shutdown => Outcome::AgentShutdown,
        Ended::MaxDuration => Outcome::MaxDuration,
        Ended::Idle => Outcome::IdleTimeout,
    };
}

/// `GET`: a WebSocket, the SPDY tunnel or the channel form by the
/// subprotocol offered.
async fn websocket(
    State(state): State<AppState>,
    axum::Extension(user): axum::Extension<User>,
    info: RequestInfo,
    Path((namespace, pod)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let offered = offered(&headers);
    let tunnel = offered.iter().any(|p| p.starts_with("SPDY/3.1+"));
    if tunnel && !offered.iter().any(|p| p == TUNNEL_PROTOCOL) {
        return Err(ApiError::bad_request(format!(
            "unable to upgrade: the agent tunnels only {TUNNEL_PROTOCOL}"
        )));
    }
    let ports = if tunnel {
        Vec::new()
    } else {
        parse_ports(query.as_deref().unwrap_or(""), &offered)?
    };
    let wanted = TargetRef::Pod {
        namespace: namespace.clone(),
        pod: pod.clone(),
        container: None,
    };
    let admission = admission::admit(&state, &user, &info, wanted, Right::PortForward).await?;
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(err) => {
            let err = ApiError::bad_request(format!(
                "port-forward needs a WebSocket or SPDY/3.1 upgrade: {}",
                err.body_text()
            ));
            return Err(admission.refuse(&state, err));
        }
    };
    let form = if tunnel {
        "websocket-spdy"
    } else {
        "websocket-v4"
    };
    let (session, ctx) = open(&state, &user, (&namespace, &pod), admission, form).await?;
    let (_target, mut trail) = session.into_trail(101);
    let upgrade = upgrade
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE);
    if tunnel {
        let upgrade = upgrade.protocols([TUNNEL_PROTOCOL]);
        return Ok(upgrade.on_upgrade(move |socket| async move {
            trail.started();
            let (sink, stream) = socket.split();
            let sink = sink
                .with(|frame: Bytes| async move { Ok::<_, axum::Error>(Message::Binary(frame)) });
            // A byte stream of the binary messages; a close or a text
            // message ends it (client-go's TunnelingConnection).
            let incoming = stream
                .take_while(|message| {
                    std::future::ready(matches!(
                        message,
                        Ok(Message::Binary(_) | Message::Ping(_) | Message::Pong(_))
                    ))
                })
                .filter_map(|message| {
                    std::future::ready(match message {
                        Ok(Message::Binary(bytes)) => Some(Ok::<_, axum::Error>(bytes)),
                        _ => None,
                    })
                });
            let ended = tunnel::serve(
                Box::pin(incoming),
                Box::pin(sink),
                ctx.clone(),
                stop(state, ctx.counters.clone()),
            )
            .await;
            finish(trail, &ctx, ended);
        }));
    }
    let upgrade = upgrade.protocols(CHANNEL_PROTOCOLS.iter().copied());
    let framing = super::exec::Framing::of(
        upgrade
            .selected_protocol()
            .and_then(|p| p.to_str().ok())
            .unwrap_or("v4.channel.k8s.io"),
    );
    Ok(upgrade.on_upgrade(move |socket| async move {
        trail.started();
        let (sink, stream) = socket.split();
        let sink = sink.with(move |(channel, data): (u8, Bytes)| async move {
            Ok::<_, axum::Error>(framing.frame(channel, &data))
        });
        let incoming = stream
            .take_while(|message| {
                std::future::ready(!matches!(message, Ok(Message::Close(_)) | Err(_)))
            })
            .filter_map(move |message| {
                std::future::ready(
                    message
                        .ok()
                        .and_then(|m| framing.parse(m))
                        .map(|(channel, data)| (channel, Bytes::from(data))),
                )
            });
        let ended = channels::serve(
            Box::pin(incoming),
            Box::pin(sink),
            ports,
            ctx.clone(),
            stop(state, ctx.counters.clone()),
        )
        .await;
        finish(trail, &ctx, ended);
    }))
}

/// `POST` with `Upgrade: SPDY/3.1`: kubectl's fallback, raw SPDY on the
/// upgraded connection.
async fn spdy(
    State(state): State<AppState>,
    axum::Extension(user): axum::Extension<User>,
    info: RequestInfo,
    Path((namespace, pod)): Path<(String, String)>,
    mut request: Request,
) -> Result<Response, ApiError> {
    let wanted = TargetRef::Pod {
        namespace: namespace.clone(),
        pod: pod.clone(),
        container: None,
    };
    let admission = admission::admit(&state, &user, &info, wanted, Right::PortForward).await?;
    let asks_spdy = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("SPDY/3.1"));
    let on_upgrade = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>();
    let (true, Some(on_upgrade)) = (asks_spdy, on_upgrade) else {
        let err = ApiError::bad_request(
            "port-forward needs a WebSocket or SPDY/3.1 upgrade (Upgrade: SPDY/3.1, X-Stream-Protocol-Version: portforward.k8s.io)",
        );
        return Err(admission.refuse(&state, err));
    };
    let (session, ctx) = open(&state, &user, (&namespace, &pod), admission, "spdy").await?;
    let (_target, mut trail) = session.into_trail(101);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(err) => {
                trail.failed(400, &format!("the SPDY upgrade failed: {err}"));
                return;
            }
        };
        trail.started();
        let (read, write) = tokio::io::split(hyper_util::rt::TokioIo::new(upgraded));
        let incoming = tokio_util::io::ReaderStream::with_capacity(read, 64 * 1024);
        let sink = futures::sink::unfold(write, |mut write, frame: Bytes| async move {
            tokio::io::AsyncWriteExt::write_all(&mut write, &frame).await?;
            Ok::<_, std::io::Error>(write)
        });
        let ended = tunnel::serve(
            incoming,
            Box::pin(sink),
            ctx.clone(),
            stop(state, ctx.counters.clone()),
        )
        .await;
        finish(trail, &ctx, ended);
    });
    Ok((
        StatusCode::SWITCHING_PROTOCOLS,
        [
            (header::CONNECTION, HeaderValue::from_static("Upgrade")),
            (header::UPGRADE, HeaderValue::from_static("SPDY/3.1")),
            (
                header::HeaderName::from_static("x-stream-protocol-version"),
                HeaderValue::from_static("portforward.k8s.io"),
            ),
        ],
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The review's overflow: a base64 channel is one digit, `'0' + 208`
    /// overflowed a u8; more than five ports are refused before any upgrade.
    #[test]
    fn the_base64_form_carries_at_most_five_ports() {
        let base64 = ["v4.base64.channel.k8s.io".to_string()];
        let six = "ports=1,2,3,4,5,6";
        assert_eq!(parse_ports("ports=1,2,3,4,5", &base64).unwrap().len(), 5);
        let refused = parse_ports(six, &base64).unwrap_err();
        assert_eq!(refused.code(), StatusCode::BAD_REQUEST);
        assert!(
            refused.message().contains("at most 5 ports"),
            "{}",
            refused.message()
        );
        // A client offering the binary form too gets it, and its 128 ports.
        let both = ["v4.channel.k8s.io".to_string(), base64[0].clone()];
        assert_eq!(parse_ports(six, &both).unwrap().len(), 6);
    }

    #[test]
    fn ports_are_read_as_the_kubelet_reads_them() {
        assert_eq!(
            parse_ports("ports=80&ports=8080,9000", &[]).unwrap(),
            [80, 8080, 9000]
        );
        for bad in ["", "ports=", "ports=0", "ports=70000", "ports=http"] {
            assert_eq!(
                parse_ports(bad, &[]).unwrap_err().code(),
                StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
        assert!(
            parse_ports("", &[])
                .unwrap_err()
                .message()
                .contains("query parameter \"ports\" is required")
        );
    }
}
