//! The files API against real pods: downloads compared with the bytes the
//! test reads itself through `/proc/PID/root`, tar archives unpacked by the
//! real `tar`, uploads read back inside the container, escape attempts that
//! must never reach the host, and every error as a `v1.Status`.

use crate::support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use reqwest::Url;
use serde_json::{Value, json};
use support::files::{download, fetch, files_url, names, pid_of, put, refused, sh, tar_listing};
use support::pods::{ContainerSpec, RunningPod};
use support::{Agent, assert_status, eventually, one_pod};

#[tokio::test]
async fn files_download_with_their_bytes_and_metadata() {
    let (ns, mut client, pod) = one_pod(
        "files-download",
        "app",
        vec![
            ContainerSpec::busybox("shell"),
            ContainerSpec::distroless("server"),
        ],
    )
    .await;
    let agent = Agent::start();
    let shell = pid_of(&agent, &ns, "app", "shell").await;
    sh(
        &agent,
        &ns,
        "app",
        "shell",
        "head -c 3000000 /dev/urandom > /tmp/blob && chmod 0640 /tmp/blob && \
         printf 'PRETTY_NAME=\"files test\"\\n' > /etc/os-release",
    )
    .await;

    // Several megabytes of random bytes: exactly what the test reads itself.
    let expected = std::fs::read(format!("/proc/{shell}/root/tmp/blob")).unwrap();
    let blob = download(files_url(&agent, &ns, "app", "shell", "/tmp/blob", &[])).await;
    assert!(
        blob.body == expected,
        "the download differs: {} bytes, expected {}",
        blob.body.len(),
        expected.len()
    );
    assert_eq!(blob.header("content-type"), "application/octet-stream");
    assert_eq!(blob.header("content-length"), "3000000");
    assert_eq!(
        blob.header("content-disposition"),
        "attachment; filename=\"blob\""
    );
    assert_eq!(blob.header("nsdebug-file-mode"), "0640");
    assert_eq!(blob.header("nsdebug-file-uid"), "0");
    assert!(blob.header("last-modified").ends_with(" GMT"));

    // A relative path starts at the container's `/`.
    let release = download(files_url(
        &agent,
        &ns,
        "app",
        "shell",
        "etc/os-release",
        &[],
    ))
    .await;
    assert_eq!(release.text(), "PRETTY_NAME=\"files test\"\n");

    // /etc/hostname is a file the runtime mounts into the container: its
    // mount namespace is what paths resolve in.
    let hostname = download(files_url(&agent, &ns, "app", "shell", "/etc/hostname", &[])).await;
    assert_eq!(
        hostname.text(),
        sh(&agent, &ns, "app", "shell", "cat /etc/hostname").await
    );
    assert_ne!(
        hostname.body,
        std::fs::read("/etc/hostname").unwrap_or_default()
    );

    // Distroless, by container ID: its only file, the server binary.
    let server = pid_of(&agent, &ns, "app", "server").await;
    let mut by_id = Url::parse(&format!(
        "{}/v1/containers/{}/files",
        agent.url,
        pod.id("server")
    ))
    .unwrap();
    by_id.query_pairs_mut().append_pair("path", "/hello");
    let hello = download(by_id).await;
    assert_eq!(
        hello.body,
        std::fs::read(format!("/proc/{server}/root/hello")).unwrap()
    );
    assert_eq!(hello.header("nsdebug-file-mode"), "0755");

    pod.remove(&mut client).await;
}

