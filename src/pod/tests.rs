//! Planner, status and worker tests: table-driven, no containers, no
//! sleeping in the planner and status tests (the clock is a parameter).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Pod, PodStatus};

use super::backoff::Backoff;
use super::planner::{backoff_key, plan, Action};
use super::state::{Instance, Kind, Phase, PodState, Sandbox, Termination, Waiting};
use super::status::{generate, NodeFacts};

fn t(s: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
}

/// A pod from a compact description: `policy`, init container names
/// (`s:` prefix = sidecar) and app container names.
fn pod(policy: &str, inits: &[&str], apps: &[&str]) -> Pod {
    let c = |n: &str| {
        let (name, sidecar) = n.strip_prefix("s:").map_or((n, false), |x| (x, true));
        let mut v = serde_json::json!({"name": name, "image": "busybox"});
        if sidecar {
            v["restartPolicy"] = "Always".into();
        }
        v
    };
    let mut spec = serde_json::json!({
        "restartPolicy": policy,
        "containers": apps.iter().map(|n| c(n)).collect::<Vec<_>>(),
    });
    if !inits.is_empty() {
        spec["initContainers"] = inits.iter().map(|n| c(n)).collect::<Vec<_>>().into();
    }
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "p", "namespace": "default", "uid": "u-1"},
        "spec": spec,
    }))
    .unwrap()
}

fn inst(phase: Phase, code: i32, at: u64) -> Instance {
    Instance {
        id: format!("id-{at}"),
        restart_count: 0,
        phase,
        started_at: Some(t(at)),
        finished_at: (phase == Phase::Exited).then(|| t(at)),
        exit_code: code,
        signal: None,
        reason: match (phase, code) {
            (Phase::Exited, 0) => "Completed".into(),
            (Phase::Exited, _) => "Error".into(),
            _ => String::new(),
        },
        message: String::new(),
        image: "docker.io/library/busybox:latest".into(),
        image_id: "docker.io/library/busybox@sha256:abc".into(),
        stop_signal: 15,
    }
}

/// A ready sandbox with containers in the given states.
fn state(list: &[(&str, Instance)]) -> PodState {
    let mut st = PodState {
        sandbox: Sandbox::Ready,
        start_time: Some(t(0)),
        ..Default::default()
    };
    for (n, i) in list {
        let cs = st.container_mut(n);
        let running = i.phase == Phase::Running;
        cs.push(i.clone());
        cs.started = running;
        cs.ready = running;
    }
    st
}

fn starts(p: &super::planner::Plan) -> Vec<String> {
    p.actions
        .iter()
        .map(|a| match a {
            Action::CreateSandbox => "sandbox".into(),
            Action::Start { name, .. } => format!("start {name}"),
            Action::Terminate(t) => format!("terminate {t:?}"),
        })
        .collect()
}

use Phase::{Exited, Running};

#[test]
fn planner_table() {
    let none: &[(&str, Instance)] = &[];
    let cases: Vec<(&str, Pod, PodState, Vec<&str>)> = vec![
        (
            "no sandbox yet",
            pod("Always", &["i1"], &["a"]),
            PodState::default(),
            vec!["sandbox"],
        ),
        (
            "first init only",
            pod("Always", &["i1", "i2"], &["a"]),
            state(none),
            vec!["start i1"],
        ),
        (
            "init running: wait",
            pod("Always", &["i1", "i2"], &["a"]),
            state(&[("i1", inst(Running, 0, 1))]),
            vec![],
        ),
        (
            "init 1 done: init 2",
            pod("Always", &["i1", "i2"], &["a"]),
            state(&[("i1", inst(Exited, 0, 1))]),
            vec!["start i2"],
        ),
        (
            "inits done: every app container at once",
            pod("Always", &["i1"], &["a", "b"]),
            state(&[("i1", inst(Exited, 0, 1))]),
            vec!["start a", "start b"],
        ),
        (
            "failed init under Never: pod fails",
            pod("Never", &["i1", "i2"], &["a"]),
            state(&[("i1", inst(Exited, 0, 1)), ("i2", inst(Exited, 1, 2))]),
            vec!["terminate InitFailed"],
        ),
        (
            "failed init under OnFailure: same one again",
            pod("OnFailure", &["i1", "i2"], &["a"]),
            state(&[("i1", inst(Exited, 0, 1)), ("i2", inst(Exited, 1, 2))]),
            vec!["start i2"],
        ),
        (
            "no init: all apps",
            pod("Always", &[], &["a", "b"]),
            state(none),
            vec!["start a", "start b"],
        ),
        (
            "Always restarts success",
            pod("Always", &[], &["a"]),
            state(&[("a", inst(Exited, 0, 1))]),
            vec!["start a"],
        ),
        (
            "OnFailure: done on 0",
            pod("OnFailure", &[], &["a"]),
            state(&[("a", inst(Exited, 0, 1))]),
            vec!["terminate Completed"],
        ),
        (
            "OnFailure: restart on 1",
            pod("OnFailure", &[], &["a"]),
            state(&[("a", inst(Exited, 1, 1))]),
            vec!["start a"],
        ),
        (
            "Never: done on 1",
            pod("Never", &[], &["a"]),
            state(&[("a", inst(Exited, 1, 1))]),
            vec!["terminate Completed"],
        ),
        (
            "Never: one done, one running: wait",
            pod("Never", &[], &["a", "b"]),
            state(&[("a", inst(Exited, 0, 1)), ("b", inst(Running, 0, 1))]),
            vec![],
        ),
        (
            "sidecar first",
            pod("Never", &["s:side", "i1"], &["a"]),
            state(none),
            vec!["start side"],
        ),
        (
            "sidecar started: next init",
            pod("Never", &["s:side", "i1"], &["a"]),
            state(&[("side", inst(Running, 0, 1))]),
            vec!["start i1"],
        ),
        (
            "sidecar exited during init restarts even under Never",
            pod("Never", &["s:side", "i1"], &["a"]),
            state(&[("side", inst(Exited, 1, 1))]),
            vec!["start side"],
        ),
        (
            "sidecar down once the inits after it ran: restarted, apps start anyway",
            pod("Never", &["s:side", "i1"], &["a"]),
            state(&[("side", inst(Exited, 1, 3)), ("i1", inst(Exited, 0, 2))]),
            vec!["start side", "start a"],
        ),
        (
            "apps done: sidecars do not keep the pod",
            pod("Never", &["s:side"], &["a"]),
            {
                let mut s = state(&[("side", inst(Running, 0, 1)), ("a", inst(Exited, 0, 2))]);
                s.initialized = true;
                s
            },
            vec!["terminate Completed"],
        ),
        (
            "sidecar exited after init restarts",
            pod("Never", &["s:side"], &["a"]),
            {
                let mut s = state(&[("side", inst(Exited, 0, 1)), ("a", inst(Running, 0, 2))]);
                s.initialized = true;
                s
            },
            vec!["start side"],
        ),
        (
            "initialized: completed inits are never re-run",
            pod("Always", &["i1"], &["a"]),
            {
                let mut s = state(&[("a", inst(Exited, 1, 5))]);
                s.initialized = true;
                s
            },
            vec!["start a"],
        ),
        (
            "sandbox died under Never after running: no new sandbox",
            pod("Never", &[], &["a"]),
            {
                let mut s = state(&[("a", inst(Exited, 137, 1))]);
                s.sandbox = Sandbox::Gone;
                s
            },
            vec!["terminate Completed"],
        ),
        (
            "sandbox died under Always: a new one",
            pod("Always", &[], &["a"]),
            {
                let mut s = state(&[("a", inst(Exited, 137, 1))]);
                s.sandbox = Sandbox::Gone;
                s
            },
            vec!["sandbox"],
        ),
        (
            "terminating: the planner stays out",
            pod("Always", &[], &["a"]),
            {
                let mut s = state(none);
                s.terminating = Some(Termination::Deleted {
                    grace_seconds: None,
                });
                s
            },
            vec![],
        ),
    ];
    for (what, p, st, want) in cases {
        let got = plan(&p, &st, t(100), &Backoff::default());
        assert_eq!(starts(&got), want, "{what}");
    }
}

