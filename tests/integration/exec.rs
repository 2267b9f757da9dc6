//! `kubectl exec` and `kubectl cp` against the agent, unmodified, plus the
//! wire protocol as a raw WebSocket client sees it.

use crate::support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::pods::{ContainerSpec, PodSpec, run_pod};
use support::{Agent, eventually, test_namespace};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Message, http::HeaderValue};

fn exec_args<'a>(ns: &'a str, pod: &'a str, tail: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["exec", "-n", ns, pod];
    args.extend_from_slice(tail);
    args
}

/// Processes in the container whose command line contains `needle`.
async fn container_ps(agent: &Agent, ns: &str, pod: &str, needle: &str) -> Vec<String> {
    let result: Value = reqwest::Client::new()
        .post(format!(
            "{}/v1/targets/{ns}/{pod}/run?container=shell",
            agent.url
        ))
        .json(&json!({"command": ["ps", "-o", "pid,args"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    result["stdout"]
        .as_str()
        .unwrap()
        .lines()
        .filter(|l| l.contains(needle) && !l.contains("ps -o"))
        .map(String::from)
        .collect()
}

#[tokio::test]
async fn kubectl_exec_runs_commands_with_exit_codes_and_stdin() {
    let ns = test_namespace("exec");
    let mut client = support::cri().await;
    let spec = PodSpec::new(
        &ns,
        "pair",
        vec![
            ContainerSpec::busybox("shell"),
            ContainerSpec::distroless("server"),
        ],
    );
    let pod = run_pod(&mut client, &spec, "test").await;
    let agent = Agent::start();

    let (code, out, err) =
        agent.kubectl(&exec_args(&ns, "pair", &["-c", "shell", "--", "hostname"]));
    assert_eq!((code, out.as_str()), (0, "pair\n"), "{err}");

    let (code, out, err) = agent.kubectl(&exec_args(
        &ns,
        "pair",
        &[
            "-c",
            "shell",
            "--",
            "sh",
            "-c",
            "echo to-out; echo to-err >&2; exit 3",
        ],
    ));
    assert_eq!(code, 3, "kubectl exits with the command's code: {err}");
    assert_eq!(out, "to-out\n");
    assert!(err.starts_with("to-err\n"), "{err}");
    assert!(err.contains("command terminated with exit code 3"), "{err}");

    // stdin piped through `-i`, a megabyte of it, ending with end-of-file.
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut child = agent
        .kubectl_command(&[
            "exec", "-i", "-n", &ns, "pair", "-c", "shell", "--", "md5sum",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&data).map(|_| data));
    let output = child.wait_with_output().unwrap();
    let data = writer.join().unwrap().unwrap();
    assert!(output.status.success());
    let local = Command::new("md5sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut md5| {
            md5.stdin.take().unwrap().write_all(&data)?;
            md5.wait_with_output()
        })
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .next(),
        String::from_utf8_lossy(&local.stdout)
            .split_whitespace()
            .next()
    );

    // Distroless: no shell, said cleanly, exit code 127.
    let (code, _, err) = agent.kubectl(&exec_args(&ns, "pair", &["-c", "server", "--", "sh"]));
    assert_eq!(code, 127);
    assert!(
        err.contains("nsdebug: exec: \"sh\": executable file not found in $PATH"),
        "{err}"
    );

    // A wrong container is the API's error, before any stream.
    let (code, _, err) = agent.kubectl(&exec_args(&ns, "pair", &["-c", "nope", "--", "ls"]));
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!(
            "container \"nope\" not found in pod {ns}/pair; its containers are: server, shell"
        )),
        "{err}"
    );

    // A client that vanishes takes its command with it.
    let mut kubectl = agent
        .kubectl_command(&[
            "exec",
            "-n",
            &ns,
            "pair",
            "-c",
            "shell",
            "--",
            "sh",
            "-c",
            "sleep 5151 & sleep 5152",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually("the command to start", Duration::from_secs(20), || async {
        (container_ps(&agent, &ns, "pair", "sleep 515").await.len() == 2).then_some(())
    })
    .await;
    kubectl.kill().unwrap();
    kubectl.wait().unwrap();
    eventually(
        "the command to be killed",
        Duration::from_secs(20),
        || async {
            container_ps(&agent, &ns, "pair", "sleep 515")
                .await
                .is_empty()
                .then_some(())
        },
    )
    .await;

    pod.remove(&mut client).await;
}

#[tokio::test]
async fn kubectl_cp_both_ways() {
    let (ns, mut client, pod) =
        support::one_pod("cp", "files", vec![ContainerSpec::busybox("shell")]).await;
    let agent = Agent::start();
    let dir = tempfile::tempdir().unwrap();
    let upload = dir.path().join("upload.bin");
    let content: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
    std::fs::write(&upload, &content).unwrap();

    let dest = format!("{ns}/files:/tmp/upload.bin");
    let (code, _, err) = agent.kubectl(&["cp", upload.to_str().unwrap(), &dest]);
    assert_eq!(code, 0, "{err}");
    let back = dir.path().join("back.bin");
    let (code, _, err) = agent.kubectl(&["cp", &dest, back.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read(&back).unwrap(), content);

    pod.remove(&mut client).await;
}

#[tokio::test]
async fn kubectl_exec_it_is_a_real_terminal() {
    let (ns, mut client, pod) =
        support::one_pod("exec-tty", "term", vec![ContainerSpec::busybox("shell")]).await;
    let agent = Agent::start();
    let command = format!(
        "KUBECONFIG=/dev/null kubectl --server {} exec -it -n {ns} term -- sh; echo EXITED=$?; sleep 60",
        agent.url
    );
    let tmux = support::Tmux::start("nsdebug", 100, 30, &command);
    let screen = |want: &'static str| tmux.screen(want);
    // capture-pane drops trailing blanks: the prompt "/ # " reads "/ #".
    screen("/ #").await;
    tmux.run(&["send-keys", "stty size; tty", "Enter"]);
    // `tty` answers after `stty`: once its line is on screen, both are.
    let text = screen("/dev/pts/").await;
    assert!(text.contains("30 100"), "the terminal's size: {text}");
    assert!(
        text.contains("/dev/pts/0"),
        "the container's own terminal: {text}"
    );
    tmux.run(&["resize-window", "-x", "120", "-y", "40"]);
    tmux.run(&["send-keys", "clear; stty size", "Enter"]);
    screen("40 120").await;
    tmux.run(&["send-keys", "exit 7", "Enter"]);
    screen("EXITED=7").await;
    pod.remove(&mut client).await;
}

/// A raw client: connect with `protocols`, return the socket and the one chosen.
async fn connect(
    agent: &Agent,
    path_and_query: &str,
    protocols: &str,
) -> (
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    String,
) {
    let url = format!("{}{path_and_query}", agent.url.replace("http://", "ws://"));
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_str(protocols).unwrap(),
    );
    let (socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    let chosen = response
        .headers()
        .get("Sec-WebSocket-Protocol")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (socket, chosen)
}

/// Every data frame until the server closes: (channel, bytes).
async fn frames(
    socket: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Vec<(u8, Vec<u8>)> {
    use base64::Engine as _;
    let mut seen = Vec::new();
    while let Some(Ok(message)) = socket.next().await {
        match message {
            Message::Binary(data) => seen.push((data[0], data[1..].to_vec())),
            Message::Text(text) => {
                let channel = text.as_bytes()[0] - b'0';
                let data = base64::engine::general_purpose::STANDARD
                    .decode(&text.as_str()[1..])
                    .unwrap();
                seen.push((channel, data));
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    seen
}

#[tokio::test]
async fn wire_protocol_as_the_api_server_speaks_it() {
    let (ns, mut client, pod) =
        support::one_pod("exec-wire", "wire", vec![ContainerSpec::busybox("shell")]).await;
    let agent = Agent::start();
    let path = format!("/api/v1/namespaces/{ns}/pods/wire/exec");

    // v5 preferred; the first frame is an empty stdout frame; v4-style status.
    let query = format!(
        "{path}?command=sh&command=-c&command=cat%3B+exit+4&stdin=true&stdout=true&stderr=true"
    );
    let (mut socket, chosen) =
        connect(&agent, &query, "v5.channel.k8s.io, v4.channel.k8s.io").await;
    assert_eq!(chosen, "v5.channel.k8s.io");
    socket
        .send(Message::Binary(b"\x00piped".to_vec().into()))
        .await
        .unwrap();
    socket
        .send(Message::Binary(vec![255, 0].into()))
        .await
        .unwrap();
    let seen = frames(&mut socket).await;
    assert_eq!(seen[0], (1, Vec::new()), "empty first frame on stdout");
    let stdout: Vec<u8> = seen
        .iter()
        .filter(|(c, _)| *c == 1)
        .flat_map(|(_, d)| d.clone())
        .collect();
    assert_eq!(stdout, b"piped");
    let status: Value =
        serde_json::from_slice(&seen.iter().find(|(c, _)| *c == 3).unwrap().1).unwrap();
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(
        status["details"]["causes"][0],
        json!({"reason": "ExitCode", "message": "4"})
    );

    // Success, on the base64 text variant, in the toolbox.
    let query = format!("{path}?command=ls&command=-d&command=%2Ftarget&stdout=true&toolbox=true");
    let (mut socket, chosen) = connect(&agent, &query, "v4.base64.channel.k8s.io").await;
    assert_eq!(chosen, "v4.base64.channel.k8s.io");
    let seen = frames(&mut socket).await;
    let stdout: Vec<u8> = seen
        .iter()
        .filter(|(c, _)| *c == 1)
        .flat_map(|(_, d)| d.clone())
        .collect();
    assert_eq!(
        stdout, b"/target\n",
        "the tool tree, the container's files at /target"
    );
    let status: Value =
        serde_json::from_slice(&seen.iter().find(|(c, _)| *c == 3).unwrap().1).unwrap();
    assert_eq!(status, json!({"metadata": {}, "status": "Success"}));

    // The oldest protocol, as the node conformance test uses it: the error
    // channel carries the message only.
    let query = format!("{path}?command=false&stdout=true");
    let (mut socket, chosen) = connect(&agent, &query, "channel.k8s.io").await;
    assert_eq!(chosen, "channel.k8s.io");
    let seen = frames(&mut socket).await;
    let error = String::from_utf8(seen.iter().find(|(c, _)| *c == 3).unwrap().1.clone()).unwrap();
    assert!(
        error.starts_with("command terminated with non-zero exit code"),
        "{error}"
    );

    // A frame without a channel closes the socket with a reason.
    let query = format!("{path}?command=cat&stdin=true&stdout=true");
    let (mut socket, _) = connect(&agent, &query, "v5.channel.k8s.io").await;
    socket
        .send(Message::Binary(Vec::new().into()))
        .await
        .unwrap();
    let mut reason = String::new();
    while let Some(Ok(message)) = socket.next().await {
        if let Message::Close(Some(frame)) = message {
            reason = frame.reason.to_string();
            break;
        }
    }
    assert_eq!(reason, "malformed frame: no channel");

    // Errors before the upgrade are plain HTTP with a v1.Status.
    let response = reqwest::get(format!("{}{path}?stdout=true", agent.url))
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["message"], "command is empty: name a program to run");

    pod.remove(&mut client).await;
}

#[tokio::test]
async fn python_kubernetes_client_stream() {
    let (ns, mut client, pod) =
        support::one_pod("exec-python", "py", vec![ContainerSpec::busybox("shell")]).await;
    let agent = Agent::start();
    let python = support::repo().join("target/pyclient/bin/python");
    assert!(
        python.exists(),
        "run hack/test.sh: it makes the venv with the kubernetes client"
    );
    let output = Command::new(python)
        .arg(support::repo().join("tests/clients/python_exec.py"))
        .args([
            &agent.url,
            &ns,
            "py",
            "shell",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        result,
        json!({"stdout": "out\n", "stderr": "err\n", "exitCode": 3})
    );
    pod.remove(&mut client).await;
}

#[tokio::test]
async fn session_limit_answers_429() {
    let (ns, mut client, pod) =
        support::one_pod("exec-limit", "busy", vec![ContainerSpec::busybox("shell")]).await;
    let socket = support::testbed_socket();
    let agent = Agent::start_with(&[
        "--cri-socket",
        socket.to_str().unwrap(),
        "--max-sessions",
        "1",
    ]);
    let query =
        format!("/api/v1/namespaces/{ns}/pods/busy/exec?command=sleep&command=30&stdout=true");
    let (mut session, _) = connect(&agent, &query, "v5.channel.k8s.io").await;
    // The empty first frame: the session is up and holds the only slot.
    let first = session.next().await.unwrap().unwrap();
    assert_eq!(first, Message::Binary(vec![1].into()));

    let response = reqwest::Client::new()
        .post(format!("{}/v1/targets/{ns}/busy/run", agent.url))
        .json(&json!({"command": ["true"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["reason"], "TooManyRequests");
    assert_eq!(
        body["message"],
        "the agent already runs its limit of 1 sessions; try again when one ends"
    );
    drop(session);
    pod.remove(&mut client).await;
}

#[tokio::test]
async fn session_ends_with_status_when_the_container_dies() {
    let (ns, mut client, pod) =
        support::one_pod("exec-dies", "mortal", vec![ContainerSpec::busybox("shell")]).await;
    let agent = Agent::start();
    let query =
        format!("/api/v1/namespaces/{ns}/pods/mortal/exec?command=sleep&command=1000&stdout=true");
    let (mut socket, _) = connect(&agent, &query, "v5.channel.k8s.io").await;
    assert_eq!(
        socket.next().await.unwrap().unwrap(),
        Message::Binary(vec![1].into())
    );
    // The container stops: its PID namespace goes, and our command with it.
    pod.stop(&mut client, "shell", 10).await;
    let seen = frames(&mut socket).await;
    let status: Value =
        serde_json::from_slice(&seen.iter().find(|(c, _)| *c == 3).unwrap().1).unwrap();
    assert_eq!(status["reason"], "NonZeroExitCode", "{status}");
    assert_eq!(
        status["details"]["causes"][0]["message"], "137",
        "killed by SIGKILL: {status}"
    );
    pod.remove(&mut client).await;
}

/// The frames of one WebSocket exec of `command` on a terminal, after
/// sending `input` frames (channel, data) once the stream is up.
async fn tty_session(
    agent: &Agent,
    ns: &str,
    pod: &str,
    command: &[&str],
    input: &[(u8, &[u8])],
) -> Vec<(u8, Vec<u8>)> {
    let mut query =
        format!("/api/v1/namespaces/{ns}/pods/{pod}/exec?stdin=true&stdout=true&tty=true");
    for word in command {
        query.push_str("&command=");
        query.extend(form_urlencoded::byte_serialize(word.as_bytes()));
    }
    let (mut socket, _) = connect(agent, &query, "v5.channel.k8s.io").await;
    for (channel, data) in input {
        let mut frame = vec![*channel];
        frame.extend_from_slice(data);
        socket.send(Message::Binary(frame.into())).await.unwrap();
    }
    frames(&mut socket).await
}

fn stdout_of(frames: &[(u8, Vec<u8>)]) -> String {
    frames
        .iter()
        .filter(|(c, _)| *c == 1)
        .map(|(_, d)| String::from_utf8_lossy(d).into_owned())
        .collect()
}

#[tokio::test]
async fn terminal_sessions_are_recorded_as_asciicasts() {
    let (ns, mut client, pod) =
        support::one_pod("exec-record", "rec", vec![ContainerSpec::busybox("shell")]).await;
    let dir = tempfile::tempdir().unwrap();
    let recordings = dir.path().join("recordings");
    // An old recording, past the retention: deleted at start-up.
    std::fs::create_dir(&recordings).unwrap();
    let old = recordings.join("20200101T000000Z-old.cast");
    std::fs::write(&old, "{}\n").unwrap();
    let eight_days_ago = std::time::SystemTime::now() - Duration::from_secs(8 * 86400);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(eight_days_ago)
        .unwrap();
    let young = recordings.join("20991231T000000Z-young.cast");
    std::fs::write(&young, "{}\n").unwrap();
    let audit_log = dir.path().join("audit.jsonl");
    let agent = Agent::start_on_testbed(&[
        "--record-dir",
        recordings.to_str().unwrap(),
        "--record-max-bytes",
        "8KiB",
        "--record-retention",
        "7days",
        "--audit-log",
        audit_log.to_str().unwrap(),
    ]);
    eventually(
        "the expired recording to be deleted",
        Duration::from_secs(10),
        || async { (!old.exists()).then_some(()) },
    )
    .await;
    assert!(young.exists(), "a recording within the retention stays");

    // A session: the terminal is resized, then a line typed.
    let seen = tty_session(
        &agent,
        &ns,
        "rec",
        &["sh", "-c", "read word; stty size; echo recorded-$word-€"],
        &[(4, br#"{"Width":100,"Height":30}"#), (0, b"hello\r")],
    )
    .await;
    assert!(stdout_of(&seen).contains("recorded-hello-€"), "{seen:?}");
    // The session's audit event is written as it closes.
    let complete = eventually("the session's audit event", Duration::from_secs(10), || {
        let found = std::fs::read_to_string(&audit_log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|e| e["stage"] == "ResponseComplete");
        async move { found }
    })
    .await;
    let path = std::path::PathBuf::from(
        complete["annotations"]["nsdebug.dev/recording"]
            .as_str()
            .expect("the audit event names the recording"),
    );
    assert_eq!(path.parent(), Some(recordings.as_path()));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // The file is complete once the session is; its writer may lag a little.
    let text = eventually(
        "the recording to be written",
        Duration::from_secs(10),
        || {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            async move { text.contains("recorded-hello").then_some(text) }
        },
    )
    .await;
    let header: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(header["version"], 2);
    assert_eq!(
        (header["width"].as_u64(), header["height"].as_u64()),
        (Some(80), Some(24))
    );
    assert!(
        header["title"]
            .as_str()
            .unwrap()
            .contains(&format!("{ns}/rec/shell"))
    );
    assert!(
        text.contains(r#""r","100x30"]"#),
        "the resize is recorded: {text}"
    );
    // asciinema itself replays it (on a terminal, which it insists on:
    // util-linux's `script` provides one).
    let replay = std::process::Command::new("script")
        .args(["--quiet", "--return", "--command"])
        .arg(format!("asciinema cat {}", path.display()))
        .arg("/dev/null")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(replay.status.success(), "{replay:?}");
    let replayed = String::from_utf8_lossy(&replay.stdout);
    assert!(replayed.contains("30 100"), "{replayed}");
    assert!(replayed.contains("recorded-hello-€"), "{replayed}");

    // A session printing more than the cap: the recording stops at the cap
    // and says so, and so does the session (nothing goes on unrecorded).
    let seen = tty_session(
        &agent,
        &ns,
        "rec",
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 400 ]; do echo line-$i-0123456789abcdef; i=$((i+1)); done",
        ],
        &[],
    )
    .await;
    let shown = stdout_of(&seen);
    assert!(
        !shown.contains("line-399-"),
        "output past the cap is not shown"
    );
    assert!(
        shown.contains("recording reached its 8192 byte cap"),
        "the session says why it ended: {shown}"
    );
    let capped = eventually("the capped recording", Duration::from_secs(10), || {
        let found = std::fs::read_dir(&recordings)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                std::fs::read_to_string(p)
                    .unwrap_or_default()
                    .contains("recording stopped at its 8192 byte cap")
            });
        async move { found }
    })
    .await;
    let size = std::fs::metadata(&capped).unwrap().len();
    assert!(size <= 8192 + 200, "cap plus the closing note: {size}");
    pod.remove(&mut client).await;
}

#[tokio::test]
async fn idle_and_overlong_sessions_are_closed() {
    let (ns, mut client, pod) =
        support::one_pod("exec-idle", "idle", vec![ContainerSpec::busybox("shell")]).await;
    let agent = Agent::start_on_testbed(&[
        "--session-idle-timeout",
        "1s",
        "--max-session-duration",
        "3s",
    ]);
    // Nothing typed, nothing printed: closed as idle.
    let seen = tty_session(&agent, &ns, "idle", &["sh", "-c", "sleep 600"], &[]).await;
    assert!(
        stdout_of(&seen).contains("nsdebug: the session was idle for 1s; closing it"),
        "{seen:?}"
    );
    let status: Value =
        serde_json::from_slice(&seen.iter().find(|(c, _)| *c == 3).unwrap().1).unwrap();
    assert_eq!(status["reason"], "Timeout");
    // Busy, but past the maximum duration.
    let seen = tty_session(
        &agent,
        &ns,
        "idle",
        &["sh", "-c", "while true; do echo tick; sleep 0.2; done"],
        &[],
    )
    .await;
    let out = stdout_of(&seen);
    assert!(out.contains("tick"), "{out}");
    assert!(
        out.contains("nsdebug: the session reached its maximum duration of 3s; closing it"),
        "{out}"
    );
    // Neither left its command behind.
    eventually(
        "the commands to be killed",
        Duration::from_secs(10),
        || async {
            let ps = container_ps(&agent, &ns, "idle", "sleep").await;
            ps.iter()
                .all(|l| !l.contains("sleep 600") && !l.contains("sleep 0.2"))
                .then_some(())
        },
    )
    .await;
    pod.remove(&mut client).await;
}
