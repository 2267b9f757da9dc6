//! `/metrics` in the Prometheus text format: what a scrape shows after real
//! sessions, on the API and on the health listener.

use crate::support;

use serde_json::json;
use support::Agent;
use support::pods::ContainerSpec;

/// The value of the sample `name` (with its labels, as written) in `text`.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn a_scrape_counts_sessions_entering_and_cri_calls() {
    let (ns, mut client, pod) =
        support::one_pod("metrics", "counted", vec![ContainerSpec::busybox("main")]).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let health = format!("127.0.0.1:{port}");
    let agent = Agent::start_on_testbed(&["--health-listen", &health]);
    let http = reqwest::Client::new();
    for profile in ["container", "container", "privileged"] {
        let result: serde_json::Value = http
            .post(format!("{}/v1/targets/{ns}/counted/run", agent.url))
            .json(&json!({"command": ["true"], "profile": profile}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(result["exitCode"], 0, "{result}");
    }
    let response = http
        .get(format!("{}/metrics", agent.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = response.text().await.unwrap();
    assert_eq!(
        sample(
            &text,
            r#"nsdebug_sessions_total{kind="run",profile="container"}"#
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"nsdebug_sessions_total{kind="run",profile="privileged"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"nsdebug_sessions_active{kind="run",profile="container"}"#
        ),
        Some(0.0),
        "ended sessions are not active"
    );
    assert_eq!(sample(&text, "nsdebug_enter_seconds_count"), Some(3.0));
    assert!(
        sample(
            &text,
            r#"nsdebug_cri_call_seconds_count{method="ListContainers"}"#
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"));
    // The same on the health listener, where Prometheus reaches the pod.
    let scraped = reqwest::get(format!("http://{health}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(scraped.contains("nsdebug_sessions_total"));
    pod.remove(&mut client).await;
}
