//! Port-forward: every admitted request leaves its audit record, whatever
//! happens after admission.

use support::Agent;

use crate::support;

/// The review's audit gap: a request that passed its access review but
/// was no upgrade was answered 400 and its admission's record dropped; an
/// attacker could probe the route unrecorded. The pod need not exist: the
/// right is reviewed first, the upgrade checked next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admitted_request_that_is_no_upgrade_is_audited() {
    let audit_dir = tempfile::tempdir().unwrap();
    let audit_log = audit_dir.path().join("audit.jsonl");
    let agent = Agent::start_on_testbed(&["--audit-log", audit_log.to_str().unwrap()]);
    let path = "/api/v1/namespaces/security-pf/pods/no-upgrade/portforward";
    let (status, body) = agent.get(&format!("{path}?ports=80")).await;
    assert_eq!(status, 400, "{body}");
    let refused = reqwest::Client::new()
        .post(format!("{}{path}", agent.url))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 400);

    let audit = std::fs::read_to_string(&audit_log).unwrap();
    let refusals: Vec<serde_json::Value> = audit
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|event| {
            event["stage"] == "ResponseComplete"
                && event["objectRef"]["subresource"] == "portforward"
                && event["objectRef"]["name"] == "no-upgrade"
        })
        .collect();
    assert_eq!(refusals.len(), 2, "{audit}");
    for event in &refusals {
        assert_eq!(event["responseStatus"]["code"], 400, "{event}");
    }
}
