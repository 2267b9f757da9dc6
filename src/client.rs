//! The client side of the agent's API, for the `nsdebug` subcommands that
//! talk to a running agent (`login-link`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::ExposeSecret as _;

use crate::config::AgentArgs;

/// How long a call to the agent may take.
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "no token: pass --token or --token-file, set NSDEBUG_TOKEN, or use a kubeconfig whose user has a token or tokenFile ({why})"
    )]
    NoToken { why: String },
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a PEM certificate", path.display())]
    Certificate {
        path: PathBuf,
        #[source]
        source: reqwest::Error,
    },
    #[error("cannot reach the agent at {url}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the agent refused ({code}): {message}")]
    Refused { code: u16, message: String },
}

/// A minted login link.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoginLink {
    pub url: String,
    pub expires_in_seconds: u64,
    #[serde(deserialize_with = "user_name")]
    pub user: String,
}

fn user_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(serde::Deserialize)]
    struct User {
        name: String,
    }
    <User as serde::Deserialize>::deserialize(d).map(|u| u.name)
}

fn read(path: &Path) -> Result<String, ClientError> {
    std::fs::read_to_string(path).map_err(|source| ClientError::Read {
        path: path.into(),
        source,
    })
}

/// The caller's token: flags and environment first, then the kubeconfig.
pub fn token(args: &AgentArgs) -> Result<String, ClientError> {
    if let Some(token) = &args.token {
        return Ok(token.trim().to_string());
    }
    if let Some(path) = &args.token_file {
        return Ok(read(path)?.trim().to_string());
    }
    let config = match &args.kubeconfig {
        Some(path) => kube::config::Kubeconfig::read_from(path),
        None => kube::config::Kubeconfig::read(),
    }
    .map_err(|err| ClientError::NoToken {
        why: format!("no kubeconfig: {err}"),
    })?;
    let context = config
        .current_context
        .as_deref()
        .and_then(|name| config.contexts.iter().find(|c| c.name == name))
        .and_then(|c| c.context.as_ref())
        .ok_or_else(|| ClientError::NoToken {
            why: "the kubeconfig has no current context".into(),
        })?;
    let user = config
        .auth_infos
        .iter()
        .find(|a| a.name == context.user.as_deref().unwrap_or_default())
        .and_then(|a| a.auth_info.as_ref())
        .ok_or_else(|| ClientError::NoToken {
            why: "the current context's user is not in the kubeconfig".into(),
        })?;
    if let Some(token) = &user.token {
        return Ok(token.expose_secret().trim().to_string());
    }
    if let Some(path) = &user.token_file {
        return Ok(read(Path::new(path))?.trim().to_string());
    }
    let why = if user.exec.is_some() {
        "the current user gets its token from an exec plugin".to_string()
    } else {
        "the current user has neither".to_string()
    };
    Err(ClientError::NoToken { why })
}

/// An HTTP client for the agent: its CA (or none checked), a deadline.
pub fn http_client(
    args: &AgentArgs,
    timeout: Option<Duration>,
) -> Result<reqwest::Client, ClientError> {
    let mut client =
        reqwest::Client::builder().danger_accept_invalid_certs(args.insecure_skip_tls_verify);
    if let Some(timeout) = timeout {
        client = client.timeout(timeout);
    }
    if let Some(path) = &args.certificate_authority {
        let pem = read(path)?;
        let cert = reqwest::Certificate::from_pem(pem.as_bytes()).map_err(|source| {
            ClientError::Certificate {
                path: path.clone(),
                source,
            }
        })?;
        client = client.add_root_certificate(cert);
    }
    client.build().map_err(|source| ClientError::Request {
        url: args.url.clone(),
        source,
    })
}

/// Asks the agent for a one-time web UI login link.
pub async fn login_link(args: &AgentArgs) -> Result<LoginLink, ClientError> {
    let token = token(args)?;
    let client = http_client(args, Some(TIMEOUT))?;
    let url = format!("{}/v1/login-links", args.url.trim_end_matches('/'));
    let request_error = |source| ClientError::Request {
        url: args.url.clone(),
        source,
    };
    let response = client
        .post(&url)
        .bearer_auth(token)
        .send()
        .await
        .map_err(request_error)?;
    let code = response.status().as_u16();
    let body: serde_json::Value = response.json().await.map_err(request_error)?;
    if code != 201 {
        return Err(ClientError::Refused {
            code,
            message: body["message"].as_str().unwrap_or("no message").to_string(),
        });
    }
    let mut link: LoginLink = serde_json::from_value(body).map_err(|err| ClientError::Refused {
        code,
        message: format!("unexpected answer: {err}"),
    })?;
    // The URL as the caller reaches the agent, whatever Host it saw.
    if let Some((_, fragment)) = link.url.split_once('#') {
        link.url = format!("{}/#{fragment}", args.url.trim_end_matches('/'));
    }
    Ok(link)
}
