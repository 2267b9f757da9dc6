//! Reading a container's log, side by side on one test-bed container that
//! wrote 1,000,000 lines of 64 bytes (a 100 MB CRI log file, in the page
//! cache): the file read and parsed in-process with the agent's own reader
//! (the floor: what any reader of the file, the kubelet's included, must do),
//! the agent's `pods/log` over HTTP, with `timestamps=true`, and unmodified
//! `kubectl logs` against the agent; and the latency of `tailLines=100`.
//! There is no kubelet on the test bed: the floor stands for its path.
//!
//! Run as root with the test bed up (`hack/testbed.sh up`):
//!     cargo bench --bench logs
//! Results go to docs/benchmarks.md by hand.

use nsdebug_testbed as support;

use support::pods;

use std::time::{Duration, Instant};

use k8s_cri::v1 as cri;

const NAMESPACE: &str = "nsdebug-bench";
const LINES: u64 = 1_000_000;

/// The median of `samples` and the throughput of `bytes` in it.
fn report(name: &str, bytes: u64, mut samples: Vec<Duration>) {
    samples.sort();
    let median = samples[samples.len() / 2];
    println!(
        "{name:<44} n={:<3} median={:>8.1}ms  {:>7.1} MB/s of output",
        samples.len(),
        median.as_secs_f64() * 1e3,
        bytes as f64 / median.as_secs_f64() / 1e6
    );
}

/// Counts what the reader writes, as a response would carry it.
struct Count(u64);

impl nsdebug::logs::reader::Sink for Count {
    fn write(&mut self, bytes: &[u8]) -> Result<(), nsdebug::logs::reader::Gone> {
        self.0 += bytes.len() as u64;
        Ok(())
    }
    fn flush(&mut self) -> Result<(), nsdebug::logs::reader::Gone> {
        Ok(())
    }
    fn gone(&self) -> bool {
        false
    }
}

struct Never;

impl nsdebug::logs::reader::Follow for Never {
    fn running(&mut self) -> bool {
        false
    }
    fn pause(&mut self) {}
}

#[tokio::main]
async fn main() {
    let socket = pods::socket();
    let mut client = pods::connect(&socket).await;
    // Log files outlive pods on the test bed: a pod name of this run, and
    // its log directory removed at the end.
    let pod_name = format!(
        "logs-bench-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    );
    let script = format!(
        "yes 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde | head -n {LINES}; \
         echo done-marker; exec sleep 100000"
    );
    let spec = pods::PodSpec::new(
        NAMESPACE,
        &pod_name,
        vec![pods::ContainerSpec::new(
            "main",
            pods::BUSYBOX_IMAGE,
            &["sh", "-c", &script],
        )],
    );
    let pod = pods::run_pod(&mut client, &spec, "test").await;
    let status = client
        .container_status(cri::ContainerStatusRequest {
            container_id: pod.id("main").into(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    let log_path = std::path::PathBuf::from(status.log_path);

    let agent =
        support::Agent::start_with(&["--log", "warn", "--cri-socket", socket.to_str().unwrap()]);
    let http = reqwest::Client::new();
    let log_url = format!(
        "{}/api/v1/namespaces/{NAMESPACE}/pods/{pod_name}/log?container=main",
        agent.url
    );
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let tail = http
            .get(format!("{log_url}&tailLines=1"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if tail == "done-marker\n" {
            break;
        }
        assert!(Instant::now() < deadline, "the writer did not finish");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let file_bytes = std::fs::metadata(&log_path).unwrap().len();
    let output_bytes = LINES * 64 + "done-marker\n".len() as u64;
    println!(
        "{pod_name}: {LINES} lines, {output_bytes} bytes of output from a {file_bytes}-byte CRI log file"
    );

    let rounds = 7;
    let mut floor = Vec::new();
    for _ in 0..rounds {
        let start = Instant::now();
        let opened = nsdebug::logs::reader::open(&log_path, None).unwrap();
        let mut count = Count(0);
        nsdebug::logs::reader::read(
            opened,
            &nsdebug::logs::Options::default(),
            &mut count,
            &mut Never,
        );
        floor.push(start.elapsed());
        assert_eq!(count.0, output_bytes);
    }
    report(
        "file read + CRI parse in-process (floor)",
        output_bytes,
        floor,
    );

    for (name, query) in [
        ("agent pods/log over HTTP", ""),
        ("agent pods/log, timestamps=true", "&timestamps=true"),
    ] {
        let mut samples = Vec::new();
        let mut bytes = 0;
        for _ in 0..rounds {
            let start = Instant::now();
            let body = http
                .get(format!("{log_url}{query}"))
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            samples.push(start.elapsed());
            bytes = body.len() as u64;
        }
        report(name, bytes, samples);
    }

    let mut samples = Vec::new();
    for _ in 0..rounds {
        let start = Instant::now();
        let output = agent
            .kubectl_command(&["logs", "-n", NAMESPACE, &pod_name, "-c", "main"])
            .output()
            .unwrap();
        samples.push(start.elapsed());
        assert!(output.status.success());
        assert_eq!(output.stdout.len() as u64, output_bytes);
    }
    report("kubectl logs against the agent", output_bytes, samples);

    let mut samples = Vec::new();
    for _ in 0..50 {
        let start = Instant::now();
        let body = http
            .get(format!("{log_url}&tailLines=100"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        samples.push(start.elapsed());
        assert_eq!(body.len(), 99 * 64 + "done-marker\n".len());
    }
    report(
        "agent pods/log tailLines=100 (latency)",
        99 * 64 + 12,
        samples,
    );

    drop(agent);
    pod.remove(&mut client).await;
    if let Some(pod_dir) = log_path.parent().and_then(|c| c.parent()) {
        let _ = std::fs::remove_dir_all(pod_dir);
    }
}
