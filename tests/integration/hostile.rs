//! Hostile input against a real agent: slow and stalled clients, a flood of
//! connections past the descriptor limit, oversized heads and bodies,
//! thousands of query parameters, invalid UTF-8, NUL bytes and enormous argv.
//! Each gets a clear 4xx (a JSON `v1.Status`) quickly, and the agent stays
//! healthy: it keeps answering, does not spin, does not flood its log.

use crate::support;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::Agent;
use support::pods::ContainerSpec;

/// The address of an `http://` agent.
fn addr(agent: &Agent) -> String {
    agent.url.trim_start_matches("http://").to_string()
}

/// Everything a connection answers until the agent closes it.
fn read_all(mut stream: TcpStream) -> String {
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// The JSON body of a raw HTTP answer.
fn status_body(answer: &str) -> Value {
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not a JSON body: {answer:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_get_408_and_cannot_crowd_out_others() {
    let agent =
        Agent::start_on_testbed(&["--request-header-timeout", "1s", "--max-connections", "20"]);
    let address = addr(&agent);
    // Three times as many slow clients as connection slots, each stuck in
    // the middle of its request head.
    let slow: Vec<TcpStream> = (0..60)
        .map(|_| {
            let mut stream = TcpStream::connect(&address).unwrap();
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
                .unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            stream
        })
        .collect();
    // A well-behaved client still gets in, once slots free up.
    let started = Instant::now();
    let (code, body) = tokio::time::timeout(Duration::from_secs(20), agent.get("/healthz"))
        .await
        .expect("a normal request while slow clients hold the slots");
    assert_eq!((code, body), (200, Value::String("ok".into())));
    let waited = started.elapsed();
    // Every slow client is told, with a Status, and disconnected.
    let answers =
        tokio::task::spawn_blocking(move || slow.into_iter().map(read_all).collect::<Vec<_>>())
            .await
            .unwrap();
    for answer in &answers {
        assert!(
            answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
            "{answer:?}"
        );
        let status = status_body(answer);
        assert_eq!(status["code"], 408);
        assert_eq!(
            status["message"],
            "the request's line and headers did not arrive within 1s"
        );
    }
    eprintln!("a normal request waited {waited:?} behind 60 slow clients and 20 slots");
    // A client that connects and says nothing is closed, silently.
    let silent = TcpStream::connect(&address).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let answer = tokio::task::spawn_blocking(move || read_all(silent))
        .await
        .unwrap();
    assert_eq!(answer, "");
}

/// CPU time (user + system) the process has used.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_descriptors_neither_spins_nor_floods_the_log() {
    // 128 descriptors, and more clients than that: accept(2) fails with
    // EMFILE for as long as they stay.
    let mut command = Command::new("prlimit");
    command
        .arg("--nofile=128:128")
        .arg(env!("CARGO_BIN_EXE_nsdebug"))
        .args(["serve", "--listen", "127.0.0.1:0", "--node-name", "hostile"])
        .args(["--insecure-http", "--auth", "none"])
        .arg("--cri-socket")
        .arg(support::testbed_socket())
        .args(["--request-header-timeout", "60s"]);
    let agent = Agent::spawn_command(command);
    let address = addr(&agent);
    let clients: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(&address).unwrap())
        .collect();
    // Wait until the agent has taken all it can and fails to accept more.
    support::eventually(
        "accept to fail for lack of descriptors",
        Duration::from_secs(20),
        || async {
            agent
                .log()
                .contains("accepting connections fails; retrying")
                .then_some(())
        },
    )
    .await;
    let before = cpu_time(agent.pid());
    let window = Duration::from_secs(2);
    std::thread::sleep(window);
    let used = cpu_time(agent.pid()) - before;
    // Before the fix: the accept loop spun a core and wrote a warning per
    // failed accept, over a hundred thousand lines a second.
    assert!(
        used < window / 4,
        "the agent used {used:?} of CPU in {window:?} while out of descriptors"
    );
    let warnings = agent.log().matches("accepting connections fails").count();
    assert!(warnings <= 2, "{warnings} warnings in {window:?}");
    drop(clients);
    // Once the clients go, it serves again.
    let (code, _) = support::eventually(
        "a request after the flood",
        Duration::from_secs(20),
        || async {
            let answer = tokio::time::timeout(Duration::from_secs(2), agent.get("/healthz")).await;
            answer.ok().filter(|(code, _)| *code == 200)
        },
    )
    .await;
    assert_eq!(code, 200);
}

/// `method path` with `body` over a raw connection; (status line, answer).
fn raw(address: &str, method: &str, path_and_query: &str, body: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let head = format!(
        "{method} {path_and_query} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    let _ = stream.write_all(body);
    let answer = read_all(stream);
    let code = answer
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {answer:?}"));
    (code, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_clear_4xx_and_the_agent_stays_healthy() {
    let (ns, _client, _pod) =
        support::one_pod("hostile", "target", vec![ContainerSpec::busybox("main")]).await;
    let agent = Agent::start();
    let address = addr(&agent);
    let run_path = format!("/v1/targets/{ns}/target/run");
    let exec_path = format!("/api/v1/namespaces/{ns}/pods/target/exec");
    let check = |method: &str, path: &str, body: &[u8], want: u16, message: &str| {
        let started = Instant::now();
        let (code, answer) = raw(&address, method, path, body);
        let took = started.elapsed();
        assert_eq!(code, want, "{method} {:.80}: {answer:.300}", path);
        let status = status_body(&answer);
        assert_eq!(status["kind"], "Status", "{answer:.300}");
        let text = status["message"].as_str().unwrap_or_default();
        assert!(text.contains(message), "{text:?} lacks {message:?}");
        // Refused before any work: far quicker than running anything.
        assert!(
            took < Duration::from_secs(5),
            "{method} {path:.80} took {took:?}"
        );
    };
    let blocking = |f: &dyn Fn()| tokio::task::block_in_place(f);

    blocking(&|| {
        // 10,000 query parameters: a head over the limit.
        let many: Vec<String> = (0..10_000).map(|i| format!("p{i}=1")).collect();
        check(
            "GET",
            &format!("/v1/targets?{}", many.join("&")),
            b"",
            431,
            "the request line and headers are more than 32768 bytes",
        );
        // 10,000 `command=` on exec: a head over the limit too.
        let argv: Vec<&str> = (0..10_000).map(|_| "command=x").collect();
        check(
            "GET",
            &format!("{exec_path}?stdout=true&{}", argv.join("&")),
            b"",
            431,
            "more than 32768 bytes",
        );
        // Invalid UTF-8: in a command, a path, a file path, a view.
        check(
            "GET",
            &format!("{exec_path}?stdout=true&command=%FF%FE"),
            b"",
            400,
            "query parameter \"command\" is not valid UTF-8",
        );
        check(
            "GET",
            &format!("/v1/targets/{ns}/%FF/files?path=/etc/hosts"),
            b"",
            400,
            "the request path is not valid UTF-8",
        );
        check(
            "GET",
            &format!("/v1/targets/{ns}/target/files?path=/etc/%C0%AF"),
            b"",
            400,
            "query parameter \"path\" is not valid UTF-8",
        );
        check(
            "POST",
            &run_path,
            b"{\"command\":[\"echo\",\"\xff\xfe\"]}",
            400,
            "invalid run request",
        );
        // NUL bytes in argv.
        check(
            "GET",
            &format!("{exec_path}?stdout=true&command=ec%00ho"),
            b"",
            400,
            "command contains a NUL byte",
        );
        check(
            "POST",
            &run_path,
            json!({"command": ["echo", "a\u{0}b"]})
                .to_string()
                .as_bytes(),
            400,
            "command contains a NUL byte",
        );
        // Enormous argv: a body over --max-request-bytes, one argument over
        // Linux's limit, a command line over the agent's.
        let huge = json!({"command": ["echo", "x".repeat(2 << 20)]}).to_string();
        check(
            "POST",
            &run_path,
            huge.as_bytes(),
            413,
            "--max-request-bytes",
        );
        let long_arg = json!({"command": ["echo", "x".repeat(200_000)]}).to_string();
        check(
            "POST",
            &run_path,
            long_arg.as_bytes(),
            400,
            "command[1] is 200000 bytes; Linux takes at most 131071",
        );
        let argv: Vec<String> = std::iter::once("echo".to_string())
            .chain(std::iter::repeat_n("y".repeat(100_000), 6))
            .collect();
        let long_line = json!({ "command": argv }).to_string();
        check(
            "POST",
            &run_path,
            long_line.as_bytes(),
            400,
            "the agent takes at most 524288",
        );
        let long_env =
            json!({"command": ["true"], "env": {"BIG": "z".repeat(140_000)}}).to_string();
        check(
            "POST",
            &run_path,
            long_env.as_bytes(),
            400,
            "env BIG is 140004 bytes",
        );
        // Deeply nested JSON.
        let deep = format!(
            "{{\"command\":{}{}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        check(
            "POST",
            &run_path,
            deep.as_bytes(),
            400,
            "invalid run request",
        );
    });

    // A long but valid command line runs (it did not fit the helper's
    // socket buffer before: a 500).
    let valid_argv: Vec<String> = ["sh", "-c", "echo ${#1} $#", "sh"]
        .into_iter()
        .map(String::from)
        .chain(std::iter::repeat_n("y".repeat(100_000), 4))
        .collect();
    let (code, answer) = tokio::task::block_in_place(|| {
        raw(
            &address,
            "POST",
            &run_path,
            json!({ "command": valid_argv }).to_string().as_bytes(),
        )
    });
    assert_eq!(code, 200, "{answer:.300}");
    assert_eq!(status_body(&answer)["stdout"], "100000 4\n");
    // And the agent is as well as before.
    assert_eq!(agent.get("/healthz").await.0, 200);
    assert!(!agent.log().contains("ERROR"), "{}", agent.log());
}
