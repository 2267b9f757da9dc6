//! Probes from a pod's network: `GET .../diag/dns`, `.../diag/tcp` and
//! `.../diag/http` resolve a name with the pod's resolver, connect to a port,
//! or fetch a URL, from inside the pod's network namespace, and answer JSON.
//!
//! A probe reaches whatever the pod reaches (internal services, other pods,
//! the pod's own loopback), so it is authorized like `kubectl exec`
//! (`create pods/exec` on the pod), audited with what it probed, and counted
//! as a session. What the network answered (NXDOMAIN, a refused connection,
//! a TLS failure) is the probe's result: `200` with `error` and `errorKind`.
//! A bad parameter is a `400`, an unknown pod a `404`, a stopped container
//! a `409`.

use super::query::flag;
use super::target::Wanted;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use nsdebug_wire::diag::probe::ProbeResult;
use serde::Deserialize;

use super::{ApiError, AppState};
use crate::diag::dns::{self, DnsQuery, PodDns};
use crate::diag::probe::{self, Host, HttpTarget};
use crate::enter::netns::{self, NetnsError};
use crate::resolve::{Target, TargetRef};
use crate::session::Outcome;

/// The time a probe gets unless told, and the most it may ask for.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
pub(super) const MAX_TIMEOUT: Duration = Duration::from_secs(30);
/// Joining the namespace and reading the pod's resolver files, on top of a
/// probe's own timeout.
const SETUP_GRACE: Duration = Duration::from_secs(5);

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/targets/{namespace}/{pod}/diag/dns", get(dns))
        .route("/v1/containers/{id}/diag/dns", get(dns))
        .route("/v1/targets/{namespace}/{pod}/diag/tcp", get(tcp))
        .route("/v1/containers/{id}/diag/tcp", get(tcp))
        .route("/v1/targets/{namespace}/{pod}/diag/http", get(http))
        .route("/v1/containers/{id}/diag/http", get(http))
}

/// `.../diag/dns?name=&type=&server=&hosts=&timeout=`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DnsParams {
    /// Read by [`Wanted`](super::target::Wanted); named here so every other
    /// name stays checked.
    #[serde(rename = "container")]
    _container: Option<String>,
    name: Option<String>,
    #[serde(rename = "type")]
    record_type: Option<String>,
    /// `IP` or `IP:port`, instead of the pod's nameservers.
    server: Option<String>,
    /// Whether the pod's `/etc/hosts` answers A and AAAA first (default true).
    hosts: Option<String>,
    timeout: Option<String>,
}

/// `.../diag/tcp?host=&port=&timeout=`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TcpParams {
    /// Read by [`Wanted`](super::target::Wanted); named here so every other
    /// name stays checked.
    #[serde(rename = "container")]
    _container: Option<String>,
    host: Option<String>,
    port: Option<String>,
    timeout: Option<String>,
}

/// `.../diag/http?url=&timeout=&method=GET&insecure=`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HttpParams {
    /// Read by [`Wanted`](super::target::Wanted); named here so every other
    /// name stays checked.
    #[serde(rename = "container")]
    _container: Option<String>,
    url: Option<String>,
    timeout: Option<String>,
    method: Option<String>,
    /// Skip the verification of an HTTPS server's certificate.
    insecure: Option<String>,
}

/// One checked probe request.
#[derive(Debug)]
pub(super) enum Probe {
    Dns {
        query: DnsQuery,
        server: Option<SocketAddr>,
        use_hosts: bool,
    },
    Tcp {
        host_text: String,
        host: Host,
        port: u16,
    },
    Http {
        target: HttpTarget,
        insecure: bool,
    },
}

/// The answer: the probed target and the probe's result.
type ProbeAnswer = nsdebug_wire::diag::probe::ProbeAnswer<Target>;

