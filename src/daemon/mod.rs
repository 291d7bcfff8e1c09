//! Daemon parts that are not the pod engine: the static pod source, the
//! state root's lock and the systemd notification protocol. The daemon's main loop is
//! `cli::daemon` (the binary edge).

pub mod root_lock;
pub mod static_pods;

/// `sd_notify(3)`: sends `msg` (`READY=1`, `STATUS=…`) to `$NOTIFY_SOCKET`
/// when systemd gave one; nothing otherwise.
pub fn sd_notify(msg: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let p = path.to_string_lossy().into_owned();
    let sent = if let Some(name) = p.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .and_then(|a| sock.send_to_addr(msg.as_bytes(), &a))
    } else {
        sock.send_to(msg.as_bytes(), &p)
    };
    if let Err(e) = sent {
        tracing::warn!(error = %e, "sd_notify");
    }
}

/// Half of systemd's watchdog period (`WatchdogSec=`, given to the service
/// as `$WATCHDOG_USEC`), how often to send `WATCHDOG=1`; none without one.
pub fn watchdog_interval() -> Option<std::time::Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Some(pid) = std::env::var("WATCHDOG_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
    {
        if pid != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| std::time::Duration::from_micros(usec / 2))
}
