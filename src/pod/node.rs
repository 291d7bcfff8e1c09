//! Facts about this node: its name, its IP, its allocatable cpu and memory
//! (what `fieldRef`/`resourceFieldRef` read and `status.hostIP` shows).

use std::net::UdpSocket;

use super::container::Downward;
use super::status::NodeFacts;

/// The node name: configured, else the host name lowercased (as kubelet's
/// `--hostname-override` default).
pub fn node_name(configured: &str) -> String {
    if !configured.is_empty() {
        return configured.to_string();
    }
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
        .to_lowercase()
}

/// The address of the interface that holds the default route, found by
/// "connecting" a UDP socket (no packet is sent); loopback without one.
pub fn host_ip() -> String {
    UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("192.0.2.1:9")?;
            s.local_addr()
        })
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|_| "127.0.0.1".into())
}

fn mem_total_bytes() -> i128 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<i128>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Node facts for statuses and the downward API.
pub fn facts(configured_name: &str) -> (NodeFacts, Downward) {
    let ip = host_ip();
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    (
        NodeFacts {
            host_ip: ip.clone(),
            pod_ip: String::new(),
        },
        Downward {
            node_name: node_name(configured_name),
            host_ip: ip,
            pod_ip: String::new(),
            node_cpu_millis: i128::try_from(cpus).unwrap_or(1) * 1000,
            node_memory_bytes: mem_total_bytes(),
        },
    )
}
