//! `GET .../diag/{view}`: the built-in diagnostics' answers ([`DiagAnswer`]),
//! one item type per view, and the probes' answers ([`probe`]).
//!
//! The agent has always answered a view with its keys sorted (it built the
//! answer as a `serde_json::Value`, whose objects are sorted maps), so the
//! fields of every type here are declared in the alphabetical order of their
//! JSON names: serializing a value gives the same bytes clients have always
//! read. The probes' answers were written in declaration order, and keep it.

pub mod probe;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The views of `GET .../diag/{view}`, by their path names.
pub const VIEWS: &[&str] = &[
    "processes",
    "sockets",
    "interfaces",
    "routes",
    "cgroup",
    "open-files",
    "env",
    "mounts",
];

/// The container a view was read from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DiagTarget {
    pub container: String,
    pub container_id: String,
    pub namespace: String,
    /// The container's init process, on the host.
    pub pid: u32,
    pub pod: String,
}

/// What a view read: its items, or the `cgroup` view's usage.
#[derive(Debug, Clone, PartialEq)]
pub enum ViewData {
    Processes(Vec<ProcessEntry>),
    Sockets(Vec<SocketEntry>),
    Interfaces(Vec<Interface>),
    Routes(Vec<Route>),
    Cgroup(CgroupUsage),
    OpenFiles(Vec<OpenFile>),
    Env(Vec<EnvVar>),
    Mounts(Vec<Mount>),
}

impl ViewData {
    /// The view's path name (`open-files`, ...).
    pub fn view(&self) -> &'static str {
        match self {
            Self::Processes(_) => "processes",
            Self::Sockets(_) => "sockets",
            Self::Interfaces(_) => "interfaces",
            Self::Routes(_) => "routes",
            Self::Cgroup(_) => "cgroup",
            Self::OpenFiles(_) => "open-files",
            Self::Env(_) => "env",
            Self::Mounts(_) => "mounts",
        }
    }
}

/// A view's answer: `{"items": [...], "target": {...}, "view": "..."}`, or
/// for `cgroup` `{"target": {...}, "usage": {...}, "view": "cgroup"}`.
///
/// Generic over the target like [`RunResult`](crate::RunResult), so a client
/// that does not care reads it as JSON; the agent answers a [`DiagTarget`].
/// The JSON names the view, and the view says what `items` holds, so the
/// (de)serialization is written by hand around its wire form.
#[derive(Debug, Clone, PartialEq)]
pub struct DiagAnswer<T = DiagTarget> {
    pub target: T,
    pub data: ViewData,
}

/// The answer as it is on the wire, fields in their JSON order.
#[derive(Serialize, Deserialize)]
struct DiagAnswerJson<I, T> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    items: Option<I>,
    target: T,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    usage: Option<CgroupUsage>,
    view: String,
}

// [`DiagAnswer`]'s OpenAPI schema: the wire form, documented (its doc
// comment is the schema's description).
/// A diagnostic view's answer: the `view`, the `target` read, and the view's
/// `items` (for `cgroup`, its `usage`).
#[cfg(feature = "openapi")]
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct DiagAnswerSchema {
    /// The view's entries: `ProcessEntry`, `SocketEntry`, `Interface`,
    /// `Route`, `OpenFile`, `EnvVar` or `Mount` (all but `cgroup`).
    #[schema(value_type = Option<Vec<Object>>)]
    items: Option<Vec<serde_json::Value>>,
    /// namespace, pod, container, containerId, pid.
    target: DiagTarget,
    /// The `cgroup` view's answer.
    usage: Option<CgroupUsage>,
    /// The view asked for.
    view: String,
}

