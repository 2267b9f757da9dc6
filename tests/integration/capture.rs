//! Packet capture from a pod's network namespace (`GET .../capture`), against
//! real pods on the test bed, with real traffic (busybox `ping` from the host,
//! HTTP to the distroless server) and the files read back by the real tshark.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::pods::{ContainerSpec, PodSpec, run_pod};
use support::{Agent, assert_status, eventually, one_pod};

/// How long any capture in these tests may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(60);

/// The host's end of the test bed's bridge: where the host's pings come from.
const HOST_IP: &str = "10.99.0.1";

/// An agent on the test bed whose audit log the test reads.
struct Audited {
    agent: Agent,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Audited {
    fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.log");
        let mut args = vec!["--audit-log", log.to_str().unwrap()];
        args.extend_from_slice(extra);
        Self {
            agent: Agent::start_on_testbed(&args),
            log,
            _dir: dir,
        }
    }

    /// The `ResponseComplete` event of the capture whose URI contains `uri`
    /// and that ran (a `ResponseStarted` with its audit ID came first).
    async fn completed(&self, uri: &str) -> Value {
        eventually(
            "the capture's ResponseComplete audit event",
            PATIENCE,
            || async {
                let events: Vec<Value> = std::fs::read_to_string(&self.log)
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                    .collect();
                let started = |id: &Value| {
                    events
                        .iter()
                        .any(|e| e["stage"] == "ResponseStarted" && &e["auditID"] == id)
                };
                events
                    .iter()
                    .find(|event| {
                        event["stage"] == "ResponseComplete"
                            && event["requestURI"]
                                .as_str()
                                .is_some_and(|u| u.contains(uri))
                            && started(&event["auditID"])
                    })
                    .cloned()
            },
        )
        .await
    }

    /// Every event whose URI contains `uri`.
    fn all(&self, uri: &str) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|event| {
                event["requestURI"]
                    .as_str()
                    .is_some_and(|u| u.contains(uri))
            })
            .collect()
    }
}

/// `GET path`, not yet read.
async fn open(agent: &Agent, path: &str) -> reqwest::Response {
    reqwest::get(format!("{}{path}", agent.url))
        .await
        .unwrap_or_else(|err| panic!("GET {path}: {err}"))
}

/// Starts a capture that must answer 200 with a capture file.
async fn start_capture(agent: &Agent, path: &str, content_type: &str) -> reqwest::Response {
    let response = open(agent, path).await;
    let status = response.status().as_u16();
    if status != 200 {
        panic!("GET {path}: {status} {}", response.text().await.unwrap());
    }
    assert_eq!(response.headers()["content-type"], content_type);
    response
}

/// The whole body, which must end by itself (a cap) within [`PATIENCE`].
async fn read_to_end(response: reqwest::Response) -> Vec<u8> {
    tokio::time::timeout(PATIENCE, response.bytes())
        .await
        .expect("the capture ended by itself")
        .expect("the body streams without error")
        .to_vec()
}

/// `busybox ping` from the host: `count` echo requests, each answered.
fn ping(ip: &str, count: u32, size: u32) {
    let output = Command::new("/bin/busybox")
        .args(["ping", "-A", "-W", "5", "-c", &count.to_string()])
        .args(["-s", &size.to_string(), ip])
        .output()
        .expect("busybox-static is installed by the test bed");
    assert!(output.status.success(), "ping {ip}: {output:?}");
}

