//! `GET /openapi.json`: the native API described as OpenAPI 3.1, generated
//! with `utoipa` from the types the handlers answer with (their `ToSchema`
//! derives), so the document cannot drift from what is sent. The operations
//! are declared here, one item each, with the examples a runbook author
//! needs; the Kubernetes-compatible facade is the Kubernetes API's own and is
//! not repeated.
//!
//! The operations are items only `utoipa` reads (the handlers live in their
//! modules, several routes sharing one), hence `dead_code` is allowed here;
//! a test checks that every path documented is one the router serves.
#![allow(dead_code)]

use axum::Json;
use axum::routing::get;
use utoipa::OpenApi;

use super::AppState;
// A Kubernetes `v1.Status`: every error answer of the API.
use nsdebug_wire::Status;
// The diagnostics' and probes' answers, as the wire crate defines them.
use nsdebug_wire::diag::probe::{DnsResult, HttpResult, TcpResult};
use nsdebug_wire::diag::{DiagAnswer, DiagTarget};

const NS: &str = "the pod's namespace";

#[utoipa::path(get, path = "/v1/targets", tag = "targets",
    params(("namespace" = Option<String>, Query, description = "only this namespace"),
           ("labelSelector" = Option<String>, Query, description = "Kubernetes label selector, e.g. `app=web,tier!=db`")),
    responses((status = 200, description = "every pod and container on this node, with host PIDs and namespace inodes", body = super::native::TargetList),
              (status = 400, body = Status), (status = 401, body = Status), (status = 403, body = Status), (status = 503, description = "the runtime is unreachable", body = Status)))]
fn list_targets() {}

#[utoipa::path(get, path = "/v1/targets/{namespace}/{pod}", tag = "targets",
    params(("namespace" = String, Path, description = NS), ("pod" = String, Path),
           ("container" = Option<String>, Query, description = "needed when the pod has several containers and no default one")),
    responses((status = 200, description = "the running container, pinned to its init process", body = crate::resolve::Target,
               example = json!({"namespace": "shop", "pod": "web", "podUid": "93745ff7-692c-5e5d-6eff-bbedfde0d95c", "container": "web",
                   "containerId": "921d5c2128f2a739c7606caad8e23dab4c335615a0e9ad5a2fb0667eb669d336", "state": "running", "pid": 22680,
                   "namespaces": {"mnt": 4026532407u64, "net": 4026532332u64, "pid": 4026532408u64}})),
              (status = 400, body = Status), (status = 404, body = Status), (status = 409, description = "the container is not running", body = Status)))]
fn pod_target() {}

#[utoipa::path(get, path = "/v1/containers/{id}", tag = "targets",
    params(("id" = String, Path, description = "a container ID, a unique prefix of one, or `containerd://ID`")),
    responses((status = 200, body = crate::resolve::Target), (status = 400, body = Status), (status = 404, body = Status), (status = 409, body = Status)))]
fn container_target() {}

#[utoipa::path(post, path = "/v1/targets/{namespace}/{pod}/run", tag = "run",
    params(("namespace" = String, Path, description = NS), ("pod" = String, Path),
           ("container" = Option<String>, Query), ("stream" = Option<bool>, Query, description = "answer NDJSON events as the command runs")),
    request_body(content = super::run::RunBody, example = json!({"command": ["sh", "-c", "ss -tln"], "toolbox": true, "timeoutSeconds": 10})),
    responses((status = 200, description = "how the command ended and what it wrote", body = super::run::RunResult),
              (status = 400, body = Status), (status = 403, body = Status), (status = 404, body = Status),
              (status = 409, description = "the container is not running, or its profile cannot be applied", body = Status),
              (status = 413, body = Status), (status = 429, description = "a session limit", body = Status)))]
fn run_in_pod() {}