impl Probe {
    /// The `nsdebug.dev/diag` audit annotation.
    fn kind(&self) -> &'static str {
        match self {
            Self::Dns { .. } => "dns",
            Self::Tcp { .. } => "tcp",
            Self::Http { .. } => "http",
        }
    }

    /// What was probed, for the audit trail.
    pub(super) fn address(&self) -> String {
        match self {
            Self::Dns { query, server, .. } => {
                let mut text = format!("{} {}", query.text, query.record_type);
                if let Some(server) = server {
                    text.push_str(&format!(" @{server}"));
                }
                text
            }
            Self::Tcp {
                host_text, port, ..
            } => match host_text.parse::<std::net::Ipv6Addr>() {
                Ok(_) => format!("[{host_text}]:{port}"),
                Err(_) => format!("{host_text}:{port}"),
            },
            Self::Http { target, .. } => target.url.to_string(),
        }
    }

    fn server(&self) -> Option<SocketAddr> {
        match self {
            Self::Dns { server, .. } => *server,
            _ => None,
        }
    }

    /// Runs the probe; called in the pod's network.
    async fn run(self, dns: Result<PodDns, dns::DnsError>, limit: Duration) -> ProbeResult {
        match self {
            Self::Dns {
                query, use_hosts, ..
            } => ProbeResult::Dns(dns::probe(dns, &query, use_hosts, limit).await),
            Self::Tcp {
                host_text,
                host,
                port,
            } => ProbeResult::Tcp(probe::tcp(dns, &host_text, &host, port, limit).await),
            Self::Http { target, insecure } => {
                ProbeResult::Http(probe::http(dns, &target, insecure, limit).await)
            }
        }
    }
}

/// A `timeout` value: `2s`, `500ms`, `1m` or plain seconds; more than 0
/// and at most [`MAX_TIMEOUT`].
fn timeout(text: Option<&str>) -> Result<Duration, ApiError> {
    let Some(text) = text else {
        return Ok(DEFAULT_TIMEOUT);
    };
    let parsed = match text.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds > 0.0 => Some(Duration::from_secs_f64(
            seconds.min(MAX_TIMEOUT.as_secs_f64() + 1.0),
        )),
        Ok(_) => None,
        Err(_) => humantime::parse_duration(text).ok(),
    };
    match parsed {
        Some(limit) if !limit.is_zero() && limit <= MAX_TIMEOUT => Ok(limit),
        _ => Err(ApiError::bad_request(format!(
            "timeout '{text}' must be a duration (2s, 500ms) more than 0 and at most {}s",
            MAX_TIMEOUT.as_secs()
        ))),
    }
}

fn required<'a>(name: &str, value: &'a Option<String>, example: &str) -> Result<&'a str, ApiError> {
    value
        .as_deref()
        .ok_or_else(|| ApiError::bad_request(format!("{name} is required ({name}={example})")))
}

