//! The command line as an operator meets it, before any runtime is
//! reached: `--help`, bad flags and unreachable or hung runtimes exit with
//! one clear line before any port is bound, and CRI socket discovery says
//! every path it tried.

use std::os::unix::net::UnixListener;
use std::process::{Command, Output};

fn nsdebug(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nsdebug"));
    command
        .args(args)
        .env_remove("NSDEBUG_CRI_SOCKET")
        .env_remove("NODE_NAME");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("run nsdebug")
}

/// Exit code, stdout and stderr.
fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = nsdebug(args, env);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_explains_every_flag_and_its_environment_variable() {
    let (code, out, _) = run(&["serve", "--help"], &[]);
    assert_eq!(code, 0);
    for text in [
        "--listen",
        "NSDEBUG_LISTEN",
        "--cri-socket",
        "NSDEBUG_CRI_SOCKET",
        "--node-name",
        "NODE_NAME",
        "--proc-root",
        "NSDEBUG_PROC_ROOT",
        "--host-root",
        "containerd",
        "CRI-O",
        "k3s",
        "Examples:",
    ] {
        assert!(out.contains(text), "--help lacks {text}:\n{out}");
    }
}

#[test]
fn bad_configuration_exits_with_one_clear_line() {
    // (arguments, environment, exit code, what stderr must say)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], i32, &'a str);
    let cases: &[Case] = &[
        (
            &["serve", "--listen", "0.0.0.0:7443", "--insecure-http"],
            &[],
            2,
            "--listen 0.0.0.0:7443 is not a loopback address, and --insecure-http is only allowed on loopback",
        ),
        (
            &["serve"],
            &[("NSDEBUG_LISTEN", "10.1.2.3:80"), ("NSDEBUG_AUTH", "none")],
            2,
            "--listen 10.1.2.3:80 is not a loopback address, and --auth none is only allowed on loopback",
        ),
        (&["serve", "--tls-cert", "/tmp/x.crt"], &[], 2, "--tls-key"),
        (
            &["serve", "--privileged-permission", "nodes"],
            &[],
            2,
            "--privileged-permission 'nodes' is not VERB RESOURCE[/SUBRESOURCE]",
        ),
        (
            &["serve", "--listen", "localhost"],
            &[],
            2,
            "is not an IP address and port",
        ),
        (
            &["serve", "--cri-socket", "/nonexistent/cri.sock"],
            &[],
            2,
            "--cri-socket '/nonexistent/cri.sock' does not exist",
        ),
        (
            &["serve", "--proc-root", "/tmp"],
            &[],
            2,
            "--proc-root '/tmp' is not a procfs mount",
        ),
        (
            &["serve", "--cri-timeout", "soon"],
            &[],
            2,
            "invalid value 'soon' for '--cri-timeout",
        ),
        (
            &["serve", "--bogus"],
            &[],
            2,
            "unexpected argument '--bogus'",
        ),
    ];
    for (args, env, want_code, want_text) in cases {
        let (code, stdout, stderr) = run(args, env);
        assert_eq!(code, *want_code, "{args:?}: {stderr}");
        assert!(stderr.contains(want_text), "{args:?}: {stderr}");
        assert!(!stdout.contains("listening"), "{args:?} listened: {stdout}");
    }
    // Our own configuration errors are exactly one line.
    let (_, _, stderr) = run(
        &["serve", "--listen", "0.0.0.0:7443", "--insecure-http"],
        &[],
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn unreachable_runtime_exits_before_listening() {
    let dir = tempfile::tempdir().unwrap();
    // A socket file nobody accepts on: connect() is refused.
    let dead = dir.path().join("dead.sock");
    drop(UnixListener::bind(&dead).unwrap());
    let (code, stdout, stderr) = run(
        &[
            "serve",
            "--cri-socket",
            dead.to_str().unwrap(),
            "--cri-timeout",
            "2s",
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stdout.is_empty(), "bound a port: {stdout}");
    assert!(
        stderr.contains(&format!(
            "cannot reach the container runtime: CRI call Version to '{}' failed: Unavailable: Connection refused",
            dead.display()
        )),
        "{stderr}"
    );
}

#[test]
fn hung_runtime_times_out_instead_of_hanging() {
    let dir = tempfile::tempdir().unwrap();
    // A socket that accepts connections and never says a word.
    let hung = dir.path().join("hung.sock");
    let _listener = UnixListener::bind(&hung).unwrap();
    let (code, stdout, stderr) = run(
        &[
            "serve",
            "--cri-socket",
            hung.to_str().unwrap(),
            "--cri-timeout",
            "1s",
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stdout.is_empty(), "bound a port: {stdout}");
    assert!(stderr.contains("CRI call Version to"), "{stderr}");
    assert!(
        stderr.contains("Cancelled") || stderr.contains("DeadlineExceeded"),
        "{stderr}"
    );
}

#[test]
fn discovery_lists_every_socket_it_tried() {
    let empty = tempfile::tempdir().unwrap();
    let root = empty.path().to_str().unwrap();
    let (code, stdout, stderr) = run(
        &["serve", "--host-root", root, "--listen", "127.0.0.1:0"],
        &[],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("no CRI runtime answered; tried"),
        "{stderr}"
    );
    for socket in [
        "/run/containerd/containerd.sock",
        "/run/crio/crio.sock",
        "/run/cri-dockerd.sock",
        "/run/k3s/containerd/containerd.sock",
        "/var/snap/microk8s/common/run/containerd.sock",
        "/run/k0s/containerd.sock",
    ] {
        assert!(
            stderr.contains(&format!("{root}{socket}")),
            "{socket} not listed: {stderr}"
        );
    }
}