#[utoipa::path(post, path = "/v1/containers/{id}/run", tag = "run",
    params(("id" = String, Path), ("stream" = Option<bool>, Query)),
    request_body = super::run::RunBody,
    responses((status = 200, body = super::run::RunResult), (status = 400, body = Status), (status = 403, body = Status),
              (status = 404, body = Status), (status = 409, body = Status), (status = 429, body = Status)))]
fn run_in_container() {}

#[utoipa::path(get, path = "/v1/targets/{namespace}/{pod}/diag/{view}", tag = "diagnostics",
    params(("namespace" = String, Path, description = NS), ("pod" = String, Path),
           ("view" = String, Path, description = "processes, sockets, interfaces, routes, cgroup, open-files, env or mounts"),
           ("container" = Option<String>, Query), ("pid" = Option<u32>, Query, description = "open-files, env, mounts: a PID inside the container, of one of its own processes (default its init)"),
           ("reveal" = Option<bool>, Query, description = "env: show the values of secret-looking names")),
    responses((status = 200, body = DiagAnswer, example = json!({"view": "sockets",
                   "target": {"namespace": "shop", "pod": "hello", "container": "hello", "containerId": "e7d33696699c", "pid": 29057},
                   "items": [{"protocol": "tcp", "state": "LISTEN", "local": "0.0.0.0:8080", "remote": null, "inode": 1235275, "uid": 0,
                              "rxQueue": 0, "txQueue": 0, "processes": [{"pid": 1, "hostPid": 29057, "command": "hello"}]}]})),
              (status = 403, description = "a missing right: exec or get on the pod, or the privileged right for the node's processes (hostPID) or network (hostNetwork)", body = Status),
              (status = 404, description = "no such pod, view or process of the container", body = Status), (status = 409, body = Status)))]
fn diag_in_pod() {}

#[utoipa::path(get, path = "/v1/containers/{id}/diag/{view}", tag = "diagnostics",
    params(("id" = String, Path), ("view" = String, Path), ("pid" = Option<u32>, Query), ("reveal" = Option<bool>, Query)),
    responses((status = 200, body = DiagAnswer), (status = 403, body = Status), (status = 404, body = Status), (status = 409, body = Status)))]
fn diag_in_container() {}

#[utoipa::path(get, path = "/v1/targets/{namespace}/{pod}/diag/dns", tag = "probes",
    params(("namespace" = String, Path, description = NS), ("pod" = String, Path), ("container" = Option<String>, Query),
           ("name" = String, Query, description = "the name to resolve with the pod's resolv.conf (and /etc/hosts)"),
           ("type" = Option<String>, Query, description = "A (default), AAAA, SRV, TXT, MX, CNAME, PTR"),
           ("server" = Option<String>, Query, description = "IP[:port] instead of the pod's nameservers"),
           ("timeout" = Option<String>, Query, description = "e.g. 2s; at most 30s")),
    responses((status = 200, description = "the answers, or `error` and `errorKind` (nxdomain, timeout, ...), beside the `target`", body = DnsResult,
               example = json!({"name": "api.shop.svc.cluster.local", "type": "A", "answers": [{"name": "api.shop.svc.cluster.local.", "type": "A", "ttl": 30, "data": "10.96.0.17"}],
                   "nameservers": ["10.96.0.10:53"], "search": ["shop.svc.cluster.local"], "latencyMs": 1.8})),
              (status = 400, body = Status), (status = 403, body = Status), (status = 404, body = Status), (status = 409, body = Status)))]
fn probe_dns() {}

#[utoipa::path(get, path = "/v1/targets/{namespace}/{pod}/diag/tcp", tag = "probes",
    params(("namespace" = String, Path, description = NS), ("pod" = String, Path), ("container" = Option<String>, Query),
           ("host" = String, Query, description = "an address, or a name resolved as the pod resolves it"), ("port" = u16, Query),
           ("timeout" = Option<String>, Query)),
    responses((status = 200, description = "connected or not, how fast, why not, beside the `target`", body = TcpResult,
               example = json!({"host": "db", "port": 5432, "address": "10.96.3.4:5432", "connected": false, "latencyMs": 0.4, "error": "connection refused", "errorKind": "refused"})),
              (status = 400, body = Status), (status = 403, body = Status), (status = 404, body = Status), (status = 409, body = Status)))]
