//! Name resolution as a pod sees it.
//!
//! A pod's processes resolve names with the pod's `/etc/resolv.conf` (the
//! kubelet writes its cluster DNS server, search list and `ndots:5` there)
//! and its `/etc/hosts`, over the pod's network. The agent's own resolver
//! knows none of that, so a probe reads both files from the container's root
//! ([`ProcRoot::read_in_root`]), parses them with the parsers hickory itself
//! uses (`resolv-conf`, hickory's [`Hosts`]) and asks hickory's stub resolver,
//! which runs on the throwaway thread in the pod's network
//! ([`crate::enter::netns`]), so its queries leave from the pod.
//!
//! Like glibc's `hosts: files dns`, `/etc/hosts` answers A and AAAA questions
//! for the name as given before any nameserver is asked; the nameservers are
//! then tried in the file's order (`options rotate` round-robins) with its
//! search list, `ndots`, `timeout` and `attempts`.
//!
//! The answer's type, [`DnsResult`], is the wire crate's
//! (`nsdebug_wire::diag::probe`).

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::{Duration, Instant};

use hickory_resolver::config::{
    NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts, ServerOrderingStrategy,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as Negative, NetError};
use hickory_resolver::proto::op::{Query, ResponseCode};
use hickory_resolver::proto::rr::{Name, RecordType};
use hickory_resolver::{Hosts, Resolver, TokioResolver};
pub use nsdebug_wire::diag::probe::{Answer, DnsResult, ResolverSettings, Source};

use crate::process::ProcRoot;

/// Where a container keeps its resolver configuration and static names.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";
pub const HOSTS_FILE: &str = "/etc/hosts";
/// More than any real file; a bigger one is refused, not read.
const MAX_RESOLV_CONF_BYTES: u64 = 64 * 1024;
const MAX_HOSTS_BYTES: u64 = 1024 * 1024;

/// The record types a DNS probe asks for.
pub const RECORD_TYPES: &[RecordType] = &[
    RecordType::A,
    RecordType::AAAA,
    RecordType::SRV,
    RecordType::TXT,
    RecordType::MX,
    RecordType::CNAME,
    RecordType::PTR,
];

/// A question the caller got wrong (the API answers 400).
#[derive(Debug, thiserror::Error)]
pub enum InvalidQuery {
    #[error("name is empty: give a DNS name")]
    EmptyName,
    #[error("'{name}' is not a valid DNS name")]
    Name {
        name: String,
        #[source]
        source: hickory_resolver::proto::ProtoError,
    },
    #[error("type '{0}' is not one of A, AAAA, SRV, TXT, MX, CNAME, PTR")]
    Type(String),
    #[error("server '{0}' is not an IP address or IP:port")]
    Server(String),
}

/// Why a name did not resolve. Every variant is an answer about the pod's
/// DNS (the probe reports it with [`DnsError::kind`]), not a fault of the agent.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("failed to read the pod's {path}")]
    ReadConfig {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to set up a resolver")]
    Setup(#[source] NetError),
    #[error("{name} does not exist (NXDOMAIN)")]
    NxDomain { name: String },
    #[error("{name} exists but has no {record_type} record")]
    NoRecords { name: String, record_type: String },
    #[error("the nameserver answered {code}")]
    ServerError { code: String },
    #[error("the nameserver refused the connection (nothing listens on its DNS port?)")]
    Refused,
    #[error("no answer from the nameservers after {seconds:.1}s")]
    Timeout { seconds: f64 },
    #[error("the lookup failed")]
    Lookup(#[source] NetError),
}

impl DnsError {
    /// A stable word for scripts.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ReadConfig { .. } => "config",
            Self::Setup(_) => "setup",
            Self::NxDomain { .. } => "nxdomain",
            Self::NoRecords { .. } => "no-records",
            Self::ServerError { .. } => "server-error",
            Self::Refused => "refused",
            Self::Timeout { .. } => "timeout",
            Self::Lookup(_) => "failed",
        }
    }

    /// What a lookup failure of hickory means for the person probing.
    /// Negative answers name `asked`, not the last name tried from the
    /// search list (`web.default.svc.cluster.local.`, with `ndots:5`).
    fn from_lookup(err: NetError, asked: &Name, started: Instant) -> Self {
        match &err {
            NetError::Dns(Negative::NoRecordsFound(none))
                if none.response_code == ResponseCode::NXDomain =>
            {
                Self::NxDomain {
                    name: asked.to_string(),
                }
            }
            NetError::Dns(Negative::NoRecordsFound(none)) => Self::NoRecords {
                name: asked.to_string(),
                record_type: none.query.query_type().to_string(),
            },
            NetError::Dns(Negative::ResponseCode(code)) => Self::ServerError {
                code: code.to_string(),
            },
            NetError::Timeout => Self::Timeout {
                seconds: started.elapsed().as_secs_f64(),
            },
            NetError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => Self::Refused,
            _ => Self::Lookup(err),
        }
    }
}