#[tokio::test]
async fn directories_download_as_tar_archives() {
    let (ns, mut client, pod) =
        one_pod("files-tar", "tree", vec![ContainerSpec::busybox("shell")]).await;
    let agent = Agent::start();
    let pid = pid_of(&agent, &ns, "tree", "shell").await;
    sh(
        &agent,
        &ns,
        "tree",
        "shell",
        "mkdir -p /tmp/tree/sub/deeper && printf one > /tmp/tree/a.txt && chmod 0600 /tmp/tree/a.txt && \
         printf two > /tmp/tree/sub/b.txt && head -c 200000 /dev/urandom > /tmp/tree/sub/deeper/c.bin && \
         ln -s /etc/passwd /tmp/tree/abs-link && ln -s ../a.txt /tmp/tree/sub/rel-link && \
         mkfifo /tmp/tree/pipe && chown 1234:5678 /tmp/tree/sub/b.txt",
    )
    .await;
    let work = tempfile::tempdir().unwrap();

    let tar = download(files_url(
        &agent,
        &ns,
        "tree",
        "shell",
        "/tmp/tree",
        &[("format", "tar")],
    ))
    .await;
    assert_eq!(tar.header("content-type"), "application/x-tar");
    assert_eq!(
        tar.header("content-disposition"),
        "attachment; filename=\"tree.tar\""
    );
    let archive = work.path().join("tree.tar");
    std::fs::write(&archive, &tar.body).unwrap();
    let listing = tar_listing(&archive);
    assert_eq!(
        names(&listing),
        [
            "tree/",
            "tree/a.txt",
            "tree/abs-link -> /etc/passwd",
            "tree/pipe",
            "tree/sub/",
            "tree/sub/b.txt",
            "tree/sub/deeper/",
            "tree/sub/deeper/c.bin",
            "tree/sub/rel-link -> ../a.txt",
        ],
        "{listing:#?}"
    );
    let line = |name: &str| {
        listing
            .iter()
            .find(|l| l.ends_with(name))
            .unwrap()
            .to_string()
    };
    assert!(line("tree/pipe").starts_with("prw"), "{listing:#?}");
    assert!(
        line("tree/a.txt").starts_with("-rw------- 0/0 "),
        "{listing:#?}"
    );
    assert!(
        line("tree/sub/b.txt").contains(" 1234/5678 "),
        "{listing:#?}"
    );

    let out = work.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let status = Command::new("tar")
        .args([
            "-xf",
            archive.to_str().unwrap(),
            "-C",
            out.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        std::fs::read_to_string(out.join("tree/a.txt")).unwrap(),
        "one"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("tree/sub/b.txt")).unwrap(),
        "two"
    );
    assert!(
        std::fs::read(out.join("tree/sub/deeper/c.bin")).unwrap()
            == std::fs::read(format!("/proc/{pid}/root/tmp/tree/sub/deeper/c.bin")).unwrap()
    );
    assert_eq!(
        std::fs::read_link(out.join("tree/abs-link")).unwrap(),
        Path::new("/etc/passwd")
    );

    // A directory without format=tar is refused with the way to get it.
    let message = refused(
        files_url(&agent, &ns, "tree", "shell", "/tmp/tree", &[]),
        400,
        "BadRequest",
    )
    .await;
    assert_eq!(
        message,
        "/tmp/tree is a directory; add format=tar to download it as a tar archive"
    );

    // One file as an archive of one entry.
    let one = download(files_url(
        &agent,
        &ns,
        "tree",
        "shell",
        "/tmp/tree/sub/b.txt",
        &[("format", "tar")],
    ))
    .await;
    let one_path = work.path().join("one.tar");
    std::fs::write(&one_path, &one.body).unwrap();
    assert_eq!(names(&tar_listing(&one_path)), ["b.txt"]);

    // /dev: device nodes are entries, never read (dev/zero and dev/urandom
    // never end).
    let dev = download(files_url(
        &agent,
        &ns,
        "tree",
        "shell",
        "/dev",
        &[("format", "tar")],
    ))
    .await;
    let dev_path = work.path().join("dev.tar");
    std::fs::write(&dev_path, &dev.body).unwrap();
    let dev_listing = tar_listing(&dev_path);
    for device in ["dev/null", "dev/zero", "dev/urandom"] {
        assert!(
            dev_listing
                .iter()
                .any(|l| l.starts_with('c') && l.ends_with(device)),
            "{device} is not a character device entry: {dev_listing:#?}"
        );
    }

    // The whole root: proc and sys are there, as empty directories.
    let root = download(files_url(
        &agent,
        &ns,
        "tree",
        "shell",
        "/",
        &[("format", "tar")],
    ))
    .await;
    assert_eq!(
        root.header("content-disposition"),
        "attachment; filename=\"root.tar\""
    );
    let root_path = work.path().join("root.tar");
    std::fs::write(&root_path, &root.body).unwrap();
    let root_names = names(&tar_listing(&root_path));
    for expected in ["proc/", "sys/", "bin/busybox", "tmp/tree/a.txt"] {
        assert!(
            root_names.iter().any(|n| n == expected),
            "{expected} missing: {root_names:#?}"
        );
    }
    assert!(
        !root_names
            .iter()
            .any(|n| n.starts_with("proc/") && n != "proc/"),
        "proc's contents were archived"
    );

    pod.remove(&mut client).await;
}