impl<T: Serialize> Serialize for DiagAnswer<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        /// The items of any view, borrowed.
        #[derive(Serialize)]
        #[serde(untagged)]
        enum Items<'a> {
            Processes(&'a [ProcessEntry]),
            Sockets(&'a [SocketEntry]),
            Interfaces(&'a [Interface]),
            Routes(&'a [Route]),
            OpenFiles(&'a [OpenFile]),
            Env(&'a [EnvVar]),
            Mounts(&'a [Mount]),
        }
        let (items, usage) = match &self.data {
            ViewData::Processes(items) => (Some(Items::Processes(items)), None),
            ViewData::Sockets(items) => (Some(Items::Sockets(items)), None),
            ViewData::Interfaces(items) => (Some(Items::Interfaces(items)), None),
            ViewData::Routes(items) => (Some(Items::Routes(items)), None),
            ViewData::Cgroup(usage) => (None, Some(usage.clone())),
            ViewData::OpenFiles(items) => (Some(Items::OpenFiles(items)), None),
            ViewData::Env(items) => (Some(Items::Env(items)), None),
            ViewData::Mounts(items) => (Some(Items::Mounts(items)), None),
        };
        DiagAnswerJson {
            items,
            target: &self.target,
            usage,
            view: self.data.view().to_owned(),
        }
        .serialize(serializer)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for DiagAnswer<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let DiagAnswerJson {
            items,
            target,
            usage,
            view,
        } = DiagAnswerJson::<serde_json::Value, T>::deserialize(deserializer)?;
        let items = move || items.ok_or_else(|| D::Error::missing_field("items"));
        fn typed<I: serde::de::DeserializeOwned, E: serde::de::Error>(
            items: serde_json::Value,
        ) -> Result<I, E> {
            serde_json::from_value(items).map_err(E::custom)
        }
        let data = match view.as_str() {
            "processes" => ViewData::Processes(typed(items()?)?),
            "sockets" => ViewData::Sockets(typed(items()?)?),
            "interfaces" => ViewData::Interfaces(typed(items()?)?),
            "routes" => ViewData::Routes(typed(items()?)?),
            "cgroup" => ViewData::Cgroup(usage.ok_or_else(|| D::Error::missing_field("usage"))?),
            "open-files" => ViewData::OpenFiles(typed(items()?)?),
            "env" => ViewData::Env(typed(items()?)?),
            "mounts" => ViewData::Mounts(typed(items()?)?),
            other => return Err(D::Error::unknown_variant(other, VIEWS)),
        };
        Ok(Self { target, data })
    }
}

#[cfg(feature = "openapi")]
impl<T> utoipa::PartialSchema for DiagAnswer<T> {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        <DiagAnswerSchema as utoipa::PartialSchema>::schema()
    }
}

#[cfg(feature = "openapi")]
impl<T> utoipa::ToSchema for DiagAnswer<T> {
    fn name() -> std::borrow::Cow<'static, str> {
        "DiagAnswer".into()
    }

    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        <DiagAnswerSchema as utoipa::ToSchema>::schemas(schemas);
    }
}

/// One process of the target (`processes`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ProcessEntry {
    /// argv; empty for kernel threads and zombies.
    pub cmdline: Vec<String>,
    pub command: String,
    /// User plus system CPU time.
    pub cpu_seconds: f64,
    pub host_pid: u32,
    /// The parent's PID inside; `null` for a parent outside (the runtime).
    pub parent_pid: Option<u32>,
    /// PID inside the container's PID namespace.
    pub pid: u32,
    pub rss_bytes: u64,
    /// RFC 3339.
    pub started_at: String,
    /// `R`, `S`, `D`, `Z`, ... as `ps` shows it, and its meaning.
    pub state: String,
    pub state_description: String,
    pub threads: i64,
    pub uid: u32,
    /// The name from the container's own `/etc/passwd`, when it has one.
    pub user: Option<String>,
}

/// One socket of the pod's network namespace (`sockets`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SocketEntry {
    pub inode: u64,
    /// `ip:port`, or the path of a unix socket (`@name` for abstract ones).
    pub local: String,
    /// Who holds it: PID inside, host PID, command.
    pub processes: Vec<Holder>,
    /// `tcp`, `tcp6`, `udp`, `udp6` or `unix`.
    pub protocol: String,
    pub remote: Option<String>,
    pub rx_queue: Option<u32>,
    /// `LISTEN`, `ESTABLISHED`, ... (TCP); `UNCONNECTED`, `ESTABLISHED` (UDP,
    /// as `ss` says it); the unix socket state.
    pub state: String,
    pub tx_queue: Option<u32>,
    pub uid: Option<u32>,
}

/// A process that holds a socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Holder {
    pub command: String,
    pub host_pid: u32,
    pub pid: u32,
}

/// One network interface of the pod (`interfaces`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    /// `address/prefix`.
    pub addresses: Vec<String>,
    pub loopback: bool,
    pub mac: Option<String>,
    pub name: String,
    pub running: bool,
    pub rx_bytes: u64,
    pub rx_dropped: u64,
    pub rx_errors: u64,
    pub rx_packets: u64,
    pub tx_bytes: u64,
    pub tx_dropped: u64,
    pub tx_errors: u64,
    pub tx_packets: u64,
    pub up: bool,
}

/// One IPv4 route of the pod (`routes`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// `address/prefix`; `0.0.0.0/0` is the default route.
    pub destination: String,
    pub flags: u16,
    pub gateway: Option<String>,
    pub interface: String,
    pub metric: u32,
}

/// The container's resource use from its cgroups (`cgroup`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct CgroupUsage {
    pub cpu: Cpu,
    pub memory: Memory,
    /// The cgroup directories read.
    pub paths: Vec<String>,
    pub pids: Pids,
    /// 1 or 2.
    pub version: u8,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Memory {
    /// `null`: no limit.
    pub limit_bytes: Option<u64>,
    /// Times the usage hit the limit (v2 `max` events, v1 `failcnt`).
    pub limit_hits: Option<u64>,
    /// Processes killed by the OOM killer in this cgroup.
    pub oom_kills: Option<u64>,
    pub usage_bytes: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Cpu {
    /// The quota in CPUs (`quota / period`); `null`: none.
    pub limit_cpus: Option<f64>,
    /// CFS periods, and those in which the cgroup was throttled.
    pub periods: Option<u64>,
    pub throttled_periods: Option<u64>,
    pub throttled_seconds: Option<f64>,
    pub usage_seconds: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Pids {
    pub current: Option<u64>,
    /// `null`: no limit.
    pub limit: Option<u64>,
}

/// One open descriptor of a process (`open-files`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct OpenFile {
    pub fd: i32,
    /// `file`, `socket`, `pipe`, `anon_inode`, `memfd`, `other`.
    pub kind: String,
    /// The path (inside the container's filesystem), or `socket:[inode]`...
    pub target: String,
}

/// One variable of a process's environment (`env`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    pub name: String,
    pub redacted: bool,
    /// `null` when redacted.
    pub value: Option<String>,
}