/// A DNS question, checked.
#[derive(Debug, Clone)]
pub struct DnsQuery {
    /// As the caller wrote it (an IP for a PTR question).
    pub text: String,
    pub name: Name,
    pub record_type: RecordType,
}

impl DnsQuery {
    /// `type_text` is case-insensitive; a PTR question may name an IP
    /// address, asked as its `in-addr.arpa`/`ip6.arpa` name.
    pub fn new(name: &str, type_text: &str) -> Result<Self, InvalidQuery> {
        let record_type = RecordType::from_str(&type_text.to_ascii_uppercase())
            .ok()
            .filter(|t| RECORD_TYPES.contains(t))
            .ok_or_else(|| InvalidQuery::Type(type_text.to_string()))?;
        let parsed = match name.parse::<IpAddr>() {
            Ok(ip) if record_type == RecordType::PTR => Name::from(ip),
            _ => parse_name(name)?,
        };
        Ok(Self {
            text: name.to_string(),
            name: parsed,
            record_type,
        })
    }
}

/// A host name as resolvers take it (relaxed: `_` and such are allowed).
pub fn parse_name(name: &str) -> Result<Name, InvalidQuery> {
    if name.is_empty() {
        return Err(InvalidQuery::EmptyName);
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(InvalidQuery::Name {
            name: name.to_string(),
            source: "a name has no spaces or control characters".into(),
        });
    }
    Name::from_str_relaxed(name).map_err(|source| InvalidQuery::Name {
        name: name.to_string(),
        source,
    })
}

/// A nameserver override: `IP` (port 53) or `IP:port` (`[v6]:port`).
pub fn parse_server(text: &str) -> Result<SocketAddr, InvalidQuery> {
    text.parse::<SocketAddr>()
        .or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| InvalidQuery::Server(text.to_string()))
}

/// The pod's resolver: its `/etc/resolv.conf` and `/etc/hosts`.
pub struct PodDns {
    config: ResolverConfig,
    options: ResolverOpts,
    hosts: Hosts,
    pub settings: ResolverSettings,
}

