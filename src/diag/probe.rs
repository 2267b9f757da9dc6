//! TCP connect and HTTP GET probes from a pod's network: can this pod reach
//! that service, how long does it take, and what does it answer?
//!
//! Both run on the throwaway thread in the pod's network namespace
//! ([`crate::enter::netns`]), so the connection leaves from the pod's address
//! through its routes and its network policy. Host names are resolved with
//! the pod's resolver ([`super::dns`]), never the agent's. A failure to
//! connect is the answer, not an error: every result says `connected` or
//! `status`, or carries `error` and a stable `errorKind`.
//!
//! The answers' types, [`TcpResult`] and [`HttpResult`], are the wire
//! crate's (`nsdebug_wire::diag::probe`).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_resolver::proto::rr::Name;

use super::dns::{DnsError, PodDns};
pub use nsdebug_wire::diag::probe::{HttpResult, TcpResult, TlsSummary};

/// The body an HTTP probe reads at most, and the part of it reported.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
pub const BODY_PREVIEW_BYTES: usize = 1024;
/// Response headers worth reporting; others (`Set-Cookie`...) are left out.
const REPORTED_HEADERS: &[&str] = &[
    "cache-control",
    "content-encoding",
    "content-length",
    "content-type",
    "date",
    "location",
    "retry-after",
    "server",
    "via",
    "www-authenticate",
];

/// A probe target the caller got wrong (the API answers 400).
#[derive(Debug, thiserror::Error)]
pub enum InvalidTarget {
    #[error("host is empty: give an IP address or a host name")]
    EmptyHost,
    #[error("host '{host}' is neither an IP address nor a valid host name")]
    Host {
        host: String,
        #[source]
        source: super::dns::InvalidQuery,
    },
    #[error("port '{0}' is not a number from 1 to 65535")]
    Port(String),
    #[error("'{url}' is not a valid URL")]
    Url {
        url: String,
        #[source]
        source: url::ParseError,
    },
    #[error("the URL scheme is '{0}'; only http and https are probed")]
    Scheme(String),
    #[error("the URL has no host")]
    NoHost,
    #[error("the URL carries a user name or password; they would end up in the audit log")]
    Credentials,
}

/// Where to connect: an address, or a name for the pod's resolver.
#[derive(Debug, Clone)]
pub enum Host {
    Ip(IpAddr),
    Name(Name),
}

impl Host {
    /// `10.0.0.1`, `fd00::1` or `[fd00::1]`, or a host name.
    pub fn parse(text: &str) -> Result<Self, InvalidTarget> {
        if text.is_empty() {
            return Err(InvalidTarget::EmptyHost);
        }
        let bare = text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(text);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(Self::Ip(ip));
        }
        super::dns::parse_name(text)
            .map(Self::Name)
            .map_err(|source| InvalidTarget::Host {
                host: text.to_string(),
                source,
            })
    }

    /// The addresses to try: the IP, or what the pod's resolver says.
    async fn addresses(&self, dns: Result<PodDns, DnsError>) -> Result<Vec<IpAddr>, ProbeError> {
        let name = match self {
            Self::Ip(ip) => return Ok(vec![*ip]),
            Self::Name(name) => name,
        };
        let found = match dns {
            Ok(dns) => dns.addresses(name).await,
            Err(err) => Err(err),
        };
        found.map_err(|source| ProbeError::Resolve {
            host: name.to_string(),
            source,
        })
    }
}

/// A port from a query: 1 to 65535.
pub fn parse_port(text: &str) -> Result<u16, InvalidTarget> {
    text.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| InvalidTarget::Port(text.to_string()))
}

/// What an HTTP probe gets: an `http://` or `https://` URL with a host
/// and no credentials.
#[derive(Debug, Clone)]
pub struct HttpTarget {
    pub url: reqwest::Url,
    /// The host, when it is a name for the pod's resolver.
    name: Option<Name>,
}