#[test]
fn a_crashing_container_waits_in_crash_loop_back_off_and_wakes_when_it_ends() {
    let p = pod("Always", &[], &["a"]);
    let st = state(&[("a", inst(Exited, 1, 50))]);
    let mut b = Backoff::default();
    // First restart immediate; the start steps the back-off.
    assert_eq!(starts(&plan(&p, &st, t(50), &b)), ["start a"]);
    let key = backoff_key(&p, &p.spec.as_ref().unwrap().containers[0]);
    b.next(&key, t(50));
    // It crashed again at 50: 10 s of back-off.
    let got = plan(&p, &st, t(53), &b);
    assert!(got.actions.is_empty());
    assert_eq!(got.wake_at, Some(t(60)));
    assert_eq!(
        got.backoff,
        [(
            "a".to_string(),
            Waiting::new(
                "CrashLoopBackOff",
                "back-off 10s restarting failed container=a pod=p_default(u-1)"
            )
        )]
    );
    assert_eq!(starts(&plan(&p, &st, t(60), &b)), ["start a"]);
    b.next(&key, t(60));
    b.next(&key, t(70));
    let got = plan(&p, &st, t(50), &b);
    assert!(
        got.backoff[0].1.message.starts_with("back-off 40s"),
        "{:?}",
        got.backoff
    );
}

#[test]
fn a_failing_init_container_backs_off_and_apps_wait() {
    let p = pod("Always", &["i1"], &["a"]);
    let st = state(&[("i1", inst(Exited, 1, 10))]);
    let mut b = Backoff::default();
    b.next(
        &backoff_key(
            &p,
            &p.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[0],
        ),
        t(10),
    );
    let got = plan(&p, &st, t(12), &b);
    assert!(got.actions.is_empty());
    assert_eq!(got.backoff[0].0, "i1");
}

#[test]
fn active_deadline_fails_the_pod_and_wakes_the_worker_in_time() {
    let mut p = pod("Always", &[], &["a"]);
    p.spec.as_mut().unwrap().active_deadline_seconds = Some(30);
    let st = state(&[("a", inst(Running, 0, 1))]);
    let before = plan(&p, &st, t(10), &Backoff::default());
    assert_eq!(before.wake_at, Some(t(30)));
    let after = plan(&p, &st, t(30), &Backoff::default());
    assert_eq!(starts(&after), ["terminate DeadlineExceeded"]);
}

fn status_of(p: &Pod, st: &PodState) -> PodStatus {
    generate(
        p,
        st,
        &NodeFacts {
            host_ip: "10.0.0.5".into(),
            pod_ip: String::new(),
        },
        None,
        t(100),
    )
}

fn json(s: &PodStatus) -> serde_json::Value {
    serde_json::to_value(s).unwrap()
}

#[test]
fn phase_table() {
    let cases: Vec<(&str, Pod, PodState, &str)> = vec![
        (
            "nothing yet",
            pod("Always", &[], &["a"]),
            state(&[]),
            "Pending",
        ),
        (
            "running",
            pod("Always", &[], &["a"]),
            state(&[("a", inst(Running, 0, 1))]),
            "Running",
        ),
        (
            "Never, 0",
            pod("Never", &[], &["a"]),
            state(&[("a", inst(Exited, 0, 1))]),
            "Succeeded",
        ),
        (
            "Never, 1",
            pod("Never", &[], &["a"]),
            state(&[("a", inst(Exited, 1, 1))]),
            "Failed",
        ),
        (
            "OnFailure, 0",
            pod("OnFailure", &[], &["a"]),
            state(&[("a", inst(Exited, 0, 1))]),
            "Succeeded",
        ),
        (
            "OnFailure, 1",
            pod("OnFailure", &[], &["a"]),
            state(&[("a", inst(Exited, 1, 1))]),
            "Running",
        ),
        (
            "Always, 0",
            pod("Always", &[], &["a"]),
            state(&[("a", inst(Exited, 0, 1))]),
            "Running",
        ),
        (
            "init running",
            pod("Always", &["i"], &["a"]),
            state(&[("i", inst(Running, 0, 1))]),
            "Pending",
        ),
        (
            "init failed, Never",
            pod("Never", &["i"], &["a"]),
            state(&[("i", inst(Exited, 1, 1))]),
            "Failed",
        ),
        (
            "init failed, Always",
            pod("Always", &["i"], &["a"]),
            state(&[("i", inst(Exited, 1, 1))]),
            "Pending",
        ),
        (
            "sidecar killed after app success",
            pod("Never", &["s:side"], &["a"]),
            state(&[("side", inst(Exited, 137, 3)), ("a", inst(Exited, 0, 2))]),
            "Succeeded",
        ),
        (
            "one app running, one done",
            pod("Never", &[], &["a", "b"]),
            state(&[("a", inst(Exited, 1, 1)), ("b", inst(Running, 0, 1))]),
            "Running",
        ),
        (
            "deleted while running: terminal Failed",
            pod("Always", &[], &["a"]),
            {
                let mut s = state(&[("a", inst(Exited, 143, 1))]);
                s.terminating = Some(Termination::Deleted {
                    grace_seconds: None,
                });
                s.terminated = true;
                s
            },
            "Failed",
        ),
        (
            "deadline",
            pod("Always", &[], &["a"]),
            {
                let mut s = state(&[("a", inst(Running, 0, 1))]);
                s.terminating = Some(Termination::DeadlineExceeded);
                s
            },
            "Failed",
        ),
    ];
    for (what, p, st, want) in cases {
        assert_eq!(status_of(&p, &st).phase.as_deref(), Some(want), "{what}");
    }
}

