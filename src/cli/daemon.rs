//! `nodelet daemon`: the node agent as a service. Re-adopts the pods a
//! previous daemon left (their shims kept running), garbage-collects
//! sandboxes nobody wants, runs the static pod source (inotify plus a full
//! resync every 20 s) and the API, and tells systemd it is ready. SIGTERM
//! or SIGINT stops the daemon and leaves the pods running (kubelet's
//! behaviour) unless `--stop-pods-on-exit`, which stops every pod
//! gracefully and forgets them (static pods start again with the next
//! daemon).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use super::run::{node_engine, NodeEngine};
use super::GlobalArgs;
use crate::daemon::{sd_notify, static_pods};
use crate::pod::store;
use crate::runtime::api::Runtime;

/// kubelet's `fileCheckFrequency`.
const RESYNC: Duration = Duration::from_secs(20);

/// Watches `dir` with inotify from a plain thread; each event becomes a
/// wake-up on the returned channel.
fn watch(dir: &Path) -> tokio::sync::mpsc::UnboundedReceiver<()> {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        let Ok(ino) = Inotify::init(InitFlags::IN_CLOEXEC) else {
            return;
        };
        let flags = AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MODIFY
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_CLOSE_WRITE;
        if ino.add_watch(&dir, flags).is_err() {
            return;
        }
        while ino.read_events().is_ok() {
            if tx.send(()).is_err() {
                return;
            }
        }
    });
    rx
}

/// Brings the static pods in line with the directory. True when something
/// must be retried soon (a replaced pod still terminating).
fn reconcile(
    engine: &std::sync::Arc<NodeEngine>,
    dir: &Path,
    node: &str,
    errors: &mut HashMap<PathBuf, String>,
) -> bool {
    let entries = static_pods::scan(dir, node);
    let mut statuses: Vec<crate::pod::engine::SourceStatus> = entries
        .iter()
        .map(|e| crate::pod::engine::SourceStatus {
            source: "file".into(),
            path: e.path.display().to_string(),
            pod: e.result.as_ref().ok().map(|p| {
                format!(
                    "{}/{}",
                    p.metadata.namespace.as_deref().unwrap_or_default(),
                    p.metadata.name.as_deref().unwrap_or_default()
                )
            }),
            error: e.result.as_ref().err().cloned(),
        })
        .collect();
    let mut desired = HashMap::new();
    for e in entries {
        match e.result {
            Ok(p) => {
                errors.remove(&e.path);
                desired.insert(p.metadata.uid.clone().unwrap_or_default(), (p, e.path));
            }
            Err(msg) => {
                if errors.get(&e.path) != Some(&msg) {
                    tracing::error!(file = %e.path.display(), error = %msg, "static pod file skipped");
                }
                errors.insert(e.path, msg);
            }
        }
    }
    let current: Vec<(String, String, String)> = engine
        .list()
        .into_iter()
        .filter(|p| crate::pod::config_source(p) == "file")
        .map(|p| {
            (
                p.metadata.namespace.clone().unwrap_or_default(),
                p.metadata.name.clone().unwrap_or_default(),
                p.metadata.uid.clone().unwrap_or_default(),
            )
        })
        .collect();
    let have: HashSet<&String> = current.iter().map(|(_, _, u)| u).collect();
    for (ns, name, uid) in &current {
        let deleting = engine
            .get(ns, name)
            .is_some_and(|h| h.pod().metadata.deletion_timestamp.is_some());
        if !desired.contains_key(uid) && !deleting {
            tracing::info!(pod = %name, "static pod removed or changed: stopping it");
            let _ = engine.delete(ns, name, None);
        }
    }
    let mut retry = false;
    for (uid, (pod, path)) in desired {
        if have.contains(&uid) {
            continue;
        }
        match engine.add(pod) {
            Ok(h) => tracing::info!(pod = %h.pod_ref.name, "static pod added"),
            Err(crate::pod::engine::EngineError::AlreadyExists { .. }) => retry = true,
            Err(e) => {
                tracing::error!(error = %e, "static pod not added");
                // `get sources` says why the file's pod does not run.
                let shown = path.display().to_string();
                if let Some(s) = statuses.iter_mut().find(|s| s.path == shown) {
                    s.pod = None;
                    s.error = Some(e.to_string());
                }
            }
        }
    }
    engine.set_sources(statuses);
    retry
}