impl HttpTarget {
    pub fn parse(text: &str) -> Result<Self, InvalidTarget> {
        let url = reqwest::Url::parse(text).map_err(|source| InvalidTarget::Url {
            url: text.to_string(),
            source,
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(InvalidTarget::Scheme(url.scheme().to_string()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(InvalidTarget::Credentials);
        }
        let name = match url.host() {
            None => return Err(InvalidTarget::NoHost),
            Some(url::Host::Domain(domain)) => match Host::parse(domain)? {
                Host::Name(name) => Some(name),
                Host::Ip(_) => None,
            },
            Some(_) => None,
        };
        Ok(Self { url, name })
    }
}

/// Why a probe got no connection or no answer: the probe's result.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("failed to resolve {host}")]
    Resolve {
        host: String,
        #[source]
        source: DnsError,
    },
    #[error("{host} resolves to no address")]
    NoAddress { host: String },
    #[error("connection refused")]
    Refused,
    #[error("no answer within {seconds:.1}s")]
    Timeout { seconds: f64 },
    #[error("the network or host is unreachable")]
    Unreachable,
    #[error("failed to connect")]
    Connect(#[source] io::Error),
    #[error("the TLS handshake failed")]
    Tls(#[source] rustls::Error),
    #[error("the HTTP request failed")]
    Http(#[source] reqwest::Error),
    #[error("failed to read the response body")]
    Body(#[source] reqwest::Error),
    #[error("failed to set up the HTTP client")]
    Client(#[source] reqwest::Error),
}

impl ProbeError {
    /// A stable word for scripts.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Resolve { .. } | Self::NoAddress { .. } => "dns",
            Self::Refused => "refused",
            Self::Timeout { .. } => "timeout",
            Self::Unreachable => "unreachable",
            Self::Connect(_) => "connect",
            Self::Tls(_) => "tls",
            Self::Http(_) => "http",
            Self::Body(_) => "body",
            Self::Client(_) => "setup",
        }
    }

    fn from_io(err: io::Error, started: Instant) -> Self {
        match err.kind() {
            io::ErrorKind::ConnectionRefused => Self::Refused,
            io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => Self::Unreachable,
            io::ErrorKind::TimedOut => Self::Timeout {
                seconds: started.elapsed().as_secs_f64(),
            },
            _ => Self::Connect(err),
        }
    }

    /// What a failed request means: the refused connection, the TLS
    /// error... buried in reqwest's chain of sources.
    fn from_request(err: reqwest::Error, started: Instant) -> Self {
        if err.is_timeout() {
            return Self::Timeout {
                seconds: started.elapsed().as_secs_f64(),
            };
        }
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&err);
        while let Some(current) = cause {
            if let Some(tls) = current.downcast_ref::<rustls::Error>() {
                return Self::Tls(tls.clone());
            }
            cause = match current.downcast_ref::<io::Error>() {
                Some(io) => {
                    match io.kind() {
                        io::ErrorKind::ConnectionRefused => return Self::Refused,
                        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
                            return Self::Unreachable;
                        }
                        _ => {}
                    }
                    // `io::Error::source()` skips the error it wraps (often
                    // another io::Error around the rustls one): step into it.
                    io.get_ref()
                        .map(|inner| inner as &(dyn std::error::Error + 'static))
                }
                None => current.source(),
            };
        }
        Self::Http(err)
    }
}

fn millis(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

/// Connects to `host:port`, trying each address in turn until one accepts
/// or `limit` is spent, and closes the connection at once.
pub async fn tcp(
    dns: Result<PodDns, DnsError>,
    host_text: &str,
    host: &Host,
    port: u16,
    limit: Duration,
) -> TcpResult {
    let deadline = Instant::now() + limit;
    let mut result = TcpResult {
        host: host_text.to_string(),
        port,
        address: None,
        resolved: None,
        connected: false,
        latency_ms: 0.0,
        error: None,
        error_kind: None,
    };
    let started = Instant::now();
    let outcome = match tokio::time::timeout(limit, host.addresses(dns)).await {
        Err(_) => Err(ProbeError::Timeout {
            seconds: limit.as_secs_f64(),
        }),
        Ok(Err(err)) => Err(err),
        Ok(Ok(ips)) => {
            if let Host::Name(_) = host {
                result.resolved = Some(ips.iter().map(IpAddr::to_string).collect());
            }
            let mut outcome = Err(ProbeError::NoAddress {
                host: host_text.to_string(),
            });
            for ip in ips {
                let address = SocketAddr::new(ip, port);
                result.address = Some(address.to_string());
                let started = Instant::now();
                let remaining = deadline.saturating_duration_since(started);
                outcome =
                    match tokio::time::timeout(remaining, tokio::net::TcpStream::connect(address))
                        .await
                    {
                        Ok(Ok(_stream)) => Ok(()),
                        Ok(Err(err)) => Err(ProbeError::from_io(err, started)),
                        Err(_) => Err(ProbeError::Timeout {
                            seconds: started.elapsed().as_secs_f64(),
                        }),
                    };
                result.latency_ms = millis(started);
                if outcome.is_ok() || Instant::now() >= deadline {
                    break;
                }
            }
            outcome
        }
    };
    if result.address.is_none() {
        result.latency_ms = millis(started);
    }
    match outcome {
        Ok(()) => result.connected = true,
        Err(err) => {
            result.error_kind = Some(err.kind().to_owned());
            result.error = Some(crate::error_chain(&err));
        }
    }
    result
}

/// The certificate `der` as a probe reports it.
fn tls_summary(der: &[u8], verified: bool) -> TlsSummary {
    let mut summary = TlsSummary {
        verified,
        subject: None,
        issuer: None,
        dns_names: Vec::new(),
        not_before: None,
        not_after: None,
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return summary;
    };
    let time = |t: x509_parser::time::ASN1Time| {
        k8s_openapi::jiff::Timestamp::from_second(t.timestamp())
            .ok()
            .map(|t| t.to_string())
    };
    summary.subject = Some(cert.subject().to_string());
    summary.issuer = Some(cert.issuer().to_string());
    summary.not_before = time(cert.validity().not_before);
    summary.not_after = time(cert.validity().not_after);
    if let Ok(Some(names)) = cert.subject_alternative_name() {
        summary.dns_names = names
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => Some(dns.to_string()),
                _ => None,
            })
            .collect();
    }
    summary
}

/// reqwest's resolver when the probe did not resolve the name itself: it
/// refuses, so the agent's `/etc/resolv.conf` can never answer for the pod.
struct NoSystemResolver;

impl reqwest::dns::Resolve for NoSystemResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let name = name.as_str().to_string();
        Box::pin(
            async move { Err(format!("{name} was not resolved with the pod's resolver").into()) },
        )
    }
}

/// `GET url` without following redirects, reading at most
/// [`MAX_BODY_BYTES`] of the body, all within `limit`. `insecure` skips the
/// verification of an HTTPS server's certificate (against the Mozilla roots
/// built into the agent).
pub async fn http(
    dns: Result<PodDns, DnsError>,
    target: &HttpTarget,
    insecure: bool,
    limit: Duration,
) -> HttpResult {
    let started = Instant::now();
    let mut result = HttpResult {
        url: target.url.to_string(),
        ..HttpResult::default()
    };
    let outcome = tokio::time::timeout(limit, get(dns, target, insecure, started, &mut result))
        .await
        .unwrap_or(Err(ProbeError::Timeout {
            seconds: limit.as_secs_f64(),
        }));
    if result.status.is_none() {
        result.latency_ms = millis(started);
    }
    result.duration_ms = millis(started);
    if let Err(err) = outcome {
        result.error_kind = Some(err.kind().to_owned());
        result.error = Some(crate::error_chain(&err));
    }
    result
}

async fn get(
    dns: Result<PodDns, DnsError>,
    target: &HttpTarget,
    insecure: bool,
    started: Instant,
    result: &mut HttpResult,
) -> Result<(), ProbeError> {
    let mut client = reqwest::Client::builder()
        .use_rustls_tls()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .tls_info(true)
        .danger_accept_invalid_certs(insecure)
        .dns_resolver(Arc::new(NoSystemResolver));
    if let (Some(name), Some(domain)) = (&target.name, target.url.host_str()) {
        let ips = Host::Name(name.clone()).addresses(dns).await?;
        let addrs: Vec<SocketAddr> = ips.into_iter().map(|ip| SocketAddr::new(ip, 0)).collect();
        client = client.resolve_to_addrs(domain, &addrs);
    }
    let client = client.build().map_err(ProbeError::Client)?;
    let mut response = client
        .get(target.url.clone())
        .send()
        .await
        .map_err(|err| ProbeError::from_request(err, started))?;
    result.latency_ms = millis(started);
    result.status = Some(response.status().as_u16());
    result.address = response.remote_addr().map(|a| a.to_string());
    for name in REPORTED_HEADERS {
        let values: Vec<String> = response
            .headers()
            .get_all(*name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        if !values.is_empty() {
            result.headers.insert(name.to_string(), values.join(", "));
        }
    }
    if response.status().is_redirection() {
        result.location = result.headers.get("location").cloned();
    }
    result.tls = response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .map(|der| tls_summary(der, !insecure));
    let mut preview = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|err| match ProbeError::from_request(err, started) {
            ProbeError::Http(err) => ProbeError::Body(err),
            other => other,
        })?
    {
        let room = MAX_BODY_BYTES - result.body_bytes;
        let taken = chunk.len().min(room);
        let wanted = BODY_PREVIEW_BYTES.saturating_sub(preview.len());
        preview.extend_from_slice(&chunk[..taken.min(wanted)]);
        result.body_bytes += taken;
        if taken < chunk.len() {
            result.body_truncated = true;
            break;
        }
    }
    result.body_preview = String::from_utf8_lossy(&preview).into_owned();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_ports_and_urls_are_checked() {
        assert!(matches!(Host::parse("10.0.0.1"), Ok(Host::Ip(_))));
        assert!(matches!(Host::parse("[fd00::1]"), Ok(Host::Ip(_))));
        assert!(matches!(
            Host::parse("web.shop.svc.cluster.local"),
            Ok(Host::Name(_))
        ));
        assert!(matches!(Host::parse(""), Err(InvalidTarget::EmptyHost)));
        assert!(matches!(
            Host::parse("no such host"),
            Err(InvalidTarget::Host { .. })
        ));
        assert_eq!(parse_port("8080").unwrap(), 8080);
        for bad in ["0", "65536", "-1", "http", ""] {
            assert!(parse_port(bad).is_err(), "{bad}");
        }
        let ip = HttpTarget::parse("http://10.0.0.1:8080/healthz").unwrap();
        assert!(ip.name.is_none());
        let named = HttpTarget::parse("https://web.shop/").unwrap();
        assert_eq!(named.name.unwrap().to_string(), "web.shop");
        assert!(matches!(
            HttpTarget::parse("ftp://10.0.0.1/"),
            Err(InvalidTarget::Scheme(_))
        ));
        assert!(matches!(
            HttpTarget::parse("http://user:secret@10.0.0.1/"),
            Err(InvalidTarget::Credentials)
        ));
        assert!(matches!(
            HttpTarget::parse("not a url"),
            Err(InvalidTarget::Url { .. })
        ));
    }
}