#[test]
fn crash_loop_status_matches_kubelets_shape() {
    let p = pod("Always", &[], &["app"]);
    let mut st = state(&[("app", {
        let mut i = inst(Exited, 1, 33);
        i.restart_count = 3;
        i
    })]);
    st.container_mut("app").waiting = Some(Waiting::new(
        "CrashLoopBackOff",
        "back-off 40s restarting failed container=app pod=p_default(u-1)",
    ));
    st.initialized = true;
    let s = json(&status_of(&p, &st));
    assert_eq!(s["phase"], "Running");
    let c = &s["containerStatuses"][0];
    assert_eq!(c["state"]["waiting"]["reason"], "CrashLoopBackOff");
    assert_eq!(c["lastState"]["terminated"]["exitCode"], 1);
    assert_eq!(c["lastState"]["terminated"]["reason"], "Error");
    assert_eq!(
        c["lastState"]["terminated"]["containerID"],
        "nodelet://id-33"
    );
    assert_eq!(c["restartCount"], 3);
    assert_eq!(c["ready"], false);
    assert_eq!(c["started"], false);
    let ready = s["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap();
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "ContainersNotReady");
    assert_eq!(ready["message"], "containers with unready status: [app]");
    assert_eq!(s["hostIP"], "10.0.0.5");
    assert_eq!(s["qosClass"], "BestEffort");
}

#[test]
fn a_failed_init_container_under_never_shows_kubelets_conditions() {
    let p = pod("Never", &["init1", "init2"], &["app"]);
    let st = state(&[("init1", inst(Exited, 0, 1)), ("init2", inst(Exited, 1, 2))]);
    let s = json(&status_of(&p, &st));
    assert_eq!(s["phase"], "Failed");
    let conds = s["conditions"].as_array().unwrap();
    let types: Vec<&str> = conds.iter().map(|c| c["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "PodReadyToStartContainers",
            "Initialized",
            "Ready",
            "ContainersReady",
            "PodScheduled"
        ]
    );
    assert_eq!(conds[1]["status"], "False");
    assert_eq!(conds[1]["reason"], "ContainersNotInitialized");
    assert_eq!(
        conds[1]["message"],
        "containers with incomplete status: [init2]"
    );
    assert_eq!(conds[3]["reason"], "PodFailed");
    assert_eq!(
        s["containerStatuses"][0]["state"]["waiting"]["reason"],
        "PodInitializing"
    );
    assert_eq!(s["initContainerStatuses"][0]["ready"], true);
    assert_eq!(
        s["initContainerStatuses"][1]["state"]["terminated"]["exitCode"],
        1
    );
}

#[test]
fn not_yet_created_containers_wait_in_container_creating_or_pod_initializing() {
    let s = json(&status_of(&pod("Always", &[], &["b", "a"]), &state(&[])));
    // Sorted by name.
    assert_eq!(s["containerStatuses"][0]["name"], "a");
    assert_eq!(
        s["containerStatuses"][0]["state"]["waiting"]["reason"],
        "ContainerCreating"
    );
    assert_eq!(
        s["containerStatuses"][0]["lastState"],
        serde_json::json!({})
    );
    assert!(s.get("initContainerStatuses").is_none());
    let s = json(&status_of(&pod("Always", &["i"], &["a"]), &state(&[])));
    assert_eq!(
        s["initContainerStatuses"][0]["state"]["waiting"]["reason"],
        "PodInitializing"
    );
    assert_eq!(
        s["containerStatuses"][0]["state"]["waiting"]["reason"],
        "PodInitializing"
    );
}

#[test]
fn condition_transition_times_change_only_with_status() {
    let p = pod("Always", &[], &["a"]);
    let node = NodeFacts::default();
    let st0 = state(&[]);
    let s0 = generate(&p, &st0, &node, None, t(1));
    let st1 = state(&[("a", inst(Running, 0, 2))]);
    let s1 = generate(&p, &st1, &node, Some(&s0), t(5));
    let s2 = generate(&p, &st1, &node, Some(&s1), t(9));
    let time_of = |s: &PodStatus, ty: &str| {
        s.conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == ty)
            .unwrap()
            .last_transition_time
            .clone()
    };
    assert_eq!(time_of(&s1, "PodScheduled"), time_of(&s0, "PodScheduled"));
    assert_ne!(time_of(&s1, "Ready"), time_of(&s0, "Ready"));
    assert_eq!(time_of(&s2, "Ready"), time_of(&s1, "Ready"));
    // Terminal phases stick.
    let mut done = s2.clone();
    done.phase = Some("Succeeded".into());
    let s3 = generate(&p, &st1, &node, Some(&done), t(10));
    assert_eq!(s3.phase.as_deref(), Some("Succeeded"));
}

#[test]
fn init_containers_report_ready_when_done_and_started_while_running() {
    let p = pod("Always", &["i"], &["a"]);
    let s = json(&status_of(&p, &state(&[("i", inst(Running, 0, 1))])));
    assert_eq!(s["initContainerStatuses"][0]["started"], true);
    assert_eq!(s["initContainerStatuses"][0]["ready"], false);
    let s = json(&status_of(&p, &state(&[("i", inst(Exited, 0, 1))])));
    assert_eq!(s["initContainerStatuses"][0]["ready"], true);
    assert_eq!(s["initContainerStatuses"][0]["started"], false);
    assert_eq!(
        s["initContainerStatuses"][0]["state"]["terminated"]["reason"],
        "Completed"
    );
    let _ = Kind::App;
}

mod worker {
    use std::sync::Arc;
    use std::time::Duration;

    use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

    use crate::pod::engine::{Engine, EngineError};
    use crate::pod::events::Recorder;
    use crate::pod::images::{ImageService, ImageServiceError, LocalImage};
    use crate::pod::objects::Objects;
    use crate::pod::status::NodeFacts;
    use crate::pod::worker::{Deps, PodHandle};
    use crate::runtime::api::Runtime;
    use crate::runtime::fake::FakeRuntime;

    /// Every image is local except those named `*missing*`, whose pulls fail.
    struct FakeImages;

