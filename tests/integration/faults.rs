//! Faults a session must survive or end cleanly from: the target container
//! stopped or killed under it, a client that resets, goes silent or stops
//! reading, and a container's PID taken by another process after it died.
//! What a user sees is asserted (the status frame, the exit event, the HTTP
//! error), and what must not remain: the command, its helper, a zombie of the
//! agent, a session slot, memory. The runtime outage is in
//! `tests/runtime_outage.rs` (it stops the runtime every test uses).

use crate::support;

use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use support::pods::ContainerSpec;
use support::{Agent, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Message, http::HeaderValue};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Long enough for anything the agent does by itself here.
const PATIENCE: Duration = Duration::from_secs(30);

/// An exec WebSocket (v5) running `command`, on a terminal or on pipes, once
/// its first (empty) frame says the command runs.
async fn open_exec(agent: &Agent, ns: &str, pod: &str, command: &[&str], tty: bool) -> Socket {
    let mut query = format!(
        "/api/v1/namespaces/{ns}/pods/{pod}/exec?stdin=true&stdout=true&stderr={}&tty={tty}",
        !tty
    );
    for word in command {
        query.push_str("&command=");
        query.extend(form_urlencoded::byte_serialize(word.as_bytes()));
    }
    let url = format!("{}{query}", agent.url.replace("http://", "ws://"));
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("v5.channel.k8s.io"),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(
        socket.next().await.unwrap().unwrap(),
        Message::Binary(vec![1].into()),
        "the empty first frame"
    );
    socket
}

