//! Probes from inside a pod's network against real pods on the test bed: DNS
//! with the pod's own resolv.conf and hosts file (a real dnsmasq as its
//! cluster DNS), TCP connects and HTTP GETs that leave from the pod's address
//! or reach its loopback, what a user sees when a probe fails, and who may
//! probe.

use crate::support;

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use support::fake_apiserver::{FakeApiServer, FakeUser, Rule};
use support::pods::{ContainerSpec, PodSpec, RunningPod, cri_pid, run_pod};
use support::{Agent, assert_status, eth0_ipv4, eventually, test_namespace};

/// The node's address on the test bed's bridge: pods reach the host there.
const NODE: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);

/// `?key=value&...`, encoded.
fn query(pairs: &[(&str, &str)]) -> String {
    let mut encoded = form_urlencoded::Serializer::new(String::from("?"));
    for (key, value) in pairs {
        encoded.append_pair(key, value);
    }
    encoded.finish()
}

/// `GET base?pairs` that must answer 200.
async fn probe(agent: &Agent, base: &str, pairs: &[(&str, &str)]) -> Value {
    agent.get_ok(&format!("{base}{}", query(pairs))).await
}

/// A port on the node's bridge address that nothing listens on.
async fn closed_port() -> u16 {
    let listener = tokio::net::TcpListener::bind((NODE, 0)).await.unwrap();
    listener.local_addr().unwrap().port()
}

/// dnsmasq (the host's binary) in the network namespace of a pod, the way
/// cluster DNS runs in a pod of its own, listening on that pod's address:
/// unlike the node's 10.99.0.1:53, no other test run or service on the
/// machine can hold it. Killed when dropped.
struct Dnsmasq {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Dnsmasq {
    async fn start(pid: u64, address: &str, port: u16, records: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("dnsmasq.log");
        let child = Command::new("nsenter")
            .args(["-t", &pid.to_string(), "-n", "dnsmasq"])
            .args([
                "--no-daemon",
                "--conf-file=/dev/null",
                "--log-queries",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                &format!("--listen-address={address}"),
                &format!("--port={port}"),
                // The zone is local: unknown names are NXDOMAIN.
                "--local=/nsdebug.test/",
            ])
            .args(records)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("dnsmasq is installed (apt-get install dnsmasq-base; hack/test.sh does)");
        let server = Self {
            child,
            log,
            _dir: dir,
        };
        let log = server.log.clone();
        eventually("dnsmasq to listen", Duration::from_secs(10), || {
            let log = log.clone();
            async move {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                assert!(!text.contains("FAILED"), "dnsmasq failed:\n{text}");
                let listening = Command::new("nsenter")
                    .args(["-t", &pid.to_string(), "-n", "ss", "-Hlun"])
                    .arg(format!("sport = :{port}"))
                    .output()
                    .unwrap();
                (!listening.stdout.is_empty()).then_some(())
            }
        })
        .await;
        server
    }

