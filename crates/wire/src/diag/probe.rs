//! `GET .../diag/{dns,tcp,http}`: the answers of the probes run from inside a
//! pod's network. What the network answered (NXDOMAIN, a refused connection,
//! a TLS failure) is the probe's result, with `error` and `errorKind`.
//!
//! The answer is the probed target and the result's fields beside it
//! ([`ProbeAnswer`]); fields are written in declaration order.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A probe's answer: the target it ran in, and what it found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeAnswer<T = serde_json::Value> {
    pub target: T,
    #[serde(flatten)]
    pub result: ProbeResult,
}

/// What a probe found; the JSON says which by its fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ProbeResult {
    Dns(DnsResult),
    Tcp(TcpResult),
    Http(HttpResult),
}

impl ProbeResult {
    /// The error kind (`nxdomain`, `refused`, ...), `None` when it worked.
    pub fn error_kind(&self) -> Option<&str> {
        match self {
            Self::Dns(result) => result.error_kind.as_deref(),
            Self::Tcp(result) => result.error_kind.as_deref(),
            Self::Http(result) => result.error_kind.as_deref(),
        }
    }
}

/// The resolver settings in effect, as reported with every DNS answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ResolverSettings {
    /// `IP:port`, in the order they are asked.
    pub nameservers: Vec<String>,
    pub search: Vec<String>,
    pub ndots: usize,
    pub timeout_seconds: u64,
    pub attempts: usize,
}

/// Where a DNS answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The pod's `/etc/hosts`.
    Hosts,
    Dns,
}

/// One answer record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Answer {
    pub name: String,
    #[serde(rename = "type")]
    pub record_type: String,
    pub ttl: u32,
    /// The record data in zone-file form (`10.1.2.3`, `10 mail.example.`).
    pub data: String,
}

/// The answer of a DNS probe, with the resolver settings in effect
/// (`nameservers`, `search`, `ndots`, `timeoutSeconds`, `attempts`) unless
/// the pod's files could not be read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DnsResult {
    /// The name as asked.
    pub name: String,
    #[serde(rename = "type")]
    pub record_type: String,
    pub answers: Vec<Answer>,
    /// Where the answers came from; `null` on an error.
    pub source: Option<Source>,
    /// The settings in effect; absent when the pod's files could not be read.
    /// (Left out of the schema: utoipa would make every DNS answer carry
    /// them, and the struct's description names them instead.)
    #[serde(flatten)]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub settings: Option<ResolverSettings>,
    pub latency_ms: f64,
    pub error: Option<String>,
    pub error_kind: Option<String>,
}

/// The answer of a TCP probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct TcpResult {
    pub host: String,
    pub port: u16,
    /// The address connected to, or the last one tried.
    pub address: Option<String>,
    /// The addresses a host name resolved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<Vec<String>>,
    pub connected: bool,
    /// The connect of `address` (name resolution not included).
    pub latency_ms: f64,
    pub error: Option<String>,
    pub error_kind: Option<String>,
}

/// The server's certificate, as an HTTPS probe saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct TlsSummary {
    /// False when the probe was asked not to verify (`insecure`).
    pub verified: bool,
    pub subject: Option<String>,
    pub issuer: Option<String>,
    pub dns_names: Vec<String>,
    pub not_before: Option<String>,
    pub not_after: Option<String>,
}

