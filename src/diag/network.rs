//! A pod's network interfaces (addresses, flags, counters) and routes.
//!
//! Counters and routes come from the target's `/proc/PID/net/{dev,route}`,
//! which show its network namespace. Addresses need `getifaddrs(3)` (netlink)
//! inside the namespace: on the throwaway thread of [`crate::enter::netns`].
//!
//! The answers' types, [`Interface`] and [`Route`], are the wire crate's
//! (`nsdebug_wire::diag`).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

pub use nsdebug_wire::diag::{Interface, Route};

use super::DiagError;
use crate::process::ProcRoot;

/// How long reading the addresses inside the pod may take.
const LIMIT: Duration = Duration::from_secs(5);

fn prefix_len(mask: Option<IpAddr>) -> u32 {
    match mask {
        Some(IpAddr::V4(m)) => u32::from(m).count_ones(),
        Some(IpAddr::V6(m)) => u128::from(m).count_ones(),
        None => 0,
    }
}

/// The addresses and flags of every interface, read inside the namespace.
fn addresses() -> Result<BTreeMap<String, Interface>, std::io::Error> {
    use nix::net::if_::InterfaceFlags;
    let mut interfaces: BTreeMap<String, Interface> = BTreeMap::new();
    for entry in nix::ifaddrs::getifaddrs()? {
        let interface = interfaces
            .entry(entry.interface_name.clone())
            .or_insert_with(|| Interface {
                name: entry.interface_name.clone(),
                ..Default::default()
            });
        interface.up = entry.flags.contains(InterfaceFlags::IFF_UP);
        interface.running = entry.flags.contains(InterfaceFlags::IFF_RUNNING);
        interface.loopback = entry.flags.contains(InterfaceFlags::IFF_LOOPBACK);
        let Some(address) = entry.address else {
            continue;
        };
        let ip = |s: &nix::sys::socket::SockaddrStorage| -> Option<IpAddr> {
            s.as_sockaddr_in()
                .map(|a| IpAddr::V4(a.ip()))
                .or_else(|| s.as_sockaddr_in6().map(|a| IpAddr::V6(a.ip())))
        };
        if let Some(addr) = ip(&address) {
            let prefix = prefix_len(entry.netmask.as_ref().and_then(ip));
            interface.addresses.push(format!("{addr}/{prefix}"));
        } else if let Some(mac) = address.as_link_addr().and_then(|l| l.addr()) {
            interface.mac = Some(
                mac.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":"),
            );
        }
    }
    Ok(interfaces)
}

/// Every interface of the pod's network namespace.
pub async fn interfaces(
    proc_root: &ProcRoot,
    target: crate::process::ContainerProcess,
) -> Result<Vec<Interface>, DiagError> {
    let mut found = crate::enter::netns::run(target.clone(), LIMIT, addresses)
        .await?
        .map_err(|source| DiagError::Read {
            what: "the pod's interface addresses".into(),
            source,
        })?;
    let process =
        procfs::process::Process::new_with_root(proc_root.path().join(target.pid.to_string()))
            .map_err(|_| DiagError::Gone { pid: target.pid })?;
    if let Ok(counters) = process.dev_status() {
        for (name, c) in counters {
            let interface = found.entry(name.clone()).or_insert_with(|| Interface {
                name,
                ..Default::default()
            });
            interface.rx_bytes = c.recv_bytes;
            interface.rx_packets = c.recv_packets;
            interface.rx_errors = c.recv_errs;
            interface.rx_dropped = c.recv_drop;
            interface.tx_bytes = c.sent_bytes;
            interface.tx_packets = c.sent_packets;
            interface.tx_errors = c.sent_errs;
            interface.tx_dropped = c.sent_drop;
        }
    }
    Ok(found.into_values().collect())
}

/// The pod's IPv4 routes.
pub fn routes(proc_root: &ProcRoot, pid: u32) -> Result<Vec<Route>, DiagError> {
    let process = procfs::process::Process::new_with_root(proc_root.path().join(pid.to_string()))
        .map_err(|_| DiagError::Gone { pid })?;
    let entries = process.route().map_err(|source| DiagError::Proc {
        what: "read the pod's routes".into(),
        source,
    })?;
    Ok(entries
        .into_iter()
        .map(|r| Route {
            destination: format!("{}/{}", r.destination, u32::from(r.mask).count_ones()),
            gateway: (!r.gateway.is_unspecified()).then(|| r.gateway.to_string()),
            interface: r.iface,
            metric: r.metrics,
            flags: r.flags,
        })
        .collect())
}
