//! `nodelet run FILE…`: the pods in the foreground, with the API on the
//! socket meanwhile (so `get`, `describe`, `logs`, `exec`, `delete` work
//! against it). Events go to stderr as
//! they happen; Ctrl-C or SIGTERM stops every pod gracefully (a second one
//! kills at once); at exit `-o json|yaml` prints the final pods as a `v1`
//! `List`. Exit 0 when every pod Succeeded, 1 when any did not, 2 on bad
//! input.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use k8s_openapi::api::core::v1::Pod;

use super::{DataOutput, GlobalArgs};
use crate::config::{CgroupDriver, NodeletConfiguration};
use crate::image::store::{ImageStore, PullOptions};
use crate::manifest::support::Support;
use crate::manifest::{self, PrepareOptions};
use crate::pod::engine::Engine;
use crate::pod::events::{Event, EventType, Recorder};
use crate::pod::images::StoreImages;
use crate::pod::objects::Objects;
use crate::pod::resources::CgroupLayout;
use crate::pod::worker::Deps;
use crate::runtime::cgroup::{self, Cgroups};
use crate::runtime::native::client::NativeRuntime;

pub type NodeEngine = Engine<NativeRuntime, StoreImages>;

/// The API this host serves: the pod routes over `engine` and the image
/// routes over its store.
pub fn node_api(engine: &Arc<NodeEngine>, cfg: &NodeletConfiguration) -> axum::Router {
    let images = engine.images();
    let auth_cfg = cfg.clone();
    let store = images.store().clone();
    let e = engine.clone();
    let api = crate::api::images::ImageApi {
        store: images.store().clone(),
        options: images.options().clone(),
        creds: Box::new(move |registry| {
            super::image::credentials_for(registry, None, &auth_cfg)
                .ok()
                .flatten()
        }),
        in_use: Box::new(move || crate::pod::images::in_use(&e.list(), &store)),
    };
    crate::api::server::router(engine.clone())
        .merge(crate::api::images::router(Arc::new(api)))
        .merge(crate::api::objects::router(engine.objects().clone()))
        .layer(axum::middleware::from_fn(
            crate::api::body::trim_after_large_bodies,
        ))
}

/// The engine on this host: native runtime, the image store under the
/// root directory, node facts; with the root's lock, which the caller
/// holds for as long as it runs the engine.
pub fn node_engine(
    cfg: &NodeletConfiguration,
    objects: Option<Objects>,
    state_dir: Option<std::path::PathBuf>,
) -> anyhow::Result<(Arc<NodeEngine>, crate::daemon::root_lock::RootLock)> {
    // First: a second process on this root must change nothing.
    let lock = crate::daemon::root_lock::acquire(&cfg.root_dir)?;
    // None: the daemon's own store, under the root it now holds.
    let objects = match objects {
        Some(o) => o,
        None => {
            let dir = cfg.root_dir.join("state").join("objects");
            Objects::open(&dir)
                .with_context(|| format!("open object store in {}", dir.display()))?
        }
    };
    let store = ImageStore::open(&cfg.root_dir)
        .with_context(|| format!("open image store in {}", cfg.root_dir.display()))?;
    // The state root holds pod records, bundles and volumes: root only.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cfg.root_dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restrict {} to root (0700)", cfg.root_dir.display()))?;
    }
    let auth_cfg = cfg.clone();
    let images = StoreImages::new(
        store,
        PullOptions {
            insecure: cfg.registries.insecure.clone(),
            max_concurrent_downloads: usize::try_from(cfg.max_concurrent_downloads).unwrap_or(3),
            ..Default::default()
        },
        Box::new(move |registry| {
            super::image::credentials_for(registry, None, &auth_cfg)
                .ok()
                .flatten()
        }),
        if cfg.serialize_image_pulls {
            1
        } else if cfg.max_parallel_image_pulls == 0 {
            tokio::sync::Semaphore::MAX_PERMITS
        } else {
            usize::try_from(cfg.max_parallel_image_pulls).unwrap_or(1)
        },
    );
    let log_max = crate::quantity::Quantity::parse(&cfg.container_log_max_size)
        .map(|q| u64::try_from(q.value_ceil()).unwrap_or(u64::MAX))
        .context("containerLogMaxSize")?;
    let exe = std::env::current_exe().context("find the nodelet binary for shims")?;
    let run_dir = cfg
        .socket
        .parent()
        .map_or_else(
            || std::path::PathBuf::from("/run/nodelet"),
            std::path::Path::to_path_buf,
        )
        .join("pods");
    let cgroups = node_cgroups(cfg)?;
    // The daemon's many fds need more than a shell's soft limit; the
    // shims it launches get the original back (`shim::launch`).
    crate::sys::raise_nofile();
    // The instance is its state root (one owner per root: the root lock).
    let owner = std::fs::canonicalize(&cfg.root_dir).unwrap_or_else(|_| cfg.root_dir.clone());
    let runtime = NativeRuntime::new(&run_dir, &exe, log_max, cfg.container_log_max_files)
        .with_cgroups(cgroups)
        .with_owner(&owner.display().to_string());
    let (node, downward) = crate::pod::node::facts(&cfg.node_name);
    let engine = Engine::new(Deps {
        runtime: Arc::new(runtime),
        images: Arc::new(images),
        events: Arc::new(Recorder::default()),
        objects,
        pods_dir: cfg.root_dir.join("pods"),
        log_dir: cfg.log_dir.clone(),
        node,
        downward,
        state_dir,
        cgroups: Some(CgroupLayout {
            root: cfg.cgroup_root.clone(),
            pod_pids_limit: cfg.pod_pids_limit,
        }),
        security: crate::pod::security::SecurityDefaults {
            seccomp_default: cfg.seccomp_default,
            seccomp_root: cfg.root_dir.join("seccomp"),
        },
    });
    engine.set_max_pods(cfg.max_pods);
    Ok((engine, lock))
}

