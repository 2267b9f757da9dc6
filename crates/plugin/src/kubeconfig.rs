//! Kubeconfigs that point at an agent: the one `kubectl nsdebug kubeconfig`
//! writes for plain kubectl, and the one the plugin's own interactive exec
//! uses (kube's remote-command client, aimed at the agent).

use std::io::Write as _;
use std::path::Path;

use base64::Engine as _;
use kube::config::{
    AuthInfo, Cluster, Context, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext,
};

use rustls::pki_types::CertificateDer;

use super::PluginError;
use nsdebug_client::AgentArgs;

/// A kubeconfig with one context: the agent at `args.url()`, as `user`,
/// trusting `certificate` (the agent's own, verified against what it
/// published: a self-signed certificate is its own CA), else the
/// `--certificate-authority` given.
pub fn for_agent(
    args: &AgentArgs,
    certificate: Option<&CertificateDer<'_>>,
    user: AuthInfo,
    context: &str,
    namespace: &str,
) -> Kubeconfig {
    let cluster = match certificate {
        Some(certificate) => Cluster {
            server: Some(args.url().to_string()),
            certificate_authority_data: Some(
                base64::engine::general_purpose::STANDARD
                    .encode(nsdebug_client::pin::to_pem(certificate)),
            ),
            ..Default::default()
        },
        None => Cluster {
            server: Some(args.url().to_string()),
            insecure_skip_tls_verify: args.insecure_skip_tls_verify.then_some(true),
            certificate_authority: args
                .certificate_authority
                .as_ref()
                .filter(|_| !args.insecure_skip_tls_verify)
                .map(|path| path.display().to_string()),
            ..Default::default()
        },
    };
    Kubeconfig {
        api_version: Some("v1".into()),
        kind: Some("Config".into()),
        clusters: vec![NamedCluster {
            name: context.into(),
            cluster: Some(cluster),
            ..Default::default()
        }],
        auth_infos: vec![NamedAuthInfo {
            name: context.into(),
            auth_info: Some(user),
            ..Default::default()
        }],
        contexts: vec![NamedContext {
            name: context.into(),
            context: Some(Context {
                cluster: context.into(),
                user: Some(context.into()),
                namespace: Some(namespace.into()),
                ..Default::default()
            }),
            ..Default::default()
        }],
        current_context: Some(context.into()),
        ..Default::default()
    }
}

/// The user the written kubeconfig authenticates as: the token given on the
/// command line, else the kubeconfig's own user (token, tokenFile or exec
/// plugin, copied as it is: no secret of an exec plugin is written).
pub fn user(args: &AgentArgs) -> Result<AuthInfo, PluginError> {
    if args.token.is_some() || args.token_file.is_some() {
        return Ok(token_user(nsdebug_client::token(args)?));
    }
    let user = nsdebug_client::kubeconfig_user(args)?;
    // Fails for a user the agent cannot authenticate (a client certificate).
    nsdebug_client::user_token(&user)?;
    Ok(AuthInfo {
        token: user.token,
        token_file: user.token_file,
        exec: user.exec,
        ..Default::default()
    })
}

/// A user with a bearer token.
pub fn token_user(token: String) -> AuthInfo {
    AuthInfo {
        token: Some(token.into()),
        ..Default::default()
    }
}

/// Writes `data` to `path`, readable by its owner only (it may hold a token):
/// mode 0600 on Unix; on Windows a new file takes its directory's ACL, which
/// for the user's own directories is the user's.
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), PluginError> {
    let error = |source| PluginError::Write {
        path: path.into(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(error)?;
    file.write_all(data).map_err(error)
}
