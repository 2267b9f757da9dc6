//! The client side of the agent's API: how a client finds its token (flags,
//! environment, the kubeconfig and its exec credential plugins), whom it
//! trusts ([`pin`]), and the login-link call. Shared by the agent's own
//! `nsdebug login-link` and the kubectl plugin, so it is portable (no tokio
//! runtime of its own, nothing Linux-only) and never depends on the agent.

pub mod pin;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use secrecy::ExposeSecret as _;

/// An error and all its sources on one line, `outer: inner: innermost`: how
/// an error is printed at the edge, by the clients and the agent alike.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// How a client command reaches an agent and who it is there.
#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// The agent's URL, e.g. through `kubectl port-forward` [default:
    /// https://127.0.0.1:7443; `kubectl nsdebug` without it finds the agent
    /// on the pod's node through the API server].
    #[arg(long = "agent", visible_alias = "agent-url", env = "NSDEBUG_AGENT")]
    pub url: Option<String>,

    /// Your Kubernetes bearer token.
    #[arg(
        long,
        env = "NSDEBUG_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,

    /// A file holding your Kubernetes bearer token.
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,

    /// Kubeconfig to take the token from when none is given (default:
    /// $KUBECONFIG, then ~/.kube/config).
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// The kubeconfig context to use (default: its current context).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,

    /// PEM file of the CA that signed the agent's certificate, or of the
    /// agent's own certificate (published in its node's Lease). Through the
    /// cluster, `kubectl nsdebug` otherwise trusts the certificate the agent
    /// published.
    #[arg(long, value_name = "PATH")]
    pub certificate_authority: Option<PathBuf>,

    /// INSECURE: accept any certificate, so your token goes to whatever
    /// answers on the agent's address. Never needed through the cluster,
    /// where the plugin verifies the certificate the agent published.
    #[arg(long)]
    pub insecure_skip_tls_verify: bool,
}

/// Where `login-link` looks for an agent when not told.
pub const DEFAULT_AGENT_URL: &str = "https://127.0.0.1:7443";

impl AgentArgs {
    /// The agent's URL, or the port-forward default.
    pub fn url(&self) -> &str {
        self.url.as_deref().unwrap_or(DEFAULT_AGENT_URL)
    }
}

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
    #[error("the agent at {url} did not answer within {seconds}s")]
    Timeout { url: String, seconds: u64 },
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
    user_token(&kubeconfig_user(args)?)
}

/// The user of the kubeconfig's current (or `--context`) context.
pub fn kubeconfig_user(args: &AgentArgs) -> Result<kube::config::AuthInfo, ClientError> {
    let config = match &args.kubeconfig {
        Some(path) => kube::config::Kubeconfig::read_from(path),
        None => kube::config::Kubeconfig::read(),
    }
    .map_err(|err| ClientError::NoToken {
        why: format!("no kubeconfig: {err}"),
    })?;
    let context_name = args
        .context
        .as_deref()
        .or(config.current_context.as_deref())
        .ok_or_else(|| ClientError::NoToken {
            why: "the kubeconfig has no current context".into(),
        })?;
    let context = config
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .and_then(|c| c.context.as_ref())
        .ok_or_else(|| ClientError::NoToken {
            why: format!("the kubeconfig has no context {context_name:?}"),
        })?;
    config
        .auth_infos
        .iter()
        .find(|a| a.name == context.user.as_deref().unwrap_or_default())
        .and_then(|a| a.auth_info.clone())
        .ok_or_else(|| ClientError::NoToken {
            why: "the context's user is not in the kubeconfig".into(),
        })
}