/// Pods whose record could not be read never die of it. A static pod is
/// rebuilt from its file (the same UID) and what its shim reports: a
/// worker restored with an empty state adopts the live sandbox and the
/// started containers their intents name. Any other is left running,
/// untracked (counted in `adopted`, so no GC takes it), shown by
/// `get pods`, and its UID and name are refused.
fn keep_unreadable_pods(
    engine: &NodeEngine,
    unreadable: Vec<crate::pod::store::Unreadable>,
    static_pods: &HashMap<String, k8s_openapi::api::core::v1::Pod>,
    adopted: &mut HashSet<String>,
) {
    for u in unreadable {
        tracing::error!(
            uid = %u.uid,
            record = %u.kept_at.display(),
            error = %u.error,
            "pod record unreadable"
        );
        adopted.insert(u.uid.clone());
        if let Some(pod) = static_pods.get(&u.uid) {
            let saved = crate::pod::store::Saved {
                pod: pod.clone(),
                state: crate::pod::state::PodState {
                    start_time: Some(std::time::SystemTime::now()),
                    ..Default::default()
                },
                status: None,
            };
            match engine.add_restored(pod.clone(), Some(saved)) {
                Ok(h) => {
                    tracing::warn!(pod = %h.pod_ref.name, "static pod rebuilt from its file");
                    let why = format!(
                        "The pod's record could not be read ({}; kept at {}): rebuilt from its static file and the containers its sandbox runs",
                        u.error,
                        u.kept_at.display()
                    );
                    record_unreadable(engine, &h.pod_ref, why);
                    continue;
                }
                Err(e) => tracing::error!(error = %e, "static pod not rebuilt"),
            }
        }
        if let Some((namespace, name)) = u.named.clone() {
            let pod = crate::pod::events::PodRef {
                namespace,
                name,
                uid: u.uid.clone(),
            };
            record_unreadable(engine, &pod, crate::pod::engine::unreadable_message(&u));
        }
        engine.keep_unreadable(u);
    }
}

/// The pod's `PodRecordUnreadable` Warning event.
fn record_unreadable(engine: &NodeEngine, pod: &crate::pod::events::PodRef, message: String) {
    engine.events().record(
        pod,
        crate::pod::events::EventType::Warning,
        "PodRecordUnreadable",
        "",
        message,
        std::time::SystemTime::now(),
    );
}

/// One round of image GC: the images no live pod uses, least recently
/// used first, while the image filesystem is over the high threshold.
fn collect_images(
    engine: &NodeEngine,
    cfg: &crate::config::NodeletConfiguration,
    tracker: &mut crate::image::gc::Tracker,
) -> anyhow::Result<()> {
    use crate::image::gc;
    let store = engine.images().store();
    let stored: Vec<(String, u64)> = store
        .list()?
        .into_iter()
        .map(|r| (r.name, r.size))
        .collect();
    let in_use: std::collections::BTreeSet<String> =
        crate::pod::images::in_use(&engine.list(), store)
            .into_keys()
            .collect();
    let now = std::time::SystemTime::now();
    tracker.observe(&stored, &in_use, now);
    let usage = gc::fs_usage(&cfg.root_dir)?;
    let policy = gc::Policy {
        high_percent: cfg.image_gc_high_threshold_percent,
        low_percent: cfg.image_gc_low_threshold_percent,
        min_age: cfg.image_minimum_gc_age(),
    };
    let plan = tracker.plan(policy, usage, &stored, &in_use, now);
    if plan.to_free == 0 {
        return Ok(());
    }
    tracing::info!(
        used_percent = usage.used_percent(),
        to_free = plan.to_free,
        "image filesystem over imageGCHighThresholdPercent"
    );
    for (name, size) in &plan.remove {
        match store.remove(name, false, &[]) {
            Ok(_) => tracing::info!(image = %name, size, "image garbage-collected"),
            Err(e) => {
                tracing::warn!(image = %name, error = %crate::error_chain(&e), "image not removed")
            }
        }
    }
    if !plan.remove.is_empty() {
        let (blobs, snapshots) = store.prune()?;
        tracing::info!(blobs, snapshots, "unreferenced content removed");
    }
    if plan.freed() < plan.to_free {
        // kubelet's message for the same shortfall.
        tracing::warn!(
            "Failed to garbage collect required amount of images. Attempted to free {} bytes, but only found {} bytes eligible to free.",
            plan.to_free,
            plan.freed()
        );
    }
    let left: Vec<(String, u64)> = store
        .list()?
        .into_iter()
        .map(|r| (r.name, r.size))
        .collect();
    tracker.observe(&left, &in_use, now);
    Ok(())
}

/// Runs image GC every `imageGCPeriod`.
fn spawn_image_gc(
    engine: std::sync::Arc<NodeEngine>,
    cfg: crate::config::NodeletConfiguration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tracker = crate::image::gc::Tracker::default();
        let mut tick = tokio::time::interval(cfg.image_gc_period());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (e, c) = (engine.clone(), cfg.clone());
            let t = std::mem::take(&mut tracker);
            match tokio::task::spawn_blocking(move || {
                let mut t = t;
                let r = collect_images(&e, &c, &mut t);
                (t, r)
            })
            .await
            {
                Ok((t, r)) => {
                    tracker = t;
                    if let Err(err) = r {
                        tracing::error!(error = %format!("{err:#}"), "image garbage collection failed");
                    }
                }
                Err(err) => tracing::error!(error = %err, "image garbage collection task failed"),
            }
        }
    })
}