    /// Waits for `line` in the log (dnsmasq writes it after it answers).
    async fn logged(&self, line: &str) {
        let what = format!("dnsmasq to log {line:?}");
        eventually(&what, Duration::from_secs(10), || async {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            log.contains(line).then_some(())
        })
        .await;
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP server on the node's bridge address, for pods to reach.
struct NodeServer {
    port: u16,
    /// Told when a request reaches `/slow` (which never answers).
    slow_reached: Arc<tokio::sync::Notify>,
}

async fn node_http_server() -> NodeServer {
    use axum::http::{StatusCode, header};
    use axum::routing::get;
    let slow_reached = Arc::new(tokio::sync::Notify::new());
    let reached = slow_reached.clone();
    let app = axum::Router::new()
        .route(
            "/",
            get(|| async {
                (
                    [
                        (header::SERVER, "nsdebug-test"),
                        (header::SET_COOKIE, "session=secret"),
                    ],
                    "probe body from the node\n",
                )
            }),
        )
        .route(
            "/moved",
            get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/elsewhere")]) }),
        )
        .route("/big", get(|| async { vec![b'x'; 2 * 1024 * 1024] }))
        .route(
            "/slow",
            get(move || {
                let reached = reached.clone();
                async move {
                    reached.notify_one();
                    std::future::pending::<()>().await
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind((NODE, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    NodeServer { port, slow_reached }
}

/// An HTTPS server on the node's bridge address with a self-signed
/// certificate for `tls.nsdebug.test`; every request gets `hello tls`.
async fn node_tls_server() -> u16 {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let key = rcgen::generate_simple_self_signed(vec!["tls.nsdebug.test".to_string()]).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![key.cert.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.signing_key.serialize_der())),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind((NODE, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A handshake the client refuses ends here.
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.ends_with(b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tls
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\nhello tls\n")
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

/// The answers' `data`, in order.
fn data(result: &Value) -> Vec<&str> {
    result["answers"]
        .as_array()
        .unwrap_or_else(|| panic!("no answers: {result}"))
        .iter()
        .map(|a| a["data"].as_str().unwrap())
        .collect()
}

/// The scene of the name resolution tests, in the test's namespace: the
/// "cluster DNS", a busybox pod whose network two dnsmasq servers serve in
/// (port 53 with the test's records, port 5353 with other answers); a
/// distroless pod `app` (no resolver, no tools) whose resolv.conf the runtime
/// writes from the pod's DNS settings, as for a kubelet's pod; an agent.
/// The servers are dropped before the pods.
struct DnsScene {
    dnsmasq: Dnsmasq,
    other: Dnsmasq,
    ns: String,
    dns_ip: String,
    app_pid: u64,
    app_ip: String,
    agent: Agent,
    _app: RunningPod,
    _dns_pod: RunningPod,
}

impl DnsScene {
    async fn start(test: &str) -> Self {
        let ns = test_namespace(test);
        let mut client = support::cri().await;
        // The "cluster DNS": a pod whose network dnsmasq serves in.
        let dns_pod = run_pod(
            &mut client,
            &PodSpec::new(&ns, "dns", vec![ContainerSpec::busybox("server")]),
            "test",
        )
        .await;
        let dns_pid = cri_pid(&mut client, dns_pod.id("server")).await;
        let dns_ip = eth0_ipv4(dns_pid);
        let dnsmasq = Dnsmasq::start(
            dns_pid,
            &dns_ip,
            53,
            &[
                "--host-record=probe.nsdebug.test,10.1.2.3",
                "--host-record=web.nsdebug.test,10.99.0.1",
                "--host-record=tls.nsdebug.test,10.99.0.1",
                "--txt-record=probe.nsdebug.test,probe text",
                "--srv-host=_http._tcp.nsdebug.test,web.nsdebug.test,8080,0,5",
                "--mx-host=nsdebug.test,mail.nsdebug.test,10",
            ],
        )
        .await;
        // A second server with other answers, for the override.
        let other = Dnsmasq::start(
            dns_pid,
            &dns_ip,
            5353,
            &["--host-record=probe.nsdebug.test,10.9.9.9"],
        )
        .await;
        // A distroless pod (no resolver, no tools) whose resolv.conf the runtime
        // writes from the pod's DNS settings, as for a kubelet's pod.
        let app = run_pod(
            &mut client,
            &PodSpec::new(&ns, "app", vec![ContainerSpec::distroless("app")]).dns(
                &[&dns_ip],
                &["nsdebug.test"],
                &["ndots:2", "timeout:1", "attempts:2"],
            ),
            "test",
        )
        .await;
        let app_pid = cri_pid(&mut client, app.id("app")).await;
        let app_ip = eth0_ipv4(app_pid);
        let agent = Agent::start();
        Self {
            dnsmasq,
            other,
            ns,
            dns_ip,
            app_pid,
            app_ip,
            agent,
            _app: app,
            _dns_pod: dns_pod,
        }
    }
}

#[tokio::test]
async fn names_resolve_with_the_pods_resolver() {
    let scene = DnsScene::start("probe-dns").await;
    let DnsScene {
        dnsmasq,
        ns,
        dns_ip,
        app_ip,
        agent,
        ..
    } = scene;
    let dns = format!("/v1/targets/{ns}/app/diag/dns");

    // A full name, with the pod's resolver settings reported.
    let full = probe(&agent, &dns, &[("name", "probe.nsdebug.test")]).await;
    assert_eq!(data(&full), ["10.1.2.3"], "{full}");
    assert_eq!(full["answers"][0]["name"], "probe.nsdebug.test.");
    assert_eq!(full["answers"][0]["type"], "A");
    assert_eq!(full["source"], "dns");
    assert_eq!(full["nameservers"], json!([format!("{dns_ip}:53")]));
    assert_eq!(full["search"], json!(["nsdebug.test"]));
    assert_eq!(
        (&full["ndots"], &full["timeoutSeconds"], &full["attempts"]),
        (&json!(2), &json!(1), &json!(2))
    );
    assert_eq!(full["error"], Value::Null);
    assert!(full["latencyMs"].as_f64().unwrap() > 0.0, "{full}");
    assert_eq!(full["target"]["pod"], "app");
    // The query left from the pod's address, not the node's.
    // (dnsmasq writes its log after it answers.)
    dnsmasq
        .logged(&format!("query[A] probe.nsdebug.test from {app_ip}"))
        .await;

    // A short name through the pod's search list (fewer dots than ndots).
    let short = probe(&agent, &dns, &[("name", "probe")]).await;
    assert_eq!(data(&short), ["10.1.2.3"], "{short}");
    assert_eq!(short["answers"][0]["name"], "probe.nsdebug.test.");

    // A name that does not exist is an answer, not a failure of the agent.
    let (code, missing) = agent
        .get(&format!(
            "{dns}{}",
            query(&[("name", "unknown.nsdebug.test")])
        ))
        .await;
    assert_eq!(code, 200, "{missing}");
    assert_eq!(missing["errorKind"], "nxdomain", "{missing}");
    assert_eq!(
        missing["error"], "unknown.nsdebug.test does not exist (NXDOMAIN)",
        "the name as asked, not the last one tried from the search list"
    );
    assert_eq!(missing["answers"], json!([]));
    assert_eq!(missing["source"], Value::Null);

    // Other record types.
    let srv = probe(
        &agent,
        &dns,
        &[("name", "_http._tcp.nsdebug.test"), ("type", "SRV")],
    )
    .await;
    assert_eq!(data(&srv), ["0 5 8080 web.nsdebug.test."], "{srv}");
    let txt = probe(
        &agent,
        &dns,
        &[("name", "probe.nsdebug.test"), ("type", "txt")],
    )
    .await;
    assert!(data(&txt)[0].contains("probe text"), "{txt}");
    let mx = probe(&agent, &dns, &[("name", "nsdebug.test."), ("type", "MX")]).await;
    assert_eq!(data(&mx), ["10 mail.nsdebug.test."], "{mx}");
    let ptr = probe(&agent, &dns, &[("name", "10.1.2.3"), ("type", "PTR")]).await;
    assert_eq!(data(&ptr), ["probe.nsdebug.test."], "{ptr}");
}

#[tokio::test]
async fn a_nameserver_can_be_named_and_the_pods_hosts_file_answers_first() {
    let scene = DnsScene::start("probe-dns-override").await;
    let DnsScene {
        other,
        ns,
        dns_ip,
        app_pid,
        app_ip,
        agent,
        ..
    } = scene;
    let dns = format!("/v1/targets/{ns}/app/diag/dns");

    // Another nameserver, port included, for one question.
    let server = format!("{dns_ip}:5353");
    let overridden = probe(
        &agent,
        &dns,
        &[("name", "probe.nsdebug.test"), ("server", &server)],
    )
    .await;
    assert_eq!(data(&overridden), ["10.9.9.9"], "{overridden}");
    assert_eq!(overridden["nameservers"], json!([server]));
    other.logged(&format!("from {app_ip}")).await;

    // The pod's /etc/hosts answers first (the kubelet writes it; here the
    // test does, through the container's root).
    std::fs::write(
        format!("/proc/{app_pid}/root/etc/hosts"),
        "127.0.0.1 localhost\n10.5.6.7 static.nsdebug.test\n",
    )
    .unwrap();
    let fixed = probe(&agent, &dns, &[("name", "static.nsdebug.test")]).await;
    assert_eq!(data(&fixed), ["10.5.6.7"], "{fixed}");
    assert_eq!(fixed["source"], "hosts");
    let asked = probe(
        &agent,
        &dns,
        &[("name", "static.nsdebug.test"), ("hosts", "false")],
    )
    .await;
    assert_eq!(asked["errorKind"], "nxdomain", "{asked}");
}

#[tokio::test]
async fn tcp_and_http_probes_resolve_names_with_the_pods_resolver() {
    let scene = DnsScene::start("probe-dns-tcp").await;
    let DnsScene { ns, agent, .. } = scene;

    // TCP and HTTP probes resolve names with the pod's resolver too.
    let web = node_http_server().await;
    let tcp = probe(
        &agent,
        &format!("/v1/targets/{ns}/app/diag/tcp"),
        &[("host", "web"), ("port", &web.port.to_string())],
    )
    .await;
    assert_eq!(tcp["connected"], true, "{tcp}");
    assert_eq!(tcp["resolved"], json!(["10.99.0.1"]));
    assert_eq!(tcp["address"], format!("10.99.0.1:{}", web.port));
    let http = format!("/v1/targets/{ns}/app/diag/http");
    let url = format!("http://web.nsdebug.test:{}/", web.port);
    let page = probe(&agent, &http, &[("url", &url)]).await;
    assert_eq!(page["status"], 200, "{page}");
    assert_eq!(page["bodyPreview"], "probe body from the node\n");
    let unknown = probe(&agent, &http, &[("url", "http://nowhere.nsdebug.test/")]).await;
    assert_eq!(unknown["errorKind"], "dns", "{unknown}");
    assert!(
        unknown["error"].as_str().unwrap().contains("NXDOMAIN"),
        "{unknown}"
    );
    // HTTPS to a name: the server sees it as SNI and its certificate names it.
    let tls_port = node_tls_server().await;
    let url = format!("https://tls.nsdebug.test:{tls_port}/");
    let secure = probe(&agent, &http, &[("url", &url), ("insecure", "true")]).await;
    assert_eq!(secure["status"], 200, "{secure}");
    assert_eq!(secure["tls"]["dnsNames"], json!(["tls.nsdebug.test"]));
}

#[tokio::test]
async fn tcp_connects_from_the_pods_network() {
    let (ns, mut client, pod) =
        support::one_pod("probe-tcp", "web", vec![ContainerSpec::distroless("web")]).await;
    let pid = cri_pid(&mut client, pod.id("web")).await;
    let pod_ip: IpAddr = eth0_ipv4(pid).parse().unwrap();
    let agent = Agent::start();
    let tcp = format!("/v1/targets/{ns}/web/diag/tcp");

    // A port on the node: the connection comes from the pod's address.
    let listener = tokio::net::TcpListener::bind((NODE, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let open = probe(&agent, &tcp, &[("host", "10.99.0.1"), ("port", &port)]).await;
    assert_eq!(open["connected"], true, "{open}");
    assert_eq!(open["address"], format!("10.99.0.1:{port}"));
    assert_eq!(open["error"], Value::Null);
    assert!(open["latencyMs"].as_f64().unwrap() > 0.0, "{open}");
    let (_, peer) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
        .await
        .expect("the probe's connection is queued")
        .unwrap();
    assert_eq!(peer.ip(), pod_ip, "the probe connects from the pod");

    // A closed port: refused, as an answer.
    let closed = closed_port().await.to_string();
    let refused = probe(&agent, &tcp, &[("host", "10.99.0.1"), ("port", &closed)]).await;
    assert_eq!(refused["connected"], false, "{refused}");
    assert_eq!(refused["errorKind"], "refused");
    assert_eq!(refused["error"], "connection refused");

    // 127.0.0.1:8080 is the pod's own loopback, where its server listens;
    // the node has nothing there.
    let on_node = std::net::TcpStream::connect("127.0.0.1:8080");
    assert_eq!(
        on_node.map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused,
        "this test needs 127.0.0.1:8080 free on the node"
    );
    let own = probe(&agent, &tcp, &[("host", "127.0.0.1"), ("port", "8080")]).await;
    assert_eq!(own["connected"], true, "{own}");

    // The same by container ID.
    let by_id = probe(
        &agent,
        &format!("/v1/containers/{}/diag/tcp", pod.id("web")),
        &[("host", "127.0.0.1"), ("port", "8080"), ("timeout", "2s")],
    )
    .await;
    assert_eq!(by_id["connected"], true, "{by_id}");
    assert_eq!(by_id["target"]["pod"], "web");

    pod.remove(&mut client).await;
}

#[tokio::test]
async fn http_gets_from_the_pods_network() {
    let (ns, mut client, pod) =
        support::one_pod("probe-http", "web", vec![ContainerSpec::distroless("web")]).await;
    let agent = Agent::start();
    let http = format!("/v1/targets/{ns}/web/diag/http");

    // The pod's own server on its loopback (hack/testbed/hello.c).
    let own = probe(&agent, &http, &[("url", "http://127.0.0.1:8080/")]).await;
    assert_eq!(own["status"], 200, "{own}");
    assert_eq!(own["bodyPreview"], "hello from web\n");
    assert_eq!(own["bodyBytes"], 15);
    assert_eq!(own["bodyTruncated"], false);
    assert_eq!(own["headers"]["content-type"], "text/plain");
    assert_eq!(own["address"], "127.0.0.1:8080");
    assert_eq!(own["error"], Value::Null);
    assert_eq!(own["tls"], Value::Null);

    // A server on the node: its body, a few headers (no cookies).
    let node = node_http_server().await;
    let base = format!("http://10.99.0.1:{}", node.port);
    let page = probe(&agent, &http, &[("url", &format!("{base}/"))]).await;
    assert_eq!(page["status"], 200, "{page}");
    assert_eq!(page["bodyPreview"], "probe body from the node\n");
    assert_eq!(page["headers"]["server"], "nsdebug-test");
    assert_eq!(page["headers"].get("set-cookie"), None, "{page}");
    assert!(page["latencyMs"].as_f64().unwrap() > 0.0);

    // A redirect is reported, not followed.
    let moved = probe(&agent, &http, &[("url", &format!("{base}/moved"))]).await;
    assert_eq!(moved["status"], 302, "{moved}");
    assert_eq!(moved["location"], "/elsewhere");

    // A big body is read up to the cap; 1 KiB of it is shown.
    let big = probe(&agent, &http, &[("url", &format!("{base}/big"))]).await;
    assert_eq!(big["status"], 200, "{big}");
    assert_eq!(big["bodyBytes"], 1024 * 1024);
    assert_eq!(big["bodyTruncated"], true);
    assert_eq!(big["bodyPreview"].as_str().unwrap().len(), 1024);

    // A server that never answers: the probe's timeout.
    let slow = probe(
        &agent,
        &http,
        &[("url", &format!("{base}/slow")), ("timeout", "1s")],
    )
    .await;
    assert_eq!(slow["errorKind"], "timeout", "{slow}");
    assert_eq!(slow["status"], Value::Null);
    let took = slow["durationMs"].as_f64().unwrap();
    assert!((1000.0..5000.0).contains(&took), "{slow}");

    // Nothing listening.
    let closed = closed_port().await;
    let refused = probe(
        &agent,
        &http,
        &[("url", &format!("http://10.99.0.1:{closed}/"))],
    )
    .await;
    assert_eq!(refused["errorKind"], "refused", "{refused}");
    assert_eq!(refused["error"], "connection refused");

    // HTTPS: a self-signed certificate fails verification unless told not
    // to verify; either way the certificate is described.
    let tls_port = node_tls_server().await;
    let url = format!("https://10.99.0.1:{tls_port}/");
    let untrusted = probe(&agent, &http, &[("url", &url)]).await;
    assert_eq!(untrusted["errorKind"], "tls", "{untrusted}");
    assert!(
        untrusted["error"]
            .as_str()
            .unwrap()
            .contains("invalid peer certificate"),
        "{untrusted}"
    );
    let insecure = probe(&agent, &http, &[("url", &url), ("insecure", "true")]).await;
    assert_eq!(insecure["status"], 200, "{insecure}");
    assert_eq!(insecure["bodyPreview"], "hello tls\n");
    assert_eq!(insecure["tls"]["verified"], false);
    assert_eq!(insecure["tls"]["dnsNames"], json!(["tls.nsdebug.test"]));
    assert!(insecure["tls"]["notAfter"].as_str().is_some(), "{insecure}");

    pod.remove(&mut client).await;
}

#[tokio::test]
async fn bad_requests_unknown_pods_and_stopped_containers() {
    let (ns, mut client, pod) =
        support::one_pod("probe-errors", "box", vec![ContainerSpec::busybox("shell")]).await;
    let agent = Agent::start();
    let base = format!("/v1/targets/{ns}/box/diag");

    // (probe, query, part of the message)
    type BadRequest<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let bad: &[BadRequest] = &[
        ("dns", &[], "name is required"),
        (
            "dns",
            &[("name", "example.com"), ("type", "ANY")],
            "type 'ANY'",
        ),
        ("dns", &[("name", "bad name")], "not a valid DNS name"),
        (
            "dns",
            &[("name", "a.b"), ("server", "dns.example")],
            "server",
        ),
        (
            "dns",
            &[("name", "a.b"), ("hosts", "maybe")],
            "hosts must be",
        ),
        ("dns", &[("name", "a.b"), ("bogus", "1")], "unknown field"),
        ("tcp", &[("host", "10.0.0.1")], "port is required"),
        ("tcp", &[("host", "10.0.0.1"), ("port", "0")], "port '0'"),
        (
            "tcp",
            &[("host", "10.0.0.1"), ("port", "http")],
            "port 'http'",
        ),
        ("tcp", &[("host", "a b"), ("port", "80")], "host 'a b'"),
        ("tcp", &[("port", "80")], "host is required"),
        (
            "tcp",
            &[("host", "10.0.0.1"), ("port", "80"), ("timeout", "31s")],
            "at most 30s",
        ),
        (
            "tcp",
            &[("host", "10.0.0.1"), ("port", "80"), ("timeout", "0")],
            "more than 0",
        ),
        ("http", &[("url", "ftp://10.0.0.1/")], "only http and https"),
        ("http", &[("url", "not a url")], "not a valid URL"),
        (
            "http",
            &[("url", "http://user:pw@10.0.0.1/")],
            "user name or password",
        ),
        (
            "http",
            &[("url", "http://10.0.0.1/"), ("method", "POST")],
            "only sends GET",
        ),
        ("http", &[], "url is required"),
    ];
    for (kind, pairs, message) in bad {
        let path = format!("{base}/{kind}{}", query(pairs));
        let (code, body) = agent.get(&path).await;
        assert_eq!(code, 400, "{path}: {body}");
        assert_status(&body, 400, "BadRequest");
        assert!(
            body["message"].as_str().unwrap().contains(message),
            "{path}: {body}"
        );
    }

    let tcp_query = query(&[("host", "127.0.0.1"), ("port", "80")]);
    let (code, body) = agent
        .get(&format!("/v1/targets/{ns}/nope/diag/tcp{tcp_query}"))
        .await;
    assert_eq!(code, 404, "{body}");
    assert_status(&body, 404, "NotFound");
    let (code, body) = agent
        .get(&format!(
            "/v1/containers/0123456789abcdef/diag/tcp{tcp_query}"
        ))
        .await;
    assert_eq!(code, 404, "{body}");

    // No nameserver line: like the pod's libc, the probe asks 127.0.0.1 (the
    // pod's own loopback, where nothing answers DNS), within the file's
    // timeout rather than the probe's.
    let pid = cri_pid(&mut client, pod.id("shell")).await;
    std::fs::write(
        format!("/proc/{pid}/root/etc/resolv.conf"),
        "search example.test\noptions timeout:1 attempts:1\n",
    )
    .unwrap();
    let local = probe(
        &agent,
        &format!("{base}/dns"),
        &[("name", "db"), ("timeout", "20s")],
    )
    .await;
    assert_eq!(local["nameservers"][0], "127.0.0.1:53", "{local}");
    assert_eq!(local["search"], json!(["example.test"]));
    assert_eq!(local["errorKind"], "timeout", "{local}");
    assert!(local["latencyMs"].as_f64().unwrap() < 15_000.0, "{local}");

    // A stopped container has no network to probe from.
    pod.stop(&mut client, "shell", 0).await;
    let (code, body) = agent.get(&format!("{base}/tcp{tcp_query}")).await;
    assert_eq!(code, 409, "{body}");
    assert_status(&body, 409, "Conflict");
    assert!(
        body["message"].as_str().unwrap().contains("not running"),
        "{body}"
    );

    pod.remove(&mut client).await;
}

fn rule(user: &'static str, verb: &'static str, resource: &'static str, ns: &str) -> Rule {
    Rule {
        user,
        verb,
        resource,
        namespace: Some(ns.to_string()),
    }
}

/// Multi-threaded: the fake API server must answer the agent while the test
/// waits on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probing_takes_the_right_to_exec_and_is_audited() {
    let (ns, mut client, pod) =
        support::one_pod("probe-auth", "web", vec![ContainerSpec::distroless("web")]).await;
    let users = vec![
        FakeUser {
            token: "alice-token",
            name: "alice",
            groups: vec!["dev"],
        },
        FakeUser {
            token: "bob-token",
            name: "bob",
            groups: vec!["viewers"],
        },
    ];
    let rules = vec![
        rule("alice", "create", "pods/exec", &ns),
        rule("alice", "get", "pods", &ns),
        rule("bob", "get", "pods", &ns),
    ];
    let api = FakeApiServer::start(users, rules).await;
    let audit_dir = tempfile::tempdir().unwrap();
    let audit_log = audit_dir.path().join("audit.jsonl");
    let socket = support::testbed_socket();
    let agent = Agent::start_secure(&[
        "--cri-socket",
        socket.to_str().unwrap(),
        "--kubeconfig",
        api.kubeconfig.to_str().unwrap(),
        "--audit-log",
        audit_log.to_str().unwrap(),
        // One session each: a probe in flight holds it.
        "--max-sessions-per-user",
        "1",
    ]);
    let https = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let call = |path: String, token: &'static str| {
        let request = https.get(format!("{}{path}", agent.url)).bearer_auth(token);
        async move {
            let response = request.send().await.unwrap();
            let code = response.status().as_u16();
            (code, response.json::<Value>().await.unwrap())
        }
    };
    let tcp = format!(
        "/v1/targets/{ns}/web/diag/tcp{}",
        query(&[("host", "127.0.0.1"), ("port", "8080")])
    );

    // bob may read pods but not exec: no probe.
    let (code, body) = call(tcp.clone(), "bob-token").await;
    assert_eq!(code, 403, "{body}");
    assert_status(&body, 403, "Forbidden");
    let asked = api.reviews("SubjectAccessReview");
    let attributes = &asked.last().unwrap()["spec"]["resourceAttributes"];
    assert_eq!(
        (
            &attributes["verb"],
            &attributes["resource"],
            &attributes["subresource"]
        ),
        (&json!("create"), &json!("pods"), &json!("exec")),
        "{attributes}"
    );
    // alice may.
    let (code, body) = call(tcp.clone(), "alice-token").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["connected"], true);

    // A probe counts as a session while it runs.
    let node = node_http_server().await;
    let slow = format!(
        "/v1/targets/{ns}/web/diag/http{}",
        query(&[
            ("url", &format!("http://10.99.0.1:{}/slow", node.port)),
            ("timeout", "10s")
        ])
    );
    let reached = node.slow_reached.notified();
    let in_flight = tokio::spawn(call(slow, "alice-token"));
    tokio::time::timeout(Duration::from_secs(10), reached)
        .await
        .expect("the slow probe reaches the server");
    let (code, body) = call(tcp.clone(), "alice-token").await;
    assert_eq!(code, 429, "{body}");
    assert_status(&body, 429, "TooManyRequests");
    let (code, body) = in_flight.await.unwrap();
    assert_eq!(
        (code, &body["errorKind"]),
        (200, &json!("timeout")),
        "{body}"
    );

    // The trail: who probed what from where, and the refusal.
    let events: Vec<Value> = std::fs::read_to_string(&audit_log)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let refused = events
        .iter()
        .find(|e| e["user"]["username"] == "bob")
        .expect("bob's refusal is audited");
    assert_eq!(refused["responseStatus"]["code"], 403);
    assert_eq!(
        refused["annotations"]["authorization.k8s.io/decision"],
        "forbid"
    );
    let probed = events
        .iter()
        .find(|e| {
            e["user"]["username"] == "alice"
                && e["stage"] == "ResponseComplete"
                && e["annotations"]["nsdebug.dev/diag"] == "tcp"
                && e["responseStatus"]["code"] == 200
        })
        .expect("alice's probe is audited");
    assert_eq!(probed["stage"], "ResponseComplete");
    assert_eq!(probed["responseStatus"]["code"], 200);
    assert_eq!(probed["objectRef"]["subresource"], "exec");
    assert_eq!(probed["objectRef"]["name"], "web");
    let notes = &probed["annotations"];
    assert_eq!(notes["nsdebug.dev/target"], "127.0.0.1:8080");
    assert_eq!(notes["nsdebug.dev/exit-code"], "ok");
    assert_eq!(notes["nsdebug.dev/container-id"], pod.id("web"));
    assert!(
        events
            .iter()
            .any(|e| e["annotations"]["nsdebug.dev/diag"] == "tcp"
                && e["responseStatus"]["code"] == 429),
        "the probe over the limit is audited"
    );
    let slow_event = events
        .iter()
        .find(|e| {
            e["stage"] == "ResponseComplete" && e["annotations"]["nsdebug.dev/diag"] == "http"
        })
        .expect("the HTTP probe is audited");
    assert_eq!(
        slow_event["annotations"]["nsdebug.dev/exit-code"],
        "timeout"
    );

    pod.remove(&mut client).await;
}
