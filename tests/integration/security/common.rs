//! Small helpers the attacks share.

use serde_json::Value;

use crate::support::Agent;

/// `POST path` with a JSON body on the agent: the status and the answer
/// (`null` when it is not JSON).
pub async fn post_run(agent: &Agent, path: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", agent.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    let code = response.status().as_u16();
    (code, response.json().await.unwrap_or(Value::Null))
}

/// A run's stdout and stderr together.
pub fn output(answer: &Value) -> String {
    format!(
        "{}{}",
        answer["stdout"].as_str().unwrap_or_default(),
        answer["stderr"].as_str().unwrap_or_default()
    )
}
