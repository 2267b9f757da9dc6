//! Dialling a pod's ports from inside its network namespace.
//!
//! One thread per port-forward session joins the pod's network namespace
//! ([`crate::enter::netns::join_network_namespace`]) and then only dials:
//! it takes requests over a channel and hands back connected
//! `std::net::TcpStream`s, which stay the pod's sockets wherever they are
//! used afterwards (`network_namespaces(7)`). It never runs tokio work, so
//! the namespace can never leak into a task of the agent. The thread ends
//! when the session drops its [`Dialer`].
//!
//! Like the runtimes' port-forward (containerd's `portForward`), a port is
//! dialled on `127.0.0.1` first, then on `[::1]`, each with a timeout. The
//! dials of one session are made one after the other: on loopback a dial
//! is answered at once (a listener's SYN-ACK or a RST), so this costs
//! nothing measurable with 50 concurrent connections.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use crate::enter::netns::{NetnsError, join_network_namespace};
use crate::process::ContainerProcess;

/// How long one address is tried.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

struct Dial {
    port: u16,
    reply: tokio::sync::oneshot::Sender<Result<TcpStream, String>>,
}

/// The session's way to open connections in the pod's network.
pub struct Dialer {
    requests: mpsc::Sender<Dial>,
}

impl Dialer {
    /// Starts the dialing thread in the network namespace of `process`;
    /// fails as joining it does (a stopped container: a 409 for the caller).
    /// `net`, the namespace's inode when the session was admitted (its
    /// `hostNetwork` check), must be the one joined.
    pub async fn start(process: ContainerProcess, net: Option<u64>) -> Result<Self, NetnsError> {
        let (requests, incoming) = mpsc::channel::<Dial>();
        let (joined, joining) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("nsdebug-portfwd".into())
            .spawn(move || {
                let pidfd = match join_network_namespace(&process) {
                    Ok(pidfd) => pidfd,
                    Err(err) => {
                        let _ = joined.send(Err(err));
                        return;
                    }
                };
                let joined_net = rustix::fs::stat("/proc/thread-self/ns/net").map(|s| s.st_ino);
                if let Some(net) = net
                    && joined_net.ok() != Some(net)
                {
                    let _ = joined.send(Err(NetnsError::NetworkChanged));
                    return;
                }
                let _ = joined.send(Ok(()));
                // The pidfd is kept so the process cannot be recycled while
                // the session dials into its namespace.
                let _pidfd = pidfd;
                while let Ok(Dial { port, reply }) = incoming.recv() {
                    let _ = reply.send(dial(port));
                }
            })
            .map_err(NetnsError::Thread)?;
        joining.await.map_err(|_| NetnsError::Panicked)??;
        Ok(Self { requests })
    }

    /// A connection to `port` on the pod's loopback, or the reason none
    /// could be made, worded like the runtimes' (`IPv4: dial tcp4 …`).
    pub async fn dial(&self, port: u16) -> Result<tokio::net::TcpStream, String> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.requests
            .send(Dial { port, reply })
            .map_err(|_| "the session's dialer is gone".to_string())?;
        let stream = answer
            .await
            .map_err(|_| "the session's dialer is gone".to_string())??;
        stream
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpStream::from_std(stream))
            .map_err(|err| format!("failed to use the connection: {err}"))
    }
}

fn dial(port: u16) -> Result<TcpStream, String> {
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let v4_error = match TcpStream::connect_timeout(&v4, DIAL_TIMEOUT) {
        Ok(stream) => return Ok(stream),
        Err(err) => err,
    };
    let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
    match TcpStream::connect_timeout(&v6, DIAL_TIMEOUT) {
        Ok(stream) => Ok(stream),
        Err(v6_error) => Err(format!(
            "IPv4: dial tcp4 {v4}: connect: {} IPv6: dial tcp6 {v6}: connect: {}",
            describe(&v4_error),
            describe(&v6_error)
        )),
    }
}

/// An error the way Go prints a syscall error (`connection refused`).
fn describe(err: &std::io::Error) -> String {
    match err.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::TimedOut => "i/o timeout".into(),
        _ => {
            let text = err.to_string();
            let text = text.split(" (os error").next().unwrap_or(&text).to_string();
            text.to_lowercase()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The review's hardening: the namespace joined is the one admitted
    /// (a recycled or re-parented process cannot swap it in between).
    #[tokio::test]
    async fn the_dialer_joins_only_the_network_namespace_admitted() {
        let ours = rustix::fs::stat("/proc/self/ns/net").unwrap().st_ino;
        match Dialer::start(ContainerProcess::this_one(), Some(ours)).await {
            Ok(_) => {}
            // Unit tests may lack CAP_SYS_ADMIN: nothing to check then.
            Err(NetnsError::Setns(rustix::io::Errno::PERM)) => return,
            Err(err) => panic!("{err:?}"),
        }
        let other = Dialer::start(ContainerProcess::this_one(), Some(ours + 1)).await;
        assert!(matches!(other, Err(NetnsError::NetworkChanged)));
        assert!(other.err().unwrap().is_target_gone());
    }

    #[test]
    fn a_closed_port_is_refused_in_go_s_words() {
        // Bind then drop: the port is free, and nothing listens on it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = dial(port).unwrap_err();
        assert!(
            err.starts_with(&format!(
                "IPv4: dial tcp4 127.0.0.1:{port}: connect: connection refused IPv6: dial tcp6 [::1]:{port}: connect: "
            )),
            "{err}"
        );
    }
}
