//! `kubectl nsdebug diag`: the agent's diagnostic answers for a human. A view
//! (processes, sockets, ...) is a table like `kubectl get`, the `cgroup`
//! usage and the probes (dns, tcp, http) are `KEY: value` lines and the
//! environment is `NAME=value` lines. The answers are the wire crate's types
//! (`nsdebug_wire::diag`); `-o json` prints the agent's JSON instead.

use std::fmt::Write as _;

use nsdebug_wire::diag::probe::{DnsResult, HttpResult, ProbeAnswer, ProbeResult, TcpResult};
use nsdebug_wire::diag::{CgroupUsage, DiagAnswer, EnvVar, ViewData};
use serde_json::Value;

/// How `diag` prints an answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Tables and lines for a person.
    #[default]
    Human,
    /// The agent's JSON, pretty-printed.
    Json,
}

/// The answer `body` to `view` as printed, newline-terminated. An answer
/// this plugin does not know (a newer agent's view) is printed as JSON.
pub fn render(view: &str, body: &Value, output: Output) -> String {
    let json = || serde_json::to_string_pretty(body).unwrap_or_default() + "\n";
    if output == Output::Json {
        return json();
    }
    let human = match view {
        "dns" | "tcp" | "http" => serde_json::from_value::<ProbeAnswer>(body.clone())
            .ok()
            .map(|answer| probe(&answer.result)),
        _ => serde_json::from_value::<DiagAnswer>(body.clone())
            .ok()
            .map(|answer| diag(&answer.data)),
    };
    human.unwrap_or_else(json)
}

/// A view's data as a table (or lines).
fn diag(data: &ViewData) -> String {
    match data {
        ViewData::Processes(processes) => table(
            &["PID", "HOST-PID", "PPID", "USER", "STATE", "RSS", "CMD"],
            processes.iter().map(|p| {
                vec![
                    p.pid.to_string(),
                    p.host_pid.to_string(),
                    p.parent_pid
                        .map_or_else(|| "-".into(), |pid| pid.to_string()),
                    p.user.clone().unwrap_or_else(|| p.uid.to_string()),
                    p.state.clone(),
                    bytes(p.rss_bytes),
                    if p.cmdline.is_empty() {
                        format!("[{}]", p.command)
                    } else {
                        p.cmdline.join(" ")
                    },
                ]
            }),
        ),
        ViewData::Sockets(sockets) => table(
            &["PROTO", "STATE", "LOCAL", "REMOTE", "PROCESS"],
            sockets.iter().map(|s| {
                let holders: Vec<String> = s
                    .processes
                    .iter()
                    .map(|h| format!("{}({})", h.command, h.pid))
                    .collect();
                vec![
                    s.protocol.clone(),
                    s.state.clone(),
                    dash(&s.local),
                    s.remote.as_deref().map_or_else(|| "-".into(), dash),
                    dash(&holders.join(",")),
                ]
            }),
        ),
        ViewData::Interfaces(interfaces) => table(
            &["NAME", "STATE", "MAC", "RX", "TX", "ADDRESSES"],
            interfaces.iter().map(|i| {
                let state = match (i.up, i.running) {
                    (true, true) => "UP",
                    (true, false) => "UP,NO-CARRIER",
                    (false, _) => "DOWN",
                };
                vec![
                    i.name.clone(),
                    state.into(),
                    i.mac.clone().unwrap_or_else(|| "-".into()),
                    bytes(i.rx_bytes),
                    bytes(i.tx_bytes),
                    dash(&i.addresses.join(",")),
                ]
            }),
        ),
        ViewData::Routes(routes) => table(
            &["DESTINATION", "GATEWAY", "INTERFACE", "METRIC"],
            routes.iter().map(|r| {
                vec![
                    r.destination.clone(),
                    r.gateway.clone().unwrap_or_else(|| "-".into()),
                    r.interface.clone(),
                    r.metric.to_string(),
                ]
            }),
        ),
        ViewData::Cgroup(usage) => cgroup(usage),
        ViewData::OpenFiles(files) => table(
            &["FD", "KIND", "TARGET"],
            files
                .iter()
                .map(|f| vec![f.fd.to_string(), f.kind.clone(), f.target.clone()]),
        ),
        ViewData::Env(vars) => vars.iter().map(env_line).collect(),
        ViewData::Mounts(mounts) => table(
            &["MOUNTPOINT", "TYPE", "SOURCE", "OPTIONS"],
            mounts.iter().map(|m| {
                vec![
                    m.mount_point.clone(),
                    m.fs_type.clone(),
                    m.source.clone().unwrap_or_else(|| "-".into()),
                    m.options.join(","),
                ]
            }),
        ),
    }
}

fn env_line(var: &EnvVar) -> String {
    match &var.value {
        Some(value) if !var.redacted => format!("{}={value}\n", var.name),
        _ => format!("{}=<redacted; reveal=true shows it>\n", var.name),
    }
}

/// `KEY: value` lines, the keys aligned.
fn lines(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(key, _)| key.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (key, value) in pairs {
        let _ = writeln!(out, "{:width$} {value}", format!("{key}:"));
    }
    out
}

