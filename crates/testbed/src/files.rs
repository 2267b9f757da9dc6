//! Helpers of the files API tests (`tests/integration/files.rs`): its URLs, downloads
//! and uploads over real HTTP, commands through the run API, and `tar`
//! listings.

use std::path::Path;
use std::process::Command;

use reqwest::Url;
use serde_json::{Value, json};

use crate::{Agent, assert_status};

/// `/v1/targets/{ns}/{pod}/files` with `container`, `path` and `extra`.
pub fn files_url(
    agent: &Agent,
    ns: &str,
    pod: &str,
    container: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> Url {
    let mut url = Url::parse(&format!("{}/v1/targets/{ns}/{pod}/files", agent.url)).unwrap();
    url.query_pairs_mut()
        .append_pair("container", container)
        .append_pair("path", path)
        .extend_pairs(extra);
    url
}

pub struct Fetched {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Fetched {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
            .to_str()
            .unwrap()
    }

    /// The body as JSON. A body that is not JSON is not printed: it may be
    /// a file that must not have been served (the host's /etc/shadow).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            panic!(
                "status {}: not JSON but {} bytes of {}",
                self.status,
                self.body.len(),
                self.headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("no content type")
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub async fn fetch(url: Url) -> Fetched {
    let response = reqwest::get(url.clone())
        .await
        .unwrap_or_else(|err| panic!("GET {url}: {err}"));
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .bytes()
        .await
        .unwrap_or_else(|err| panic!("GET {url}: the body failed: {err}"))
        .to_vec();
    Fetched {
        status,
        headers,
        body,
    }
}

/// A download that must answer 200; its bytes.
pub async fn download(url: Url) -> Fetched {
    let fetched = fetch(url.clone()).await;
    assert_eq!(fetched.status, 200, "GET {url}: {}", fetched.text());
    fetched
}

/// A request that must fail with `code` and `reason`; its message.
pub async fn refused(url: Url, code: u16, reason: &str) -> String {
    let fetched = fetch(url.clone()).await;
    let body = fetched.json();
    assert_eq!(fetched.status, code, "GET {url}: {body}");
    assert_status(&body, code, reason);
    body["message"].as_str().unwrap().to_string()
}

pub async fn put(url: Url, body: Vec<u8>) -> (u16, Value) {
    let response = reqwest::Client::new()
        .put(url.clone())
        .body(body)
        .send()
        .await
        .unwrap_or_else(|err| panic!("PUT {url}: {err}"));
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("PUT {url}: not JSON: {text}")),
    )
}

/// Runs `script` with `sh -c` in the container through the run API; its
/// stdout. Must exit 0.
pub async fn sh(agent: &Agent, ns: &str, pod: &str, container: &str, script: &str) -> String {
    let response = reqwest::Client::new()
        .post(format!(
            "{}/v1/targets/{ns}/{pod}/run?container={container}",
            agent.url
        ))
        .json(&json!({"command": ["sh", "-c", script]}))
        .send()
        .await
        .unwrap();
    let result: Value = response.json().await.unwrap();
    assert_eq!(result["exitCode"], 0, "{script}: {result}");
    result["stdout"].as_str().unwrap().to_string()
}

/// The host PID of a container, as the agent reports it.
pub async fn pid_of(agent: &Agent, ns: &str, pod: &str, container: &str) -> u64 {
    let target = agent
        .get_ok(&format!("/v1/targets/{ns}/{pod}?container={container}"))
        .await;
    target["pid"].as_u64().unwrap()
}

/// `tar -tvf` of an archive, one line per entry.
pub fn tar_listing(archive: &Path) -> Vec<String> {
    let output = Command::new("tar")
        .arg("-tvf")
        .arg(archive)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "tar -t: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The names of a `tar -tvf` listing (after the date and time columns).
pub fn names(listing: &[String]) -> Vec<String> {
    listing
        .iter()
        .map(|line| {
            line.split_whitespace()
                .skip(5)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}
