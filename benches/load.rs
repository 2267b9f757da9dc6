//! Load, scale and soak against the release agent on the test bed:
//!
//! - `sessions [N]` (500): N interactive terminals (`cat` on a tty) open at
//!   once on one agent: keystroke-to-echo across all of them, the agent's RSS
//!   idle and per open session, its descriptors and threads;
//! - `oneshot [RATE] [SECONDS] [MAX_SESSIONS]` (100/s, 60 s, 64): one-shot
//!   runs at a fixed arrival rate (open loop): throughput, p50/p99, answers
//!   by status; above `--max-sessions` the overflow must be 429s;
//! - `startup [N]` (20): agent start to listening and to ready;
//! - `soak [MINUTES]` (20): mixed load (one-shot runs, terminals opened and
//!   closed, diagnostics, file downloads), sampling the agent's RSS,
//!   descriptors, threads and children; zombies are counted.
//!
//! Run as root with the test bed up (`hack/testbed.sh up`):
//!     cargo bench --bench load -- sessions 500
//! Results go to docs/benchmarks.md by hand.

use nsdebug_testbed as support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use support::pods;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const NAMESPACE: &str = "nsdebug-load";
const POD: &str = "load";

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn pick(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort();
    samples[((samples.len() - 1) as f64 * q).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A line of `/proc/PID/status` in kB.
fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// What a process holds: RSS (KiB), descriptors, threads, children, zombies.
#[derive(Debug, Clone, Copy)]
struct Footprint {
    rss_kb: u64,
    fds: usize,
    threads: u64,
    children: usize,
    zombies: usize,
}

fn footprint(pid: u32) -> Footprint {
    let children = support::children(pid);
    let zombies = children
        .iter()
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')))
                .unwrap_or(false)
        })
        .count();
    Footprint {
        rss_kb: status_kb(pid, "VmRSS:"),
        fds: std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count())
            .unwrap_or(0),
        threads: status_kb(pid, "Threads:"),
        children: children.len(),
        zombies,
    }
}

fn show(label: &str, f: Footprint) {
    println!(
        "{label:<34} rss={:>7.1} MiB fds={:<5} threads={:<3} children={:<4} zombies={}",
        f.rss_kb as f64 / 1024.0,
        f.fds,
        f.threads,
        f.children,
        f.zombies
    );
}

async fn connect(url: &str) -> Ws {
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("v5.channel.k8s.io"),
    );
    tokio_tungstenite::connect_async(request).await.unwrap().0
}

/// A terminal running `cat`, ready for keys.
async fn terminal(base: &str) -> Ws {
    let url = format!(
        "{}/api/v1/namespaces/{NAMESPACE}/pods/{POD}/exec?command=cat&stdin=true&stdout=true&tty=true",
        base.replace("http://", "ws://")
    );
    let mut socket = connect(&url).await;
    let _ = socket.next().await; // the empty first frame
    socket
}

/// Sends one key and waits for its echo.
async fn keystroke(socket: &mut Ws, key: u8) -> Duration {
    let start = Instant::now();
    socket
        .send(Message::Binary(vec![0, key].into()))
        .await
        .unwrap();
    loop {
        match socket.next().await.unwrap().unwrap() {
            Message::Binary(data) if data.first() == Some(&1) && data.contains(&key) => {
                return start.elapsed();
            }
            _ => {}
        }
    }
}