impl PodDns {
    /// Reads the resolver files of the container whose process is `pid`
    /// (blocking: call it off the async runtime). `server` replaces the
    /// nameservers of the pod's file (then a missing file is no error).
    pub fn load(proc: &ProcRoot, pid: u32, server: Option<SocketAddr>) -> Result<Self, DnsError> {
        let conf = match proc.read_in_root(pid, RESOLV_CONF, MAX_RESOLV_CONF_BYTES) {
            // Lines it cannot parse are skipped, as glibc skips them.
            Ok(bytes) => resolv_conf::Config::parse_with_errors(&bytes).0,
            Err(_) if server.is_some() => resolv_conf::Config::new(),
            Err(source) => {
                return Err(DnsError::ReadConfig {
                    path: RESOLV_CONF,
                    source,
                });
            }
        };
        let mut hosts = Hosts::default();
        match proc.read_in_root(pid, HOSTS_FILE, MAX_HOSTS_BYTES) {
            Ok(bytes) => {
                hosts
                    .read_hosts_conf(bytes.as_slice())
                    .map_err(|source| DnsError::ReadConfig {
                        path: HOSTS_FILE,
                        source,
                    })?
            }
            // No file is no static names, as for glibc.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(DnsError::ReadConfig {
                    path: HOSTS_FILE,
                    source,
                });
            }
        }
        Ok(Self::from_parts(&conf, hosts, server))
    }

    /// hickory's own `parse_resolv_conf` is not used: it fills the domain in
    /// from the hostname of the process calling it, which here is the agent.
    fn from_parts(conf: &resolv_conf::Config, hosts: Hosts, server: Option<SocketAddr>) -> Self {
        let servers: Vec<SocketAddr> = match server {
            Some(addr) => vec![addr],
            // No `nameserver` line means the local one, for glibc and musl.
            None => conf
                .get_nameservers_or_local()
                .iter()
                .map(|ip| SocketAddr::new(ip.into(), 53))
                .collect(),
        };
        let name_servers = servers
            .iter()
            .map(|addr| {
                let mut config = NameServerConfig::udp_and_tcp(addr.ip());
                for connection in &mut config.connections {
                    connection.port = addr.port();
                }
                config
            })
            .collect();
        // `search` and `domain` exclude each other; the last line wins.
        let search: Vec<Name> = conf
            .get_last_search_or_domain()
            .filter(|domain| *domain != "--")
            .filter_map(|domain| Name::from_str_relaxed(domain).ok())
            .collect();
        let mut options = ResolverOpts::default();
        // glibc's bounds (resolv.conf(5)).
        options.ndots = conf.ndots.min(15) as usize;
        options.timeout = Duration::from_secs(u64::from(conf.timeout.clamp(1, 30)));
        options.attempts = conf.attempts.clamp(1, 5) as usize;
        options.edns0 = conf.edns0;
        // The agent's own /etc/hosts must never answer for the pod.
        options.use_hosts_file = ResolveHosts::Never;
        options.cache_size = 0;
        // One server at a time in the file's order, as the pod's libc asks.
        options.num_concurrent_reqs = 1;
        options.server_ordering_strategy = if conf.rotate {
            ServerOrderingStrategy::RoundRobin
        } else {
            ServerOrderingStrategy::UserProvidedOrder
        };
        let settings = ResolverSettings {
            nameservers: servers.iter().map(SocketAddr::to_string).collect(),
            search: search.iter().map(Name::to_string).collect(),
            ndots: options.ndots,
            timeout_seconds: options.timeout.as_secs(),
            attempts: options.attempts,
        };
        Self {
            config: ResolverConfig::from_parts(None, search, name_servers),
            options,
            hosts,
            settings,
        }
    }

    /// A resolver with the pod's settings; its sockets are made on the
    /// calling thread's runtime (the pod's network, in a probe).
    fn resolver(&self) -> Result<TokioResolver, DnsError> {
        let mut builder =
            Resolver::builder_with_config(self.config.clone(), TokioRuntimeProvider::default());
        *builder.options_mut() = self.options.clone();
        builder.build().map_err(DnsError::Setup)
    }

    /// The pod's `/etc/hosts` entries for `name` as given (no search list,
    /// like glibc's `files`), for A and AAAA.
    fn static_answers(&self, name: &Name, record_type: RecordType) -> Option<Vec<Answer>> {
        if !matches!(record_type, RecordType::A | RecordType::AAAA) {
            return None;
        }
        let lookup = self
            .hosts
            .lookup_static_host(&Query::query(name.clone(), record_type))?;
        let answers = answers(lookup.answers());
        (!answers.is_empty()).then_some(answers)
    }

    /// Answers `query` as the pod would be answered: `/etc/hosts` first for
    /// A and AAAA when `use_hosts`, then the nameservers.
    pub async fn lookup(
        &self,
        query: &DnsQuery,
        use_hosts: bool,
    ) -> Result<(Source, Vec<Answer>), DnsError> {
        if use_hosts && let Some(found) = self.static_answers(&query.name, query.record_type) {
            return Ok((Source::Hosts, found));
        }
        let resolver = self.resolver()?;
        let started = Instant::now();
        let lookup = resolver
            .lookup(query.name.clone(), query.record_type)
            .await
            .map_err(|err| DnsError::from_lookup(err, &query.name, started))?;
        let found = answers(lookup.answers());
        if found.is_empty() {
            return Err(DnsError::NoRecords {
                name: query.name.to_string(),
                record_type: query.record_type.to_string(),
            });
        }
        Ok((Source::Dns, found))
    }

    /// The addresses of a host name for a connection: `/etc/hosts`, then
    /// the nameservers (A, then AAAA when there is no A).
    pub async fn addresses(&self, name: &Name) -> Result<Vec<IpAddr>, DnsError> {
        for record_type in [RecordType::A, RecordType::AAAA] {
            if let Some(lookup) = self
                .hosts
                .lookup_static_host(&Query::query(name.clone(), record_type))
            {
                let ips: Vec<IpAddr> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| r.data.ip_addr())
                    .collect();
                if !ips.is_empty() {
                    return Ok(ips);
                }
            }
        }
        let resolver = self.resolver()?;
        let started = Instant::now();
        let found = resolver
            .lookup_ip(name.clone())
            .await
            .map_err(|err| DnsError::from_lookup(err, name, started))?;
        Ok(found.iter().collect())
    }
}

fn answers(records: &[hickory_resolver::proto::rr::Record]) -> Vec<Answer> {
    records
        .iter()
        .map(|record| Answer {
            name: record.name.to_string(),
            record_type: record.record_type().to_string(),
            ttl: record.ttl,
            data: record.data.to_string(),
        })
        .collect()
}