fn cgroup(usage: &CgroupUsage) -> String {
    let none = |limit: Option<u64>, show: fn(u64) -> String| limit.map_or("none".into(), show);
    let count = |value: Option<u64>| value.map_or("-".into(), |v| v.to_string());
    let seconds = |value: Option<f64>| value.map_or("-".into(), |s| format!("{s:.3}s"));
    let (memory, cpu, pids) = (&usage.memory, &usage.cpu, &usage.pids);
    let mut pairs = vec![
        ("Cgroup version", usage.version.to_string()),
        ("Memory usage", memory.usage_bytes.map_or("-".into(), bytes)),
        ("Memory limit", none(memory.limit_bytes, bytes)),
        ("Memory limit hits", count(memory.limit_hits)),
        ("OOM kills", count(memory.oom_kills)),
        ("CPU usage", seconds(cpu.usage_seconds)),
        (
            "CPU limit",
            cpu.limit_cpus
                .map_or("none".into(), |c| format!("{c} CPUs")),
        ),
        ("CPU periods", count(cpu.periods)),
        ("CPU throttled periods", count(cpu.throttled_periods)),
        ("CPU throttled", seconds(cpu.throttled_seconds)),
        ("PIDs", count(pids.current)),
        ("PIDs limit", none(pids.limit, |n| n.to_string())),
    ];
    for path in &usage.paths {
        pairs.push(("Path", path.clone()));
    }
    lines(&pairs)
}

/// A probe's result as lines.
fn probe(result: &ProbeResult) -> String {
    let mut pairs = match result {
        ProbeResult::Dns(dns) => dns_lines(dns),
        ProbeResult::Tcp(tcp) => tcp_lines(tcp),
        ProbeResult::Http(http) => http_lines(http),
    };
    let (error, kind) = match result {
        ProbeResult::Dns(r) => (&r.error, &r.error_kind),
        ProbeResult::Tcp(r) => (&r.error, &r.error_kind),
        ProbeResult::Http(r) => (&r.error, &r.error_kind),
    };
    if let Some(error) = error {
        let kind = kind.as_deref().unwrap_or("error");
        pairs.push(("Error", format!("{error} ({kind})")));
    }
    lines(&pairs)
}

fn millis(ms: f64) -> String {
    format!("{ms:.2}ms")
}

fn dns_lines(dns: &DnsResult) -> Vec<(&'static str, String)> {
    let mut pairs = vec![("Name", format!("{} {}", dns.name, dns.record_type))];
    for answer in &dns.answers {
        pairs.push((
            "Answer",
            format!(
                "{} {} {} {}",
                answer.name, answer.ttl, answer.record_type, answer.data
            ),
        ));
    }
    if let Some(source) = dns.source {
        let source = match source {
            nsdebug_wire::diag::probe::Source::Hosts => "the pod's /etc/hosts",
            nsdebug_wire::diag::probe::Source::Dns => "DNS",
        };
        pairs.push(("Source", source.into()));
    }
    if let Some(settings) = &dns.settings {
        pairs.push(("Nameservers", settings.nameservers.join(", ")));
        pairs.push(("Search", dash(&settings.search.join(" "))));
        pairs.push(("Ndots", settings.ndots.to_string()));
    }
    pairs.push(("Latency", millis(dns.latency_ms)));
    pairs
}

fn tcp_lines(tcp: &TcpResult) -> Vec<(&'static str, String)> {
    let mut pairs = vec![("Host", format!("{}:{}", tcp.host, tcp.port))];
    if let Some(resolved) = &tcp.resolved {
        pairs.push(("Resolved", resolved.join(", ")));
    }
    if let Some(address) = &tcp.address {
        pairs.push(("Address", address.clone()));
    }
    pairs.push(("Connected", if tcp.connected { "yes" } else { "no" }.into()));
    pairs.push(("Latency", millis(tcp.latency_ms)));
    pairs
}

fn http_lines(http: &HttpResult) -> Vec<(&'static str, String)> {
    let mut pairs = vec![("URL", http.url.clone())];
    if let Some(address) = &http.address {
        pairs.push(("Address", address.clone()));
    }
    if let Some(status) = http.status {
        pairs.push(("Status", status.to_string()));
    }
    if let Some(location) = &http.location {
        pairs.push(("Location", location.clone()));
    }
    pairs.push(("Latency", millis(http.latency_ms)));
    pairs.push(("Duration", millis(http.duration_ms)));
    for (name, value) in &http.headers {
        pairs.push(("Header", format!("{name}: {value}")));
    }
    if let Some(tls) = &http.tls {
        let verified = if tls.verified {
            "verified"
        } else {
            "not verified"
        };
        let subject = tls.subject.as_deref().unwrap_or("?");
        pairs.push(("TLS", format!("{subject} ({verified})")));
        if let Some(not_after) = &tls.not_after {
            pairs.push(("TLS not after", not_after.clone()));
        }
    }
    let truncated = if http.body_truncated {
        ", truncated"
    } else {
        ""
    };
    pairs.push(("Body", format!("{} bytes{truncated}", http.body_bytes)));
    if !http.body_preview.is_empty() {
        pairs.push(("Body preview", format!("{:?}", http.body_preview)));
    }
    pairs
}

