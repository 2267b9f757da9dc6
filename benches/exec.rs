//! Entering a container, side by side on one test-bed pod: the agent's
//! one-shot run API vs `nsenter -t PID -a` (the floor) vs CRI `ExecSync` (the
//! kubelet's path); stream throughput of `head -c 1G /dev/zero` over the
//! agent's WebSocket vs the runtime's own streaming server (the URL CRI `Exec`
//! returns), same client and subprotocol; keystroke-to-echo in a terminal.
//!
//! Run as root with the test bed up (`hack/testbed.sh up`):
//!     cargo bench --bench exec
//! Results go to docs/benchmarks.md by hand.

use nsdebug_testbed as support;

use support::pods;

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use k8s_cri::v1 as cri;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

const NAMESPACE: &str = "nsdebug-bench";
const POD: &str = "exec-bench";

fn summary(name: &str, mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    let pick = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{name:<46} n={:<5} p50={:>8.3}ms p99={:>8.3}ms",
        samples.len(),
        ms(pick(0.5)),
        ms(pick(0.99))
    );
    pick(0.5)
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str, protocol: &str) -> Ws {
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_str(protocol).unwrap(),
    );
    let config = WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20));
    tokio_tungstenite::connect_async_with_config(request, Some(config), false)
        .await
        .unwrap()
        .0
}

/// Bytes received on stdout until the server closes, and how long it took.
async fn drain_stdout(mut socket: Ws) -> (u64, Duration) {
    let start = Instant::now();
    let mut bytes = 0u64;
    while let Some(Ok(message)) = socket.next().await {
        match message {
            Message::Binary(data) if data.first() == Some(&1) => bytes += data.len() as u64 - 1,
            Message::Close(_) => break,
            _ => {}
        }
    }
    (bytes, start.elapsed())
}