/// The host's cgroup interface, with `cgroupRoot` created and writable:
/// a clear start-up error otherwise. Also lowers our own oom_score_adj as
/// kubelet does (-999); without CAP_SYS_RESOURCE that, and Guaranteed
/// containers' -997, cannot be had: said once here.
fn node_cgroups(cfg: &NodeletConfiguration) -> anyhow::Result<Arc<dyn Cgroups>> {
    if cfg.cgroup_driver == CgroupDriver::Systemd {
        anyhow::bail!("cgroupDriver: systemd is not supported yet; use cgroupfs (the default)");
    }
    let cg: Arc<dyn Cgroups> = Arc::from(cgroup::detect().context("cgroups")?);
    // An existing root may still be read-only: a child made and removed
    // proves every hierarchy takes new cgroups.
    let probe = format!(
        "{}/.probe-{}",
        cfg.cgroup_root.trim_end_matches('/'),
        std::process::id()
    );
    cg.create(&probe, &cgroup::Resources::default())
        .and_then(|()| cg.remove(&probe))
        .with_context(|| {
            format!(
                "cgroup root {} (cgroupRoot) is not writable in the cgroup v{} hierarchy",
                cfg.cgroup_root,
                cg.version()
            )
        })?;
    if std::fs::write("/proc/self/oom_score_adj", "-999").is_err() {
        tracing::warn!(
            "cannot lower oom_score_adj (no CAP_SYS_RESOURCE): nodelet and Guaranteed containers keep the inherited score"
        );
    }
    Ok(cg)
}

fn print_event(e: &Event) {
    let t = crate::time::rfc3339(e.last);
    let count = if e.count > 1 {
        format!(" (x{})", e.count)
    } else {
        String::new()
    };
    let at = if e.field_path.is_empty() {
        String::new()
    } else {
        format!(" {}", e.field_path)
    };
    eprintln!(
        "{t} {}/{} {} {}{at}: {}{count}",
        e.pod.namespace,
        e.pod.name,
        e.type_.as_str(),
        e.reason,
        e.message
    );
}

pub fn run(
    global: &GlobalArgs,
    files: &[String],
    output: Option<DataOutput>,
    strict: bool,
) -> anyhow::Result<ExitCode> {
    let prepared = manifest::prepare(files, PrepareOptions { strict });
    for d in &prepared.diagnostics {
        eprintln!("{d}");
    }
    if prepared.has_errors() || prepared.exit_code() != 0 {
        return Ok(ExitCode::from(2));
    }
    if prepared.pods.is_empty() {
        eprintln!("error: no pods in {}", files.join(", "));
        return Ok(ExitCode::from(2));
    }
    let cfg = super::effective_config(global)?;
    let rt = super::async_runtime()?;
    rt.block_on(async move {
        let objects = Objects::new(prepared.config_maps, prepared.secrets);
        let (engine, _root_lock) = node_engine(&cfg, Some(objects), None)?;
        let listener = crate::api::server::bind(&cfg.socket)?;
        let api = crate::api::server::Server::start(listener, node_api(&engine, &cfg));
        let mut events = engine.events().subscribe();
        let printer = tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(e) => print_event(&e),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        eprintln!("({n} events not shown)");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        for m in prepared.pods {
            let fields: Vec<String> = m
                .unsupported
                .iter()
                .filter(|f| f.support == Support::NotSupportedYet)
                .map(|f| f.path.clone())
                .collect();
            let h = engine.add(m.pod).with_context(|| format!("{}", m.origin))?;
            if !fields.is_empty() {
                engine.events().record(
                    &h.pod_ref,
                    EventType::Warning,
                    "FieldsNotSupported",
                    "",
                    format!("nodelet does not act on these fields yet: {}", fields.join(", ")),
                    std::time::SystemTime::now(),
                );
            }
        }
        let stopper = engine.clone();
        let signals = tokio::spawn(async move {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            let mut grace = None;
            loop {
                tokio::select! {
                    r = tokio::signal::ctrl_c() => r?,
                    _ = term.recv() => {}
                }
                eprintln!(
                    "{}",
                    if grace.is_none() {
                        "stopping every pod gracefully (again to kill at once)"
                    } else {
                        "killing every pod"
                    }
                );
                stopper.delete_all(grace);
                grace = Some(0);
            }
            #[allow(unreachable_code)]
            Ok::<(), std::io::Error>(())
        });
        engine.wait_all().await;
        signals.abort();
        api.stop().await;
        let _ = std::fs::remove_file(&cfg.socket);
        // Let the printer drain what is queued.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        printer.abort();
        let pods: Vec<Pod> = engine.list();
        if let Some(format) = output {
            let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": pods});
            let text = match format {
                DataOutput::Json => serde_json::to_string_pretty(&list).context("encode pods as JSON")? + "\n",
                DataOutput::Yaml => serde_norway::to_string(&list).context("encode pods as YAML")?,
            };
            print!("{text}");
        }
        let all_succeeded = pods
            .iter()
            .all(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded"));
        Ok(ExitCode::from(if all_succeeded { 0 } else { 1 }))
    })
}