#[tokio::test]
async fn uploads_are_atomic_and_owned_by_the_container_user() {
    let (ns, mut client, pod) = one_pod(
        "files-upload",
        "up",
        vec![
            ContainerSpec::busybox("root"),
            ContainerSpec::busybox("user").run_as_user(1000),
        ],
    )
    .await;
    let agent = Agent::start();

    // Two megabytes: more than --max-request-bytes (1 MiB), which JSON
    // bodies get; uploads have their own limit.
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    let url = files_url(
        &agent,
        &ns,
        "up",
        "root",
        "/tmp/data.bin",
        &[("mode", "0640")],
    );
    let (code, answer) = put(url.clone(), data.clone()).await;
    assert_eq!(code, 201, "{answer}");
    assert_eq!(
        answer,
        json!({"path": "/tmp/data.bin", "size": 2_000_000, "created": true, "mode": "0640", "uid": 0, "gid": 0})
    );
    let root_pid = pid_of(&agent, &ns, "up", "root").await;
    assert!(std::fs::read(format!("/proc/{root_pid}/root/tmp/data.bin")).unwrap() == data);
    assert_eq!(
        sh(
            &agent,
            &ns,
            "up",
            "root",
            "stat -c '%a %u %g' /tmp/data.bin"
        )
        .await,
        "640 0 0\n"
    );

    // What docs/api/files.md shows: `curl -T FILE` (Expect: 100-continue).
    let local = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(local.path(), &data[..1_500_000]).unwrap();
    let output = Command::new("curl")
        .args(["-sS", "-T"])
        .arg(local.path())
        .arg(files_url(&agent, &ns, "up", "root", "/tmp/curl.bin", &[]).as_str())
        .output()
        .unwrap();
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        panic!(
            "curl: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert_eq!(
        (&answer["size"], &answer["created"]),
        (&json!(1_500_000), &json!(true))
    );
    assert!(
        std::fs::read(format!("/proc/{root_pid}/root/tmp/curl.bin")).unwrap() == data[..1_500_000]
    );

    // Replacing: 200, the new content, the old mode kept; no temporary file left.
    let (code, answer) = put(
        files_url(&agent, &ns, "up", "root", "/tmp/data.bin", &[]),
        b"second\n".to_vec(),
    )
    .await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["created"], false);
    assert_eq!(answer["mode"], "0640");
    assert_eq!(
        sh(&agent, &ns, "up", "root", "cat /tmp/data.bin; ls -a /tmp").await,
        "second\n.\n..\ncurl.bin\ndata.bin\n"
    );

    // A new file without a mode is 0644; an empty body is an empty file.
    let (code, answer) = put(
        files_url(&agent, &ns, "up", "root", "/tmp/empty", &[]),
        Vec::new(),
    )
    .await;
    assert_eq!(
        (code, &answer["mode"], &answer["size"]),
        (201, &json!("0644"), &json!(0))
    );

    // As a non-root container's user: its files are its own, root's files
    // are out of reach, as with `kubectl exec`/`cp`.
    let (code, answer) = put(
        files_url(&agent, &ns, "up", "user", "/tmp/mine", &[]),
        b"mine\n".to_vec(),
    )
    .await;
    assert_eq!(code, 201, "{answer}");
    assert_eq!(
        sh(
            &agent,
            &ns,
            "up",
            "user",
            "stat -c '%u %a' /tmp/mine; cat /tmp/mine"
        )
        .await,
        "1000 644\nmine\n"
    );
    let (code, answer) = put(
        files_url(&agent, &ns, "up", "user", "/etc/passwd", &[]),
        b"evil::0:0::/:/bin/sh\n".to_vec(),
    )
    .await;
    assert_eq!(code, 403, "{answer}");
    assert_status(&answer, 403, "Forbidden");
    assert_eq!(
        answer["message"],
        "/etc: permission denied to the container's user (uid 1000)"
    );
    let response = reqwest::Client::new()
        .post(format!("{}/v1/targets/{ns}/up/run?container=user", agent.url))
        .json(&json!({"command": ["sh", "-c", "echo secret > /target/tmp/root-only && chmod 0600 /target/tmp/root-only"], "profile": "privileged"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.json::<Value>().await.unwrap()["exitCode"], 0);
    let message = refused(
        files_url(&agent, &ns, "up", "user", "/tmp/root-only", &[]),
        403,
        "Forbidden",
    )
    .await;
    assert_eq!(
        message,
        "/tmp/root-only: permission denied to the container's user (uid 1000)"
    );
    // Root in the other container reads it.
    assert_eq!(
        download(files_url(&agent, &ns, "up", "root", "/etc/passwd", &[]))
            .await
            .text(),
        sh(&agent, &ns, "up", "root", "cat /etc/passwd").await
    );

    pod.remove(&mut client).await;
}

#[tokio::test]
async fn paths_never_reach_the_host() {
    let (ns, mut client, pod) = one_pod(
        "files-escape",
        "jail",
        vec![ContainerSpec::busybox("shell")],
    )
    .await;
    let agent = Agent::start();
    let host_shadow = std::fs::read("/etc/shadow").expect("the host has /etc/shadow");
    // A marker only the host has.
    let marker_dir = tempfile::Builder::new()
        .prefix("nsdebug-host-marker-")
        .tempdir_in("/tmp")
        .unwrap();
    let marker = marker_dir.path().to_str().unwrap().to_string();
    let secret = format!("host secret {marker}\n");
    std::fs::write(marker_dir.path().join("secret"), &secret).unwrap();
    sh(
        &agent,
        &ns,
        "jail",
        "shell",
        &format!(
            "ln -s /etc/shadow /tmp/shadow && ln -s ../../../../../../etc /tmp/up && \
             ln -s {marker}/secret /tmp/marker && ln -s ../../../../../..{marker} /tmp/updir && \
             ln -s / /tmp/slash"
        ),
    )
    .await;
    let url = |path: &str| files_url(&agent, &ns, "jail", "shell", path, &[]);
    let shadow_paths = [
        "/tmp/shadow",
        "/tmp/up/shadow",
        "/../../../../etc/shadow",
        "/tmp/slash/../../etc/shadow",
    ];

    // The container has no /etc/shadow, the host has: not found, never the host's.
    for path in shadow_paths {
        let message = refused(url(path), 404, "NotFound").await;
        assert_eq!(
            message,
            format!("{path}: no such file or directory in the container")
        );
    }
    // With its own, each path gives the container's file.
    sh(
        &agent,
        &ns,
        "jail",
        "shell",
        "echo 'root:container-own:::::::' > /etc/shadow",
    )
    .await;
    for path in shadow_paths {
        let fetched = download(url(path)).await;
        // Checked first, and never printed.
        assert!(
            fetched.body != host_shadow,
            "{path}: the host's /etc/shadow was served"
        );
        assert_eq!(fetched.text(), "root:container-own:::::::\n", "{path}");
    }

    // The host's marker, by absolute symlink, by `..` chains, by a symlinked
    // directory: not found.
    for path in [
        "/tmp/marker".to_string(),
        "/tmp/updir/secret".to_string(),
        format!("/../../../..{marker}/secret"),
        format!("/tmp/slash/..{marker}/secret"),
    ] {
        let message = refused(url(&path), 404, "NotFound").await;
        assert!(message.starts_with(&path), "{message}");
    }
    for path in ["/tmp/updir", "/tmp/marker"] {
        let fetched = fetch(files_url(
            &agent,
            &ns,
            "jail",
            "shell",
            path,
            &[("format", "tar")],
        ))
        .await;
        assert_eq!(fetched.status, 404, "{path}: {}", fetched.text());
    }
    // /proc magic links (the container's /proc/1/root would be its own
    // root, but such links are never followed).
    let message = refused(url("/proc/1/root/etc/passwd"), 400, "BadRequest").await;
    assert!(message.contains("magic link"), "{message}");

    // A tar of /tmp keeps the symlinks as symlinks and holds no host file.
    let tar = download(files_url(
        &agent,
        &ns,
        "jail",
        "shell",
        "/tmp",
        &[("format", "tar")],
    ))
    .await;
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("tmp.tar");
    std::fs::write(&archive, &tar.body).unwrap();
    let listing = names(&tar_listing(&archive));
    assert!(
        listing.contains(&format!("tmp/marker -> {marker}/secret")),
        "{listing:#?}"
    );
    assert!(listing.contains(&"tmp/up -> ../../../../../../etc".to_string()));
    let haystack = String::from_utf8_lossy(&tar.body);
    assert!(
        !haystack.contains(&secret),
        "the host's marker is in the archive"
    );

    // Uploads through symlinked directories stay inside too.
    let (code, answer) = put(url("/tmp/updir/planted"), b"planted\n".to_vec()).await;
    assert_eq!(code, 404, "{answer}");
    assert_eq!(
        answer["message"],
        "/tmp/updir/planted: the directory to write into does not exist in the container"
    );
    let (code, answer) = put(
        url(&format!("/../../..{marker}/planted")),
        b"planted\n".to_vec(),
    )
    .await;
    assert_eq!(code, 404, "{answer}");
    // Through /tmp/up the container's own /etc is reached.
    let (code, answer) = put(url("/tmp/up/planted"), b"planted\n".to_vec()).await;
    assert_eq!(code, 201, "{answer}");
    assert_eq!(
        sh(&agent, &ns, "jail", "shell", "cat /etc/planted").await,
        "planted\n"
    );
    assert!(!Path::new("/etc/planted").exists(), "written on the host");
    // A symlink at the path itself is replaced, not written through.
    let (code, answer) = put(url("/tmp/marker"), b"replaced\n".to_vec()).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(
        sh(
            &agent,
            &ns,
            "jail",
            "shell",
            "test -L /tmp/marker || cat /tmp/marker"
        )
        .await,
        "replaced\n"
    );
    let mut left: Vec<String> = std::fs::read_dir(marker_dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["secret"], "the host's marker directory changed");
    assert_eq!(
        std::fs::read_to_string(marker_dir.path().join("secret")).unwrap(),
        secret
    );

    pod.remove(&mut client).await;
}

/// The scene of the error and limit tests: a pod `err` with a running
/// container `shell` and a stopped one `stopped`; an agent with a 64 KiB file
/// limit and an audit log; in `shell`, /tmp/big (100000 bytes), /tmp/two (two
/// files of 40000 bytes) and the FIFO /tmp/fifo.
struct Limited {
    ns: String,
    pod: RunningPod,
    agent: Agent,
    audit_log: std::path::PathBuf,
    _audit_dir: tempfile::TempDir,
}

impl Limited {
    async fn start(test: &str) -> Self {
        let (ns, mut client, pod) = one_pod(
            test,
            "err",
            vec![
                ContainerSpec::busybox("shell"),
                ContainerSpec::busybox("stopped"),
            ],
        )
        .await;
        pod.stop(&mut client, "stopped", 10).await;
        let audit_dir = tempfile::tempdir().unwrap();
        let audit_log = audit_dir.path().join("audit.jsonl");
        let socket = support::testbed_socket();
        let agent = Agent::start_with(&[
            "--cri-socket",
            socket.to_str().unwrap(),
            "--max-file-bytes",
            "64KiB",
            "--audit-log",
            audit_log.to_str().unwrap(),
        ]);
        sh(
            &agent,
            &ns,
            "err",
            "shell",
            "head -c 100000 /dev/zero > /tmp/big && mkdir /tmp/two && \
             head -c 40000 /dev/zero > /tmp/two/a && head -c 40000 /dev/zero > /tmp/two/b && \
             mkfifo /tmp/fifo",
        )
        .await;
        Self {
            ns,
            pod,
            agent,
            audit_log,
            _audit_dir: audit_dir,
        }
    }
}

#[tokio::test]
async fn errors_are_statuses() {
    let Limited {
        ns,
        agent,
        pod: _pod,
        _audit_dir,
        ..
    } = Limited::start("files-errors").await;
    let url =
        |path: &str, extra: &[(&str, &str)]| files_url(&agent, &ns, "err", "shell", path, extra);

    assert_eq!(
        refused(url("/etc/nope", &[]), 404, "NotFound").await,
        "/etc/nope: no such file or directory in the container"
    );
    assert_eq!(
        refused(url("/bin/busybox/x", &[]), 400, "BadRequest").await,
        "/bin/busybox/x: a component of the path is not a directory"
    );
    assert_eq!(
        refused(url("/tmp/fifo", &[]), 400, "BadRequest").await,
        "/tmp/fifo is a FIFO, not a regular file"
    );
    assert!(
        refused(url("", &[]), 400, "BadRequest")
            .await
            .starts_with("invalid path \"\": name a file or directory")
    );
    assert!(
        refused(url("/tmp", &[("format", "zip")]), 400, "BadRequest")
            .await
            .starts_with("unknown format \"zip\"")
    );
    let stopped = files_url(&agent, &ns, "err", "stopped", "/etc/passwd", &[]);
    assert!(
        refused(stopped, 409, "Conflict")
            .await
            .contains("is not running")
    );
    let mut nope = Url::parse(&format!("{}/v1/targets/{ns}/nope/files", agent.url)).unwrap();
    nope.query_pairs_mut().append_pair("path", "/etc/passwd");
    refused(nope, 404, "NotFound").await;

    // Writing into a missing directory, onto a directory, onto a mount point.
    let (code, answer) = put(url("/nope/x", &[]), b"x".to_vec()).await;
    assert_eq!(
        (code, answer["message"].as_str().unwrap()),
        (
            404,
            "/nope/x: the directory to write into does not exist in the container"
        )
    );
    let (code, answer) = put(url("/tmp/two", &[]), b"x".to_vec()).await;
    assert_eq!(
        (code, answer["message"].as_str().unwrap()),
        (400, "/tmp/two is a directory; name the file to write")
    );
    // /etc/hosts is the runtime's bind mount: replacing it would unmount it.
    let hosts = sh(&agent, &ns, "err", "shell", "cat /etc/hosts").await;
    let (code, answer) = put(url("/etc/hosts", &[]), b"x".to_vec()).await;
    assert_eq!(
        (code, answer["message"].as_str().unwrap()),
        (
            409,
            "/etc/hosts is a mount point in the container and cannot be replaced"
        )
    );
    assert_eq!(
        sh(
            &agent,
            &ns,
            "err",
            "shell",
            "grep -c ' /etc/hosts ' /proc/self/mountinfo; cat /etc/hosts"
        )
        .await,
        format!("1\n{hosts}")
    );
    let (code, answer) = put(url("/tmp/x", &[("mode", "rw")]), b"x".to_vec()).await;
    assert_eq!(code, 400, "{answer}");
}

#[tokio::test]
async fn the_size_limit_holds_for_files_archives_and_uploads() {
    let Limited {
        ns,
        agent,
        pod: _pod,
        _audit_dir,
        ..
    } = Limited::start("files-limits").await;
    let url =
        |path: &str, extra: &[(&str, &str)]| files_url(&agent, &ns, "err", "shell", path, extra);

    // Too large: a file is refused before a byte is sent.
    assert_eq!(
        refused(url("/tmp/big", &[]), 413, "RequestEntityTooLarge").await,
        "/tmp/big is 100000 bytes, more than this agent's limit of 65536 bytes (--max-file-bytes)"
    );
    // An archive that grows past the limit is aborted: the client gets an
    // error, never an archive that looks complete.
    // (Whether the status line got out first depends on buffering; the
    // download fails either way.)
    match reqwest::get(url("/tmp/two", &[("format", "tar")])).await {
        Err(err) => assert!(err.is_request(), "{err}"),
        Ok(response) => {
            assert_eq!(response.status(), 200);
            assert!(
                response.bytes().await.is_err(),
                "a cut-off archive must end in an error"
            );
        }
    }
    // Uploads: a declared size over the limit, and a chunked body without
    // one (curl -T - streams stdin) that grows past it.
    let (code, answer) = put(url("/tmp/up", &[]), vec![0; 100_000]).await;
    assert_eq!(code, 413, "{answer}");
    assert_eq!(
        answer["message"],
        "the upload to /tmp/up is larger than this agent's limit of 65536 bytes (--max-file-bytes)"
    );
    let mut curl = Command::new("curl")
        .args(["-sS", "-T", "-", url("/tmp/up", &[]).as_str()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = curl.stdin.take().unwrap();
        // The agent may stop reading at the limit; later writes may fail.
        let _ = stdin.write_all(&[7; 100_000]);
    }
    let output = curl.wait_with_output().unwrap();
    let answer: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("curl: {}", String::from_utf8_lossy(&output.stdout)));
    assert_status(&answer, 413, "RequestEntityTooLarge");
    assert_eq!(
        sh(&agent, &ns, "err", "shell", "ls -a /tmp").await,
        ".\n..\nbig\nfifo\ntwo\n",
        "a refused upload left something behind"
    );
}

#[tokio::test]
async fn reads_and_writes_are_audited_with_their_byte_counts() {
    let Limited {
        ns,
        agent,
        audit_log,
        pod: _pod,
        _audit_dir,
    } = Limited::start("files-audit").await;
    let url =
        |path: &str, extra: &[(&str, &str)]| files_url(&agent, &ns, "err", "shell", path, extra);

    // What the audit log is checked for below: a refused read, an archive
    // cut at the limit (both checked in the tests above), a write and a read.
    refused(url("/etc/nope", &[]), 404, "NotFound").await;
    if let Ok(response) = reqwest::get(url("/tmp/two", &[("format", "tar")])).await {
        let _ = response.bytes().await;
    }

    // Audit: who read and wrote what, with the byte counts.
    let (code, _) = put(url("/tmp/small", &[]), b"12345".to_vec()).await;
    assert_eq!(code, 201);
    download(url("/tmp/small", &[])).await;
    // A download's trail is written when its body is done, just after the
    // client has it.
    let events: Vec<Value> = eventually("the audit events", Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&audit_log).unwrap_or_default();
        let events: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let done = events.iter().any(|e| {
            e["stage"] == "ResponseComplete"
                && e["annotations"]["nsdebug.dev/file-op"] == "read"
                && e["annotations"]["nsdebug.dev/file-path"] == "/tmp/small"
        });
        async move { done.then_some(events) }
    })
    .await;
    let complete = |op: &str, path: &str| {
        events
            .iter()
            .filter(|e| {
                e["stage"] == "ResponseComplete"
                    && e["annotations"]["nsdebug.dev/file-op"] == op
                    && e["annotations"]["nsdebug.dev/file-path"] == path
            })
            .cloned()
            .collect::<Vec<_>>()
    };
    let written = complete("write", "/tmp/small");
    assert_eq!(written.len(), 1, "{events:#?}");
    // One trail shape for every session: bytes in, bytes out, how it ended.
    assert_eq!(written[0]["annotations"]["nsdebug.dev/stdin-bytes"], "5");
    assert_eq!(written[0]["annotations"]["nsdebug.dev/output-bytes"], "0");
    assert_eq!(
        written[0]["annotations"]["nsdebug.dev/exit-code"],
        "complete"
    );
    assert_eq!(written[0]["responseStatus"]["code"], 201);
    assert!(
        events
            .iter()
            .any(|e| e["auditID"] == written[0]["auditID"] && e["stage"] == "ResponseStarted"),
        "the write's ResponseStarted: {events:#?}"
    );
    assert_eq!(written[0]["objectRef"]["subresource"], "exec");
    let read = complete("read", "/tmp/small");
    assert_eq!(read.len(), 1, "{events:#?}");
    assert_eq!(read[0]["annotations"]["nsdebug.dev/output-bytes"], "5");
    assert_eq!(read[0]["annotations"]["nsdebug.dev/exit-code"], "complete");
    let cut = complete("tar", "/tmp/two");
    assert_eq!(cut.len(), 1, "{events:#?}");
    assert!(
        cut[0]["annotations"]["nsdebug.dev/exit-code"]
            .as_str()
            .unwrap()
            .starts_with("aborted: the tar archive of /tmp/two grew past"),
        "{cut:#?}"
    );
    let missing = complete("read", "/etc/nope");
    assert_eq!(missing[0]["responseStatus"]["code"], 404);
}
