//! The test bed and the harness the agent's integration tests and benchmarks
//! share: the real test bed (a private containerd started by
//! `hack/testbed.sh`, pods made through the CRI as the kubelet makes them),
//! the real agent binary, real HTTP, a fake Kubernetes API server.
//!
//! It never depends on the agent crate (see Cargo.toml): it starts the agent
//! as a process and speaks to it over HTTP, as a user would.

pub mod fake_apiserver;
pub mod files;
pub mod pods;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The repository root (this crate is `crates/testbed` in it).
pub fn repo() -> PathBuf {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.ancestors().nth(2).unwrap().to_path_buf()
}

/// The kubectl plugin's binary. It is another package of the workspace, so
/// Cargo gives these tests no `CARGO_BIN_EXE_` for it: it is the one built
/// next to the agent's (`cargo build --workspace`, which hack/test.sh runs).
pub fn plugin_binary() -> PathBuf {
    let path =
        agent_binary().with_file_name(format!("kubectl-nsdebug{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: build it first with `cargo build -p kubectl-nsdebug`",
        path.display()
    );
    path
}

/// The agent binary of the build the running test or benchmark belongs to:
/// cargo puts test and bench executables in `target/PROFILE/deps/` and the
/// package's binaries, which it builds first, in `target/PROFILE/`.
pub fn agent_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own executable");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test runs from target/PROFILE/deps");
    let agent = profile_dir.join("nsdebug");
    assert!(
        agent.exists(),
        "no agent binary at {} (cargo builds it for the nsdebug package's tests and benches)",
        agent.display()
    );
    agent
}

/// Brings the test bed's containerd up (once per test binary) and returns its socket.
pub fn testbed_socket() -> PathBuf {
    static UP: OnceLock<PathBuf> = OnceLock::new();
    UP.get_or_init(|| {
        let status = Command::new("bash")
            .arg(repo().join("hack/testbed.sh"))
            .arg("up")
            .stdout(Stdio::null())
            .status()
            .expect("run hack/testbed.sh up");
        assert!(status.success(), "hack/testbed.sh up failed");
        pods::socket()
    })
    .clone()
}

/// A CRI client on the test bed.
pub async fn cri()
-> k8s_cri::v1::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel> {
    pods::connect(&testbed_socket()).await
}

/// The test bed's tool tree (`hack/testbed.sh up` lays it out with
/// `hack/image/toolbox.sh`), what the image ships at `/toolbox`.
pub fn toolbox_root() -> PathBuf {
    let root = std::env::var_os("NSDEBUG_TESTBED_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/nsdebug-testbed"));
    root.join("toolbox")
}

/// The node name every test agent reports.
pub const NODE_NAME: &str = "nsdebug-test-node";

