//! Browser safety, in every mode (`--auth none` too): one layer in front of
//! every route, so that no web page the user happens to visit can drive the
//! agent through the user's browser.
//!
//! | check | refuses | answer |
//! |---|---|---|
//! | `Host` is a loopback name (`localhost`, `127.0.0.1`, `[::1]`, any port) or an `--allowed-host` | DNS rebinding: a page on `evil.example` that resolves to the agent | 421 |
//! | `Origin`, when sent, is the agent's own (`scheme://Host`) | cross-site requests and WebSocket upgrades (browsers send `Origin` on both) | 403 |
//! | `Sec-Fetch-Site`, when sent, is `same-origin` or `none` (a navigation to `/` may come from anywhere) | what another site's `<img>`, `<script>` or link makes the browser fetch: such GETs carry no `Origin` | 403 |
//! | a request body is `application/json` (an upload to `…/files` is `application/octet-stream` or untyped) | the bodies a cross-site form or `sendBeacon` can send without a CORS preflight (`text/plain`, forms) | 415 |
//!
//! Clients that are not browsers (kubectl, client-go, the Python client,
//! the plugin) send no `Origin` or their own (`websocket-client` sends
//! `Origin` equal to the URL it dials) and JSON or no body, so they pass.
//! A request without a `Host` (HTTP/1.0) is not a browser's and is let
//! through to the authentication behind this layer.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};

use super::{ApiError, AppState};

const SEC_FETCH_SITE: &str = "sec-fetch-site";
const SEC_FETCH_MODE: &str = "sec-fetch-mode";

/// Host names always allowed: the loopback names a port-forward gives.
const LOOPBACK: &[&str] = &["localhost", "127.0.0.1", "[::1]"];

/// The names the agent answers to besides loopback (`--allowed-host`),
/// lower-cased.
#[derive(Debug, Clone, Default)]
pub struct AllowedHosts(std::sync::Arc<[String]>);

impl AllowedHosts {
    pub fn new(names: &[String]) -> Self {
        Self(
            names
                .iter()
                .map(|name| name.trim_end_matches('.').to_ascii_lowercase())
                .collect(),
        )
    }

    /// Whether `host` (a `Host` header: a name or address, maybe a port)
    /// is one the agent answers to.
    fn allows(&self, host: &str) -> bool {
        let name = host_name(host).trim_end_matches('.').to_ascii_lowercase();
        LOOPBACK.contains(&name.as_str()) || self.0.contains(&name)
    }
}

/// The name of a `Host` value without its port (`[::1]:80` → `[::1]`).
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// `scheme://host:port` with the scheme's default port made explicit, for
/// comparing origins; `None` if `origin` is not one (`null`, garbage).
fn normal_origin(origin: &str) -> Option<(String, String, u16)> {
    let url = url::Url::parse(origin).ok()?;
    Some((
        url.scheme().to_string(),
        url.host_str()?.to_ascii_lowercase(),
        url.port_or_known_default()?,
    ))
}

/// The layer: refuses what a browser should not get to ask.
pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match check(&state, request.method(), request.uri(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(err) => err.into_response(),
    }
}

fn check(
    state: &AppState,
    method: &Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let host = headers
        .get(header::HOST)
        .map(|value| value.to_str().unwrap_or("\u{fffd}"))
        .or_else(|| uri.authority().map(|a| a.as_str()));
    if let Some(host) = host
        && !state.allowed_hosts.allows(host)
    {
        return Err(ApiError::misdirected(format!(
            "this agent does not answer to the host name {host:?}: it answers to localhost, 127.0.0.1 and [::1] (as through kubectl port-forward) and to the names given with --allowed-host"
        )));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("\u{fffd}");
        let scheme = if state.tls { "https" } else { "http" };
        let own = host.and_then(|host| normal_origin(&format!("{scheme}://{host}")));
        if own.is_none() || normal_origin(origin) != own {
            return Err(ApiError::forbidden(format!(
                "cross-origin request refused: it comes from a page of {origin:?}, not of this agent ({scheme}://{}); open the agent's own page instead",
                host.unwrap_or("?")
            )));
        }
    }
    // Fetch Metadata: an <img>, <script> or link of another site sends no
    // Origin on a GET, but the browser says where the request comes from.
    // Only a navigation to the page itself may come from elsewhere (a link
    // to the agent, the plugin's login page).
    if let Some(site) = headers.get(SEC_FETCH_SITE) {
        let site = site.to_str().unwrap_or("\u{fffd}");
        let navigates_to_the_page = method == Method::GET
            && uri.path() == "/"
            && headers
                .get(SEC_FETCH_MODE)
                .is_some_and(|mode| mode == "navigate");
        if !matches!(site, "same-origin" | "none") && !navigates_to_the_page {
            return Err(ApiError::forbidden(format!(
                "cross-site request refused: the browser says it comes from another site (Sec-Fetch-Site: {site}); open the agent's own page instead"
            )));
        }
    }
    if has_body(headers) {
        let media = headers
            .get(header::CONTENT_TYPE)
            .map(|value| {
                value
                    .to_str()
                    .unwrap_or("\u{fffd}")
                    .split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase()
            })
            .filter(|media| !media.is_empty());
        let upload = method == Method::PUT && uri.path().ends_with("/files");
        let accepted = matches!(
            (upload, media.as_deref()),
            (true, None | Some("application/octet-stream")) | (false, Some("application/json"))
        );
        if !accepted {
            let wanted = if upload {
                "application/octet-stream (the file's bytes)"
            } else {
                "application/json"
            };
            return Err(ApiError::unsupported_media_type(format!(
                "the request body is {}; this route takes {wanted}",
                media.as_deref().unwrap_or("untyped")
            )));
        }
    }
    Ok(())
}

/// Whether the request says it carries a body.
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|length| length.trim() != "0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_without_their_ports() {
        assert_eq!(host_name("localhost:7443"), "localhost");
        assert_eq!(host_name("[::1]:80"), "[::1]");
        assert_eq!(host_name("[::1]"), "[::1]");
        assert_eq!(host_name("agent.example"), "agent.example");
        let allowed = AllowedHosts::new(&["Agent.Example.".into()]);
        for host in [
            "127.0.0.1",
            "localhost:1",
            "[::1]:7443",
            "agent.example:8",
            "AGENT.example",
        ] {
            assert!(allowed.allows(host), "{host}");
        }
        for host in [
            "evil.example",
            "127.0.0.1.evil.example",
            "[::2]",
            "agent.example.evil",
        ] {
            assert!(!allowed.allows(host), "{host}");
        }
    }

    #[test]
    fn origins_compare_with_default_ports() {
        assert_eq!(
            normal_origin("https://LOCALHOST"),
            normal_origin("https://localhost:443")
        );
        assert_ne!(
            normal_origin("http://127.0.0.1:8080"),
            normal_origin("http://127.0.0.1:8081")
        );
        assert_eq!(normal_origin("null"), None);
    }
}
