//! The OpenAPI document at /openapi.json: valid, every documented path
//! served, and real answers matching their documented schemas (checked by
//! `tests/clients/openapi_check.py` with openapi-spec-validator and
//! jsonschema against a running agent on the test bed).

use crate::support;

use support::Agent;
use support::pods::ContainerSpec;

#[tokio::test]
async fn the_document_describes_what_the_agent_answers() {
    let (ns, mut client, pod) = support::one_pod(
        "openapi",
        "described",
        vec![ContainerSpec::distroless("main")],
    )
    .await;
    let agent = Agent::start();
    let python = support::repo().join("target/pyclient/bin/python");
    assert!(
        python.exists(),
        "run hack/test.sh: it makes the venv with the validator"
    );
    let output = std::process::Command::new(python)
        .arg(support::repo().join("tests/clients/openapi_check.py"))
        .args([&agent.url, &ns, "described"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let checked = report["checked"].as_array().unwrap();
    assert!(
        checked
            .iter()
            .any(|c| c == "diag sockets item ~ SocketEntry"),
        "{report}"
    );
    for probe in [
        "diag dns ~ DnsResult",
        "diag tcp ~ TcpResult",
        "diag http ~ HttpResult",
    ] {
        assert!(checked.iter().any(|c| c == probe), "{probe}: {report}");
    }
    assert!(checked.len() > 20, "{report}");
    pod.remove(&mut client).await;
}
