//! Writes an OCI bundle `config.json` from nodelet's container plan, for a
//! rootfs directory `DIR/rootfs`, so runc, crun and `nodelet run-container`
//! can run the same bundle (`make bench`):
//!
//!     [CGROUP=/path] [SECCOMP=runtime-default] [DEVICES=all] \
//!         cargo run --example bundle -- DIR ARGS...
//!
//! SECCOMP=runtime-default confines the container with containerd's
//! default profile (as a pod gets by default); DEVICES=all lifts the
//! device allowlist (every container has it otherwise).

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next() else {
        eprintln!("usage: bundle DIR ARGS...");
        std::process::exit(2);
    };
    let argv: Vec<String> = args.collect();
    let mut cfg = nodelet::runtime::plan::ContainerConfig::new(
        nodelet::runtime::plan::Rootfs::Dir("rootfs".into()),
        argv,
    );
    cfg.hostname = "bench".into();
    // CGROUP=/path: run in that cgroup (linux.cgroupsPath), as runc would.
    cfg.cgroup_path = std::env::var("CGROUP").ok().filter(|p| !p.is_empty());
    if std::env::var("SECCOMP").as_deref() == Ok("runtime-default") {
        cfg.seccomp = Some(nodelet::runtime::seccomp::runtime_default(
            &cfg.capabilities(),
        ));
    }
    let mut spec = match nodelet::runtime::plan::build_spec(&cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    if std::env::var("DEVICES").as_deref() == Ok("all") {
        if let Some(r) = spec
            .linux_mut()
            .as_mut()
            .and_then(|l| l.resources_mut().as_mut())
        {
            r.set_devices(None);
        }
    }
    let path = std::path::Path::new(&dir).join("config.json");
    let text = serde_json::to_string_pretty(&spec).unwrap_or_default();
    if let Err(e) = std::fs::write(&path, text) {
        eprintln!("write {}: {e}", path.display());
        std::process::exit(1);
    }
}
