//! Resolution latency on the test bed: how long from "namespace/pod" to a
//! pinned target, cold (nothing known), on a miss (the runtime is asked again
//! with warm caches) and warm (from memory), in the library and through HTTP.
//!
//! Run as root with the test bed up (`hack/testbed.sh up`):
//!     cargo bench --bench resolve -- [PODS]
//! PODS (default 20) busybox pods are created in namespace `nsdebug-bench` and
//! removed afterwards. Results go to docs/benchmarks.md by hand.

use nsdebug_testbed as support;

use support::pods;

use std::sync::Arc;
use std::time::{Duration, Instant};

use nsdebug::cri::CriClient;
use nsdebug::inventory::Inventory;
use nsdebug::process::ProcRoot;
use nsdebug::resolve::{Resolver, TargetRef};

const NAMESPACE: &str = "nsdebug-bench";

fn summary(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let pick = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{name:<44} n={:<6} p50={:>9.1}µs p99={:>9.1}µs max={:>9.1}µs",
        samples.len(),
        micros(pick(0.5)),
        micros(pick(0.99)),
        micros(*samples.last().unwrap())
    );
}

async fn inventory(socket: &std::path::Path) -> Arc<Inventory> {
    let client = CriClient::new(socket, Duration::from_secs(5));
    let version = client.version().await.expect("test bed containerd answers");
    Arc::new(Inventory::new(client, version, ProcRoot::new("/proc")))
}

#[tokio::main]
async fn main() {
    let pods: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20);
    let socket = pods::socket();
    let mut client = pods::connect(&socket).await;
    println!("creating {pods} pods in namespace {NAMESPACE}...");
    let mut created = Vec::new();
    for i in 0..pods {
        let spec = pods::PodSpec::new(
            NAMESPACE,
            &format!("bench-{i}"),
            vec![pods::ContainerSpec::busybox("main")],
        );
        created.push(pods::run_pod(&mut client, &spec, "test").await);
    }
    let total_containers = inventory(&socket)
        .await
        .refresh()
        .await
        .unwrap()
        .pods
        .iter()
        .map(|p| p.containers.len())
        .sum::<usize>();
    println!("node: {total_containers} containers in all\n");
    let pod = format!("bench-{}", pods / 2);
    let wanted = TargetRef::Pod {
        namespace: NAMESPACE.into(),
        pod: pod.clone(),
        container: None,
    };
    // Resolving needs an admitted request: `--auth none` admits everyone.
    let get = nsdebug::auth::Action::new("get", "pods")
        .namespace(NAMESPACE)
        .name(&pod);
    let wanted = nsdebug::auth::Auth::None
        .admit(&nsdebug::auth::User::anonymous(), &[get], wanted)
        .await
        .unwrap();

    // Cold: a fresh inventory; the lookup lists everything and asks the status
    // of every container and sandbox.
    let mut cold = Vec::new();
    for _ in 0..20 {
        let resolver = Resolver::new(inventory(&socket).await);
        let start = Instant::now();
        resolver.resolve(&wanted).await.unwrap();
        cold.push(start.elapsed());
    }
    summary("cold (fresh agent, first lookup)", cold);

    // Miss: what a lookup of an unknown or restarted container costs: a refresh
    // with warm caches (two list calls, no status calls).
    let inv = inventory(&socket).await;
    inv.refresh().await.unwrap();
    let mut miss = Vec::new();
    for _ in 0..200 {
        let start = Instant::now();
        inv.refresh().await.unwrap();
        miss.push(start.elapsed());
    }
    summary("miss (refresh from the runtime)", miss);

    // Warm: from memory, with the /proc identity check and namespace reads.
    let resolver = Resolver::new(inv.clone());
    resolver.resolve(&wanted).await.unwrap();
    let mut warm = Vec::new();
    for _ in 0..10_000 {
        let start = Instant::now();
        resolver.resolve(&wanted).await.unwrap();
        warm.push(start.elapsed());
    }
    summary("warm (in memory, identity re-checked)", warm);

    // Through HTTP: the agent binary, one keep-alive client.
    let agent =
        support::Agent::start_with(&["--log", "warn", "--cri-socket", socket.to_str().unwrap()]);
    let url = agent.url.clone();
    let http = reqwest::Client::new();
    let target_url = format!("{url}/v1/targets/{NAMESPACE}/bench-{}", pods / 2);
    let mut over_http = Vec::new();
    for _ in 0..2_000 {
        let start = Instant::now();
        let response = http.get(&target_url).send().await.unwrap();
        assert!(response.status().is_success());
        response.bytes().await.unwrap();
        over_http.push(start.elapsed());
    }
    summary("warm over HTTP (GET /v1/targets/NS/POD)", over_http);
    let mut list_http = Vec::new();
    for _ in 0..200 {
        let start = Instant::now();
        let response = http.get(format!("{url}/api/v1/pods")).send().await.unwrap();
        assert!(response.status().is_success());
        response.bytes().await.unwrap();
        list_http.push(start.elapsed());
    }
    summary("list over HTTP (GET /api/v1/pods)", list_http);
    drop(agent);

    for pod in created {
        pod.remove(&mut client).await;
    }
}