fn probe_tcp() {}

#[utoipa::path(get, path = "/v1/targets/{namespace}/{pod}/diag/http", tag = "probes",
    params(("namespace" = String, Path, description = NS), ("pod" = String, Path), ("container" = Option<String>, Query),
           ("url" = String, Query, description = "http:// or https://; redirects are reported, not followed"),
           ("timeout" = Option<String>, Query), ("insecure" = Option<bool>, Query, description = "skip TLS verification")),
    responses((status = 200, description = "the status, latency, a few headers and the body's start, beside the `target`", body = HttpResult,
               example = json!({"url": "http://127.0.0.1:8080/", "status": 200, "latencyMs": 2.1, "bodyBytes": 6, "bodyPreview": "hello\n"})),
              (status = 400, body = Status), (status = 403, body = Status), (status = 404, body = Status), (status = 409, body = Status)))]
fn probe_http() {}

#[utoipa::path(get, path = "/v1/targets/{namespace}/{pod}/files", tag = "files",
    params(("namespace" = String, Path, description = NS), ("pod" = String, Path), ("container" = Option<String>, Query),
           ("path" = String, Query, description = "inside the container; resolved in its root, so no symlink or `..` leaves it"),
           ("format" = Option<String>, Query, description = "`tar` for a directory (or a file) as a tar archive")),
    responses((status = 200, description = "the file's bytes, or a tar archive", content_type = "application/octet-stream"),
              (status = 400, description = "a directory without format=tar, a bad path", body = Status),
              (status = 403, body = Status), (status = 404, body = Status), (status = 413, body = Status)))]
fn files_get() {}

#[utoipa::path(put, path = "/v1/targets/{namespace}/{pod}/files", tag = "files",
    params(("namespace" = String, Path, description = NS), ("pod" = String, Path), ("container" = Option<String>, Query),
           ("path" = String, Query), ("mode" = Option<String>, Query, description = "octal permission bits, e.g. 0644; a setuid or setgid bit is refused (400)")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, description = "written"), (status = 200, description = "replaced"),
              (status = 403, body = Status), (status = 404, description = "the parent directory does not exist", body = Status), (status = 413, body = Status)))]
fn files_put() {}

#[utoipa::path(get, path = "/v1/targets/{namespace}/{pod}/capture", tag = "capture",
    params(("namespace" = String, Path, description = NS), ("pod" = String, Path), ("container" = Option<String>, Query),
           ("filter" = Option<String>, Query, description = "a BPF filter in libpcap's syntax (`pcap-filter(7)`), e.g. `tcp port 80`; default: everything"),
           ("interface" = Option<String>, Query, description = "`any` (default: every interface of the pod) or one, e.g. `eth0`"),
           ("snaplen" = Option<u32>, Query, description = "bytes kept of each packet, 1 to 262144 (the default; 0 means all)"),
           ("duration" = Option<String>, Query, description = "`30s` by default, at most `10m` (`45`, `2m`, ...)"),
           ("packets" = Option<u64>, Query, description = "at most this many packets, 10000 by default"),
           ("bytes" = Option<String>, Query, description = "the file stays at or below this size, `64MiB` by default, `1KiB` to `1GiB`"),
           ("format" = Option<String>, Query, description = "`pcap` (default) or `pcapng`")),
    responses((status = 200, description = "the pod's packets as a capture file (`Content-Disposition: attachment`), streamed as they arrive; it ends at the duration, packet or byte cap, when the container exits or when the client hangs up",
               content(("application/vnd.tcpdump.pcap"), ("application/x-pcapng"))),
              (status = 400, description = "a bad value, a filter libpcap cannot compile (its message), an unknown interface", body = Status),
              (status = 403, description = "no exec right on the pod, or no privileged right for a hostNetwork pod or a container without CAP_NET_RAW", body = Status), (status = 404, body = Status), (status = 409, description = "the container is not running", body = Status),
              (status = 429, description = "over the session limits", body = Status)))]