/// A running `nsdebug serve`, killed when dropped.
pub struct Agent {
    child: Child,
    pub url: String,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Agent {
    /// Starts the agent on the test bed. The background resync is set to an hour
    /// so every change a test makes must be found by the on-demand path.
    pub fn start() -> Self {
        Self::start_on_testbed(&[])
    }

    /// [`Agent::start`] with more flags.
    pub fn start_on_testbed(args: &[&str]) -> Self {
        let socket = testbed_socket();
        let mut all = vec![
            "--cri-socket",
            socket.to_str().unwrap(),
            "--resync-interval",
            "1h",
        ];
        all.extend_from_slice(args);
        Self::start_with(&all)
    }

    /// Starts `nsdebug serve` with `args` plus a free loopback port and the test
    /// node name, in the loopback demo mode (plain HTTP, no authentication)
    /// that every test but the security ones uses, and waits for the line
    /// announcing where it listens.
    pub fn start_with(args: &[&str]) -> Self {
        let mut all = vec!["--insecure-http", "--auth", "none"];
        all.extend_from_slice(args);
        Self::start_secure(&all)
    }

    /// Starts `nsdebug serve` with `args` and nothing else but a free loopback
    /// port and the node name: TLS and Kubernetes authentication by default.
    pub fn start_secure(args: &[&str]) -> Self {
        let mut command = Command::new(agent_binary());
        command
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--node-name", NODE_NAME])
            .args(args);
        Self::spawn(command)
    }

    /// Starts `nsdebug serve` configured by environment variables only.
    pub fn start_with_env(env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(agent_binary());
        command
            .arg("serve")
            .env("NSDEBUG_LISTEN", "127.0.0.1:0")
            .env("NSDEBUG_INSECURE_HTTP", "true")
            .env("NSDEBUG_AUTH", "none");
        for (key, value) in env {
            command.env(key, value);
        }
        Self::spawn(command)
    }

    /// Starts an agent from a prepared `nsdebug serve` command.
    pub fn spawn_command(command: Command) -> Self {
        Self::spawn(command)
    }

    fn spawn(mut command: Command) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let stderr = dir.path().join("agent.log");
        if !command
            .get_envs()
            .any(|(key, _)| key == "NSDEBUG_CRI_SOCKET")
        {
            command.env_remove("NSDEBUG_CRI_SOCKET");
        }
        // The agent publishes its certificate only when a test says which
        // pod it is, never because the test runner happens to run in one.
        for name in ["POD_NAME", "POD_NAMESPACE"] {
            if !command.get_envs().any(|(key, _)| key == name) {
                command.env_remove(name);
            }
        }
        // The test bed's tool tree, as the image's /toolbox, unless the
        // test chose one (`--toolbox-root` wins over the variable).
        if !command
            .get_envs()
            .any(|(key, _)| key == "NSDEBUG_TOOLBOX_ROOT")
        {
            command.env("NSDEBUG_TOOLBOX_ROOT", toolbox_root());
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("spawn nsdebug");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        let Some(url) = line.trim().strip_prefix("nsdebug listening on ") else {
            let _ = child.kill();
            let log = std::fs::read_to_string(&stderr).unwrap_or_default();
            panic!("agent did not start (stdout {line:?}); its log:\n{log}");
        };
        Self {
            url: url.to_string(),
            child,
            stderr,
            _dir: dir,
        }
    }

    /// Sends SIGTERM and waits for the agent to exit (at most 10 s).
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "agent ignored SIGTERM for 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The agent's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// `GET path` -> (status, JSON body).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = reqwest::get(format!("{}{path}", self.url))
            .await
            .unwrap_or_else(|err| panic!("GET {path}: {err}"));
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    /// `GET path` that must answer 200.
    pub async fn get_ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// kubectl aimed at the agent, with no kubeconfig and its own cache.
    pub fn kubectl_command(&self, args: &[&str]) -> Command {
        let cache = self._dir.path().join("kube-cache");
        let mut command = Command::new("kubectl");
        command
            .args([
                "--server",
                &self.url,
                "--cache-dir",
                cache.to_str().unwrap(),
            ])
            .args(args)
            .env("KUBECONFIG", "/dev/null");
        command
    }

    /// Runs kubectl against the agent; returns (exit code, stdout, stderr).
    pub fn kubectl(&self, args: &[&str]) -> (i32, String, String) {
        let output = self
            .kubectl_command(args)
            .output()
            .expect("kubectl is installed");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asserts that `body` is a `v1.Status` failure with this code and reason.
pub fn assert_status(body: &Value, code: u16, reason: &str) {
    assert_eq!(body["kind"], "Status", "{body}");
    assert_eq!(body["apiVersion"], "v1", "{body}");
    assert_eq!(body["status"], "Failure", "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["reason"], reason, "{body}");
}

/// Polls `check` until it returns `Some`, failing after `limit`. For waiting on
/// another process's state (a runtime coming back), never as a delay.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A tmux server of the test's own, running one command in a detached
/// window; it is killed however the test ends.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts `command` in a `width` x `height` window.
    pub fn start(name: &str, width: u16, height: u16, command: &str) -> Self {
        let tmux = Self {
            socket: format!("{name}-{}", std::process::id()),
        };
        let (width, height) = (width.to_string(), height.to_string());
        tmux.run(&["new-session", "-d", "-x", &width, "-y", &height, command]);
        tmux
    }

    /// `tmux ARGS` on this server; what it printed.
    pub fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The screen once it shows `want` (within 20 s; the panic shows the
    /// last screen).
    pub async fn screen(&self, want: &str) -> String {
        let last = std::sync::Mutex::new(String::new());
        let found = tokio::time::timeout(
            Duration::from_secs(20),
            eventually(want, Duration::from_secs(30), || async {
                let text = self.run(&["capture-pane", "-p"]);
                *last.lock().unwrap() = text.clone();
                text.contains(want).then_some(text)
            }),
        )
        .await;
        found.unwrap_or_else(|_| panic!("{want:?} never on screen:\n{}", last.lock().unwrap()))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

/// The children of process `pid` (of all its threads), from
/// `/proc/PID/task/*/children`.
pub fn children(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Inode of `/proc/PID/ns/KIND`, read by the test itself.
pub fn ns_inode(pid: u64, kind: &str) -> u64 {
    let link = std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap();
    let text = link.to_str().unwrap();
    text.trim_start_matches(&format!("{kind}:["))
        .trim_end_matches(']')
        .parse()
        .unwrap()
}

/// The IPv4 address of `eth0` in the network namespace of `pid`, by `ip` in `nsenter`.
pub fn eth0_ipv4(pid: u64) -> String {
    let output = Command::new("nsenter")
        .args([
            "-t",
            &pid.to_string(),
            "-n",
            "ip",
            "-4",
            "-o",
            "addr",
            "show",
            "dev",
            "eth0",
        ])
        .output()
        .expect("nsenter and ip are installed");
    let text = String::from_utf8_lossy(&output.stdout);
    text.split_whitespace()
        .skip_while(|word| *word != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .unwrap_or_else(|| panic!("no IPv4 on eth0 of {pid}: {text}"))
        .to_string()
}

/// The usual start of a test: its own namespace, a CRI client, and one pod
/// `pod` of `containers` running in that namespace.
pub async fn one_pod(
    test: &str,
    pod: &str,
    containers: Vec<pods::ContainerSpec>,
) -> (
    String,
    k8s_cri::v1::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>,
    pods::RunningPod,
) {
    let ns = test_namespace(test);
    let mut client = cri().await;
    let spec = pods::PodSpec::new(&ns, pod, containers);
    let running = pods::run_pod(&mut client, &spec, "test").await;
    (ns, client, running)
}

/// A unique-per-test namespace so tests running at once never share pods.
pub fn test_namespace(test: &str) -> String {
    format!("nsdebug-test-{test}")
}
