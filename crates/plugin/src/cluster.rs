//! The cluster side of `kubectl nsdebug`: the user's kubeconfig, the target
//! pod's node, the agent pod on that node, and a port-forward to that agent
//! through the API server, in-process (what `kubectl port-forward` does, with
//! the same RBAC: `create pods/portforward` in the agent's namespace).
//!
//! The forward listens on a loopback port of this machine; every connection
//! to it is its own port-forward stream to the agent pod's API port, so the
//! plain HTTP client, a browser and plain kubectl can all use it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

use super::PluginError;
use nsdebug_client::AgentArgs;

/// Where the agents run unless told otherwise (the chart and manifests).
pub const AGENT_NAMESPACE: &str = "nsdebug";
pub const AGENT_SELECTOR: &str = "app.kubernetes.io/name=nsdebug";
/// The agent's API port when its pod names none `api`.
const AGENT_PORT: u16 = 7443;

/// The user's cluster, through their kubeconfig and credentials.
pub struct Cluster {
    client: kube::Client,
    /// The context's namespace (`default` when it names none).
    pub namespace: String,
    agent_namespace: String,
    agent_selector: String,
    /// The API server, for messages.
    server: String,
}

/// An agent pod, ready to be forwarded to.
#[derive(Debug, Clone)]
pub struct AgentPod {
    pub name: String,
    pub node: String,
    pub port: u16,
}

/// Which agents to look for.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentLookup {
    /// The namespace the agents run in.
    #[arg(long, default_value = AGENT_NAMESPACE, value_name = "NS", global = true)]
    pub agent_namespace: String,
    /// The label selector of the agent pods.
    #[arg(long, default_value = AGENT_SELECTOR, value_name = "SELECTOR", global = true)]
    pub agent_selector: String,
}

fn api_error(server: &str, what: String, err: kube::Error) -> PluginError {
    match err {
        kube::Error::Api(status) => PluginError::Cluster(format!(
            "{what}: the API server answered {}: {}",
            status.code, status.message
        )),
        other => PluginError::Cluster(format!(
            "{what}: cannot reach the API server at {server}: {}",
            nsdebug_client::error_chain(&other)
        )),
    }
}

impl Cluster {
    /// Connects with the kubeconfig (`--kubeconfig`, else `$KUBECONFIG`, else
    /// `~/.kube/config`) and its current (or `--context`) context.
    pub async fn connect(args: &AgentArgs, lookup: &AgentLookup) -> Result<Self, PluginError> {
        let kubeconfig = match &args.kubeconfig {
            Some(path) => Kubeconfig::read_from(path),
            None => Kubeconfig::read(),
        }
        .map_err(|err| {
            PluginError::Cluster(format!(
                "no kubeconfig ({err}); pass --kubeconfig, or --agent-url to talk to an agent directly"
            ))
        })?;
        let options = KubeConfigOptions {
            context: args.context.clone(),
            ..Default::default()
        };
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|err| PluginError::Cluster(format!("the kubeconfig: {err}")))?;
        let server = config.cluster_url.to_string();
        let namespace = config.default_namespace.clone();
        let client = kube::Client::try_from(config)
            .map_err(|err| PluginError::Cluster(format!("a client for {server}: {err}")))?;
        Ok(Self {
            client,
            namespace,
            agent_namespace: lookup.agent_namespace.clone(),
            agent_selector: lookup.agent_selector.clone(),
            server,
        })
    }

    /// A client of the user's cluster.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The namespace the agents run in.
    pub fn agent_namespace(&self) -> &str {
        &self.agent_namespace
    }

    /// An API server error about `what`, explained.
    pub fn api_error(&self, what: String, err: kube::Error) -> PluginError {
        api_error(&self.server, what, err)
    }

    /// The pod, which must be scheduled on a node.
    pub async fn pod(&self, namespace: &str, name: &str) -> Result<Pod, PluginError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let pod = api
            .get(name)
            .await
            .map_err(|err| api_error(&self.server, format!("pod {namespace}/{name}"), err))?;
        if node_of(&pod).is_none() {
            return Err(PluginError::Cluster(format!(
                "pod {namespace}/{name} is not scheduled on a node yet"
            )));
        }
        Ok(pod)
    }

    /// The pods a label selector matches, in one namespace or all.
    pub async fn pods(
        &self,
        namespace: Option<&str>,
        selector: &str,
    ) -> Result<Vec<Pod>, PluginError> {
        let api: Api<Pod> = match namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        let where_ = namespace.map_or("all namespaces".to_string(), |ns| format!("namespace {ns}"));
        let list = api
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|err| {
                api_error(
                    &self.server,
                    format!("pods matching {selector:?} in {where_}"),
                    err,
                )
            })?;
        Ok(list.items)
    }

    /// The ready agent pod on `node`.
    pub async fn agent_on(&self, node: &str) -> Result<AgentPod, PluginError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.agent_namespace);
        let params = ListParams::default()
            .labels(&self.agent_selector)
            .fields(&format!("spec.nodeName={node}"));
        let what = format!(
            "the nsdebug agent on node {node} (pods {:?} in namespace {})",
            self.agent_selector, self.agent_namespace
        );
        let pods = api
            .list(&params)
            .await
            .map_err(|err| api_error(&self.server, what.clone(), err))?
            .items;
        let ready = pods.iter().find(|pod| is_ready(pod));
        let Some(pod) = ready else {
            let found = match pods.first() {
                Some(pod) => format!(
                    "{} is not ready (phase {})",
                    pod.metadata.name.as_deref().unwrap_or("?"),
                    pod.status
                        .as_ref()
                        .and_then(|s| s.phase.as_deref())
                        .unwrap_or("unknown")
                ),
                None => format!(
                    "none runs there; is nsdebug installed (`kubectl -n {} get daemonset`), and does it tolerate the node's taints?",
                    self.agent_namespace
                ),
            };
            return Err(PluginError::Cluster(format!("{what}: {found}")));
        };
        let port = pod
            .spec
            .iter()
            .flat_map(|spec| &spec.containers)
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some("api"))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .unwrap_or(AGENT_PORT);
        Ok(AgentPod {
            name: pod.metadata.name.clone().unwrap_or_default(),
            node: node.to_string(),
            port,
        })
    }

    /// The agent on the node of `pod`.
    pub async fn agent_for(&self, pod: &Pod) -> Result<AgentPod, PluginError> {
        let node = node_of(pod).unwrap_or_default();
        self.agent_on(node).await
    }

    /// Forwards a loopback port (`local`, or any free one) to the agent pod.
    /// The first stream is opened now, so a refusal (RBAC, a gone pod) is
    /// an error here and not a reset connection later.
    pub async fn forward(&self, agent: &AgentPod, local: u16) -> Result<Forward, PluginError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.agent_namespace);
        let what = format!(
            "a port-forward to the agent {}/{} on node {}",
            self.agent_namespace, agent.name, agent.node
        );
        let first = api
            .portforward(&agent.name, &[agent.port])
            .await
            .map_err(|err| api_error(&self.server, what.clone(), err))?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", local))
            .await
            .map_err(|err| {
                PluginError::Cluster(format!("cannot listen on 127.0.0.1:{local}: {err}"))
            })?;
        let addr = listener
            .local_addr()
            .map_err(|err| PluginError::Cluster(format!("the forward's address: {err}")))?;
        let last_error = Arc::new(Mutex::new(None::<String>));
        let task = tokio::spawn(accept_loop(
            listener,
            api,
            agent.clone(),
            first,
            last_error.clone(),
            self.server.clone(),
        ));
        Ok(Forward {
            addr,
            last_error,
            task,
            description: what,
        })
    }
}