/// `tshark -r FILE -T fields -e ...`: one line per packet, fields tab-separated.
fn tshark(file: &Path, fields: &[&str]) -> Vec<String> {
    let mut command = Command::new("tshark");
    command.arg("-r").arg(file).args(["-T", "fields"]);
    for field in fields {
        command.args(["-e", field]);
    }
    let output = command
        .output()
        .expect("tshark is installed (hack/test.sh installs it)");
    assert!(
        output.status.success(),
        "tshark -r {}: {}",
        file.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn save(bytes: &[u8], name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(name);
    std::fs::write(&file, bytes).unwrap();
    (dir, file)
}

fn pod_pid(agent_target: &Value) -> u64 {
    agent_target["pid"].as_u64().unwrap()
}

#[tokio::test]
async fn a_pcap_holds_the_pods_traffic_and_only_it() {
    let (ns, mut client, web) = one_pod(
        "capture-pcap",
        "web",
        vec![ContainerSpec::distroless("web")],
    )
    .await;
    let other = run_pod(
        &mut client,
        &PodSpec::new(&ns, "other", vec![ContainerSpec::busybox("shell")]),
        "test",
    )
    .await;
    let audited = Audited::start(&[]);
    let agent = &audited.agent;
    let web_ip = support::eth0_ipv4(pod_pid(
        &agent.get_ok(&format!("/v1/targets/{ns}/web")).await,
    ));
    let other_ip = support::eth0_ipv4(pod_pid(
        &agent.get_ok(&format!("/v1/targets/{ns}/other")).await,
    ));

    let path = format!("/v1/targets/{ns}/web/capture?filter=icmp+or+tcp+port+8080&packets=6");
    let response = start_capture(agent, &path, "application/vnd.tcpdump.pcap").await;
    let disposition = response.headers()["content-disposition"].to_str().unwrap();
    assert!(
        disposition.starts_with(&format!("attachment; filename=\"{ns}-web-"))
            && disposition.ends_with(".pcap\""),
        "{disposition}"
    );
    // Open already: what happens now is in the file. Another pod's traffic
    // first, then two pings (4 packets) and an HTTP request, whose SYN and
    // SYN-ACK are packets 5 and 6: the packet cap ends the capture there.
    ping(&other_ip, 1, 56);
    ping(&web_ip, 2, 56);
    let page = reqwest::get(format!("http://{web_ip}:8080/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("hello from web"), "{page}");
    let file = read_to_end(response).await;
    let (_dir, path_on_disk) = save(&file, "trace.pcap");

    let packets = tshark(
        &path_on_disk,
        &[
            "ip.src",
            "ip.dst",
            "icmp.type",
            "tcp.srcport",
            "tcp.dstport",
        ],
    );
    let expected = [
        format!("{HOST_IP}\t{web_ip}\t8\t\t"),
        format!("{web_ip}\t{HOST_IP}\t0\t\t"),
        format!("{HOST_IP}\t{web_ip}\t8\t\t"),
        format!("{web_ip}\t{HOST_IP}\t0\t\t"),
    ];
    assert_eq!(packets.len(), 6, "{packets:#?}");
    assert_eq!(packets[..4], expected, "{packets:#?}");
    assert!(
        packets[4].starts_with(&format!("{HOST_IP}\t{web_ip}\t\t"))
            && packets[4].ends_with("\t8080")
    );
    assert!(packets[5].starts_with(&format!("{web_ip}\t{HOST_IP}\t\t8080\t")));
    assert!(
        !packets
            .iter()
            .any(|p| p.split('\t').take(2).any(|address| address == other_ip)),
        "another pod's ping is not in this pod's capture: {packets:#?}"
    );

    let event = audited.completed(&format!("/{ns}/web/capture")).await;
    let notes = &event["annotations"];
    assert_eq!(notes["nsdebug.dev/exit-code"], "packet limit", "{event}");
    assert_eq!(notes["nsdebug.dev/capture-packets"], "6");
    assert_eq!(notes["nsdebug.dev/capture-filter"], "icmp or tcp port 8080");
    assert_eq!(notes["nsdebug.dev/output-bytes"], file.len().to_string());
    assert_eq!(event["objectRef"]["subresource"], "exec");
    web.remove(&mut client).await;
    other.remove(&mut client).await;
}

#[tokio::test]
async fn a_pcapng_by_container_id_reads_in_tshark_with_true_timestamps() {
    let (_ns, mut client, pod) = one_pod(
        "capture-pcapng",
        "box",
        vec![ContainerSpec::busybox("shell")],
    )
    .await;
    let agent = Agent::start();
    let id = pod.id("shell");
    let target = agent.get_ok(&format!("/v1/containers/{id}")).await;
    let ip = support::eth0_ipv4(pod_pid(&target));
    let response = start_capture(
        &agent,
        &format!("/v1/containers/{id}/capture?format=pcapng&filter=icmp&packets=2"),
        "application/x-pcapng",
    )
    .await;
    ping(&ip, 1, 56);
    let file = read_to_end(response).await;
    assert_eq!(
        file[..4],
        [0x0a, 0x0d, 0x0d, 0x0a],
        "a pcapng section header"
    );
    let (_dir, path) = save(&file, "trace.pcapng");
    let packets = tshark(
        &path,
        &["ip.src", "ip.dst", "icmp.type", "frame.time_epoch"],
    );
    assert_eq!(packets.len(), 2, "{packets:#?}");
    assert!(
        packets[0].starts_with(&format!("{HOST_IP}\t{ip}\t8\t")),
        "{packets:#?}"
    );
    assert!(
        packets[1].starts_with(&format!("{ip}\t{HOST_IP}\t0\t")),
        "{packets:#?}"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for packet in &packets {
        let time: f64 = packet.rsplit('\t').next().unwrap().parse().unwrap();
        assert!(
            (now - time).abs() < 120.0,
            "timestamp {time} is not now ({now})"
        );
    }
    // The interface block names the filter; the closing block says why it ended.
    let info = Command::new("capinfos").arg(&path).output().unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    let info = info.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(info.contains("Capture oper-sys: Linux"), "{info}");
    assert!(info.contains("Capture application: nsdebug"), "{info}");
    assert!(info.contains("Name = any"), "{info}");
    assert!(info.contains("Filter string = icmp"), "{info}");
    assert!(info.contains("Number of stat entries = 1"), "{info}");
    pod.remove(&mut client).await;
}

#[tokio::test]
async fn a_silent_capture_ends_at_its_duration_with_a_valid_empty_file() {
    let (ns, mut client, pod) = one_pod(
        "capture-silent",
        "quiet",
        vec![ContainerSpec::busybox("shell")],
    )
    .await;
    let audited = Audited::start(&[]);
    for (format, header_len) in [("pcap", Some(24)), ("pcapng", None)] {
        let path =
            format!("/v1/targets/{ns}/quiet/capture?format={format}&filter=udp+port+9&duration=1s");
        let started = Instant::now();
        let content_type = if format == "pcap" {
            "application/vnd.tcpdump.pcap"
        } else {
            "application/x-pcapng"
        };
        let file = read_to_end(start_capture(&audited.agent, &path, content_type).await).await;
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(1) && took < Duration::from_secs(10),
            "a 1 s capture took {took:?}"
        );
        if let Some(len) = header_len {
            assert_eq!(file.len(), len, "only the global header");
        }
        let (_dir, saved) = save(&file, &format!("empty.{format}"));
        assert_eq!(tshark(&saved, &["frame.number"]), Vec::<String>::new());
        let event = audited.completed(&format!("format={format}&")).await;
        assert_eq!(
            event["annotations"]["nsdebug.dev/exit-code"],
            "duration limit"
        );
        assert_eq!(event["annotations"]["nsdebug.dev/capture-packets"], "0");
    }
    pod.remove(&mut client).await;
}

#[tokio::test]
async fn the_byte_cap_ends_the_file_before_it_passes_the_cap() {
    let (ns, mut client, pod) = one_pod(
        "capture-bytes",
        "chatty",
        vec![ContainerSpec::busybox("shell")],
    )
    .await;
    let audited = Audited::start(&[]);
    let target = audited
        .agent
        .get_ok(&format!("/v1/targets/{ns}/chatty"))
        .await;
    let ip = support::eth0_ipv4(pod_pid(&target));
    let cap = 2048;
    let path = format!("/v1/targets/{ns}/chatty/capture?filter=icmp&bytes={cap}&duration=1m");
    let response = start_capture(&audited.agent, &path, "application/vnd.tcpdump.pcap").await;
    // Each packet's record is about 470 bytes: 4 fit, the 5th does not.
    let pinger = std::thread::spawn({
        let ip = ip.clone();
        move || ping(&ip, 4, 400)
    });
    let file = read_to_end(response).await;
    pinger.join().unwrap();
    assert!(
        file.len() <= cap,
        "{} bytes over a cap of {cap}",
        file.len()
    );
    let (_dir, saved) = save(&file, "capped.pcap");
    let packets = tshark(&saved, &["frame.cap_len"]);
    assert_eq!(packets.len(), 4, "{packets:?}");
    let record: usize = 16 + packets[0].parse::<usize>().unwrap();
    assert!(file.len() + record > cap, "the next record would have fit");
    let event = audited.completed(&format!("/{ns}/chatty/capture")).await;
    assert_eq!(event["annotations"]["nsdebug.dev/exit-code"], "byte limit");
    assert_eq!(event["annotations"]["nsdebug.dev/capture-packets"], "4");
    pod.remove(&mut client).await;
}

/// Names of the agent's threads.
fn threads(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .collect()
}

/// Inodes of the packet sockets open in the network namespace of `pid`.
fn packet_sockets(pid: u64) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/net/packet"))
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().last().map(str::to_string))
        .collect()
}

/// True when the agent holds an open descriptor for socket `inode`.
fn agent_holds_socket(pid: u32, inode: &str) -> bool {
    let wanted = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .any(|target| target.to_str() == Some(wanted.as_str()))
}

#[tokio::test]
async fn a_client_that_hangs_up_frees_the_session_the_thread_and_the_socket() {
    let (ns, mut client, pod) = one_pod(
        "capture-hangup",
        "box",
        vec![ContainerSpec::busybox("shell")],
    )
    .await;
    let audited = Audited::start(&["--max-sessions-per-user", "1"]);
    let agent = &audited.agent;
    let target = agent.get_ok(&format!("/v1/targets/{ns}/box")).await;
    let pod_pid = pod_pid(&target);
    assert!(packet_sockets(pod_pid).is_empty(), "no capture yet");
    assert!(!threads(agent.pid()).iter().any(|t| t == "nsdebug-capture"));

    // Silent: the agent must notice the hang-up without writing anything.
    let path = format!("/v1/targets/{ns}/box/capture?filter=udp+port+9&duration=10m");
    let mut first = start_capture(agent, &path, "application/vnd.tcpdump.pcap").await;
    let header = first
        .chunk()
        .await
        .unwrap()
        .expect("the header comes at once");
    assert_eq!(header.len(), 24);
    // The capture's socket lives in the pod's namespace and in the agent.
    let sockets = packet_sockets(pod_pid);
    assert_eq!(sockets.len(), 1, "{sockets:?}");
    assert!(agent_holds_socket(agent.pid(), &sockets[0]));
    assert!(threads(agent.pid()).iter().any(|t| t == "nsdebug-capture"));
    // It is a session: over this user's limit of one.
    let (status, body) = agent.get(&path).await;
    assert_status(&body, 429, "TooManyRequests");
    assert_eq!(status, 429);

    drop(first);
    eventually(
        "the capture thread to end and its socket to close",
        PATIENCE,
        || async {
            (packet_sockets(pod_pid).is_empty()
                && !agent_holds_socket(agent.pid(), &sockets[0])
                && !threads(agent.pid()).iter().any(|t| t == "nsdebug-capture"))
            .then_some(())
        },
    )
    .await;
    let event = audited.completed(&format!("/{ns}/box/capture")).await;
    assert_eq!(
        event["annotations"]["nsdebug.dev/exit-code"],
        "client disconnected"
    );
    // The capture refused over the limit left its trail too.
    let refused = audited.all(&format!("/{ns}/box/capture"));
    assert!(
        refused.iter().any(|e| e["stage"] == "ResponseComplete"
            && e["responseStatus"]["code"] == 429
            && e["annotations"]["authorization.k8s.io/decision"] == "allow"),
        "{refused:#?}"
    );
    // The session is free again: the next capture runs.
    let mut second = start_capture(agent, &path, "application/vnd.tcpdump.pcap").await;
    assert!(second.chunk().await.unwrap().is_some());
    drop(second);
    eventually("the second capture to end", PATIENCE, || async {
        (packet_sockets(pod_pid).is_empty()
            && !threads(agent.pid()).iter().any(|t| t == "nsdebug-capture"))
        .then_some(())
    })
    .await;
    pod.remove(&mut client).await;
}

#[tokio::test]
async fn a_container_that_exits_ends_the_capture_cleanly() {
    let (ns, mut client, pod) = one_pod(
        "capture-exit",
        "brief",
        vec![ContainerSpec::busybox("shell")],
    )
    .await;
    let audited = Audited::start(&[]);
    let path = format!("/v1/targets/{ns}/brief/capture?duration=5m");
    let mut response = start_capture(&audited.agent, &path, "application/vnd.tcpdump.pcap").await;
    let mut file = response.chunk().await.unwrap().unwrap().to_vec();
    pod.stop(&mut client, "shell", 5).await;
    file.extend(read_to_end(response).await);
    let (_dir, saved) = save(&file, "brief.pcap");
    tshark(&saved, &["frame.number"]);
    let event = audited.completed(&format!("/{ns}/brief/capture")).await;
    assert_eq!(
        event["annotations"]["nsdebug.dev/exit-code"],
        "container exited"
    );
    pod.remove(&mut client).await;
}

#[tokio::test]
async fn refusals_are_clear() {
    let (ns, mut client, pod) = one_pod(
        "capture-errors",
        "box",
        vec![
            ContainerSpec::busybox("shell"),
            ContainerSpec::busybox("gone"),
        ],
    )
    .await;
    pod.stop(&mut client, "gone", 5).await;
    let agent = Agent::start();
    let base = format!("/v1/targets/{ns}/box/capture?container=shell");

    let (status, body) = agent.get(&format!("{base}&filter=tcp+portt+80")).await;
    assert_eq!(status, 400, "{body}");
    assert_status(&body, 400, "BadRequest");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.starts_with("invalid capture filter \"tcp portt 80\": ")
            && message.contains("syntax error"),
        "libpcap's own words: {message}"
    );

    let (_, body) = agent.get(&format!("{base}&interface=eth7")).await;
    assert_status(&body, 400, "BadRequest");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .ends_with("its interfaces are: any, eth0, lo"),
        "{body}"
    );
    for (query, says) in [
        (
            "duration=11m",
            "duration must be more than 0 and at most 10m",
        ),
        ("bytes=5GiB", "bytes must be 1.0 KiB to 1.0 GiB"),
        (
            "format=json",
            "unknown format 'json'; choose pcap or pcapng",
        ),
        ("snaplen=999999", "snaplen must be 1 to 262144"),
        ("count=5", "unknown field `count`"),
    ] {
        let (_, body) = agent.get(&format!("{base}&{query}")).await;
        assert_status(&body, 400, "BadRequest");
        assert!(
            body["message"].as_str().unwrap().contains(says),
            "{query}: {body}"
        );
    }

    let (_, body) = agent.get(&format!("/v1/targets/{ns}/nope/capture")).await;
    assert_status(&body, 404, "NotFound");
    let (_, body) = agent
        .get(&format!("/v1/targets/{ns}/box/capture?container=gone"))
        .await;
    assert_status(&body, 409, "Conflict");
    assert!(
        body["message"].as_str().unwrap().contains("is not running"),
        "{body}"
    );
    pod.remove(&mut client).await;
}