/// Resolves `query` with the pod's resolver (`dns`, as loaded), giving up
/// after `limit`. Runs in the pod's network.
pub async fn probe(
    dns: Result<PodDns, DnsError>,
    query: &DnsQuery,
    use_hosts: bool,
    limit: Duration,
) -> DnsResult {
    let started = Instant::now();
    let settings = dns.as_ref().ok().map(|dns| dns.settings.clone());
    let outcome = match dns {
        Ok(dns) => tokio::time::timeout(limit, dns.lookup(query, use_hosts))
            .await
            .unwrap_or(Err(DnsError::Timeout {
                seconds: limit.as_secs_f64(),
            })),
        Err(err) => Err(err),
    };
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let (source, answers, error) = match outcome {
        Ok((source, answers)) => (Some(source), answers, None),
        Err(err) => (None, Vec::new(), Some(err)),
    };
    DnsResult {
        name: query.text.clone(),
        record_type: query.record_type.to_string(),
        answers,
        source,
        settings,
        latency_ms,
        error_kind: error.as_ref().map(|e| e.kind().to_owned()),
        error: error.as_ref().map(|e| crate::error_chain(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_dns(resolv_conf: &str, hosts: &str) -> PodDns {
        let conf = resolv_conf::Config::parse(resolv_conf).unwrap();
        let mut parsed = Hosts::default();
        parsed.read_hosts_conf(hosts.as_bytes()).unwrap();
        PodDns::from_parts(&conf, parsed, None)
    }

    #[test]
    fn settings_follow_a_kubelet_resolv_conf() {
        let dns = pod_dns(
            "search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5 timeout:2 attempts:3\n",
            "",
        );
        assert_eq!(dns.settings.nameservers, ["10.96.0.10:53"]);
        assert_eq!(
            dns.settings.search,
            [
                "default.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local"
            ]
        );
        assert_eq!(
            (
                dns.settings.ndots,
                dns.settings.timeout_seconds,
                dns.settings.attempts
            ),
            (5, 2, 3)
        );
        assert_eq!(dns.options.use_hosts_file, ResolveHosts::Never);
    }

    #[test]
    fn no_nameserver_line_means_the_local_one_and_an_override_wins() {
        let dns = pod_dns("search example.test\n", "");
        assert_eq!(dns.settings.nameservers[0], "127.0.0.1:53");
        let conf = resolv_conf::Config::parse("nameserver 10.0.0.1\n").unwrap();
        let server = parse_server("10.0.0.2:5353").unwrap();
        let dns = PodDns::from_parts(&conf, Hosts::default(), Some(server));
        assert_eq!(dns.settings.nameservers, ["10.0.0.2:5353"]);
        assert_eq!(dns.config.name_servers()[0].connections[0].port, 5353);
    }

    #[test]
    fn hosts_answer_a_and_aaaa_for_the_name_as_given() {
        let dns = pod_dns(
            "nameserver 10.0.0.1\n",
            "10.5.6.7 static.example.test static\n::1 localhost\n",
        );
        let name = parse_name("static.example.test").unwrap();
        let found = dns.static_answers(&name, RecordType::A).unwrap();
        assert_eq!(found[0].data, "10.5.6.7");
        assert!(dns.static_answers(&name, RecordType::AAAA).is_none());
        assert!(dns.static_answers(&name, RecordType::TXT).is_none());
        let local = parse_name("localhost").unwrap();
        assert_eq!(
            dns.static_answers(&local, RecordType::AAAA).unwrap()[0].data,
            "::1"
        );
    }

    #[test]
    fn queries_are_checked() {
        let ptr = DnsQuery::new("10.1.2.3", "ptr").unwrap();
        assert_eq!(ptr.name.to_string(), "3.2.1.10.in-addr.arpa.");
        assert_eq!(ptr.record_type, RecordType::PTR);
        assert!(matches!(
            DnsQuery::new("example.com", "ANY"),
            Err(InvalidQuery::Type(_))
        ));
        assert!(matches!(
            DnsQuery::new("", "A"),
            Err(InvalidQuery::EmptyName)
        ));
        assert!(DnsQuery::new("bad name", "A").is_err());
        assert!(DnsQuery::new("a..b", "A").is_err());
        assert!(parse_server("10.0.0.1").is_ok());
        assert!(parse_server("[fd00::1]:53").is_ok());
        assert!(parse_server("dns.example").is_err());
    }
}
