//! Nobody gets in who could not `kubectl exec`: TLS by default, the caller's
//! token reviewed with a TokenReview, every action with a SubjectAccessReview,
//! against a fake API server that speaks the real JSON (the real one cannot
//! run here) and real pods on the test bed.

use crate::support;

use serde_json::{Value, json};
use support::fake_apiserver::{FakeApiServer, FakeUser, Rule, rule};
use support::pods::ContainerSpec;
use support::{Agent, assert_status};

fn https_client() -> reqwest::Client {
    // The agent's certificate is self-signed (generated at start-up).
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap()
}

async fn call(
    agent: &Agent,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = https_client().request(method, format!("{}{path}", agent.url));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let code = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        code,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The scene of the authentication tests: a pod `guarded` in the test's own
/// namespace; alice (exec there), bob (read pods there) and root (exec and
/// the privileged profile everywhere) on a fake API server; an agent with its
/// defaults (TLS, Kubernetes authentication) writing an audit log.
struct Guarded {
    ns: String,
    /// A namespace alice has no rights in.
    other: String,
    pod: support::pods::RunningPod,
    api: FakeApiServer,
    agent: Agent,
    audit_log: std::path::PathBuf,
    _audit_dir: tempfile::TempDir,
}

impl Guarded {
    async fn start(test: &str) -> Self {
        let (ns, _client, pod) =
            support::one_pod(test, "guarded", vec![ContainerSpec::busybox("shell")]).await;
        let other = support::test_namespace("auth-other");
        let users = vec![
            FakeUser {
                token: "alice-token",
                name: "alice",
                groups: vec!["dev"],
            },
            FakeUser {
                token: "bob-token",
                name: "bob",
                groups: vec!["viewers"],
            },
            FakeUser {
                token: "root-token",
                name: "root",
                groups: vec!["system:masters"],
            },
        ];
        let rules = vec![
            rule("alice", "create", "pods/exec", Some(&ns)),
            rule("alice", "get", "pods", Some(&ns)),
            rule("alice", "list", "pods", Some(&ns)),
            rule("bob", "get", "pods", Some(&ns)),
            rule("bob", "list", "pods", Some(&ns)),
            rule("root", "create", "pods/exec", None),
            rule("root", "create", "nodes/proxy", None),
        ];
        let api = FakeApiServer::start(users, rules).await;
        let socket = support::testbed_socket();
        let audit_dir = tempfile::tempdir().unwrap();
        let audit_log = audit_dir.path().join("audit.jsonl");
        let agent = Agent::start_secure(&[
            "--cri-socket",
            socket.to_str().unwrap(),
            "--kubeconfig",
            api.kubeconfig.to_str().unwrap(),
            "--audit-log",
            audit_log.to_str().unwrap(),
        ]);
        assert!(
            agent.url.starts_with("https://"),
            "TLS by default: {}",
            agent.url
        );
        Self {
            ns,
            other,
            pod,
            api,
            agent,
            audit_log,
            _audit_dir: audit_dir,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_without_a_valid_token_get_401_and_open_paths_need_none() {
    let Guarded {
        ns,
        api: _api,
        agent,
        pod: _pod,
        _audit_dir,
        ..
    } = Guarded::start("auth-token").await;
    let run_path = format!("/v1/targets/{ns}/guarded/run");
    let hostname = json!({"command": ["hostname"]});
    use reqwest::Method;

    // No token, a bad token: 401, with the API server's reason.
    let (code, body) = call(&agent, Method::GET, "/api/v1/pods", None, None).await;
    assert_eq!(code, 401, "{body}");
    assert_status(&body, 401, "Unauthorized");
    let (code, body) = call(
        &agent,
        Method::POST,
        &run_path,
        Some("stolen"),
        Some(hostname.clone()),
    )
    .await;
    assert_eq!(code, 401, "{body}");
    assert_eq!(body["message"], "Unauthorized: invalid bearer token");
    // The page, health and version need no token.
    for open in ["/", "/healthz", "/readyz", "/version"] {
        assert_eq!(
            call(&agent, Method::GET, open, None, None).await.0,
            200,
            "{open}"
        );
    }
}

// Multi-threaded: kubectl runs as a blocking child process while the fake API
// server, on this runtime, must keep answering the agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_callers_with_the_rights_of_kubectl_exec_get_in() {
    let Guarded {
        ns,
        other,
        api,
        agent,
        pod: _pod,
        _audit_dir,
        ..
    } = Guarded::start("auth").await;
    let run_path = format!("/v1/targets/{ns}/guarded/run");
    let hostname = json!({"command": ["hostname"]});
    use reqwest::Method;

    // alice may exec in her namespace...
    let (code, body) = call(
        &agent,
        Method::POST,
        &run_path,
        Some("alice-token"),
        Some(hostname.clone()),
    )
    .await;
    assert_eq!(
        (code, body["stdout"].as_str()),
        (200, Some("guarded\n")),
        "{body}"
    );
    // ...and nowhere else: 403 before anything about the pod is revealed.
    let (code, body) = call(
        &agent,
        Method::POST,
        &format!("/v1/targets/{other}/anything/run"),
        Some("alice-token"),
        Some(hostname.clone()),
    )
    .await;
    assert_eq!(code, 403, "{body}");
    assert_status(&body, 403, "Forbidden");
    assert_eq!(
        body["message"],
        format!(
            "pods \"anything\" is forbidden: User \"alice\" cannot create resource \"pods/exec\" in API group \"\" in the namespace \"{other}\""
        )
    );
    // The privileged profile needs the node administrators' right.
    let privileged = json!({"command": ["id", "-u"], "profile": "privileged"});
    let (code, body) = call(
        &agent,
        Method::POST,
        &run_path,
        Some("alice-token"),
        Some(privileged.clone()),
    )
    .await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("cannot create resource \"nodes/proxy\""),
        "{body}"
    );
    let (code, body) = call(
        &agent,
        Method::POST,
        &run_path,
        Some("root-token"),
        Some(privileged),
    )
    .await;
    assert_eq!(
        (code, body["stdout"].as_str()),
        (200, Some("0\n")),
        "{body}"
    );

    // bob can read pods but not exec.
    let (code, body) = call(
        &agent,
        Method::GET,
        &format!("/api/v1/namespaces/{ns}/pods"),
        Some("bob-token"),
        None,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["items"][0]["metadata"]["name"], "guarded");
    let (code, _) = call(
        &agent,
        Method::POST,
        &run_path,
        Some("bob-token"),
        Some(hostname.clone()),
    )
    .await;
    assert_eq!(code, 403);
    // Listing every namespace needs cluster-wide list, which bob lacks.
    assert_eq!(
        call(&agent, Method::GET, "/api/v1/pods", Some("bob-token"), None)
            .await
            .0,
        403
    );

    // What the agent asked is what the API server would be asked for kubectl exec.
    let exec_review = api
        .reviews("SubjectAccessReview")
        .into_iter()
        .find(|r| {
            r["spec"]["user"] == "alice" && r["spec"]["resourceAttributes"]["subresource"] == "exec"
        })
        .unwrap();
    assert_eq!(
        exec_review["spec"]["resourceAttributes"],
        json!({"group": "", "version": "v1", "resource": "pods", "subresource": "exec", "verb": "create", "namespace": ns, "name": "guarded"})
    );
    assert_eq!(exec_review["spec"]["groups"], json!(["dev"]));
    assert_eq!(exec_review["spec"]["uid"], "uid-alice");

    // Decisions are cached: the same request again asks the API server nothing.
    let (tokens, accesses) = (
        api.reviews("TokenReview").len(),
        api.reviews("SubjectAccessReview").len(),
    );
    let (code, _) = call(
        &agent,
        Method::POST,
        &run_path,
        Some("alice-token"),
        Some(hostname.clone()),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(
        api.reviews("TokenReview").len(),
        tokens,
        "token review cached"
    );
    assert_eq!(
        api.reviews("SubjectAccessReview").len(),
        accesses,
        "access review cached"
    );

    // Real kubectl over TLS with a token, end to end.
    let kubectl = |token: &str, args: &[&str]| {
        let mut all = vec!["--token", token, "--insecure-skip-tls-verify"];
        all.extend_from_slice(args);
        agent.kubectl(&all)
    };
    let (code, out, err) = kubectl(
        "alice-token",
        &[
            "exec",
            "-n",
            &ns,
            "guarded",
            "--",
            "sh",
            "-c",
            "hostname; exit 4",
        ],
    );
    assert_eq!((code, out.as_str()), (4, "guarded\n"), "{err}");
    let (code, _, err) = kubectl(
        "bob-token",
        &["exec", "-n", &ns, "guarded", "--", "hostname"],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("Forbidden") || err.contains("forbidden"),
        "{err}"
    );
    let (code, _, err) = kubectl("stolen", &["get", "pods", "-n", &ns]);
    assert_eq!(code, 1);
    assert!(err.contains("Unauthorized"), "{err}");
}

/// What the audit test reads back: alice refused outside her namespace, her
/// run, her run on a container the pod does not have (allowed, then not
/// found), root's privileged run, bob refused, and a kubectl session of
/// alice's that exits 4 (each checked by the test above).
async fn sessions_to_audit(guarded: &Guarded) {
    let Guarded {
        ns, other, agent, ..
    } = guarded;
    let run_path = format!("/v1/targets/{ns}/guarded/run");
    let hostname = json!({"command": ["hostname"]});
    use reqwest::Method;
    let refused = format!("/v1/targets/{other}/anything/run");
    let no_container = format!("/v1/targets/{ns}/guarded/run?container=nope");
    let privileged = json!({"command": ["id", "-u"], "profile": "privileged"});
    for (path, token, body, want) in [
        (&refused, "alice-token", &hostname, 403),
        (&run_path, "alice-token", &hostname, 200),
        (&no_container, "alice-token", &hostname, 404),
        (&run_path, "root-token", &privileged, 200),
        (&run_path, "bob-token", &hostname, 403),
    ] {
        let (code, answer) = call(agent, Method::POST, path, Some(token), Some(body.clone())).await;
        assert_eq!(code, want, "{token} {path}: {answer}");
    }
    let (code, _, err) = agent.kubectl(&[
        "--token",
        "alice-token",
        "--insecure-skip-tls-verify",
        "exec",
        "-n",
        ns,
        "guarded",
        "--",
        "sh",
        "-c",
        "hostname; exit 4",
    ]);
    assert_eq!(code, 4, "{err}");
}

// Multi-threaded: kubectl runs as a blocking child process while the fake API
// server, on this runtime, must keep answering the agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_refusals_are_audited_and_sessions_leave_events() {
    let guarded = Guarded::start("auth-audit").await;
    sessions_to_audit(&guarded).await;
    let Guarded {
        ns,
        other,
        api,
        audit_log,
        pod,
        ..
    } = guarded;

    // The audit trail, in the audit.k8s.io/v1 shape.
    let events = || -> Vec<Value> {
        std::fs::read_to_string(&audit_log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let refused = events()
        .into_iter()
        .find(|e| e["objectRef"]["namespace"] == other.as_str())
        .expect("the refusal is audited");
    assert_eq!(refused["stage"], "ResponseComplete");
    assert_eq!(refused["responseStatus"]["code"], 403);
    assert_eq!(
        refused["annotations"]["authorization.k8s.io/decision"],
        "forbid"
    );
    assert_eq!(refused["user"]["username"], "alice");
    let run = events()
        .into_iter()
        .find(|e| {
            e["stage"] == "ResponseComplete"
                && e["user"]["username"] == "alice"
                && e["annotations"]["nsdebug.dev/command"] == "[\"hostname\"]"
        })
        .expect("alice's run is audited");
    assert_eq!(run["apiVersion"], "audit.k8s.io/v1");
    assert_eq!(run["kind"], "Event");
    assert_eq!(run["verb"], "create");
    assert_eq!(
        run["objectRef"],
        json!({"resource": "pods", "subresource": "exec", "namespace": ns, "name": "guarded", "apiVersion": "v1"})
    );
    assert_eq!(run["sourceIPs"], json!(["127.0.0.1"]));
    assert_eq!(run["annotations"]["authorization.k8s.io/decision"], "allow");
    assert_eq!(run["annotations"]["nsdebug.dev/container"], "shell");
    assert_eq!(run["annotations"]["nsdebug.dev/exit-code"], "0");
    assert_eq!(run["annotations"]["nsdebug.dev/stdout-bytes"], "8");
    assert_eq!(run["annotations"]["nsdebug.dev/output-bytes"], "8");
    assert_eq!(run["annotations"]["nsdebug.dev/stdin-bytes"], "0");
    // An allowed session that finds no container still leaves its trail:
    // the decision, and what it answered.
    let lost = events()
        .into_iter()
        .find(|e| {
            e["requestURI"]
                .as_str()
                .is_some_and(|u| u.contains("container=nope"))
        })
        .expect("the run on a missing container is audited");
    assert_eq!(lost["stage"], "ResponseComplete");
    assert_eq!(lost["responseStatus"]["code"], 404);
    assert_eq!(
        lost["annotations"]["authorization.k8s.io/decision"],
        "allow"
    );
    assert!(
        lost["annotations"]["nsdebug.dev/error"]
            .as_str()
            .is_some_and(|e| e.contains("nope")),
        "{lost}"
    );
    assert!(
        events()
            .iter()
            .any(|e| e["auditID"] == run["auditID"] && e["stage"] == "ResponseStarted"),
        "a started event with the same auditID"
    );
    // kubectl's session: its user agent, tty, exit code.
    let session = support::eventually(
        "kubectl's session in the audit log",
        std::time::Duration::from_secs(10),
        || {
            let found = events().into_iter().find(|e| {
                e["stage"] == "ResponseComplete"
                    && e["userAgent"]
                        .as_str()
                        .is_some_and(|a| a.starts_with("kubectl"))
                    && e["annotations"]["nsdebug.dev/exit-code"] == "4"
            });
            async move { found }
        },
    )
    .await;
    assert_eq!(session["annotations"]["nsdebug.dev/tty"], "false");
    assert_eq!(session["annotations"]["nsdebug.dev/output-bytes"], "8");

    // Each session wrote an Event on the pod, as `kubectl describe pod` shows:
    // the program, not its arguments (the audit event has the command line).
    let exec_event = support::eventually(
        "the Event of kubectl's session",
        std::time::Duration::from_secs(10),
        || {
            let found = api
                .reviews("Event")
                .into_iter()
                .find(|e| e["action"] == "exec");
            async move { found }
        },
    )
    .await;
    assert_eq!(
        exec_event["involvedObject"],
        json!({"apiVersion": "v1", "kind": "Pod", "name": "guarded", "namespace": ns,
               "uid": pod.spec.uid(), "fieldPath": "spec.containers{shell}"})
    );
    assert_eq!(exec_event["metadata"]["namespace"], ns.as_str());
    assert_eq!(exec_event["reason"], "NsdebugSession");
    assert_eq!(exec_event["type"], "Normal");
    assert_eq!(
        exec_event["source"],
        json!({"component": "nsdebug", "host": support::NODE_NAME})
    );
    assert_eq!(exec_event["reportingComponent"], "nsdebug");
    assert_eq!(
        exec_event["message"],
        format!(
            "alice started an nsdebug exec session in container \"shell\" (profile container, audit ID {}): sh",
            session["auditID"].as_str().unwrap()
        )
    );
    // A privileged session stands out as a warning; refused ones wrote none.
    let events = api.reviews("Event");
    let privileged = events
        .iter()
        .find(|e| {
            e["message"]
                .as_str()
                .unwrap()
                .contains("profile privileged")
        })
        .expect("root's privileged run has an Event");
    assert_eq!(privileged["type"], "Warning");
    assert_eq!(privileged["action"], "run");
    assert!(
        !events
            .iter()
            .any(|e| e["message"].as_str().unwrap().starts_with("bob")),
        "bob was refused: no Event"
    );
}

#[tokio::test]
async fn kube_auth_needs_an_api_server() {
    // No kubeconfig and no in-cluster service account: a clear exit, no port.
    let socket = support::testbed_socket();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_nsdebug"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--cri-socket",
            socket.to_str().unwrap(),
            "--kubeconfig",
            "/nonexistent/kubeconfig",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot read the kubeconfig '/nonexistent/kubeconfig'"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_decisions_expire() {
    let users = vec![FakeUser {
        token: "dana-token",
        name: "dana",
        groups: vec![],
    }];
    let rules = vec![rule("dana", "list", "pods", None)];
    let api = FakeApiServer::start(users, rules).await;
    let socket = support::testbed_socket();
    let agent = Agent::start_secure(&[
        "--cri-socket",
        socket.to_str().unwrap(),
        "--kubeconfig",
        api.kubeconfig.to_str().unwrap(),
        "--auth-cache-ttl",
        "300ms",
    ]);
    let list = || {
        call(
            &agent,
            reqwest::Method::GET,
            "/api/v1/pods",
            Some("dana-token"),
            None,
        )
    };
    assert_eq!(list().await.0, 200);
    assert_eq!(list().await.0, 200);
    assert_eq!(
        api.reviews("TokenReview").len(),
        1,
        "the second request is answered from the cache"
    );
    assert_eq!(api.reviews("SubjectAccessReview").len(), 1);
    // Expiry is the behaviour under test here: let the cache age past its TTL.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(list().await.0, 200);
    assert_eq!(api.reviews("TokenReview").len(), 2, "expired: asked again");
    assert_eq!(api.reviews("SubjectAccessReview").len(), 2);
}

/// The users and rules of the web UI and limits tests.
fn alice_and_bob(ns: &str) -> (Vec<FakeUser>, Vec<Rule>) {
    let users = vec![
        FakeUser {
            token: "alice-token",
            name: "alice",
            groups: vec!["dev"],
        },
        FakeUser {
            token: "bob-token",
            name: "bob",
            groups: vec!["dev"],
        },
    ];
    let rules = ["alice", "bob"]
        .into_iter()
        .flat_map(|user| {
            [
                rule(user, "create", "pods/exec", Some(ns)),
                rule(user, "get", "pods", Some(ns)),
                rule(user, "list", "pods", Some(ns)),
            ]
        })
        .collect();
    (users, rules)
}

fn login_link_cli(agent: &Agent, args: &[&str]) -> (i32, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_nsdebug"))
        .args([
            "login-link",
            "--agent",
            &agent.url,
            "--insecure-skip-tls-verify",
        ])
        .args(args)
        .env_remove("NSDEBUG_TOKEN")
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_ui_logins_carry_the_users_identity() {
    let (ns, mut client, pod) =
        support::one_pod("auth-login", "desk", vec![ContainerSpec::busybox("shell")]).await;
    let (users, rules) = alice_and_bob(&ns);
    let api = FakeApiServer::start(users, rules).await;
    let socket = support::testbed_socket();
    let audit_dir = tempfile::tempdir().unwrap();
    let audit_log = audit_dir.path().join("audit.jsonl");
    let agent = Agent::start_secure(&[
        "--cri-socket",
        socket.to_str().unwrap(),
        "--kubeconfig",
        api.kubeconfig.to_str().unwrap(),
        "--audit-log",
        audit_log.to_str().unwrap(),
        "--login-link-ttl",
        "2s",
    ]);
    use reqwest::Method;
    let login = |body: Value| call(&agent, Method::POST, "/v1/login", None, Some(body));

    // The CLI mints a link with the user's token; it works once.
    let (code, out, err) = login_link_cli(&agent, &["--token", "alice-token"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("one-time login link for alice, valid for 2s"),
        "{err}"
    );
    let link = out.trim();
    let code_in_link = link
        .strip_prefix(&format!("{}/#login=", agent.url))
        .unwrap_or_else(|| panic!("a link to the agent's page: {link}"));
    let (status, answer) = login(json!({"code": code_in_link})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["user"]["name"], "alice");
    let session = answer["session"].as_str().unwrap().to_string();
    let (status, answer) = login(json!({"code": code_in_link})).await;
    assert_eq!(status, 401, "a second use: {answer}");
    assert!(
        answer["message"].as_str().unwrap().contains("used already"),
        "{answer}"
    );

    // The session is alice, in every check.
    let (status, me) = call(&agent, Method::GET, "/v1/whoami", Some(&session), None).await;
    assert_eq!((status, me["user"]["name"].as_str()), (200, Some("alice")));
    let agent = &agent;
    let run = |path: String, token: String| async move {
        call(
            agent,
            Method::POST,
            &path,
            Some(&token),
            Some(json!({"command": ["hostname"]})),
        )
        .await
    };
    let (status, body) = run(format!("/v1/targets/{ns}/desk/run"), session.clone()).await;
    assert_eq!(
        (status, body["stdout"].as_str()),
        (200, Some("desk\n")),
        "{body}"
    );
    let (status, body) = run("/v1/targets/kube-system/etcd/run".into(), session.clone()).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("User \"alice\""),
        "{body}"
    );
    // The picker's listing shows the namespaces alice may list, and says so.
    let (status, listing) = call(agent, Method::GET, "/v1/targets", Some(&session), None).await;
    assert_eq!(status, 200, "{listing}");
    assert_eq!(listing["restricted"], true);
    let namespaces: std::collections::BTreeSet<&str> = listing["pods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(namespaces, [ns.as_str()].into());
    // A UI session cannot mint links (they would outlive it).
    let (status, _) = call(agent, Method::POST, "/v1/login-links", Some(&session), None).await;
    assert_eq!(status, 403);

    // A pasted token works as well; a wrong one does not.
    let (status, answer) = login(json!({"token": "bob-token"})).await;
    assert_eq!(
        (status, answer["user"]["name"].as_str()),
        (200, Some("bob"))
    );
    let (status, answer) = login(json!({"token": "stolen"})).await;
    assert_eq!(status, 401, "{answer}");
    let (status, _) = login(json!({"nonsense": 1})).await;
    assert_eq!(status, 400);

    // Logging out ends the session.
    let (status, _) = call(agent, Method::DELETE, "/v1/login", Some(&session), None).await;
    assert_eq!(status, 200);
    let (status, answer) = call(agent, Method::GET, "/v1/whoami", Some(&session), None).await;
    assert_eq!(status, 401);
    assert!(
        answer["message"].as_str().unwrap().contains("log in again"),
        "{answer}"
    );

    // A link expires: the behaviour under test is time passing its TTL.
    let (status, minted) = call(
        agent,
        Method::POST,
        "/v1/login-links",
        Some("alice-token"),
        None,
    )
    .await;
    assert_eq!(status, 201, "{minted}");
    assert_eq!(minted["expiresInSeconds"], 2);
    tokio::time::sleep(std::time::Duration::from_millis(2300)).await;
    let code = minted["path"]
        .as_str()
        .unwrap()
        .trim_start_matches("/#login=");
    let (status, _) = login(json!({"code": code})).await;
    assert_eq!(status, 401, "an expired link");

    // The CLI's errors: a refused token, no token at all.
    let (code, _, err) = login_link_cli(agent, &["--token", "stolen"]);
    assert_eq!(code, 1);
    assert!(err.contains("the agent refused (401)"), "{err}");
    let (code, _, err) = login_link_cli(agent, &[]);
    assert_eq!(code, 1);
    assert!(err.contains("no token: pass --token"), "{err}");

    // The logins are in the audit trail.
    let audit = std::fs::read_to_string(&audit_log).unwrap();
    let logins: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["objectRef"]["apiGroup"] == "nsdebug.dev")
        .collect();
    assert!(
        logins.iter().any(|e| e["user"]["username"] == "alice"
            && e["annotations"]["nsdebug.dev/login"] == "login link"),
        "{logins:?}"
    );
    pod.remove(&mut client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_per_user_request_size_and_failed_logins() {
    let (ns, mut client, pod) =
        support::one_pod("limits", "busy", vec![ContainerSpec::busybox("shell")]).await;
    let (users, rules) = alice_and_bob(&ns);
    let api = FakeApiServer::start(users, rules).await;
    let socket = support::testbed_socket();
    let agent = Agent::start_secure(&[
        "--cri-socket",
        socket.to_str().unwrap(),
        "--kubeconfig",
        api.kubeconfig.to_str().unwrap(),
        "--max-sessions-per-user",
        "1",
        "--max-request-bytes",
        "4KiB",
    ]);
    let path = format!("{}/v1/targets/{ns}/busy/run", agent.url);
    let hostname = json!({"command": ["hostname"]});

    // alice holds her one session with a streamed run...
    let mut held = https_client()
        .post(format!("{path}?stream=true"))
        .bearer_auth("alice-token")
        .json(&json!({"command": ["sh", "-c", "echo held; exec sleep 600"], "timeoutSeconds": 600}))
        .send()
        .await
        .unwrap();
    let mut seen = String::new();
    while !seen.contains("held") {
        let chunk = held.chunk().await.unwrap().expect("the stream ended early");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    // ...so her next one is refused, while bob is not held back by her.
    let (code, body) = call(
        &agent,
        reqwest::Method::POST,
        &path.replace(&agent.url, ""),
        Some("alice-token"),
        Some(hostname.clone()),
    )
    .await;
    assert_eq!(code, 429, "{body}");
    assert_status(&body, 429, "TooManyRequests");
    assert_eq!(
        body["message"],
        "user \"alice\" already has 1 sessions open on this agent, the most one user may have; close one first"
    );
    let (code, body) = call(
        &agent,
        reqwest::Method::POST,
        &path.replace(&agent.url, ""),
        Some("bob-token"),
        Some(hostname.clone()),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    drop(held);
    support::eventually(
        "alice's session to be given back",
        std::time::Duration::from_secs(10),
        || async {
            let (code, _) = call(
                &agent,
                reqwest::Method::POST,
                &path.replace(&agent.url, ""),
                Some("alice-token"),
                Some(hostname.clone()),
            )
            .await;
            (code == 200).then_some(())
        },
    )
    .await;

    // Oversized bodies and headers are refused with a clear status.
    let big = json!({"command": ["echo", "x".repeat(8 * 1024)]});
    let (code, body) = call(
        &agent,
        reqwest::Method::POST,
        &path.replace(&agent.url, ""),
        Some("alice-token"),
        Some(big),
    )
    .await;
    assert_eq!(code, 413, "{body}");
    assert_status(&body, 413, "RequestEntityTooLarge");
    let response = https_client()
        .get(format!("{}/api/v1/pods", agent.url))
        .bearer_auth("alice-token")
        .header("X-Padding", "p".repeat(100 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 431);

    // A token that keeps failing: after five failures it must wait, and the
    // API server is not even asked meanwhile; everyone else, though behind
    // the same address, is not held back.
    for _ in 0..5 {
        let (code, _) = call(
            &agent,
            reqwest::Method::GET,
            "/api/v1/pods",
            Some("guess"),
            None,
        )
        .await;
        assert_eq!(code, 401);
    }
    let reviews = api.reviews("TokenReview").len();
    let response = https_client()
        .get(format!("{}/api/v1/pods", agent.url))
        .bearer_auth("guess")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=300).contains(&retry), "{retry}");
    let body: Value = response.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("this token failed authentication too often"),
        "{body}"
    );
    assert_eq!(body["details"]["retryAfterSeconds"].as_u64(), Some(retry));
    assert_eq!(
        api.reviews("TokenReview").len(),
        reviews,
        "not reviewed while waiting"
    );
    let (code, body) = call(
        &agent,
        reqwest::Method::POST,
        &path.replace(&agent.url, ""),
        Some("alice-token"),
        Some(hostname.clone()),
    )
    .await;
    assert_eq!(code, 200, "alice is not locked out by the guesses: {body}");
    // The metrics count the failures and the decisions (no names in them).
    let metrics = https_client()
        .get(format!("{}/metrics", agent.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    assert!(value("nsdebug_authentication_failures_total") >= 5.0);
    assert!(
        value(r#"nsdebug_authorization_decisions_total{decision="allow",resource="pods/exec"}"#)
            >= 1.0
    );
    assert!(!metrics.contains("alice"));
    pod.remove(&mut client).await;
}