#[tokio::main]
async fn main() {
    let socket = pods::socket();
    let mut client = pods::connect(&socket).await;
    let spec = pods::PodSpec::new(NAMESPACE, POD, vec![pods::ContainerSpec::busybox("main")]);
    let pod = pods::run_pod(&mut client, &spec, "test").await;
    let container = pod.id("main").to_string();
    let pid = pods::cri_pid(&mut client, &container).await;

    let agent =
        support::Agent::start_with(&["--log", "warn", "--cri-socket", socket.to_str().unwrap()]);
    let url = agent.url.clone();
    let http = reqwest::Client::new();
    let run_url = format!("{url}/v1/targets/{NAMESPACE}/{POD}/run");

    println!("one-shot `echo hi` in {NAMESPACE}/{POD} (host pid {pid}):");
    let mut agent_runs = Vec::new();
    let mut toolbox_runs = Vec::new();
    let mut nsenter_runs = Vec::new();
    let mut execsync_runs = Vec::new();
    for i in 0..220 {
        let start = Instant::now();
        let response = http
            .post(&run_url)
            .header("content-type", "application/json")
            .body(r#"{"command":["echo","hi"]}"#)
            .send()
            .await
            .unwrap();
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["stdout"], "hi\n");
        let agent_time = start.elapsed();

        // The same through toolbox mode: the agent's echo, a private mount
        // namespace built and pivoted into, /proc of the pod mounted.
        let start = Instant::now();
        let response = http
            .post(&run_url)
            .header("content-type", "application/json")
            .body(r#"{"command":["echo","hi"],"toolbox":true}"#)
            .send()
            .await
            .unwrap();
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["stdout"], "hi\n", "{body}");
        let toolbox_time = start.elapsed();

        let start = Instant::now();
        let out = std::process::Command::new("nsenter")
            .args(["-t", &pid.to_string(), "-a", "echo", "hi"])
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"hi\n");
        let nsenter_time = start.elapsed();

        let start = Instant::now();
        let out = client
            .exec_sync(cri::ExecSyncRequest {
                container_id: container.clone(),
                cmd: vec!["echo".into(), "hi".into()],
                timeout: 10,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(out.stdout, b"hi\n");
        let execsync_time = start.elapsed();
        // The first rounds warm caches and connections.
        if i >= 20 {
            agent_runs.push(agent_time);
            toolbox_runs.push(toolbox_time);
            nsenter_runs.push(nsenter_time);
            execsync_runs.push(execsync_time);
        }
    }
    let agent_p50 = summary("agent run API (HTTP, JSON)", agent_runs);
    summary("agent run API, toolbox mode", toolbox_runs);
    let nsenter_p50 = summary("nsenter -t PID -a (the floor)", nsenter_runs);
    let execsync_p50 = summary("CRI ExecSync (kubelet's path)", execsync_runs);
    println!(
        "  agent/nsenter = {:.2}x, ExecSync/agent = {:.1}x",
        agent_p50.as_secs_f64() / nsenter_p50.as_secs_f64(),
        execsync_p50.as_secs_f64() / agent_p50.as_secs_f64()
    );

    // busybox `head` writes 4 KiB at a time and is itself the limit; `dd
    // bs=1M` shows what the transports carry. The pipe straight from
    // `nsenter` is the ceiling for each.
    let producers: [(&str, &[&str]); 2] = [
        (
            "head -c 1G /dev/zero",
            &["head", "-c", "1073741824", "/dev/zero"],
        ),
        (
            "dd if=/dev/zero bs=1M count=1024",
            &["dd", "if=/dev/zero", "bs=1M", "count=1024"],
        ),
    ];
    for (name, argv) in producers {
        println!("\nstream throughput of `{name}` (no tty, v4.channel.k8s.io, 3 runs):");
        let mb_s = |bytes: u64, took: Duration| bytes as f64 / took.as_secs_f64() / 1e6;
        let mut pipe = Vec::new();
        for _ in 0..3 {
            let start = Instant::now();
            let mut child = std::process::Command::new("nsenter")
                .args(["-t", &pid.to_string(), "-a"])
                .args(argv)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let bytes =
                std::io::copy(&mut child.stdout.take().unwrap(), &mut std::io::sink()).unwrap();
            child.wait().unwrap();
            assert_eq!(bytes, 1 << 30);
            pipe.push(format!("{:.0}", mb_s(bytes, start.elapsed())));
        }
        println!("  nsenter pipe (ceiling)   {} MB/s", pipe.join(" / "));
        let query: String = argv.iter().map(|a| format!("command={a}&")).collect();
        let ws_url = format!(
            "{}/api/v1/namespaces/{NAMESPACE}/pods/{POD}/exec?{query}stdout=true",
            url.replace("http://", "ws://")
        );
        let mut agent_rates = Vec::new();
        for _ in 0..3 {
            let (bytes, took) = drain_stdout(connect(&ws_url, "v4.channel.k8s.io").await).await;
            assert_eq!(bytes, 1 << 30);
            agent_rates.push(format!("{:.0}", mb_s(bytes, took)));
        }
        println!(
            "  agent WebSocket          {} MB/s",
            agent_rates.join(" / ")
        );
        let mut cri_rates = Vec::new();
        for _ in 0..3 {
            let exec = client
                .exec(cri::ExecRequest {
                    container_id: container.clone(),
                    cmd: argv.iter().map(|a| a.to_string()).collect(),
                    stdout: true,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            let cri_url = exec.url.replace("http://", "ws://");
            let (bytes, took) = drain_stdout(connect(&cri_url, "v4.channel.k8s.io").await).await;
            assert_eq!(bytes, 1 << 30);
            cri_rates.push(format!("{:.0}", mb_s(bytes, took)));
        }
        println!("  CRI streaming server     {} MB/s", cri_rates.join(" / "));
    }

    println!("\nkeystroke to echo in a terminal (`cat` on a tty, v5.channel.k8s.io):");
    let tty_url = format!(
        "{}/api/v1/namespaces/{NAMESPACE}/pods/{POD}/exec?command=cat&stdin=true&stdout=true&tty=true",
        url.replace("http://", "ws://")
    );
    let mut socket = connect(&tty_url, "v5.channel.k8s.io").await;
    let _ = socket.next().await; // the empty first frame
    let mut echoes = Vec::new();
    for i in 0..1_100 {
        let key = b'a' + (i % 26) as u8;
        let start = Instant::now();
        socket
            .send(Message::Binary(vec![0, key].into()))
            .await
            .unwrap();
        loop {
            match socket.next().await.unwrap().unwrap() {
                Message::Binary(data) if data.first() == Some(&1) && data.contains(&key) => break,
                _ => {}
            }
        }
        if i >= 100 {
            echoes.push(start.elapsed());
        }
    }
    summary("keystroke -> echo", echoes);
    drop(socket);
    pod.remove(&mut client).await;
}