async fn sessions(agent: &support::Agent, n: usize) {
    let pid = agent.pid();
    // Settle: the inventory loaded, the helper pool filled.
    let _ = agent.get(&format!("/v1/targets/{NAMESPACE}/{POD}")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = footprint(pid);
    show("idle, no session", idle);

    let opened = Instant::now();
    let mut terminals = Vec::with_capacity(n);
    for _ in 0..n {
        terminals.push(terminal(&agent.url).await);
    }
    let took = opened.elapsed();
    println!(
        "opened {n} terminals one after another in {:.1} s ({:.1} ms each)",
        took.as_secs_f64(),
        ms(took) / n as f64
    );
    // One round to see every terminal answer, then settle.
    for (i, socket) in terminals.iter_mut().enumerate() {
        keystroke(socket, b'a' + (i % 26) as u8).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let busy = footprint(pid);
    show(&format!("{n} idle terminals open"), busy);
    println!(
        "agent memory per open terminal: {:.1} KiB (helpers are separate processes: {} children)",
        (busy.rss_kb.saturating_sub(idle.rss_kb)) as f64 / n as f64,
        busy.children
    );
    let helpers_kb: u64 = children_rss(pid);
    println!(
        "helper processes' PSS in all: {:.1} MiB ({:.0} KiB each)",
        helpers_kb as f64 / 1024.0,
        helpers_kb as f64 / busy.children.max(1) as f64
    );

    // Keystrokes: round-robin over every terminal, five rounds, one key at
    // a time (the latency one typist sees while N-1 others are open).
    let mut echoes = Vec::new();
    for round in 0..5 {
        for (i, socket) in terminals.iter_mut().enumerate() {
            echoes.push(keystroke(socket, b'a' + ((i + round) % 26) as u8).await);
        }
    }
    println!(
        "keystroke -> echo, one at a time across {n}: n={} p50={:.3}ms p99={:.3}ms max={:.3}ms",
        echoes.len(),
        ms(pick(&mut echoes, 0.5)),
        ms(pick(&mut echoes, 0.99)),
        ms(pick(&mut echoes, 1.0))
    );
    // And everyone typing at once: each terminal sends a key, all in flight.
    let mut all = Vec::new();
    for round in 0..3 {
        let typed = futures::future::join_all(
            terminals
                .iter_mut()
                .enumerate()
                .map(|(i, socket)| keystroke(socket, b'a' + ((i + round) % 26) as u8)),
        )
        .await;
        all.extend(typed);
    }
    println!(
        "keystroke -> echo, all {n} typing at once: n={} p50={:.3}ms p99={:.3}ms max={:.3}ms",
        all.len(),
        ms(pick(&mut all, 0.5)),
        ms(pick(&mut all, 0.99)),
        ms(pick(&mut all, 1.0))
    );
    drop(terminals);
    // Every session ends and its helper goes.
    let deadline = Instant::now() + Duration::from_secs(60);
    while footprint(pid).children > 8 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    show("after closing them all", footprint(pid));
}

/// The summed proportional set size of a process's children (KiB).
fn children_rss(pid: u32) -> u64 {
    support::children(pid)
        .into_iter()
        .map(|child| {
            // Proportional: the helper's pages shared with the agent binary
            // and the other helpers count once in all.
            std::fs::read_to_string(format!("/proc/{child}/smaps_rollup"))
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum()
}

async fn oneshot(agent: &support::Agent, rate: u64, seconds: u64) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    let url = format!("{}/v1/targets/{NAMESPACE}/{POD}/run", agent.url);
    let total = rate * seconds;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut requests = Vec::with_capacity(total as usize);
    let before = footprint(agent.pid());
    for _ in 0..total {
        ticker.tick().await;
        let http = http.clone();
        let url = url.clone();
        requests.push(tokio::spawn(async move {
            let start = Instant::now();
            let response = http
                .post(&url)
                .header("content-type", "application/json")
                .body(r#"{"command":["echo","hi"]}"#)
                .send()
                .await;
            let code = match response {
                Ok(response) => {
                    let code = response.status().as_u16();
                    let body = response.bytes().await.unwrap_or_default();
                    if code == 200 {
                        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
                        assert_eq!(body["stdout"], "hi\n", "{body}");
                    }
                    code
                }
                Err(_) => 0,
            };
            (code, start.elapsed())
        }));
    }
    let mut by_code: BTreeMap<u16, usize> = BTreeMap::new();
    let mut ok = Vec::new();
    for request in requests {
        let (code, took) = request.await.unwrap();
        *by_code.entry(code).or_default() += 1;
        if code == 200 {
            ok.push(took);
        }
    }
    let wall = started.elapsed();
    let after = footprint(agent.pid());
    println!(
        "{total} runs offered at {rate}/s over {seconds}s: done in {:.1}s, {:.1} runs/s answered; answers {by_code:?} (0 = transport error)",
        wall.as_secs_f64(),
        total as f64 / wall.as_secs_f64()
    );
    if !ok.is_empty() {
        println!(
            "  200s: n={} p50={:.2}ms p99={:.2}ms max={:.2}ms",
            ok.len(),
            ms(pick(&mut ok, 0.5)),
            ms(pick(&mut ok, 0.99)),
            ms(pick(&mut ok, 1.0))
        );
    }
    show("  agent before", before);
    show("  agent after", after);
}

async fn startup(n: usize) {
    let socket = pods::socket();
    let mut listening = Vec::new();
    let mut ready = Vec::new();
    for _ in 0..n {
        let start = Instant::now();
        let agent = support::Agent::start_with(&[
            "--log",
            "warn",
            "--cri-socket",
            socket.to_str().unwrap(),
        ]);
        listening.push(start.elapsed());
        loop {
            if agent.get("/readyz").await.0 == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        ready.push(start.elapsed());
    }
    println!(
        "start -> listening: n={n} p50={:.1}ms max={:.1}ms; start -> /readyz 200: p50={:.1}ms max={:.1}ms",
        ms(pick(&mut listening, 0.5)),
        ms(pick(&mut listening, 1.0)),
        ms(pick(&mut ready, 0.5)),
        ms(pick(&mut ready, 1.0))
    );
}

async fn soak(agent: &support::Agent, minutes: u64) {
    let pid = agent.pid();
    let end = Instant::now() + Duration::from_secs(minutes * 60);
    let errors = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let http = reqwest::Client::new();
    let base = agent.url.clone();
    show("start", footprint(pid));
    let mut workers = Vec::new();
    // One-shot runs, ten a second.
    {
        let (http, base, errors, done) = (http.clone(), base.clone(), errors.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            while Instant::now() < end {
                tick.tick().await;
                let ok = http
                    .post(format!("{base}/v1/targets/{NAMESPACE}/{POD}/run"))
                    .header("content-type", "application/json")
                    .body(r#"{"command":["sh","-c","echo $$; ls / >/dev/null"]}"#)
                    .send()
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false);
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Terminals: twenty open, one replaced every second, keys typed.
    {
        let (base, done) = (base.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            let mut open = Vec::new();
            let mut i = 0usize;
            while Instant::now() < end {
                let mut socket = terminal(&base).await;
                keystroke(&mut socket, b'a' + (i % 26) as u8).await;
                open.push(socket);
                if open.len() > 20 {
                    open.remove(0);
                }
                i += 1;
                done.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }));
    }
    // Diagnostics, toolbox runs and downloads, twice a second.
    {
        let (http, base, errors, done) = (http.clone(), base.clone(), errors.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            let paths = [
                "diag/processes",
                "diag/sockets",
                "diag/cgroup",
                "files?path=/etc&format=tar",
                "diag/env",
            ];
            let mut i = 0;
            while Instant::now() < end {
                let ok = http
                    .get(format!(
                        "{base}/v1/targets/{NAMESPACE}/{POD}/{}",
                        paths[i % paths.len()]
                    ))
                    .send()
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false);
                let toolbox = http
                    .post(format!("{base}/v1/targets/{NAMESPACE}/{POD}/run"))
                    .header("content-type", "application/json")
                    .body(r#"{"command":["ps","-e"],"toolbox":true}"#)
                    .send()
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false);
                if !(ok && toolbox) {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                done.fetch_add(2, Ordering::Relaxed);
                i += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }));
    }
    let mut samples = Vec::new();
    let started = Instant::now();
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(30)).await;
        let f = footprint(pid);
        show(
            &format!(
                "t={:>4.0}s ops={} errors={}",
                started.elapsed().as_secs_f64(),
                done.load(Ordering::Relaxed),
                errors.load(Ordering::Relaxed)
            ),
            f,
        );
        samples.push(f);
    }
    for worker in workers {
        worker.await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    show("after the load stopped", footprint(pid));
    println!(
        "{} operations, {} errors",
        done.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed)
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let what = args.first().map(String::as_str).unwrap_or("sessions");
    let number =
        |i: usize, default: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    if what == "startup" {
        startup(number(1, 20) as usize).await;
        return;
    }
    let socket = pods::socket();
    let mut client = pods::connect(&socket).await;
    let spec = pods::PodSpec::new(NAMESPACE, POD, vec![pods::ContainerSpec::busybox("main")]);
    let pod = pods::run_pod(&mut client, &spec, "test").await;
    let max_sessions = match what {
        "oneshot" => number(3, 64).to_string(),
        _ => "2000".to_string(),
    };
    let agent = support::Agent::start_with(&[
        "--log",
        "warn",
        "--cri-socket",
        socket.to_str().unwrap(),
        "--max-sessions",
        &max_sessions,
        "--max-sessions-per-user",
        &max_sessions,
    ]);
    match what {
        "sessions" => sessions(&agent, number(1, 500) as usize).await,
        "oneshot" => oneshot(&agent, number(1, 100), number(2, 60)).await,
        "soak" => soak(&agent, number(1, 20)).await,
        other => panic!("unknown benchmark {other:?}: sessions, oneshot, startup or soak"),
    }
    pod.remove(&mut client).await;
}