fn invalid(err: &(dyn std::error::Error + 'static)) -> ApiError {
    ApiError::bad_request(crate::error_chain(err))
}

impl DnsParams {
    pub(super) fn probe(&self) -> Result<(Probe, Duration), ApiError> {
        let name = required("name", &self.name, "example.com")?;
        let query = DnsQuery::new(name, self.record_type.as_deref().unwrap_or("A"))
            .map_err(|e| invalid(&e))?;
        let server = self
            .server
            .as_deref()
            .map(dns::parse_server)
            .transpose()
            .map_err(|e| invalid(&e))?;
        let use_hosts = flag("hosts", self.hosts.as_deref(), true)?;
        let probe = Probe::Dns {
            query,
            server,
            use_hosts,
        };
        Ok((probe, timeout(self.timeout.as_deref())?))
    }
}

impl TcpParams {
    pub(super) fn probe(&self) -> Result<(Probe, Duration), ApiError> {
        let host_text = required("host", &self.host, "10.96.0.10")?;
        let host = Host::parse(host_text).map_err(|e| invalid(&e))?;
        let port =
            probe::parse_port(required("port", &self.port, "443")?).map_err(|e| invalid(&e))?;
        let probe = Probe::Tcp {
            host_text: host_text.to_string(),
            host,
            port,
        };
        Ok((probe, timeout(self.timeout.as_deref())?))
    }
}

impl HttpParams {
    pub(super) fn probe(&self) -> Result<(Probe, Duration), ApiError> {
        if let Some(method) = &self.method
            && !method.eq_ignore_ascii_case("GET")
        {
            return Err(ApiError::bad_request(format!(
                "method {method} is not supported: an HTTP probe only sends GET"
            )));
        }
        let url = required("url", &self.url, "http://web.shop:8080/healthz")?;
        let target = HttpTarget::parse(url).map_err(|e| invalid(&e))?;
        let insecure = flag("insecure", self.insecure.as_deref(), false)?;
        let probe = Probe::Http { target, insecure };
        Ok((probe, timeout(self.timeout.as_deref())?))
    }
}

type Caller = axum::Extension<crate::auth::User>;

async fn dns(
    State(state): State<AppState>,
    axum::Extension(user): Caller,
    info: super::RequestInfo,
    Wanted(wanted): Wanted,
    q: super::QueryOf<DnsParams>,
) -> Result<Json<ProbeAnswer>, ApiError> {
    let (probe, limit) = super::query(q)?.probe()?;
    answer(state, user, info, wanted, probe, limit).await
}

async fn tcp(
    State(state): State<AppState>,
    axum::Extension(user): Caller,
    info: super::RequestInfo,
    Wanted(wanted): Wanted,
    q: super::QueryOf<TcpParams>,
) -> Result<Json<ProbeAnswer>, ApiError> {
    let (probe, limit) = super::query(q)?.probe()?;
    answer(state, user, info, wanted, probe, limit).await
}

async fn http(
    State(state): State<AppState>,
    axum::Extension(user): Caller,
    info: super::RequestInfo,
    Wanted(wanted): Wanted,
    q: super::QueryOf<HttpParams>,
) -> Result<Json<ProbeAnswer>, ApiError> {
    let (probe, limit) = super::query(q)?.probe()?;
    answer(state, user, info, wanted, probe, limit).await
}

/// Authorizes, resolves the target, runs `probe` in its pod's network and
/// writes the audit event, whatever the outcome after authorization.
async fn answer(
    state: AppState,
    user: crate::auth::User,
    info: super::RequestInfo,
    wanted: TargetRef,
    probe: Probe,
    limit: Duration,
) -> Result<Json<ProbeAnswer>, ApiError> {
    let kind = probe.kind();
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
            kind: "probe",
            profile: "privileged",
            note: &|record| {
                record.note("diag", kind);
            },
        },
    )
    .await?;
    let address = probe.address();
    let pid = session.target.pid;
    session.noting_target().note("target", address);
    let (target, mut trail) = session.start(200);
    let proc = state.inventory.proc_root().clone();
    let ran = netns::run_async(target.container_process(), limit + SETUP_GRACE, move || {
        // On the thread in the pod's network, off the agent's runtime.
        let dns = PodDns::load(&proc, pid, probe.server());
        probe.run(dns, limit)
    })
    .await;
    match ran {
        Ok(result) => {
            trail.outcome = Outcome::Stopped(result.error_kind().unwrap_or("ok").to_string());
            drop(trail);
            Ok(Json(ProbeAnswer { target, result }))
        }
        Err(err) => {
            let err = netns_error(&target, err);
            trail.failed(err.code().as_u16(), err.message());
            Err(err)
        }
    }
}

/// A probe that could not run in the pod's network.
fn netns_error(target: &Target, err: NetnsError) -> ApiError {
    match err {
        NetnsError::TargetGone(_) => ApiError::conflict(format!(
            "container \"{}\" of pod {}/{} stopped before the probe ran",
            target.container, target.namespace, target.pod
        )),
        NetnsError::Timeout(limit) => ApiError::internal_with(format!(
            "the probe did not finish within {}s",
            limit.as_secs()
        )),
        other => ApiError::internal(&other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_bounded() {
        assert_eq!(timeout(None).unwrap(), DEFAULT_TIMEOUT);
        assert_eq!(timeout(Some("2s")).unwrap(), Duration::from_secs(2));
        assert_eq!(timeout(Some("250ms")).unwrap(), Duration::from_millis(250));
        assert_eq!(timeout(Some("1.5")).unwrap(), Duration::from_millis(1500));
        assert_eq!(timeout(Some("30s")).unwrap(), MAX_TIMEOUT);
        for bad in ["0", "0s", "31s", "1h", "-1", "soon", "NaN", "inf"] {
            assert!(timeout(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn probes_name_what_they_probe() {
        let tcp = TcpParams {
            host: Some("fd00::1".into()),
            port: Some("443".into()),
            ..Default::default()
        };
        assert_eq!(tcp.probe().unwrap().0.address(), "[fd00::1]:443");
        let dns = DnsParams {
            name: Some("web.shop".into()),
            record_type: Some("srv".into()),
            server: Some("10.0.0.2".into()),
            ..Default::default()
        };
        assert_eq!(
            dns.probe().unwrap().0.address(),
            "web.shop SRV @10.0.0.2:53"
        );
        let http = HttpParams {
            url: Some("http://web.shop/".into()),
            method: Some("POST".into()),
            ..Default::default()
        };
        assert_eq!(http.probe().unwrap_err().code(), 400);
    }
}