/// A kubeconfig user's bearer token: `token`, `tokenFile`, or what its exec
/// credential plugin prints (client certificates are no bearer token: the
/// agent authenticates with TokenReview).
pub fn user_token(user: &kube::config::AuthInfo) -> Result<String, ClientError> {
    if let Some(token) = &user.token {
        return Ok(token.expose_secret().trim().to_string());
    }
    if let Some(path) = &user.token_file {
        return Ok(read(Path::new(path))?.trim().to_string());
    }
    if let Some(exec) = &user.exec {
        return exec_credential(exec);
    }
    let why = if user.client_certificate.is_some() || user.client_certificate_data.is_some() {
        "the kubeconfig user authenticates with a client certificate, which the agent cannot \
         review; pass a token (e.g. --token \"$(kubectl create token SERVICEACCOUNT)\")"
    } else {
        "the kubeconfig user has no token, tokenFile or exec plugin"
    };
    Err(ClientError::NoToken { why: why.into() })
}

/// Runs a kubeconfig exec credential plugin (the client.authentication.k8s.io
/// protocol) and returns the token it prints.
fn exec_credential(exec: &kube::config::ExecConfig) -> Result<String, ClientError> {
    let no_token = |why: String| ClientError::NoToken { why };
    let program = exec
        .command
        .as_deref()
        .ok_or_else(|| no_token("the exec plugin has no command".into()))?;
    let api_version = exec
        .api_version
        .as_deref()
        .unwrap_or("client.authentication.k8s.io/v1");
    let mut command = std::process::Command::new(program);
    command.args(exec.args.iter().flatten());
    for pair in exec.env.iter().flatten() {
        if let (Some(name), Some(value)) = (pair.get("name"), pair.get("value")) {
            command.env(name, value);
        }
    }
    let info = serde_json::json!({
        "apiVersion": api_version,
        "kind": "ExecCredential",
        "spec": {"interactive": false},
    });
    command.env("KUBERNETES_EXEC_INFO", info.to_string());
    command.stdin(std::process::Stdio::null());
    command.stderr(std::process::Stdio::inherit());
    let output = command
        .output()
        .map_err(|err| no_token(format!("cannot run the exec plugin {program:?}: {err}")))?;
    if !output.status.success() {
        return Err(no_token(format!(
            "the exec plugin {program:?} failed ({})",
            output.status
        )));
    }
    let credential: serde_json::Value = serde_json::from_slice(&output.stdout).map_err(|err| {
        no_token(format!(
            "the exec plugin {program:?} printed no ExecCredential: {err}"
        ))
    })?;
    credential["status"]["token"]
        .as_str()
        .map(|token| token.trim().to_string())
        .ok_or_else(|| {
            no_token(format!(
                "the exec plugin {program:?} gave no token (a client certificate only?)"
            ))
        })
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
        url: args.url().to_string(),
        source,
    })
}

/// An HTTP client for the agent that trusts only the certificate `pin`
/// names (what the agent published), with a deadline.
pub fn pinned_client(
    pin: &std::sync::Arc<pin::PinnedCertificate>,
    timeout: Option<Duration>,
) -> Result<reqwest::Client, ClientError> {
    let mut client = reqwest::Client::builder().use_preconfigured_tls(pin.client_config());
    if let Some(timeout) = timeout {
        client = client.timeout(timeout);
    }
    client.build().map_err(|source| ClientError::Request {
        url: "the agent".into(),
        source,
    })
}

/// Asks the agent for a one-time web UI login link.
pub async fn login_link(args: &AgentArgs) -> Result<LoginLink, ClientError> {
    let token = token(args)?;
    let client = http_client(args, Some(TIMEOUT))?;
    request_login_link(&client, args.url(), &token).await
}

/// Asks the agent at `base` for a one-time web UI login link, with `client`
/// (which decides whom it trusts).
pub async fn request_login_link(
    client: &reqwest::Client,
    base: &str,
    token: &str,
) -> Result<LoginLink, ClientError> {
    let base = base.trim_end_matches('/');
    let url = format!("{base}/v1/login-links");
    let request_error = |source| ClientError::Request {
        url: base.to_string(),
        source,
    };
    let response = tokio::time::timeout(TIMEOUT, client.post(&url).bearer_auth(token).send())
        .await
        .map_err(|_| ClientError::Timeout {
            url: base.to_string(),
            seconds: TIMEOUT.as_secs(),
        })?
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
        link.url = format!("{base}/#{fragment}");
    }
    Ok(link)
}
