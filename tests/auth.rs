//! Nobody gets in who could not `kubectl exec`: TLS by default, the caller's
//! token reviewed with a TokenReview, every action with a SubjectAccessReview,
//! against a fake API server that speaks the real JSON (the real one cannot
//! run here) and real pods on the test bed.

mod support;

use serde_json::{Value, json};
use support::fake_apiserver::{FakeApiServer, FakeUser, Rule};
use support::testbed::ContainerSpec;
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

fn rule(
    user: &'static str,
    verb: &'static str,
    resource: &'static str,
    namespace: Option<&str>,
) -> Rule {
    Rule {
        user,
        verb,
        resource,
        namespace: namespace.map(String::from),
    }
}

// Multi-threaded: kubectl runs as a blocking child process while the fake API
// server, on this runtime, must keep answering the agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_callers_with_the_rights_of_kubectl_exec_get_in() {
    let (ns, mut client, pod) =
        support::one_pod("auth", "guarded", vec![ContainerSpec::busybox("shell")]).await;
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

    pod.remove(&mut client).await;
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