/// The answer of an HTTP probe.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct HttpResult {
    pub url: String,
    /// The address connected to.
    pub address: Option<String>,
    pub status: Option<u16>,
    /// Until the response head arrived (name resolution included).
    pub latency_ms: f64,
    /// Until the body was read (or its cap reached).
    pub duration_ms: f64,
    /// A few response headers (lower-case names; repeated ones joined by `, `).
    pub headers: BTreeMap<String, String>,
    /// Where a redirect points; redirects are reported, not followed.
    pub location: Option<String>,
    /// Body bytes read (the agent caps it).
    pub body_bytes: usize,
    pub body_truncated: bool,
    /// The body's first bytes, as UTF-8 (invalid bytes replaced).
    pub body_preview: String,
    pub tls: Option<TlsSummary>,
    pub error: Option<String>,
    pub error_kind: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers recorded from the agent against the test bed's `shop/web`
    /// (its `hello` server listens on 8080), before these types existed.
    const RECORDED: &[(&str, &str)] = &[
        ("dns", include_str!("testdata/dns.json")),
        ("dns-error", include_str!("testdata/dns-error.json")),
        ("tcp", include_str!("testdata/tcp.json")),
        ("tcp-refused", include_str!("testdata/tcp-refused.json")),
        ("http", include_str!("testdata/http.json")),
    ];

    /// The agent's `Target` as it writes it, for the byte comparison (a
    /// `serde_json::Value` target would come back with its keys sorted).
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct AgentTarget {
        namespace: String,
        pod: String,
        pod_uid: String,
        container: String,
        container_id: String,
        state: String,
        pid: u32,
        namespaces: BTreeMap<String, u64>,
    }

    #[test]
    fn every_recorded_probe_parses_and_writes_back_the_same_bytes() {
        for (name, text) in RECORDED {
            let text = text.trim_end();
            let answer: ProbeAnswer<AgentTarget> = serde_json::from_str(text).unwrap();
            let kind = match answer.result {
                ProbeResult::Dns(_) => "dns",
                ProbeResult::Tcp(_) => "tcp",
                ProbeResult::Http(_) => "http",
            };
            assert!(name.starts_with(kind), "{name} read as {kind}");
            // The same fields in the same order, and the same values: the
            // digits may differ, since serde_json reads some floats one ulp
            // off (`0.40387399999999996` reads as `0.403874`).
            let written = serde_json::to_string(&answer).unwrap();
            let shape = |text: &str| text.replace(|c: char| c.is_ascii_digit(), "");
            assert_eq!(shape(&written), shape(text), "{name}");
            let value = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();
            assert_eq!(value(&written), value(text), "{name}");
        }
    }

    #[test]
    fn recorded_probes_read_as_their_types() {
        let answer: ProbeAnswer = serde_json::from_str(RECORDED[1].1).unwrap();
        assert_eq!(answer.target["pod"], "web");
        let ProbeResult::Dns(dns) = &answer.result else {
            panic!("{answer:?}")
        };
        assert_eq!(answer.result.error_kind(), Some("nxdomain"));
        assert_eq!(dns.source, None);
        let settings = dns.settings.as_ref().expect("the pod's settings");
        assert_eq!(settings.nameservers.len(), 1);

        let answer: ProbeAnswer = serde_json::from_str(RECORDED[0].1).unwrap();
        let ProbeResult::Dns(dns) = &answer.result else {
            panic!("{answer:?}")
        };
        assert_eq!(dns.source, Some(Source::Hosts));
        assert_eq!(dns.answers[0].data, "127.0.0.1");

        let answer: ProbeAnswer = serde_json::from_str(RECORDED[3].1).unwrap();
        let ProbeResult::Tcp(tcp) = &answer.result else {
            panic!("{answer:?}")
        };
        assert!(!tcp.connected);
        assert_eq!(answer.result.error_kind(), Some("refused"));

        let answer: ProbeAnswer = serde_json::from_str(RECORDED[4].1).unwrap();
        let ProbeResult::Http(http) = &answer.result else {
            panic!("{answer:?}")
        };
        assert_eq!(http.status, Some(200));
        assert_eq!(http.body_preview, "hello from web\n");
    }

    #[test]
    fn a_dns_answer_without_the_pods_settings_has_none() {
        let text = r#"{"target":{},"name":"x","type":"A","answers":[],"source":null,"latencyMs":1.0,"error":"no resolv.conf","errorKind":"config"}"#;
        let answer: ProbeAnswer = serde_json::from_str(text).unwrap();
        let ProbeResult::Dns(dns) = &answer.result else {
            panic!("{answer:?}")
        };
        assert_eq!(dns.settings, None);
        assert_eq!(serde_json::to_string(&answer).unwrap(), text);
    }
}
