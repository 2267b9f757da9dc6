//! Port-forward throughput: 1 GiB from a pod's port (busybox `nc` serving
//! `head -c 1G /dev/zero`) through the agent's `pods/portforward` vs the
//! runtime's own streaming server (the URL CRI `PortForward` returns, the
//! kubelet's path), same client and form (`v4.channel.k8s.io`, `?ports=`).
//!
//! Run as root with the test bed up (`hack/testbed.sh up`):
//!     cargo bench --bench portforward
//! Results go to docs/benchmarks.md by hand.

use nsdebug_testbed as support;

use support::pods;

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_cri::v1 as cri;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

const NAMESPACE: &str = "nsdebug-bench";
const POD: &str = "portforward-bench";
const PORT: u16 = 9000;
const SIZE: u64 = 1 << 30;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str) -> Ws {
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("v4.channel.k8s.io"),
    );
    let config = WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20));
    tokio_tungstenite::connect_async_with_config(request, Some(config), false)
        .await
        .unwrap()
        .0
}

/// Data bytes on channel 0 (after its 2-byte port prefix) until the server
/// closes, and how long they took from the first one.
async fn drain(mut socket: Ws) -> (u64, Duration) {
    let mut bytes = 0u64;
    let mut prefixed = false;
    let mut start = Instant::now();
    while let Some(Ok(message)) = socket.next().await {
        match message {
            Message::Binary(data) if data.first() == Some(&0) => {
                if !prefixed {
                    prefixed = true;
                    bytes += data.len().saturating_sub(3) as u64;
                    start = Instant::now();
                } else {
                    bytes += data.len() as u64 - 1;
                }
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    (bytes, start.elapsed())
}

fn mb_s(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / took.as_secs_f64() / 1e6
}

#[tokio::main]
async fn main() {
    let socket = pods::socket();
    let mut client = pods::connect(&socket).await;
    let size = SIZE.to_string();
    let server = [
        "nc",
        "-ll",
        "-p",
        "9000",
        "-e",
        "head",
        "-c",
        &size,
        "/dev/zero",
    ];
    let spec = pods::PodSpec::new(
        NAMESPACE,
        POD,
        vec![pods::ContainerSpec::new(
            "main",
            pods::BUSYBOX_IMAGE,
            &server,
        )],
    );
    let pod = pods::run_pod(&mut client, &spec, "test").await;
    let agent =
        support::Agent::start_with(&["--log", "warn", "--cri-socket", socket.to_str().unwrap()]);
    let agent_url = format!(
        "{}/api/v1/namespaces/{NAMESPACE}/pods/{POD}/portforward?ports={PORT}",
        agent.url.replace("http://", "ws://")
    );

    println!("1 GiB from {NAMESPACE}/{POD}:{PORT} (busybox nc), v4.channel.k8s.io:");
    let mut agent_rates = Vec::new();
    for _ in 0..3 {
        let (bytes, took) = drain(connect(&agent_url).await).await;
        assert_eq!(bytes, SIZE);
        agent_rates.push(format!("{:.0}", mb_s(bytes, took)));
    }
    println!(
        "  agent pods/portforward   {} MB/s",
        agent_rates.join(" / ")
    );
    let mut cri_rates = Vec::new();
    for _ in 0..3 {
        let forward = client
            .port_forward(cri::PortForwardRequest {
                pod_sandbox_id: pod.sandbox_id.clone(),
                port: vec![i32::from(PORT)],
            })
            .await
            .unwrap()
            .into_inner();
        let url = format!("{}?ports={PORT}", forward.url.replace("http://", "ws://"));
        let (bytes, took) = drain(connect(&url).await).await;
        assert_eq!(bytes, SIZE);
        cri_rates.push(format!("{:.0}", mb_s(bytes, took)));
    }
    println!("  CRI streaming server     {} MB/s", cri_rates.join(" / "));
    pod.remove(&mut client).await;
}