/// `-` for an empty cell, so columns stay readable.
fn dash(text: &str) -> String {
    if text.is_empty() {
        "-".into()
    } else {
        text.to_string()
    }
}

/// Bytes as `ps` and `kubectl top` write them: `540Ki`, `1.5Mi`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["", "Ki", "Mi", "Gi", "Ti"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value >= 10.0 {
        format!("{value:.0}{}", UNITS[unit])
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}

/// Columns padded like `kubectl get`: three spaces apart, the last one not
/// padded.
fn table(headers: &[&str], rows: impl Iterator<Item = Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows.collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let all = std::iter::once(headers.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    for row in all.chain(rows) {
        let last = row.len().saturating_sub(1);
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i < last {
                let pad = widths[i] - cell.chars().count() + 3;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers recorded from the agent on the test bed (the wire crate's
    /// test data): the demo pods `default/busybox` and `shop/web`.
    fn recorded(name: &str) -> Value {
        let text = match name {
            "processes" => include_str!("../../wire/src/diag/testdata/processes-busybox.json"),
            "sockets" => include_str!("../../wire/src/diag/testdata/sockets.json"),
            "routes" => include_str!("../../wire/src/diag/testdata/routes.json"),
            "cgroup" => include_str!("../../wire/src/diag/testdata/cgroup.json"),
            "env" => include_str!("../../wire/src/diag/testdata/env.json"),
            "dns" => include_str!("../../wire/src/diag/testdata/dns-error.json"),
            "http" => include_str!("../../wire/src/diag/testdata/http.json"),
            other => panic!("nothing recorded for {other}"),
        };
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn processes_are_a_table_like_kubectl_get() {
        let text = render("processes", &recorded("processes"), Output::Human);
        assert_eq!(
            text,
            "PID   HOST-PID   PPID   USER   STATE   RSS     CMD\n\
             1     12942      -      root   S       1.5Mi   sh -c trap 'exit 0' TERM; while true; do sleep 3600 & wait $!; done\n\
             7     12955      1      root   S       1.4Mi   sleep 3600\n"
        );
    }

    #[test]
    fn sockets_and_routes_are_tables() {
        let text = render("sockets", &recorded("sockets"), Output::Human);
        assert_eq!(
            text,
            "PROTO   STATE    LOCAL          REMOTE   PROCESS\n\
             tcp     LISTEN   0.0.0.0:8080   -        hello(1)\n"
        );
        let text = render("routes", &recorded("routes"), Output::Human);
        assert_eq!(
            text,
            "DESTINATION    GATEWAY     INTERFACE   METRIC\n\
             0.0.0.0/0      10.99.0.1   eth0        0\n\
             10.99.0.0/24   -           eth0        0\n"
        );
    }

    #[test]
    fn cgroup_usage_and_the_environment_are_lines() {
        let text = render("cgroup", &recorded("cgroup"), Output::Human);
        assert!(text.contains("Memory usage:          592Ki\n"), "{text}");
        assert!(text.contains("Memory limit:          none\n"), "{text}");
        assert!(text.contains("PIDs:                  1\n"), "{text}");
        let text = render("env", &recorded("env"), Output::Human);
        assert!(text.contains("PORT=8080\n"), "{text}");
        let redacted = EnvVar {
            name: "DB_PASSWORD".into(),
            redacted: true,
            value: None,
        };
        assert_eq!(
            env_line(&redacted),
            "DB_PASSWORD=<redacted; reveal=true shows it>\n"
        );
    }

    #[test]
    fn probes_are_lines_with_the_error_said() {
        let text = render("dns", &recorded("dns"), Output::Human);
        assert!(
            text.starts_with("Name:        nothing.invalid A\n"),
            "{text}"
        );
        assert!(
            text.ends_with("Error:       nothing.invalid does not exist (NXDOMAIN) (nxdomain)\n"),
            "{text}"
        );
        let text = render("http", &recorded("http"), Output::Human);
        assert!(text.contains("Status:       200\n"), "{text}");
        assert!(
            text.contains("Body preview: \"hello from web\\n\"\n"),
            "{text}"
        );
    }

    #[test]
    fn json_is_the_agents_answer_and_an_unknown_answer_stays_json() {
        let body = recorded("sockets");
        let text = render("sockets", &body, Output::Json);
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), body);
        let newer = serde_json::json!({"items": [{"x": 1}], "view": "future"});
        assert_eq!(
            render("future", &newer, Output::Human),
            serde_json::to_string_pretty(&newer).unwrap() + "\n"
        );
    }

    #[test]
    fn sizes_read_like_kubectl_top() {
        assert_eq!(bytes(0), "0");
        assert_eq!(bytes(1023), "1023");
        assert_eq!(bytes(540_672), "528Ki");
        assert_eq!(bytes(1_576_960), "1.5Mi");
        assert_eq!(bytes(20 << 30), "20Gi");
    }
}