    fn local(name: &str) -> LocalImage {
        LocalImage {
            name: name.into(),
            image_id: format!("{name}@sha256:00"),
            config: serde_json::from_value(serde_json::json!({
                "architecture": "amd64", "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": []},
                "config": {"Cmd": ["sh"]},
            }))
            .unwrap(),
            lower: vec![],
            size: 1234,
        }
    }

    impl ImageService for FakeImages {
        fn local(&self, reference: &str) -> Result<Option<LocalImage>, ImageServiceError> {
            if reference.contains("UPPER") {
                return Err(ImageServiceError::InvalidName(
                    "invalid reference format".into(),
                ));
            }
            Ok((!reference.contains("missing")).then(|| local(reference)))
        }

        async fn pull(&self, reference: &str) -> Result<(LocalImage, Duration), ImageServiceError> {
            if reference.contains("slow") {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            Err(ImageServiceError::Pull(format!("{reference}: not found")))
        }
    }

    struct Bed {
        rt: Arc<FakeRuntime>,
        engine: Arc<Engine<FakeRuntime, FakeImages>>,
        _tmp: tempfile::TempDir,
    }

    /// The fake node under `dir`; records in `state_dir` when given.
    fn deps(
        dir: &std::path::Path,
        rt: &Arc<FakeRuntime>,
        state_dir: Option<std::path::PathBuf>,
    ) -> Deps<FakeRuntime, FakeImages> {
        Deps {
            runtime: rt.clone(),
            images: Arc::new(FakeImages),
            events: Arc::new(Recorder::default()),
            objects: Objects::default(),
            pods_dir: dir.join("pods"),
            log_dir: dir.join("logs"),
            node: NodeFacts::default(),
            downward: Default::default(),
            state_dir,
            cgroups: None,
            security: Default::default(),
        }
    }

    fn bed() -> Bed {
        let tmp = tempfile::tempdir().unwrap();
        let rt = Arc::new(FakeRuntime::default());
        let engine = Engine::new(deps(tmp.path(), &rt, None));
        Bed {
            rt,
            engine,
            _tmp: tmp,
        }
    }

    fn pod(yaml: &str) -> Pod {
        let mut p: Pod = serde_norway::from_str(yaml).unwrap();
        crate::manifest::defaults::apply(&mut p);
        p
    }

    fn find(h: &PodHandle, name: &str) -> Option<ContainerStatus> {
        let s = h.status();
        s.init_container_statuses
            .into_iter()
            .flatten()
            .chain(s.container_statuses.into_iter().flatten())
            .find(|c| c.name == name)
    }

    fn state_of(h: &PodHandle, name: &str) -> String {
        let Some(c) = find(h, name) else {
            return "none".into();
        };
        let s = c.state.unwrap_or_default();
        if s.running.is_some() {
            "running".into()
        } else if let Some(t) = s.terminated {
            format!("terminated {}", t.exit_code)
        } else {
            format!(
                "waiting {}",
                s.waiting.and_then(|w| w.reason).unwrap_or_default()
            )
        }
    }

    fn id_of(h: &PodHandle, name: &str) -> String {
        find(h, name)
            .and_then(|c| c.container_id)
            .unwrap()
            .trim_start_matches("nodelet://")
            .to_string()
    }

    async fn wait_for(h: &PodHandle, what: &str, f: impl Fn(&PodHandle) -> bool) {
        let mut rx = h.watch();
        let end = tokio::time::Instant::now() + Duration::from_secs(10);
        while !f(h) {
            assert!(
                tokio::time::Instant::now() < end,
                "timed out waiting for {what}: {:#?}",
                h.status()
            );
            let _ = tokio::time::timeout(Duration::from_millis(100), rx.changed()).await;
        }
    }

    fn starts(rt: &FakeRuntime) -> usize {
        rt.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.starts_with("start "))
            .count()
    }

    /// A record that could not be saved (the state disk full, here its
    /// directory replaced by a file) is saved again once it can be, with
    /// no new status to trigger it, and the pod says so meanwhile.
    #[tokio::test]
    async fn a_pod_record_that_failed_to_save_is_retried_until_it_is() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        let rt = Arc::new(FakeRuntime::default());
        let engine = Engine::new(deps(tmp.path(), &rt, Some(state.clone())));
        let h = engine
            .add(pod("metadata: {name: p}\nspec:\n  restartPolicy: Never\n  containers: [{name: a, image: busybox:1}]\n"))
            .unwrap();
        let uid = h.pod_ref.uid.clone();
        wait_for(&h, "a running", |h| state_of(h, "a") == "running").await;
        std::fs::rename(&state, tmp.path().join("state.away")).unwrap();
        std::fs::write(&state, "not a directory").unwrap();
        rt.exit(&uid, &id_of(&h, "a"), 3);
        wait_for(&h, "a exited", |h| state_of(h, "a") == "terminated 3").await;
        let reasons = || -> Vec<String> {
            engine
                .events()
                .for_pod(&uid)
                .iter()
                .map(|e| e.reason.clone())
                .collect()
        };
        let end = tokio::time::Instant::now() + Duration::from_secs(5);
        while !reasons().contains(&"PodRecordNotSaved".to_string()) {
            assert!(tokio::time::Instant::now() < end, "{:?}", reasons());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        std::fs::remove_file(&state).unwrap();
        let record = state.join(format!("{uid}.json"));
        let end = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let saved = std::fs::read(&record)
                .ok()
                .and_then(|b| serde_json::from_slice::<crate::pod::store::Saved>(&b).ok());
            if let Some(s) = saved {
                let exited = s
                    .status
                    .and_then(|st| st.container_statuses)
                    .is_some_and(|cs| {
                        cs[0]
                            .state
                            .as_ref()
                            .and_then(|x| x.terminated.as_ref())
                            .is_some_and(|t| t.exit_code == 3)
                    });
                if exited {
                    break;
                }
            }
            assert!(
                tokio::time::Instant::now() < end,
                "the record was never saved again"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            reasons().contains(&"PodRecordSaved".to_string()),
            "{:?}",
            reasons()
        );
    }

    /// Pod `p` (one container `a`) ran under a fake node that keeps
    /// records, and that node's engine is gone: what a restarted daemon
    /// finds. `id` is `a`'s running container.
    struct Restart {
        tmp: tempfile::TempDir,
        rt: Arc<FakeRuntime>,
        uid: String,
        id: String,
    }

    impl Restart {
        async fn new() -> Restart {
            let tmp = tempfile::tempdir().unwrap();
            let rt = Arc::new(FakeRuntime::default());
            let first = Engine::new(deps(tmp.path(), &rt, Some(tmp.path().join("state"))));
            let h = first
                .add(pod(
                    "metadata: {name: p}\nspec:\n  containers: [{name: a, image: busybox:1}]\n",
                ))
                .unwrap();
            wait_for(&h, "a running", |h| state_of(h, "a") == "running").await;
            let (uid, id) = (h.pod_ref.uid.clone(), id_of(&h, "a"));
            Restart { tmp, rt, uid, id }
        }

        /// A container on the runtime (started or not) that no record knows.
        async fn plant(&self, id: &str, bundle: &std::path::Path, restart: u32, started: bool) {
            self.rt
                .create_container(&crate::runtime::api::CreateContainer {
                    sandbox: self.uid.clone(),
                    id: id.into(),
                    bundle: bundle.to_path_buf(),
                    log_dir: self.tmp.path().join("l"),
                    restart_count: restart,
                    termination_message_file: None,
                    fallback_to_logs: false,
                })
                .await
                .unwrap();
            if started {
                self.rt.start_container(&self.uid, id).await.unwrap();
            }
        }

        /// A new engine handed the saved record, as a restarted daemon.
        fn restart(
            &self,
        ) -> (
            Arc<Engine<FakeRuntime, FakeImages>>,
            Arc<super::super::worker::PodHandle>,
        ) {
            let state = self.tmp.path().join("state");
            let (saved, _) = crate::pod::store::load_all(&state);
            assert_eq!(saved.len(), 1);
            let second = Engine::new(deps(self.tmp.path(), &self.rt, Some(state)));
            let h = second
                .add_restored(saved[0].pod.clone(), Some(saved[0].clone()))
                .unwrap();
            (second, h)
        }

        /// Waits until `gone` is off the runtime.
        async fn wait_removed(&self, gone: &str) {
            let end = tokio::time::Instant::now() + Duration::from_secs(10);
            while self
                .rt
                .list_containers(&self.uid)
                .await
                .unwrap()
                .iter()
                .any(|c| c.id == gone)
            {
                assert!(tokio::time::Instant::now() < end, "{gone} stayed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// After a daemon restart the shim's list is the truth: a container the
    /// pod's record does not know (created by a daemon that died before
    /// saving, no intent of it on disk) is killed and removed, the recorded
    /// one is kept, and the pod says so.
    #[tokio::test]
    async fn a_restart_removes_containers_the_record_does_not_know() {
        let r = Restart::new().await;
        // What a daemon killed mid-start leaves: one container created and
        // started, one created and waiting at its start gate, no record of either.
        let b = r.tmp.path().join("b");
        r.plant("ghost-running", &b, 1, true).await;
        r.plant("ghost-created", &b, 1, false).await;
        let (second, h) = r.restart();
        for gone in ["ghost-running", "ghost-created"] {
            r.wait_removed(gone).await;
        }
        assert_eq!(id_of(&h, "a"), r.id);
        assert_eq!(state_of(&h, "a"), "running");
        let removed = second
            .events()
            .for_pod(&r.uid)
            .iter()
            .filter(|e| e.reason == "Killing" && e.message.contains("does not know it"))
            .count();
        assert_eq!(removed, 2);
    }

    /// A container the previous daemon made and started but never got
    /// into the record (its save failed: a full disk) is adopted from the
    /// intent in its bundle when it is the newest instance: same id, no
    /// second container; an unknown one older than the record's goes.
    #[tokio::test]
    async fn a_restart_adopts_the_newest_instance_a_stale_record_lacks() {
        let r = Restart::new().await;
        // What the record missed: instance 0 exited, instance 1 created
        // and started (its intent on disk); and a stray older one.
        r.rt.exit(&r.uid, &r.id, 1);
        let bundles = r.tmp.path().join("pods").join(&r.uid).join("containers/a");
        for (id, restart) in [("newer", 1), ("older", 0)] {
            let mut intent: serde_json::Value =
                serde_json::from_slice(&std::fs::read(bundles.join("0/instance.json")).unwrap())
                    .unwrap();
            intent["id"] = id.into();
            intent["restart_count"] = restart.into();
            let dir = bundles.join(format!("{restart}{id}"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("instance.json"), intent.to_string()).unwrap();
            r.plant(id, &dir, restart, true).await;
        }
        let starts_before = starts(&r.rt);
        let (_second, h) = r.restart();
        wait_for(&h, "the newer instance adopted", |h| {
            find(h, "a").is_some_and(|c| c.container_id.as_deref() == Some("nodelet://newer"))
        })
        .await;
        let c = find(&h, "a").unwrap();
        assert_eq!(c.restart_count, 1);
        assert_eq!(state_of(&h, "a"), "running");
        assert_eq!(
            c.last_state.and_then(|s| s.terminated).map(|t| t.exit_code),
            Some(1)
        );
        r.wait_removed("older").await;
        assert_eq!(starts(&r.rt), starts_before, "nothing was started again");
    }

    #[tokio::test]
    async fn init_containers_run_one_at_a_time_then_the_apps() {
        let b = bed();
        let h = b
            .engine
            .add(pod(
                "metadata: {name: web}\nspec:\n  terminationGracePeriodSeconds: 1\n  initContainers: [{name: i1, image: busybox:1}, {name: i2, image: busybox:1}]\n  containers: [{name: a, image: busybox:1}]\n",
            ))
            .unwrap();
        let uid = h.pod_ref.uid.clone();
        wait_for(&h, "i1 running", |h| state_of(h, "i1") == "running").await;
        assert_eq!(state_of(&h, "i2"), "waiting PodInitializing");
        assert_eq!(state_of(&h, "a"), "waiting PodInitializing");
        assert_eq!(h.status().phase.as_deref(), Some("Pending"));
        b.rt.exit(&uid, &id_of(&h, "i1"), 0);
        wait_for(&h, "i2 running", |h| state_of(h, "i2") == "running").await;
        assert_eq!(state_of(&h, "i1"), "terminated 0");
        assert_eq!(state_of(&h, "a"), "waiting PodInitializing");
        b.rt.exit(&uid, &id_of(&h, "i2"), 0);
        wait_for(&h, "app running", |h| state_of(h, "a") == "running").await;
        assert_eq!(starts(&b.rt), 3);
        wait_for(&h, "Running", |h| {
            h.status().phase.as_deref() == Some("Running")
        })
        .await;
        let reasons: Vec<String> = b
            .engine
            .events()
            .for_pod(&uid)
            .iter()
            .map(|e| format!("{} {}", e.reason, e.field_path))
            .collect();
        assert!(
            reasons.contains(&"Started spec.initContainers{i1}".to_string()),
            "{reasons:?}"
        );
        assert!(
            reasons.contains(&"Created spec.containers{a}".to_string()),
            "{reasons:?}"
        );
        // Delete: SIGTERM is ignored by the fake, SIGKILL after the 1 s grace.
        b.engine.delete("default", "web", None).unwrap();
        b.engine.wait_all().await;
        assert_eq!(state_of(&h, "a"), "terminated 137");
        assert_eq!(h.status().phase.as_deref(), Some("Failed"));
        let calls = b.rt.calls.lock().unwrap().clone();
        let a = id_of(&h, "a");
        let term = calls
            .iter()
            .position(|c| *c == format!("signal {a} 15"))
            .unwrap();
        let kill = calls
            .iter()
            .position(|c| *c == format!("signal {a} 9"))
            .unwrap();
        assert!(term < kill);
        assert_eq!(calls.last().unwrap(), &format!("remove_sandbox {uid}"));
    }

    #[tokio::test]
    async fn a_failed_init_container_under_never_fails_the_pod_and_no_app_starts() {
        let b = bed();
        let h = b
            .engine
            .add(pod("metadata: {name: p}\nspec:\n  restartPolicy: Never\n  initContainers: [{name: i1, image: busybox:1}]\n  containers: [{name: a, image: busybox:1}]\n"))
            .unwrap();
        wait_for(&h, "i1 running", |h| state_of(h, "i1") == "running").await;
        b.rt.exit(&h.pod_ref.uid, &id_of(&h, "i1"), 1);
        // The worker finishes by itself.
        tokio::time::timeout(Duration::from_secs(10), b.engine.wait_all())
            .await
            .unwrap();
        assert_eq!(h.status().phase.as_deref(), Some("Failed"));
        assert_eq!(state_of(&h, "a"), "waiting PodInitializing");
        assert_eq!(starts(&b.rt), 1);
    }

    #[tokio::test]
    async fn never_pods_succeed_when_their_apps_exit_zero() {
        let b = bed();
        let h = b
            .engine
            .add(pod("metadata: {name: p}\nspec:\n  restartPolicy: Never\n  containers: [{name: a, image: busybox:1}, {name: b, image: busybox:1}]\n"))
            .unwrap();
        wait_for(&h, "both running", |h| {
            state_of(h, "a") == "running" && state_of(h, "b") == "running"
        })
        .await;
        b.rt.exit(&h.pod_ref.uid, &id_of(&h, "a"), 0);
        b.rt.exit(&h.pod_ref.uid, &id_of(&h, "b"), 0);
        tokio::time::timeout(Duration::from_secs(10), b.engine.wait_all())
            .await
            .unwrap();
        let s = h.status();
        assert_eq!(s.phase.as_deref(), Some("Succeeded"));
        let ready = s
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "ContainersReady")
            .unwrap();
        assert_eq!(ready.reason.as_deref(), Some("PodCompleted"));
        assert!(b.rt.list_sandboxes().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn pull_failures_back_off_and_do_not_block_other_pods() {
        let b = bed();
        let bad = b
            .engine
            .add(pod(
                "metadata: {name: bad}\nspec:\n  containers: [{name: a, image: missing:1}]\n",
            ))
            .unwrap();
        let good = b
            .engine
            .add(pod(
                "metadata: {name: good}\nspec:\n  containers: [{name: a, image: busybox:1}]\n",
            ))
            .unwrap();
        wait_for(&good, "good running", |h| state_of(h, "a") == "running").await;
        wait_for(&bad, "ErrImagePull", |h| {
            state_of(h, "a") == "waiting ErrImagePull"
        })
        .await;
        assert_eq!(bad.status().phase.as_deref(), Some("Pending"));
        let ev: Vec<String> = b
            .engine
            .events()
            .for_pod(&bad.pod_ref.uid)
            .iter()
            .map(|e| format!("{}: {}", e.reason, e.message))
            .collect();
        assert!(
            ev.contains(&"Pulling: Pulling image \"missing:1\"".to_string()),
            "{ev:?}"
        );
        assert!(
            ev.contains(
                &"Failed: Failed to pull image \"missing:1\": missing:1: not found".to_string()
            ),
            "{ev:?}"
        );
        assert!(
            ev.contains(&"Failed: Error: ErrImagePull".to_string()),
            "{ev:?}"
        );
        wait_for(&bad, "ImagePullBackOff", |h| {
            state_of(h, "a") == "waiting ImagePullBackOff"
        })
        .await;
        let w = find(&bad, "a").unwrap().state.unwrap().waiting.unwrap();
        assert_eq!(
            w.message.as_deref(),
            Some("Back-off pulling image \"missing:1\": missing:1: not found")
        );
        assert_eq!(good.status().phase.as_deref(), Some("Running"));
        let never = b.engine.add(pod("metadata: {name: never}\nspec:\n  containers: [{name: a, image: missing:2, imagePullPolicy: Never}]\n")).unwrap();
        wait_for(&never, "ErrImageNeverPull", |h| {
            state_of(h, "a") == "waiting ErrImageNeverPull"
        })
        .await;
        let w = find(&never, "a").unwrap().state.unwrap().waiting.unwrap();
        assert_eq!(
            w.message.as_deref(),
            Some("Container image \"missing:2\" is not present with pull policy of Never")
        );
        let invalid = b
            .engine
            .add(pod(
                "metadata: {name: inv}\nspec:\n  containers: [{name: a, image: UPPER}]\n",
            ))
            .unwrap();
        wait_for(&invalid, "InvalidImageName", |h| {
            state_of(h, "a") == "waiting InvalidImageName"
        })
        .await;
        b.engine.delete_all(Some(0));
        b.engine.wait_all().await;
    }

    #[tokio::test]
    async fn a_crashing_container_restarts_at_once_then_waits_in_back_off() {
        let b = bed();
        let h = b
            .engine
            .add(pod(
                "metadata: {name: p}\nspec:\n  containers: [{name: a, image: busybox:1}]\n",
            ))
            .unwrap();
        wait_for(&h, "running", |h| state_of(h, "a") == "running").await;
        let first = id_of(&h, "a");
        b.rt.exit(&h.pod_ref.uid, &first, 2);
        // First restart is immediate…
        wait_for(&h, "restarted", |h| {
            id_of(h, "a") != first && state_of(h, "a") == "running"
        })
        .await;
        let second = id_of(&h, "a");
        b.rt.exit(&h.pod_ref.uid, &second, 2);
        // …the next one waits 10 s in CrashLoopBackOff.
        wait_for(&h, "CrashLoopBackOff", |h| {
            state_of(h, "a") == "waiting CrashLoopBackOff"
        })
        .await;
        let c = find(&h, "a").unwrap();
        assert_eq!(c.restart_count, 1);
        assert_eq!(c.last_state.unwrap().terminated.unwrap().exit_code, 2);
        assert!(c
            .state
            .unwrap()
            .waiting
            .unwrap()
            .message
            .unwrap()
            .starts_with("back-off 10s restarting failed container=a pod=p_default("));
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(starts(&b.rt), 2);
        assert!(b
            .engine
            .events()
            .for_pod(&h.pod_ref.uid)
            .iter()
            .any(|e| e.reason == "BackOff"));
        b.engine.delete_all(Some(0));
        b.engine.wait_all().await;
        assert_eq!(h.status().phase.as_deref(), Some("Failed"));
    }

    #[tokio::test]
    async fn a_start_error_is_a_start_error_instance_and_run_container_error() {
        let b = bed();
        b.rt.fail_start.lock().unwrap().insert(
            "*".into(),
            "exec: \"nope\": executable file not found in $PATH".into(),
        );
        let h = b
            .engine
            .add(pod(
                "metadata: {name: p}\nspec:\n  containers: [{name: a, image: busybox:1}]\n",
            ))
            .unwrap();
        wait_for(&h, "RunContainerError", |h| {
            state_of(h, "a") == "waiting RunContainerError"
        })
        .await;
        let c = find(&h, "a").unwrap();
        let last = c.last_state.unwrap().terminated.unwrap();
        assert_eq!(
            (last.exit_code, last.reason.as_deref()),
            (128, Some("StartError"))
        );
        assert_eq!(
            c.state.unwrap().waiting.unwrap().message.as_deref(),
            Some("exec: \"nope\": executable file not found in $PATH")
        );
        // Retried after a second, then back-off holds it: never a tight
        // loop of failing starts.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(starts(&b.rt), 2);
        assert!(b
            .engine
            .events()
            .for_pod(&h.pod_ref.uid)
            .iter()
            .any(|e| e.reason == "Failed"
                && e.message == "Error: exec: \"nope\": executable file not found in $PATH"));
        b.engine.delete_all(Some(0));
        b.engine.wait_all().await;
    }

    #[tokio::test]
    async fn a_pod_deleted_while_its_image_is_pulling_stops_at_once() {
        let b = bed();
        let h = b
            .engine
            .add(pod(
                "metadata: {name: p}\nspec:\n  containers: [{name: a, image: missing-slow:1}]\n",
            ))
            .unwrap();
        // The pull has begun (the Pulling event) and will take 30 s.
        let start = std::time::Instant::now();
        while !b
            .engine
            .events()
            .for_pod(&h.pod_ref.uid)
            .iter()
            .any(|e| e.reason == "Pulling")
        {
            assert!(start.elapsed() < Duration::from_secs(5));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        b.engine.delete("default", "p", None).unwrap();
        tokio::time::timeout(Duration::from_secs(5), b.engine.wait_all())
            .await
            .unwrap();
        assert_eq!(h.status().phase.as_deref(), Some("Failed"));
        assert!(h.pod().metadata.deletion_timestamp.is_some());
        assert!(b.rt.list_sandboxes().await.unwrap().is_empty());
        assert_eq!(starts(&b.rt), 0);
    }

    #[tokio::test]
    async fn a_second_pod_with_the_same_name_is_refused() {
        let b = bed();
        b.engine
            .add(pod(
                "metadata: {name: p}\nspec:\n  containers: [{name: a, image: busybox:1}]\n",
            ))
            .unwrap();
        let e = b
            .engine
            .add(pod(
                "metadata: {name: p}\nspec:\n  containers: [{name: a, image: busybox:1}]\n",
            ))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "pods \"p\" already exists in namespace \"default\""
        );
        b.engine.delete_all(Some(0));
        b.engine.wait_all().await;
    }

    #[tokio::test]
    async fn pods_beyond_max_pods_are_rejected_out_of_pods_and_never_run() {
        let b = bed();
        b.engine.set_max_pods(2);
        let spec = |n: &str, policy: &str| {
            pod(&format!(
                "metadata: {{name: {n}}}\nspec:\n  restartPolicy: {policy}\n  containers: [{{name: a, image: busybox:1}}]\n"
            ))
        };
        let done = b.engine.add(spec("done", "Never")).unwrap();
        let a = b.engine.add(spec("a", "Always")).unwrap();
        wait_for(&a, "a running", |h| state_of(h, "a") == "running").await;
        let id = id_of(&done, "a");
        b.rt.exit(&done.pod_ref.uid, &id, 0);
        wait_for(&done, "done Succeeded", |h| {
            h.status().phase.as_deref() == Some("Succeeded")
        })
        .await;
        // A succeeded pod no longer counts: the second active pod fits.
        let c = b.engine.add(spec("c", "Always")).unwrap();
        wait_for(&c, "c running", |h| state_of(h, "a") == "running").await;
        let starts_before = starts(&b.rt);
        let over = b.engine.add(spec("over", "Always")).unwrap();
        wait_for(&over, "over published", |h| h.status().phase.is_some()).await;
        let st = over.status();
        assert_eq!(st.phase.as_deref(), Some("Failed"));
        assert_eq!(st.reason.as_deref(), Some("OutOfpods"));
        assert_eq!(
            st.message.as_deref(),
            Some("Pod was rejected: Node didn't have enough resource: pods, requested: 1, used: 2, capacity: 2")
        );
        let ev: Vec<_> = b
            .engine
            .events()
            .all()
            .into_iter()
            .filter(|e| e.pod.name == "over")
            .map(|e| (e.type_.as_str(), e.reason.clone()))
            .collect();
        assert_eq!(ev, [("Warning", "OutOfpods".to_string())]);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(starts(&b.rt), starts_before, "a rejected pod never starts");
        let sandboxes = b.rt.list_sandboxes().await.unwrap();
        assert!(!sandboxes.contains(&over.pod_ref.uid), "{sandboxes:?}");
        b.engine.delete_all(Some(0));
        b.engine.wait_all().await;
    }

    #[tokio::test]
    async fn pause_freezes_running_containers_masks_readiness_and_delete_thaws_first() {
        let b = bed();
        let h = b
            .engine
            .add(pod(
                "metadata: {name: web}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers: [{name: a, image: busybox:1}, {name: b, image: busybox:1}]\n",
            ))
            .unwrap();
        let uid = h.pod_ref.uid.clone();
        wait_for(&h, "ready", |h| {
            find(h, "a").is_some_and(|c| c.ready) && find(h, "b").is_some_and(|c| c.ready)
        })
        .await;
        let e = &b.engine;
        assert!(matches!(
            e.pause("default", "web", Some("nope"), true).await,
            Err(EngineError::Conflict(m)) if m == "container nope is not valid for pod web"
        ));
        assert!(matches!(
            e.pause("default", "web", None, false).await,
            Err(EngineError::Conflict(m)) if m == "pod web is not paused"
        ));
        assert_eq!(
            e.pause("default", "web", Some("a"), true).await.unwrap(),
            ["a"]
        );
        let paused = |h: &PodHandle| {
            h.status()
                .conditions
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.type_ == crate::pod::status::PAUSED_CONDITION)
        };
        let c = paused(&h).expect("Paused condition");
        assert_eq!(
            (c.status.as_str(), c.message.as_deref()),
            ("True", Some("paused containers: [a]"))
        );
        assert!(!find(&h, "a").unwrap().ready && find(&h, "b").unwrap().ready);
        // The pod level pauses what is left, and says when nothing is.
        assert_eq!(e.pause("default", "web", None, true).await.unwrap(), ["b"]);
        assert!(matches!(
            e.pause("default", "web", None, true).await,
            Err(EngineError::Conflict(m)) if m == "pod web is already paused"
        ));
        assert_eq!(
            e.pause("default", "web", None, false).await.unwrap(),
            ["a", "b"]
        );
        assert!(paused(&h).is_none());
        wait_for(&h, "ready again", |h| find(h, "a").is_some_and(|c| c.ready)).await;
        e.pause("default", "web", None, true).await.unwrap();
        let reasons: Vec<String> = e
            .events()
            .for_pod(&uid)
            .into_iter()
            .map(|ev| format!("{} {}", ev.reason, ev.message))
            .filter(|r| r.starts_with("Paused") || r.starts_with("Resumed"))
            .collect();
        assert_eq!(
            reasons,
            [
                "Paused Paused container a",
                "Paused Paused container b",
                "Resumed Resumed container a",
                "Resumed Resumed container b",
            ]
        );
        // Deletion thaws before the stop signal.
        e.delete("default", "web", None).unwrap();
        wait_for(&h, "stopped", |h| {
            state_of(h, "a").starts_with("terminated") && state_of(h, "b").starts_with("terminated")
        })
        .await;
        let calls = b.rt.calls.lock().unwrap().clone();
        let id_a = calls
            .iter()
            .rev()
            .find(|c| c.starts_with("resume "))
            .cloned()
            .unwrap();
        let resume_at = calls.iter().rposition(|c| *c == id_a).unwrap();
        let signal_at = calls.iter().position(|c| c.starts_with("signal ")).unwrap();
        assert!(resume_at < signal_at, "{calls:#?}");
        assert!(matches!(
            e.pause("default", "web", None, true).await,
            Err(EngineError::Conflict(_))
        ));
    }

    fn event_lines(e: &Engine<FakeRuntime, FakeImages>, uid: &str) -> Vec<String> {
        e.events()
            .for_pod(uid)
            .into_iter()
            .map(|ev| format!("{} {}", ev.reason, ev.message))
            .collect()
    }

    #[tokio::test]
    async fn a_failing_post_start_hook_kills_the_container_with_its_event() {
        let b = bed();
        b.rt.exec_exit.lock().unwrap().insert("*".into(), 1);
        let h = b
            .engine
            .add(pod(
                "metadata: {name: web}\nspec:\n  restartPolicy: Never\n  terminationGracePeriodSeconds: 1\n  containers: [{name: a, image: busybox:1, lifecycle: {postStart: {exec: {command: [\"false\"]}}}}]\n",
            ))
            .unwrap();
        let uid = h.pod_ref.uid.clone();
        wait_for(&h, "Failed", |h| {
            h.status().phase.as_deref() == Some("Failed")
        })
        .await;
        let events = event_lines(&b.engine, &uid);
        let hook = events
            .iter()
            .find(|e| e.starts_with("FailedPostStartHook "))
            .unwrap_or_else(|| panic!("{events:#?}"));
        assert!(hook.contains("exited with 1"), "{hook}");
        assert!(
            events.iter().any(|e| e == "Killing FailedPostStartHook"),
            "{events:#?}"
        );
        assert_eq!(state_of(&h, "a"), "terminated 137");
        let calls = b.rt.calls.lock().unwrap().clone();
        let exec = calls.iter().position(|c| c.starts_with("exec ")).unwrap();
        let kill = calls.iter().position(|c| c.starts_with("signal ")).unwrap();
        assert!(exec < kill, "{calls:#?}");
    }

    #[tokio::test]
    async fn a_failing_pre_stop_hook_is_reported_and_termination_goes_on() {
        let b = bed();
        let h = b
            .engine
            .add(pod(
                "metadata: {name: web}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers: [{name: a, image: busybox:1, lifecycle: {preStop: {exec: {command: [\"false\"]}}}}]\n",
            ))
            .unwrap();
        let uid = h.pod_ref.uid.clone();
        wait_for(&h, "running", |h| state_of(h, "a") == "running").await;
        b.rt.exec_exit.lock().unwrap().insert("*".into(), 2);
        b.engine.delete("default", "web", None).unwrap();
        wait_for(&h, "stopped", |h| {
            state_of(h, "a").starts_with("terminated")
        })
        .await;
        let events = event_lines(&b.engine, &uid);
        let hook = events
            .iter()
            .find(|e| e.starts_with("FailedPreStopHook "))
            .unwrap_or_else(|| panic!("{events:#?}"));
        assert!(hook.contains("exited with 2"), "{hook}");
        let calls = b.rt.calls.lock().unwrap().clone();
        let exec = calls.iter().position(|c| c.starts_with("exec ")).unwrap();
        let signal = calls.iter().position(|c| c.starts_with("signal ")).unwrap();
        assert!(exec < signal, "{calls:#?}");
    }

    /// A sidecar killed for a failed probe is worded as an init container
    /// (`kuberuntime_manager.go computeInitContainerActions`: "Init
    /// container %s failed liveness probe"), an app container as one
    /// (`computePodActions`: "Container %s failed liveness probe, will be
    /// restarted").
    #[tokio::test]
    async fn a_probe_kill_names_a_sidecar_an_init_container() {
        let b = bed();
        let h = b
            .engine
            .add(pod(
                "metadata: {name: web}\nspec:\n  terminationGracePeriodSeconds: 1\n  initContainers: [{name: side, image: busybox:1, restartPolicy: Always, livenessProbe: {exec: {command: [\"true\"]}, periodSeconds: 1, failureThreshold: 1}}]\n  containers: [{name: a, image: busybox:1, livenessProbe: {exec: {command: [\"true\"]}, periodSeconds: 1, failureThreshold: 1}}]\n",
            ))
            .unwrap();
        let uid = h.pod_ref.uid.clone();
        wait_for(&h, "both running", |h| {
            state_of(h, "side") == "running" && state_of(h, "a") == "running"
        })
        .await;
        b.rt.exec_exit.lock().unwrap().insert("*".into(), 1);
        wait_for(&h, "both killed", |h| {
            let killed = |n: &str| find(h, n).is_some_and(|c| c.restart_count > 0);
            killed("side") && killed("a")
        })
        .await;
        let events = event_lines(&b.engine, &uid);
        assert!(
            events
                .iter()
                .any(|e| e == "Killing Init container side failed liveness probe"),
            "{events:#?}"
        );
        assert!(
            events
                .iter()
                .any(|e| e == "Killing Container a failed liveness probe, will be restarted"),
            "{events:#?}"
        );
    }
}