/// Reads frames until the server closes; returns the status frame.
async fn exec_status(socket: &mut Socket) -> Value {
    let mut status = None;
    while let Some(Ok(message)) = socket.next().await {
        match message {
            Message::Binary(data) if data.first() == Some(&3) => {
                status = Some(serde_json::from_slice(&data[1..]).unwrap());
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    status.expect("a status frame before the close")
}

/// A streamed run over a raw TCP connection, returned once the `started`
/// event arrived. Raw, so a test can reset it or leave it unread.
async fn raw_run_stream(agent: &Agent, ns: &str, pod: &str, command: &[&str]) -> TcpStream {
    let address = agent.url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).await.unwrap();
    let body = json!({"command": command, "timeoutSeconds": 3600}).to_string();
    let head = format!(
        "POST /v1/targets/{ns}/{pod}/run?stream=true HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(r#""type":"started""#) {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(seen.starts_with(b"HTTP/1.1 200"));
    stream
}

/// Resets a TCP connection: `SO_LINGER` 0, then close (the peer gets a RST).
fn reset(stream: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    nix::sys::socket::setsockopt(&stream, nix::sys::socket::sockopt::Linger, &linger).unwrap();
    drop(stream);
}

/// A streamed run's events, read to the end.
async fn run_events(agent: &Agent, ns: &str, pod: &str, command: &[&str]) -> Vec<Value> {
    let response = reqwest::Client::new()
        .post(format!(
            "{}/v1/targets/{ns}/{pod}/run?stream=true",
            agent.url
        ))
        .json(&json!({"command": command}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    response
        .text()
        .await
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// `/proc/PID/stat` fields after the command name: state is `[0]`, ppid `[1]`.
fn stat(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &text[text.rfind(')')? + 2..];
    Some(after.split_whitespace().map(String::from).collect())
}

/// The host PID of the process whose argv is exactly `argv`.
fn process_with_argv(argv: &[&str]) -> Option<u32> {
    let mut wanted = argv.join("\0").into_bytes();
    wanted.push(0);
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid = entry.file_name().to_str()?.parse().ok()?;
            (std::fs::read(entry.path().join("cmdline")).ok()? == wanted).then_some(pid)
        })
}

/// A session's processes on the host: its command and the helper that
/// started it (a child of the agent).
#[derive(Debug, Clone)]
struct SessionProcesses {
    command: u32,
    helper: u32,
    /// Their start times (`stat` field 22): PIDs wrap quickly here
    /// (`pid_max` 32768), so a PID alone may be another process by the time
    /// it is looked at again.
    starts: [String; 2],
}

impl SessionProcesses {
    /// Those of the two still running (the same processes, by start time).
    fn alive(&self) -> Vec<u32> {
        [self.command, self.helper]
            .into_iter()
            .zip(&self.starts)
            .filter(|(pid, start)| stat(*pid).is_some_and(|s| s[19] == **start))
            .map(|(pid, _)| pid)
            .collect()
    }
}

async fn session_processes(agent: &Agent, argv: &[&str]) -> SessionProcesses {
    let command = eventually("the session's command", PATIENCE, || async {
        process_with_argv(argv)
    })
    .await;
    let helper: u32 = stat(command).unwrap()[1].parse().unwrap();
    let grandparent: u32 = stat(helper).unwrap()[1].parse().unwrap();
    assert_eq!(grandparent, agent.pid(), "the helper is the agent's child");
    let start = |pid: u32| stat(pid).unwrap()[19].clone();
    SessionProcesses {
        command,
        helper,
        starts: [start(command), start(helper)],
    }
}

/// The agent's children that are zombies (exited, not reaped).
fn agent_zombies(agent: &Agent) -> Vec<u32> {
    support::children(agent.pid())
        .into_iter()
        .filter(|&pid| stat(pid).is_some_and(|s| s[0] == "Z"))
        .collect()
}

/// Sessions running now, by `/metrics` (`nsdebug_sessions_active`, all labels).
async fn sessions_active(agent: &Agent) -> f64 {
    let text = reqwest::get(format!("{}/metrics", agent.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("nsdebug_sessions_active{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until the sessions of `processes` are over: their commands and
/// helpers gone (reaped, not zombies), no zombie child of the agent, and
/// `remaining` sessions still counted.
async fn assert_sessions_over(
    agent: &Agent,
    what: &str,
    processes: &[SessionProcesses],
    remaining: f64,
) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left: Vec<u32> = processes.iter().flat_map(SessionProcesses::alive).collect();
        let zombies = agent_zombies(agent);
        let active = sessions_active(agent).await;
        if left.is_empty() && zombies.is_empty() && active == remaining {
            return;
        }
        if Instant::now() >= deadline {
            // What each one is and does, for the next person to read.
            let described: Vec<String> = left
                .iter()
                .map(|pid| {
                    let read = |file: &str| {
                        std::fs::read_to_string(format!("/proc/{pid}/{file}"))
                            .unwrap_or_default()
                            .replace('\0', " ")
                    };
                    format!(
                        "{pid}: cmdline {:?} stat {:?} wchan {:?} cgroup {:?}",
                        read("cmdline"),
                        read("stat"),
                        read("wchan"),
                        read("cgroup")
                            .lines()
                            .find(|l| l.contains("freezer"))
                            .unwrap_or_default()
                            .to_string()
                    )
                })
                .collect();
            panic!(
                "timed out waiting for {what}: processes left {described:#?}, zombies {zombies:?}, sessions {active}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The container's init: its host PID, by the agent.
async fn init_pid(agent: &Agent, ns: &str, pod: &str) -> u32 {
    let target = agent.get_ok(&format!("/v1/targets/{ns}/{pod}")).await;
    u32::try_from(target["pid"].as_u64().unwrap()).unwrap()
}

/// The container dies under an exec session and a streamed run, stopped
/// through the CRI or its init killed: both end with the code of a SIGKILL,
/// and nothing they started is left.
#[tokio::test]
async fn a_container_dying_mid_session_ends_it_with_a_status_and_leaves_nothing() {
    for how in ["stop", "kill"] {
        let (ns, mut client, pod) = support::one_pod(
            &format!("faults-dies-{how}"),
            "mortal",
            vec![ContainerSpec::busybox("shell")],
        )
        .await;
        let agent = Agent::start();
        let init = init_pid(&agent, &ns, "mortal").await;
        let exec_argv = ["sleep", if how == "stop" { "8101" } else { "8111" }];
        let run_argv = ["sleep", if how == "stop" { "8102" } else { "8112" }];
        let mut socket = open_exec(&agent, &ns, "mortal", &exec_argv, true).await;
        let run = tokio::spawn({
            let url = agent.url.clone();
            let (ns, argv) = (ns.clone(), run_argv.map(String::from));
            async move {
                let response = reqwest::Client::new()
                    .post(format!("{url}/v1/targets/{ns}/mortal/run?stream=true"))
                    .json(&json!({"command": argv, "timeoutSeconds": 600}))
                    .send()
                    .await
                    .unwrap();
                response.text().await.unwrap()
            }
        });
        let processes = [
            session_processes(&agent, &exec_argv).await,
            session_processes(&agent, &run_argv).await,
        ];
        assert_eq!(sessions_active(&agent).await, 2.0);

        if how == "stop" {
            pod.stop(&mut client, "shell", 10).await;
        } else {
            let killed = Command::new("kill")
                .args(["-KILL", &init.to_string()])
                .status()
                .unwrap();
            assert!(killed.success());
        }

        let status = exec_status(&mut socket).await;
        assert_eq!(status["reason"], "NonZeroExitCode", "{how}: {status}");
        assert_eq!(
            status["details"]["causes"][0]["message"], "137",
            "{how}: killed with the container's PID namespace: {status}"
        );
        let events: Vec<Value> = run
            .await
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let last = events.last().unwrap();
        assert_eq!(last["type"], "exit", "{how}: {events:?}");
        assert_eq!(
            (&last["exitCode"], &last["signal"], &last["timedOut"]),
            (&json!(137), &json!(9), &json!(false)),
            "{how}: {last}"
        );
        assert_sessions_over(&agent, "the sessions to be over", &processes, 0.0).await;
        // The container is no longer a target: a clear 409.
        let (code, body) = agent.get(&format!("/v1/targets/{ns}/mortal")).await;
        assert_eq!(code, 409, "{how}: {body}");
        pod.remove(&mut client).await;
    }
}

/// A client whose connection is reset mid-stream (no close frame, no FIN):
/// its command is killed and its slot freed, for exec and streamed runs.
#[tokio::test]
async fn a_client_reset_kills_the_command_and_frees_the_session() {
    let (ns, mut client, pod) =
        support::one_pod("faults-reset", "box", vec![ContainerSpec::busybox("shell")]).await;
    let agent = Agent::start();
    let exec_argv = ["sleep", "8201"];
    let run_argv = ["sleep", "8202"];
    let socket = open_exec(&agent, &ns, "box", &exec_argv, true).await;
    let stream = raw_run_stream(&agent, &ns, "box", &run_argv).await;
    let processes = [
        session_processes(&agent, &exec_argv).await,
        session_processes(&agent, &run_argv).await,
    ];
    assert_eq!(sessions_active(&agent).await, 2.0);

    let MaybeTlsStream::Plain(tcp) = socket.into_inner() else {
        panic!("plain HTTP")
    };
    reset(tcp);
    reset(stream);
    assert_sessions_over(&agent, "both sessions to end", &processes, 0.0).await;
    // The agent serves on.
    let events = run_events(&agent, &ns, "box", &["echo", "still-here"]).await;
    assert_eq!(events[1], json!({"type": "stdout", "data": "still-here\n"}));
    pod.remove(&mut client).await;
}

/// A client that neither reads nor writes but keeps its socket open is
/// dropped after `--client-timeout`: a silent exec session because it answers
/// no ping, one with output because it takes none, and a streamed run with
/// output for the same reason. A client that keeps reading stays.
#[tokio::test]
async fn a_silent_client_is_dropped_after_the_client_timeout() {
    let (ns, mut client, pod) = support::one_pod(
        "faults-halfopen",
        "box",
        vec![ContainerSpec::busybox("shell")],
    )
    .await;
    let agent = Agent::start_on_testbed(&["--client-timeout", "2s"]);
    let opened = Instant::now();
    let silent = ["sleep", "8301"];
    let noisy = ["yes", "8302"];
    let noisy_run = ["yes", "8303"];
    let polite = ["sleep", "8304"];
    let _silent_socket = open_exec(&agent, &ns, "box", &silent, true).await;
    let _noisy_socket = open_exec(&agent, &ns, "box", &noisy, false).await;
    let _noisy_stream = raw_run_stream(&agent, &ns, "box", &noisy_run).await;
    let mut polite_socket = open_exec(&agent, &ns, "box", &polite, true).await;
    let dropped = [
        session_processes(&agent, &silent).await,
        session_processes(&agent, &noisy).await,
        session_processes(&agent, &noisy_run).await,
    ];
    let polite_processes = session_processes(&agent, &polite).await;

    // The polite client reads (and so answers pings) meanwhile.
    let reader = tokio::spawn(async move {
        while let Some(Ok(message)) = polite_socket.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
        polite_socket
    });
    assert_sessions_over(&agent, "the silent clients to be dropped", &dropped, 1.0).await;
    // Past three timeouts, the reading client's session is alive.
    let three_timeouts = opened + Duration::from_secs(6);
    tokio::time::sleep_until(three_timeouts.into()).await;
    assert!(
        polite_processes.alive().contains(&polite_processes.command),
        "a client answering pings is kept"
    );
    assert_eq!(sessions_active(&agent).await, 1.0);
    assert!(!reader.is_finished(), "the polite session is open");
    reader.abort();
    assert_sessions_over(
        &agent,
        "the polite session to end",
        &[polite_processes],
        0.0,
    )
    .await;
    pod.remove(&mut client).await;
}

/// The agent's resident memory (`VmRSS`), in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Bytes the process has written so far (`wchar` of `/proc/PID/io`).
fn written(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("wchar: "))
        .unwrap()
        .parse()
        .unwrap()
}

/// Waits until `pid` stops writing: the same `wchar` half a second apart
/// (its output backs up to it once every buffer in between is full).
async fn stalled(pid: u32) -> u64 {
    let deadline = Instant::now() + PATIENCE;
    let mut last = written(pid);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = written(pid);
        if now == last {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "the command never blocked on its output: it wrote {now} bytes"
        );
        last = now;
    }
}

/// What the agent may hold for a client that stopped reading, beyond the
/// output it delivered: its channel of 8 frames of 256 KiB, a frame in the
/// WebSocket writer or hyper's write buffer, both TCP socket buffers (a few
/// MiB each on loopback) and the 256 KiB pipe. Unbounded buffering would hold
/// the whole 200 MB.
const BACKLOG_BOUND: u64 = 64 << 20;
/// The agent's memory growth allowed while 200 MB pass and the reader then
/// stops: its bounded buffers (~3 MiB) plus what the allocator keeps of
/// freed frames across threads.
const RSS_GROWTH_BOUND_KIB: u64 = 24 << 10;
const PUSHED: u64 = 200 << 20;

/// A reader that stops while the command writes forever (exec and streamed
/// run): the command blocks, the agent's memory stays flat, and dropping the
/// client kills the command and frees the session.
#[tokio::test]
async fn a_reader_that_stops_holds_back_the_command_not_the_agents_memory() {
    let (ns, mut client, pod) =
        support::one_pod("faults-slow", "box", vec![ContainerSpec::busybox("shell")]).await;
    let agent = Agent::start();

    // Exec: read 200 MB, then stop.
    let argv = ["yes", "8401"];
    let mut socket = open_exec(&agent, &ns, "box", &argv, false).await;
    let processes = session_processes(&agent, &argv).await;
    let mut received = 0u64;
    let mut baseline = None;
    while received < PUSHED {
        if let Some(Ok(Message::Binary(data))) = socket.next().await {
            received += data.len() as u64 - 1;
        }
        if baseline.is_none() && received > 16 << 20 {
            baseline = Some(rss_kib(agent.pid()));
        }
    }
    let written = stalled(processes.command).await;
    let rss = rss_kib(agent.pid());
    let baseline = baseline.unwrap();
    assert!(
        written - received < BACKLOG_BOUND,
        "exec: the command wrote {written}, the client read {received}"
    );
    assert!(
        rss.saturating_sub(baseline) < RSS_GROWTH_BOUND_KIB,
        "exec: the agent grew from {baseline} KiB to {rss} KiB"
    );
    println!("exec: command wrote {written} bytes, agent RSS {baseline} -> {rss} KiB");
    assert_eq!(sessions_active(&agent).await, 1.0);
    drop(socket);
    assert_sessions_over(&agent, "the exec session to end", &[processes], 0.0).await;

    // Streamed run: NDJSON, `y\n` is 3 bytes of JSON ("y\\n") for 2 of output.
    let argv = ["yes", "8402"];
    let mut response = reqwest::Client::new()
        .post(format!("{}/v1/targets/{ns}/box/run?stream=true", agent.url))
        .json(&json!({"command": argv, "timeoutSeconds": 3600}))
        .send()
        .await
        .unwrap();
    let processes = session_processes(&agent, &argv).await;
    let mut body = 0u64;
    let mut baseline = None;
    while body * 2 / 3 < PUSHED {
        body += response.chunk().await.unwrap().unwrap().len() as u64;
        if baseline.is_none() && body > 16 << 20 {
            baseline = Some(rss_kib(agent.pid()));
        }
    }
    let written = stalled(processes.command).await;
    let rss = rss_kib(agent.pid());
    let baseline = baseline.unwrap();
    assert!(
        written - body * 2 / 3 < BACKLOG_BOUND,
        "run: the command wrote {written}, the client read {body} bytes of JSON"
    );
    assert!(
        rss.saturating_sub(baseline) < RSS_GROWTH_BOUND_KIB,
        "run: the agent grew from {baseline} KiB to {rss} KiB"
    );
    println!("run: command wrote {written} bytes, agent RSS {baseline} -> {rss} KiB");
    drop(response);
    assert_sessions_over(&agent, "the run to end", &[processes], 0.0).await;
    pod.remove(&mut client).await;
}

/// Starts `argv` as a process with host PID `pid`, free now: sets
/// `ns_last_pid` (`proc(5)`, root only) to the PID before and forks; other
/// processes forking meanwhile take it first, so retries.
fn spawn_with_pid(pid: u32, argv: &[&str]) -> std::process::Child {
    for _ in 0..2000 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).unwrap();
        let mut child = Command::new(argv[0]).args(&argv[1..]).spawn().unwrap();
        if child.id() == pid {
            return child;
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
    panic!("PID {pid} was always taken first");
}

/// The container's init dies and another process (in the host's
/// namespaces) takes its PID: the agent refuses the container with a 409,
/// on every route, and never runs anything in the impostor's namespaces.
#[tokio::test]
async fn a_pid_reused_after_the_container_died_is_never_entered() {
    let (ns, mut client, pod) = support::one_pod(
        "faults-pid-reuse",
        "victim",
        vec![ContainerSpec::busybox("shell")],
    )
    .await;
    let agent = Agent::start();
    let init = init_pid(&agent, &ns, "victim").await;
    let killed = Command::new("kill")
        .args(["-KILL", &init.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    eventually("the init to be reaped", PATIENCE, || async {
        (!std::path::Path::new(&format!("/proc/{init}")).exists()).then_some(())
    })
    .await;
    let mut impostor = spawn_with_pid(init, &["sleep", "8501"]);
    let marker = format!("/tmp/nsdebug-faults-impostor-{}", std::process::id());

    let (code, body) = agent.get(&format!("/v1/targets/{ns}/victim")).await;
    assert_eq!(code, 409, "{body}");
    let response = reqwest::Client::new()
        .post(format!("{}/v1/targets/{ns}/victim/run", agent.url))
        .json(&json!({"command": ["touch", marker]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 409);
    let body: Value = response.json().await.unwrap();
    support::assert_status(&body, 409, "Conflict");
    // Exited (the runtime noticed) or no live process (not yet): never the PID.
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("of pod {ns}/victim is not running"))
            || message.contains("no live process of it was found"),
        "{body}"
    );
    let url = format!(
        "{}/api/v1/namespaces/{ns}/pods/victim/exec?command=touch&command={marker}&stdout=true",
        agent.url.replace("http://", "ws://")
    );
    let refused = tokio_tungstenite::connect_async(url).await.unwrap_err();
    let tokio_tungstenite::tungstenite::Error::Http(answer) = refused else {
        panic!("{refused}")
    };
    assert_eq!(answer.status().as_u16(), 409);
    assert!(
        !std::path::Path::new(&marker).exists(),
        "a command ran in the impostor's (the host's) namespaces"
    );
    assert_eq!(agent_zombies(&agent), Vec::<u32>::new());
    impostor.kill().unwrap();
    impostor.wait().unwrap();
    pod.remove(&mut client).await;
}