/// A pod's node.
pub fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

fn is_ready(pod: &Pod) -> bool {
    let Some(status) = &pod.status else {
        return false;
    };
    status.phase.as_deref() == Some("Running")
        && status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// A running forward; dropping it stops it.
pub struct Forward {
    pub addr: SocketAddr,
    last_error: Arc<Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
    description: String,
}

impl Forward {
    /// The agent's URL through this forward.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// What the forward goes to, e.g. for "Forwarding ..." lines.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The last error a stream of this forward met (the API server's or the
    /// kubelet's), which explains a reset connection.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    api: Api<Pod>,
    agent: AgentPod,
    first: kube::api::Portforwarder,
    last_error: Arc<Mutex<Option<String>>>,
    server: String,
) {
    let mut first = Some(first);
    loop {
        let Ok((mut connection, _)) = listener.accept().await else {
            continue;
        };
        let forwarder = match first.take() {
            Some(forwarder) => forwarder,
            None => match api.portforward(&agent.name, &[agent.port]).await {
                Ok(forwarder) => forwarder,
                Err(err) => {
                    let err = api_error(&server, format!("a port-forward to {}", agent.name), err);
                    note(&last_error, err.to_string());
                    continue;
                }
            },
        };
        let port = agent.port;
        let last_error = last_error.clone();
        tokio::spawn(async move {
            let mut forwarder = forwarder;
            let (Some(mut upstream), Some(errors)) =
                (forwarder.take_stream(port), forwarder.take_error(port))
            else {
                return;
            };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut connection, &mut upstream) => {}
                Some(message) = errors => note(&last_error, format!("the port-forward failed: {message}")),
            }
            drop(upstream);
            let _ = forwarder.join().await;
        });
    }
}

/// Keeps the last error of a forward's streams.
fn note(slot: &Mutex<Option<String>>, message: String) {
    if let Ok(mut slot) = slot.lock() {
        *slot = Some(message);
    }
}

/// Pods grouped by their node, in name order, for fan-out.
pub fn by_node(pods: Vec<Pod>) -> BTreeMap<String, Vec<Pod>> {
    let mut nodes: BTreeMap<String, Vec<Pod>> = BTreeMap::new();
    for pod in pods {
        if let Some(node) = node_of(&pod) {
            nodes.entry(node.to_string()).or_default().push(pod);
        }
    }
    nodes
}