// Multi-threaded: the fake API server answers the agent on this runtime while
// the test waits on the agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_who_may_exec_may_capture() {
    use support::fake_apiserver::{FakeApiServer, FakeUser, Rule};
    let (ns, mut client, pod) = one_pod(
        "capture-auth",
        "guarded",
        vec![ContainerSpec::busybox("shell")],
    )
    .await;
    let users = vec![
        FakeUser {
            token: "alice-token",
            name: "alice",
            groups: vec!["dev"],
        },
        FakeUser {
            token: "bob-token",
            name: "bob",
            groups: vec!["viewers"],
        },
    ];
    let rule = |user, verb, resource| Rule {
        user,
        verb,
        resource,
        namespace: Some(ns.clone()),
    };
    let rules = vec![
        rule("alice", "create", "pods/exec"),
        rule("bob", "get", "pods"),
        rule("bob", "list", "pods"),
    ];
    let api = FakeApiServer::start(users, rules).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let socket = support::testbed_socket();
    let agent = Agent::start_secure(&[
        "--cri-socket",
        socket.to_str().unwrap(),
        "--kubeconfig",
        api.kubeconfig.to_str().unwrap(),
        "--audit-log",
        log.to_str().unwrap(),
    ]);
    let https = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let url = format!(
        "{}/v1/targets/{ns}/guarded/capture?filter=udp+port+9&duration=1s",
        agent.url
    );
    let get = |token: Option<&'static str>| {
        let mut request = https.get(&url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };

    let anonymous = get(None).await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let bob = get(Some("bob-token")).await.unwrap();
    assert_eq!(bob.status(), 403);
    let body: Value = bob.json().await.unwrap();
    assert_status(&body, 403, "Forbidden");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("User \"bob\" cannot create resource \"pods/exec\""),
        "{body}"
    );
    let alice = get(Some("alice-token")).await.unwrap();
    assert_eq!(alice.status(), 200);
    let file = read_to_end(alice).await;
    assert_eq!(file.len(), 24, "a valid, empty pcap: {file:?}");

    // The review the API server got is the one `kubectl exec` causes.
    let reviews = api.reviews("SubjectAccessReview");
    let asked = reviews
        .iter()
        .find(|r| r["spec"]["user"] == "alice")
        .expect("alice's capture was reviewed");
    let attrs = &asked["spec"]["resourceAttributes"];
    assert_eq!(
        (&attrs["verb"], &attrs["resource"], &attrs["subresource"]),
        (&json("create"), &json("pods"), &json("exec"))
    );
    assert_eq!(attrs["name"], "guarded");
    // The pod learns about it, as a warning: a capture sees its traffic.
    let events = eventually("the capture's pod Event", PATIENCE, || async {
        let events = api.reviews("Event");
        (!events.is_empty()).then_some(events)
    })
    .await;
    assert_eq!(events.len(), 1, "bob was refused: no Event for him");
    assert_eq!(events[0]["action"], "capture");
    assert_eq!(events[0]["type"], "Warning");
    assert!(
        events[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("alice started an nsdebug capture session in container \"shell\""),
        "{}",
        events[0]
    );
    // Both decisions are in the audit log, and alice's whole session.
    let audited = |user: &'static str, stage: &'static str| {
        let log = log.clone();
        async move {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .find(|e| e["user"]["username"] == user && e["stage"] == stage)
        }
    };
    let refused = eventually("bob's refusal in the audit log", PATIENCE, || {
        audited("bob", "ResponseComplete")
    })
    .await;
    assert_eq!(refused["responseStatus"]["code"], 403);
    assert_eq!(
        refused["annotations"]["authorization.k8s.io/decision"],
        "forbid"
    );
    let done = eventually("alice's capture in the audit log", PATIENCE, || {
        audited("alice", "ResponseComplete")
    })
    .await;
    assert_eq!(
        done["annotations"]["nsdebug.dev/exit-code"],
        "duration limit"
    );
    assert_eq!(
        done["annotations"]["authorization.k8s.io/decision"],
        "allow"
    );
    pod.remove(&mut client).await;
}

fn json(text: &str) -> Value {
    Value::String(text.into())
}