/// One mount a process sees (`mounts`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Mount {
    pub fs_type: String,
    pub mount_point: String,
    /// The mount's own options (`ro`, `nosuid`, ...).
    pub options: Vec<String>,
    pub read_only: bool,
    /// Where in its filesystem the mount starts (a volume's directory).
    pub root: String,
    pub source: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers recorded from the agent against the test bed's demo pods
    /// (`shop/web`, `default/busybox`), before these types existed.
    fn recorded(name: &str) -> &'static str {
        match name {
            "processes" => include_str!("diag/testdata/processes.json"),
            "processes-busybox" => include_str!("diag/testdata/processes-busybox.json"),
            "sockets" => include_str!("diag/testdata/sockets.json"),
            "interfaces" => include_str!("diag/testdata/interfaces.json"),
            "routes" => include_str!("diag/testdata/routes.json"),
            "cgroup" => include_str!("diag/testdata/cgroup.json"),
            "open-files" => include_str!("diag/testdata/open-files.json"),
            "env" => include_str!("diag/testdata/env.json"),
            "mounts" => include_str!("diag/testdata/mounts.json"),
            other => panic!("nothing recorded for {other}"),
        }
    }

    #[test]
    fn every_recorded_view_parses_and_writes_back_the_same_bytes() {
        for name in [
            "processes",
            "processes-busybox",
            "sockets",
            "interfaces",
            "routes",
            "cgroup",
            "open-files",
            "env",
            "mounts",
        ] {
            let text = recorded(name).trim_end();
            let answer: DiagAnswer = serde_json::from_str(text).unwrap();
            assert!(name.starts_with(answer.data.view()), "{name}");
            assert_eq!(serde_json::to_string(&answer).unwrap(), text, "{name}");
        }
    }

    #[test]
    fn recorded_views_read_as_their_types() {
        let answer: DiagAnswer = serde_json::from_str(recorded("processes-busybox")).unwrap();
        assert_eq!(answer.target.namespace, "default");
        assert_eq!(answer.target.pod, "busybox");
        let ViewData::Processes(processes) = answer.data else {
            panic!("{:?}", answer.data)
        };
        assert_eq!(processes[0].pid, 1);
        assert_eq!(processes[0].parent_pid, None);
        assert_eq!(processes[0].user.as_deref(), Some("root"));
        assert_eq!(processes[1].cmdline, ["sleep", "3600"]);
        assert_eq!(processes[1].parent_pid, Some(1));

        let answer: DiagAnswer = serde_json::from_str(recorded("sockets")).unwrap();
        let ViewData::Sockets(sockets) = answer.data else {
            panic!("{:?}", answer.data)
        };
        assert_eq!(sockets[0].local, "0.0.0.0:8080");
        assert_eq!(sockets[0].remote, None);
        assert_eq!(sockets[0].processes[0].command, "hello");

        let answer: DiagAnswer = serde_json::from_str(recorded("cgroup")).unwrap();
        let ViewData::Cgroup(usage) = answer.data else {
            panic!("{:?}", answer.data)
        };
        assert_eq!(usage.version, 1);
        assert_eq!(usage.memory.limit_bytes, None);
        assert_eq!(usage.pids.current, Some(1));

        let answer: DiagAnswer = serde_json::from_str(recorded("env")).unwrap();
        let ViewData::Env(env) = answer.data else {
            panic!("{:?}", answer.data)
        };
        assert!(
            env.iter()
                .any(|v| v.name == "PORT" && v.value.as_deref() == Some("8080"))
        );
    }

    #[test]
    fn an_answer_must_hold_what_its_view_says() {
        let target =
            r#""target":{"container":"c","containerId":"i","namespace":"n","pid":1,"pod":"p"}"#;
        for bad in [
            format!(r#"{{{target},"view":"processes"}}"#),
            format!(r#"{{{target},"view":"cgroup","items":[]}}"#),
            format!(r#"{{"items":[{{"fd":1}}],{target},"view":"open-files"}}"#),
            format!(r#"{{"items":[],{target},"view":"nope"}}"#),
        ] {
            assert!(serde_json::from_str::<DiagAnswer>(&bad).is_err(), "{bad}");
        }
        let empty: DiagAnswer =
            serde_json::from_str(&format!(r#"{{"items":[],{target},"view":"sockets"}}"#)).unwrap();
        assert_eq!(empty.data, ViewData::Sockets(Vec::new()));
    }
}
