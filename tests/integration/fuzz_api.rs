//! schemathesis, a property-based API fuzzer, against the running agent from
//! its own OpenAPI document: every operation, examples then generated
//! requests, and not one 5xx. A fixed seed keeps CI repeatable; for a longer
//! hunt run `target/pyclient/bin/schemathesis run URL/openapi.json -c
//! not_a_server_error -n 1000` against `hack/demo.sh`'s agent.

use crate::support;

use support::Agent;
use support::pods::ContainerSpec;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_generated_request_gets_a_server_error() {
    // A pod for the fuzzer's requests to land on when it guesses names.
    let (_ns, mut client, pod) =
        support::one_pod("fuzz", "target", vec![ContainerSpec::busybox("main")]).await;
    let agent = Agent::start();
    let schemathesis = support::repo().join("target/pyclient/bin/schemathesis");
    assert!(
        schemathesis.exists(),
        "run hack/test.sh: it installs schemathesis"
    );
    let output = tokio::task::spawn_blocking({
        let url = format!("{}/openapi.json", agent.url);
        move || {
            std::process::Command::new(schemathesis)
                .args(["run", &url, "--checks", "not_a_server_error"])
                .args(["--max-examples", "25", "--phases", "examples,fuzzing"])
                .args(["--seed", "20261129"])
                // A capture runs for its duration: the capture tests cover it.
                .args(["--exclude-path-regex", "capture"])
                .env("NO_COLOR", "1")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains(" passed"), "{text}");
    assert!(!text.contains("Server error"), "{text}");
    // The agent is still healthy after it.
    assert_eq!(agent.get("/healthz").await.0, 200);
    pod.remove(&mut client).await;
}
