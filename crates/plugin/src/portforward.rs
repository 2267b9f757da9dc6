//! `port-forward`: local ports to a pod's ports through the node's agent,
//! for when the API server or the kubelet is the thing that is broken.
//!
//! Each local connection is one WebSocket to the agent's
//! `…/pods/{pod}/portforward?ports=P` in the channel form
//! (`v4.channel.k8s.io`, kube's own client for it), which carries exactly one
//! connection per port: simple, and every connection is its own audited
//! check of `create pods/portforward`.

use std::process::ExitCode;

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;

use super::{PluginError, Reached, RunMode};

/// `[LOCAL:]REMOTE`, as kubectl port-forward takes it (`0` or an empty
/// LOCAL: any free port).
pub fn parse_mapping(spec: &str) -> Result<(u16, u16), PluginError> {
    let bad = || PluginError::Usage(format!("{spec:?} is not [LOCAL:]REMOTE (ports 1-65535)"));
    let (local, remote) = match spec.split_once(':') {
        Some((local, remote)) => (local, remote),
        None => (spec, spec),
    };
    let local = if local.is_empty() {
        0
    } else {
        local.parse::<u16>().map_err(|_| bad())?
    };
    let remote = remote.parse::<u16>().map_err(|_| bad())?;
    if remote == 0 {
        return Err(bad());
    }
    Ok((local, remote))
}

/// Listens on 127.0.0.1 for every mapping and forwards each connection,
/// until Ctrl-C.
pub async fn forward(
    agent: &Reached,
    namespace: &str,
    pod: &str,
    specs: &[String],
) -> Result<ExitCode, PluginError> {
    let mappings = specs
        .iter()
        .map(|spec| parse_mapping(spec))
        .collect::<Result<Vec<_>, _>>()?;
    let mode = RunMode {
        toolbox: false,
        privileged: false,
    };
    let client = super::interactive::agent_client(agent, mode).await?;
    let pods: Api<Pod> = Api::namespaced(client, namespace);
    let mut accepting = tokio::task::JoinSet::new();
    for (local, remote) in mappings {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", local))
            .await
            .map_err(|err| {
                PluginError::Usage(format!("cannot listen on 127.0.0.1:{local}: {err}"))
            })?;
        let bound = listener.local_addr().map(|a| a.port()).unwrap_or(local);
        println!("Forwarding from 127.0.0.1:{bound} -> {remote}");
        let (pods, pod) = (pods.clone(), pod.to_string());
        accepting.spawn(async move {
            loop {
                let connection = match listener.accept().await {
                    Ok((connection, _)) => connection,
                    Err(err) => {
                        // Out of descriptors, say: back off rather than spin.
                        eprintln!("kubectl-nsdebug: accepting on 127.0.0.1:{bound}: {err}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                println!("Handling connection for {bound}");
                tokio::spawn(one_connection(
                    pods.clone(),
                    pod.clone(),
                    remote,
                    connection,
                ));
            }
        });
    }
    let _ = tokio::signal::ctrl_c().await;
    Ok(ExitCode::SUCCESS)
}

async fn one_connection(
    pods: Api<Pod>,
    pod: String,
    remote: u16,
    mut connection: tokio::net::TcpStream,
) {
    let mut forwarder = match pods.portforward(&pod, &[remote]).await {
        Ok(forwarder) => forwarder,
        Err(err) => {
            eprintln!(
                "kubectl-nsdebug: forwarding to port {remote}: {}",
                nsdebug_client::error_chain(&err)
            );
            return;
        }
    };
    let error = forwarder.take_error(remote);
    if let Some(upstream) = forwarder.take_stream(remote) {
        // The channel form cannot half-close (kube's forwarder closes the
        // whole WebSocket when the local side stops writing, which would cut
        // the pod's answer short): a local EOF only stops this direction,
        // and the connection lasts until the pod closes it or the local
        // socket is gone.
        let (mut from_pod, mut to_pod) = tokio::io::split(upstream);
        let (mut local_read, mut local_write) = connection.split();
        let upload = async {
            let _ = tokio::io::copy(&mut local_read, &mut to_pod).await;
            std::future::pending::<()>().await
        };
        let download = async {
            let _ = tokio::io::copy(&mut from_pod, &mut local_write).await;
        };
        tokio::select! {
            () = upload => {}
            () = download => {}
        }
    }
    drop(connection);
    if let Some(error) = error
        && let Some(message) = error.await
    {
        eprintln!("kubectl-nsdebug: {message}");
    }
    let _ = forwarder.join().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_are_read_as_kubectl_reads_them() {
        assert_eq!(parse_mapping("8080").unwrap(), (8080, 8080));
        assert_eq!(parse_mapping("9000:80").unwrap(), (9000, 80));
        assert_eq!(parse_mapping(":80").unwrap(), (0, 80));
        assert_eq!(parse_mapping("0:80").unwrap(), (0, 80));
        for bad in ["", "80:", "x:80", "80:0", "70000"] {
            assert!(parse_mapping(bad).is_err(), "{bad}");
        }
    }
}