fn capture_in_pod() {}

#[utoipa::path(get, path = "/v1/containers/{id}/capture", tag = "capture",
    params(("id" = String, Path), ("filter" = Option<String>, Query), ("interface" = Option<String>, Query), ("snaplen" = Option<u32>, Query),
           ("duration" = Option<String>, Query), ("packets" = Option<u64>, Query), ("bytes" = Option<String>, Query), ("format" = Option<String>, Query)),
    responses((status = 200, description = "the capture file", content(("application/vnd.tcpdump.pcap"), ("application/x-pcapng"))),
              (status = 400, body = Status), (status = 403, body = Status), (status = 404, body = Status), (status = 409, body = Status), (status = 429, body = Status)))]
fn capture_in_container() {}

#[utoipa::path(get, path = "/v1/whoami", tag = "auth",
    responses((status = 200, description = "the caller and the auth mode", example = json!({"user": {"name": "alice", "uid": "u1", "groups": ["dev"]}, "authMode": "kube"})),
              (status = 401, body = Status)))]
fn whoami() {}

#[utoipa::path(post, path = "/v1/login-links", tag = "auth",
    responses((status = 201, description = "a one-time web UI login link", example = json!({"kind": "LoginLink", "url": "https://127.0.0.1:7443/#login=4f0c", "path": "/#login=4f0c", "expiresInSeconds": 60})),
              (status = 401, body = Status), (status = 403, description = "minted from a web UI session", body = Status)))]
fn login_links() {}

#[utoipa::path(post, path = "/v1/login", tag = "auth",
    request_body(content = Object, description = "`code` (from a login link; with `preview: true` only say whose it is) or `token`; `switch: true` lets a tab logged in as someone else change users", example = json!({"code": "4f0c..."})),
    responses((status = 200, description = "a web UI session, or with `preview` whom the link logs in (`LoginPreview`)", example = json!({"kind": "Login", "session": "nsdebug-ui.9a1f", "user": {"name": "alice"}, "expiresInSeconds": 28800})),
              (status = 400, body = Status), (status = 401, body = Status),
              (status = 409, description = "the tab is logged in as another user and did not ask to switch", body = Status),
              (status = 429, body = Status)))]
fn login() {}

#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "`ok` while the process serves")))]
fn healthz() {}

#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, description = "`ok`: the runtime answers"), (status = 503, description = "the runtime does not answer, and why")))]
fn readyz() {}

#[derive(OpenApi)]
#[openapi(
    info(title = "nsdebug", description = "The native API of the nsdebug node agent. Every request but health needs a bearer token (TokenReview + SubjectAccessReview, the RBAC of `kubectl exec`) unless the agent runs with `--auth none`. The Kubernetes-compatible routes (`/api/v1/...`, exec over WebSocket) follow the Kubernetes API and are not repeated here."),
    paths(list_targets, pod_target, container_target, run_in_pod, run_in_container, diag_in_pod, diag_in_container,
          probe_dns, probe_tcp, probe_http,
          files_get, files_put, capture_in_pod, capture_in_container, whoami, login_links, login, healthz, readyz),
    components(schemas(Status, DiagAnswer, DiagTarget,
        nsdebug_wire::diag::ProcessEntry, nsdebug_wire::diag::SocketEntry, nsdebug_wire::diag::Holder,
        nsdebug_wire::diag::Interface, nsdebug_wire::diag::Route, nsdebug_wire::diag::CgroupUsage,
        nsdebug_wire::diag::OpenFile, nsdebug_wire::diag::EnvVar, nsdebug_wire::diag::Mount,
        DnsResult, TcpResult, HttpResult)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new().route("/openapi.json", get(document))
}

async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