pub fn run(global: &GlobalArgs, stop_pods_on_exit: bool) -> anyhow::Result<ExitCode> {
    let cfg = super::effective_config(global)?;
    let rt = super::async_runtime()?;
    rt.block_on(async move {
        let state_dir = cfg.root_dir.join("state").join("pods");
        let (engine, _root_lock) = node_engine(&cfg, None, Some(state_dir.clone()))?;
        engine.forget_deleted(true);
        let listener = crate::api::server::bind(&cfg.socket)?;
        let node = crate::pod::node::node_name(&cfg.node_name);
        // Re-adopt what the previous daemon saved; pods whose static file
        // went away meanwhile are stopped.
        let desired_static: HashMap<String, k8s_openapi::api::core::v1::Pod> = cfg
            .static_pod_path
            .as_deref()
            .map(|d| static_pods::scan(d, &node))
            .unwrap_or_default()
            .into_iter()
            .filter_map(|e| e.result.ok())
            .map(|p| (p.metadata.uid.clone().unwrap_or_default(), p))
            .collect();
        let mut adopted = HashSet::new();
        let (saved_pods, unreadable) = store::load_all(&state_dir);
        keep_unreadable_pods(&engine, unreadable, &desired_static, &mut adopted);
        for saved in saved_pods {
            let pod = saved.pod.clone();
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            let gone =
                crate::pod::config_source(&pod) == "file" && !desired_static.contains_key(&uid);
            let (ns, name) = (
                pod.metadata.namespace.clone().unwrap_or_default(),
                pod.metadata.name.clone().unwrap_or_default(),
            );
            let deleting = pod.metadata.deletion_timestamp.is_some();
            match engine.add_restored(pod, Some(saved)) {
                Ok(_) => {
                    adopted.insert(uid);
                    if gone {
                        let _ = engine.delete(&ns, &name, None);
                    } else if deleting {
                        // Deleted before the restart: its worker finishes
                        // the termination, then the pod leaves.
                        engine.forget_when_done(&ns, &name);
                    }
                }
                Err(e) => tracing::error!(error = %e, "saved pod not re-adopted"),
            }
        }
        // This instance's sandboxes no saved pod owns (a daemon killed
        // mid-create) go, with their cgroups and whatever runs in them.
        // Pod cgroups and sandboxes of other nodelet instances on the host
        // (a `nodelet run` beside this daemon, a second daemon on another
        // root sharing `cgroupRoot`) are theirs: the runtime lists only
        // the sandboxes this instance recorded as its own before making
        // them.
        for id in engine.runtime().list_sandboxes().await.unwrap_or_default() {
            if !adopted.contains(&id) {
                tracing::warn!(sandbox = %id, "removing a sandbox no pod owns");
                if let Err(e) = engine.runtime().remove_sandbox(&id).await {
                    tracing::error!(sandbox = %id, error = %crate::error_chain(&e), "sandbox not removed");
                }
            }
        }
        for e in std::fs::read_dir(cfg.root_dir.join("pods"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let id = e.file_name().to_string_lossy().into_owned();
            if !adopted.contains(&id) {
                let _ = crate::pod::volumes::teardown(&e.path());
                crate::pod::logs::remove_orphan_logs(&cfg.log_dir, &id);
            }
        }
        let api = crate::api::server::Server::start(listener, super::run::node_api(&engine, &cfg));
        let image_gc = spawn_image_gc(engine.clone(), cfg.clone());
        let mut errors = HashMap::new();
        let mut wakes = cfg.static_pod_path.as_deref().map(watch);
        if let Some(d) = cfg.static_pod_path.as_deref() {
            reconcile(&engine, d, &node, &mut errors);
        }
        sd_notify(&format!("READY=1\nSTATUS={} pods", engine.list().len()));
        let watchdog = crate::daemon::watchdog_interval().map(|every| {
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    sd_notify("WATCHDOG=1");
                }
            })
        });
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut retry = false;
        loop {
            let wait = if retry {
                Duration::from_secs(1)
            } else {
                RESYNC
            };
            let inotify = async {
                match wakes.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                _ = inotify => {
                    // Let a burst of events (an editor's save) settle.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                () = tokio::time::sleep(wait) => {}
            }
            if let Some(d) = cfg.static_pod_path.as_deref() {
                retry = reconcile(&engine, d, &node, &mut errors);
            }
            sd_notify(&format!("STATUS={} pods", engine.list().len()));
        }
        sd_notify("STOPPING=1");
        if stop_pods_on_exit {
            // Wait for every worker here (not in forget tasks), then drop
            // the records: static pods start afresh with the next daemon,
            // API pods are gone.
            engine.forget_deleted(false);
            engine.delete_all(None);
            engine.wait_all().await;
            for (_, _, uid) in engine.uids() {
                store::remove(&state_dir, &uid);
            }
        }
        api.stop().await;
        image_gc.abort();
        if let Some(w) = watchdog {
            w.abort();
        }
        let _ = std::fs::remove_file(&cfg.socket);
        Ok(ExitCode::SUCCESS)
    })
}
