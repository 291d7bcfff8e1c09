//! The per-pod shim with real containers: create/start/state/signal, CRI
//! logs, exit records, shared pod namespaces, and teardown that leaves
//! nothing behind. Needs root.

#![allow(clippy::unwrap_used, clippy::needless_pass_by_value)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nodelet::runtime::native::protocol::{Op, Response, Status};
use nodelet::runtime::native::shim;
use nodelet::runtime::plan::{build_spec, ContainerConfig, Rootfs};

struct Pod {
    tmp: tempfile::TempDir,
    state: PathBuf,
    pid: i32,
}

impl Pod {
    fn new(name: &str) -> Pod {
        let tmp = common::test_dir();
        let state = tmp.path().join("state");
        let pid = shim::launch(Path::new(env!("CARGO_BIN_EXE_nodelet")), &state, name).unwrap();
        Pod { tmp, state, pid }
    }

    fn call(&self, op: Op) -> Response {
        shim::call(&self.state, op).unwrap()
    }

    fn log_dir(&self, id: &str) -> PathBuf {
        self.tmp.path().join("logs").join(id)
    }

    fn run(&self, id: &str, args: &[&str]) -> Response {
        self.run_with(id, args, None)
    }

    /// Runs with a termination-message file (host path, FallbackToLogsOnError)
    /// bind-mounted at /dev/termination-log.
    fn run_with(&self, id: &str, args: &[&str], termination: Option<(PathBuf, bool)>) -> Response {
        let mounts: Vec<_> = termination
            .iter()
            .map(|(f, _)| nodelet::runtime::plan::BindMount {
                source: f.clone(),
                destination: "/dev/termination-log".into(),
                readonly: false,
                propagation: None,
            })
            .collect();
        let bundle = write_bundle_with(self.tmp.path(), id, args, |c| {
            c.mounts.extend(mounts);
        });
        self.create_and_start(id, &bundle, termination)
    }

    /// Runs a container whose configuration `tweak` adjusts.
    fn run_config(
        &self,
        id: &str,
        args: &[&str],
        tweak: impl FnOnce(&mut ContainerConfig),
    ) -> Response {
        let bundle = write_bundle_with(self.tmp.path(), id, args, tweak);
        self.create_and_start(id, &bundle, None)
    }

    fn create_and_start(
        &self,
        id: &str,
        bundle: &Path,
        termination: Option<(PathBuf, bool)>,
    ) -> Response {
        let r = self.create(id, bundle, termination);
        assert!(r.ok, "create: {r:?}");
        self.call(Op::Start { id: id.into() })
    }

    fn create(&self, id: &str, bundle: &Path, termination: Option<(PathBuf, bool)>) -> Response {
        self.call(Op::Create {
            id: id.into(),
            bundle: bundle.display().to_string(),
            log_dir: self.log_dir(id).display().to_string(),
            restart_count: 0,
            log_max_size: 10 << 20,
            log_max_files: 5,
            termination_message_file: termination.as_ref().map(|(f, _)| f.display().to_string()),
            fallback_to_logs: termination.as_ref().is_some_and(|(_, fb)| *fb),
        })
    }

    fn wait_exit(&self, id: &str) -> nodelet::runtime::record::ExitRecord {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let st = self.call(Op::State { id: id.into() }).state.unwrap();
            if st.status == Status::Exited {
                return st.exit.unwrap();
            }
            assert!(Instant::now() < deadline, "container {id} did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn shutdown(&self) {
        assert!(self.call(Op::Shutdown).ok);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{}", self.pid)).exists() && !is_zombie(self.pid) {
            assert!(Instant::now() < deadline, "shim did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!self.state.join("shim.sock").exists(), "socket removed");
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mounts.contains(self.tmp.path().to_str().unwrap()),
            "no mount leaked:\n{mounts}"
        );
    }
}

/// Writes a bundle for a pod container (own PID and mount namespaces).
fn write_bundle(base: &Path, id: &str, args: &[&str]) -> PathBuf {
    write_bundle_with(base, id, args, |_| {})
}

fn write_bundle_with(
    base: &Path,
    id: &str,
    args: &[&str],
    tweak: impl FnOnce(&mut ContainerConfig),
) -> PathBuf {
    let dir = base.join("bundles").join(id);
    for d in ["upper", "work"] {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
    let mut cfg = ContainerConfig::new(
        Rootfs::Overlay {
            lower: vec![common::oci::busybox_lower().to_path_buf()],
            upper: dir.join("upper"),
            work: dir.join("work"),
        },
        args.iter().map(|s| s.to_string()).collect(),
    );
    tweak(&mut cfg);
    let mut spec = build_spec(&cfg).unwrap();
    // Pod containers join the shim's network, IPC and UTS namespaces.
    let mut linux = spec.linux().clone().unwrap();
    let ns: Vec<_> = linux
        .namespaces()
        .clone()
        .unwrap()
        .into_iter()
        .filter(|n| {
            matches!(
                n.typ(),
                oci_spec::runtime::LinuxNamespaceType::Pid
                    | oci_spec::runtime::LinuxNamespaceType::Mount
            )
        })
        .collect();
    linux.set_namespaces(Some(ns));
    spec.set_linux(Some(linux));
    fs::write(dir.join("config.json"), serde_json::to_vec(&spec).unwrap()).unwrap();
    dir
}

impl Drop for Pod {
    /// A failed test must not leave its shim and containers running.
    fn drop(&mut self) {
        if Path::new(&format!("/proc/{}", self.pid)).exists() && !is_zombie(self.pid) {
            let _ = shim::call(&self.state, Op::Shutdown);
            std::thread::sleep(Duration::from_millis(50));
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn is_zombie(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.contains(") Z "))
        .unwrap_or(true)
}

#[test]
fn a_container_runs_logs_in_cri_format_and_records_its_exit() {
    if !common::require_root() {
        return;
    }
    let pod = Pod::new("web");
    let r = pod.run(
        "app",
        &["sh", "-c", "echo hello; echo oops >&2; hostname; exit 3"],
    );
    assert!(r.ok, "{r:?}");
    let exit = pod.wait_exit("app");
    assert_eq!((exit.exit_code, exit.signal), (3, None));
    let recorded: nodelet::runtime::record::ExitRecord =
        serde_json::from_slice(&fs::read(pod.state.join("containers/app/exit.json")).unwrap())
            .unwrap();
    assert_eq!(recorded, exit);
    let log = fs::read_to_string(pod.log_dir("app").join("0.log")).unwrap();
    let lines: Vec<(&str, &str, &str)> = log
        .lines()
        .map(|l| {
            let mut p = l.splitn(4, ' ');
            let ts = p.next().unwrap();
            assert!(
                ts.ends_with('Z') && ts.len() == 30,
                "RFC3339Nano timestamp: {ts}"
            );
            (p.next().unwrap(), p.next().unwrap(), p.next().unwrap())
        })
        .collect();
    assert!(lines.contains(&("stdout", "F", "hello")), "{log}");
    assert!(lines.contains(&("stderr", "F", "oops")), "{log}");
    assert!(
        lines.contains(&("stdout", "F", "web")),
        "hostname is the pod's: {log}"
    );
    pod.shutdown();
}

#[test]
fn containers_of_a_pod_share_network_and_uts_but_not_pid() {
    if !common::require_root() {
        return;
    }
    let pod = Pod::new("pair");
    assert!(
        pod.run(
            "server",
            &["sh", "-c", "echo $$; echo pong | nc -l -p 8080"]
        )
        .ok
    );
    // The client connects over the pod's loopback.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = pod.run(
            &format!("client{}", deadline.elapsed().as_millis()),
            &["sh", "-c", "echo $$; nc 127.0.0.1 8080 </dev/null"],
        );
        assert!(r.ok, "{r:?}");
        let id = r.state.unwrap().id;
        pod.wait_exit(&id);
        let log = fs::read_to_string(pod.log_dir(&id).join("0.log")).unwrap();
        if log.contains("stdout F pong") {
            assert!(log.contains("stdout F 1"), "own PID namespace: {log}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no connection between containers: {log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let server = pod.wait_exit("server");
    assert_eq!(server.exit_code, 0);
    pod.shutdown();
}

#[test]
fn signals_reach_the_container_and_sigkill_is_137() {
    if !common::require_root() {
        return;
    }
    let pod = Pod::new("sig");
    // PID 1 ignores SIGTERM without a handler; this one traps it.
    assert!(
        pod.run(
            "trap",
            &[
                "sh",
                "-c",
                "trap 'echo bye; exit 0' TERM; echo ready; while true; do sleep 0.1; done"
            ]
        )
        .ok
    );
    wait_for_log(&pod, "trap", "ready");
    assert!(
        pod.call(Op::Signal {
            id: "trap".into(),
            signal: 15,
            kill_at: None,
        })
        .ok
    );
    assert_eq!(pod.wait_exit("trap").exit_code, 0);
    assert!(pod.run("stubborn", &["sleep", "1000"]).ok);
    assert!(
        pod.call(Op::Signal {
            id: "stubborn".into(),
            signal: 15,
            kill_at: None,
        })
        .ok
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        pod.call(Op::State {
            id: "stubborn".into()
        })
        .state
        .unwrap()
        .status,
        Status::Running,
        "PID 1 without a handler ignores SIGTERM"
    );
    assert!(
        pod.call(Op::Signal {
            id: "stubborn".into(),
            signal: 9,
            kill_at: None,
        })
        .ok
    );
    let e = pod.wait_exit("stubborn");
    assert_eq!((e.exit_code, e.signal), (137, Some(9)));
    pod.shutdown();
}

#[test]
fn the_shim_kills_at_the_end_of_the_grace_period_it_was_given() {
    if !common::require_root() {
        return;
    }
    let pod = Pod::new("grace");
    let kill_at = |ms: u64| {
        Some(nodelet::time::instant_to_monotonic(
            Instant::now() + Duration::from_millis(ms),
        ))
    };
    let stop = |id: &str, at: Option<u64>| {
        assert!(
            pod.call(Op::Signal {
                id: id.into(),
                signal: 15,
                kill_at: at,
            })
            .ok
        )
    };
    for id in ["a", "b"] {
        assert!(pod.run(id, &["sleep", "1000"]).ok);
        wait_running(&pod, id);
    }
    let deadline = std::time::SystemTime::now() + Duration::from_millis(400);
    // a: a later, longer grace does not push the kill back; b: a shorter
    // one brings it forward.
    stop("a", kill_at(400));
    stop("a", kill_at(60_000));
    stop("b", kill_at(60_000));
    stop("b", kill_at(400));
    std::thread::sleep(Duration::from_millis(200));
    for id in ["a", "b"] {
        let st = pod.call(Op::State { id: id.into() }).state.unwrap();
        assert_eq!(
            st.status,
            Status::Running,
            "{id} ignores SIGTERM until then"
        );
    }
    for id in ["a", "b"] {
        let e = pod.wait_exit(id);
        assert_eq!((e.exit_code, e.signal), (137, Some(9)), "{id}");
        let finished = nodelet::time::parse_rfc3339(&e.finished_at).unwrap();
        assert!(finished >= deadline, "{id} not killed before its deadline");
    }
    pod.shutdown();
}

fn wait_for_log(pod: &Pod, id: &str, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fs::read_to_string(pod.log_dir(id).join("0.log"))
        .unwrap_or_default()
        .contains(text)
    {
        assert!(Instant::now() < deadline, "{id} never logged {text:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_missing_executable_is_a_start_error_recorded_as_128() {
    if !common::require_root() {
        return;
    }
    let pod = Pod::new("bad");
    let r = pod.run("app", &["nosuchbinary"]);
    assert!(!r.ok);
    assert!(
        r.error
            .as_deref()
            .unwrap_or_default()
            .contains(r#"exec: "nosuchbinary": executable file not found in $PATH"#),
        "{r:?}"
    );
    let e = pod.wait_exit("app");
    assert_eq!(e.exit_code, 128);
    pod.shutdown();
}

#[test]
fn shutdown_kills_running_containers_and_leaves_no_process() {
    if !common::require_root() {
        return;
    }
    let pod = Pod::new("down");
    assert!(pod.run("a", &["sh", "-c", "sleep 1001 & sleep 1001"]).ok);
    wait_running(&pod, "a");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut sleepers = sleeping(1001);
    while sleepers.len() < 2 {
        assert!(Instant::now() < deadline, "both sleeps start");
        std::thread::sleep(Duration::from_millis(20));
        sleepers = sleeping(1001);
    }
    pod.shutdown();
    // Killing the container's init killed its whole PID namespace.
    let deadline = Instant::now() + Duration::from_secs(5);
    while sleepers
        .iter()
        .any(|p| Path::new(&format!("/proc/{p}")).exists() && !is_zombie(*p))
    {
        assert!(Instant::now() < deadline, "a process of the pod survived");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// PIDs of `sleep <secs>` processes; each test sleeps a number of its own.
fn sleeping(secs: u32) -> Vec<i32> {
    let cmdline = format!("sleep\0{secs}\0").into_bytes();
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| fs::read(e.path().join("cmdline")).unwrap_or_default() == cmdline)
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
        .collect()
}

fn wait_running(pod: &Pod, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while pod.call(Op::State { id: id.into() }).state.unwrap().status != Status::Running {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
}

mod native_runtime {
    use super::*;
    use nodelet::runtime::api::{CreateContainer, Runtime, RuntimeError, SandboxConfig};
    use nodelet::runtime::native::client::NativeRuntime;

    fn runtime(run_dir: &Path) -> NativeRuntime {
        NativeRuntime::new(
            run_dir,
            Path::new(env!("CARGO_BIN_EXE_nodelet")),
            10 << 20,
            5,
        )
    }

    fn bundle(tmp: &Path, id: &str, args: &[&str]) -> PathBuf {
        write_bundle(tmp, id, args)
    }

    fn shim_pid(run_dir: &Path, sandbox: &str) -> i32 {
        fs::read_to_string(run_dir.join(sandbox).join("shim.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// A sandbox without cgroups.
    async fn new_sandbox(rt: &NativeRuntime, id: &str, hostname: &str) {
        rt.create_sandbox(&SandboxConfig {
            id: id.into(),
            hostname: hostname.into(),
            cgroups: Vec::new(),
        })
        .await
        .unwrap();
    }

    /// Container `app` of `sandbox` running `args`.
    /// Sandbox `sandbox` with container `app` running `sleep 1000`.
    async fn sleeping_app(rt: &NativeRuntime, tmp: &Path, sandbox: &str) {
        new_sandbox(rt, sandbox, "p").await;
        rt.create_container(&app(tmp, sandbox, &["sleep", "1000"]))
            .await
            .unwrap();
        rt.start_container(sandbox, "app").await.unwrap();
    }

    fn app(tmp: &Path, sandbox: &str, args: &[&str]) -> CreateContainer {
        CreateContainer {
            sandbox: sandbox.into(),
            id: "app".into(),
            bundle: bundle(tmp, "app", args),
            log_dir: tmp.join("logs/app"),
            restart_count: 0,
            termination_message_file: None,
            fallback_to_logs: false,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sandboxes_and_containers_through_the_runtime_trait_survive_a_daemon_restart() {
        if !common::require_root() {
            return;
        }
        let tmp = common::test_dir();
        let run_dir = tmp.path().join("run");
        let rt = runtime(&run_dir);
        new_sandbox(&rt, "uid-1", "web").await;
        let req = app(
            tmp.path(),
            "uid-1",
            &["sh", "-c", "echo started; sleep 1000"],
        );
        assert_eq!(
            rt.create_container(&req).await.unwrap().status,
            Status::Created
        );
        assert_eq!(
            rt.start_container("uid-1", "app").await.unwrap().status,
            Status::Running
        );
        drop(rt);
        // "Daemon restart": a new runtime finds the live shim and its container.
        let rt = runtime(&run_dir);
        assert_eq!(rt.list_sandboxes().await.unwrap(), ["uid-1"]);
        assert_eq!(
            rt.container_state("uid-1", "app").await.unwrap().status,
            Status::Running
        );
        rt.signal_container("uid-1", "app", 9).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let exit = loop {
            let st = rt.container_state("uid-1", "app").await.unwrap();
            if let Some(e) = st.exit {
                break e;
            }
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(exit.exit_code, 137);
        rt.remove_container("uid-1", "app").await.unwrap();
        assert!(matches!(
            rt.container_state("uid-1", "app").await,
            Err(RuntimeError::Container { .. })
        ));
        rt.remove_sandbox("uid-1").await.unwrap();
        assert!(rt.list_sandboxes().await.unwrap().is_empty());
        assert!(!run_dir.join("uid-1").exists());
        // Idempotent.
        rt.remove_sandbox("uid-1").await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_shim_killed_with_sigkill_is_cleaned_up_by_sandbox_removal() {
        if !common::require_root() {
            return;
        }
        let tmp = common::test_dir();
        let run_dir = tmp.path().join("run");
        let rt = runtime(&run_dir);
        new_sandbox(&rt, "uid-2", "p").await;
        let pid = shim_pid(&run_dir, "uid-2");
        // A connection is kept after this answer; it dies with the shim.
        assert!(rt.sandbox_info("uid-2").await.is_some());
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        // The dead shim's socket no longer answers: an error, never a hang.
        assert!(rt.container_state("uid-2", "x").await.is_err());
        rt.remove_sandbox("uid-2").await.unwrap();
        assert!(!run_dir.join("uid-2").exists());
    }

    /// The socket inodes a process holds open.
    fn sockets(pid: i32) -> std::collections::BTreeSet<String> {
        fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .flatten()
            .filter_map(|e| fs::read_link(e.path()).ok())
            .map(|l| l.to_string_lossy().into_owned())
            .filter(|l| l.starts_with("socket:"))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_to_a_shim_reuse_one_connection() {
        if !common::require_root() {
            return;
        }
        let tmp = common::test_dir();
        let run_dir = tmp.path().join("run");
        let rt = runtime(&run_dir);
        sleeping_app(&rt, tmp.path(), "uid-3").await;
        let shim = shim_pid(&run_dir, "uid-3");
        // The shim's listener and the connection kept after the start.
        let kept = sockets(shim);
        assert_eq!(kept.len(), 2, "{kept:?}");
        for _ in 0..10 {
            let st = rt.container_state("uid-3", "app").await.unwrap();
            assert_eq!(st.status, Status::Running);
            let r = rt
                .exec(
                    "uid-3",
                    "app",
                    &["true".into()],
                    Duration::from_secs(5),
                    1024,
                )
                .await
                .unwrap();
            assert_eq!(r.exit_code, 0);
            // Each request went over that connection: no other was made.
            assert_eq!(sockets(shim), kept);
        }
        rt.remove_sandbox("uid-3").await.unwrap();
        assert!(matches!(
            rt.container_state("uid-3", "app").await,
            Err(RuntimeError::SandboxNotFound(_))
        ));
    }

    /// Exec probes through the runtime: runs come from the shim on their
    /// grid; past the shim's limit of subscriptions the runtime answers
    /// `None`, and the prober execs on each tick instead of failing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn repeated_execs_through_the_runtime_and_past_the_shims_limit() {
        use nodelet::runtime::api::Repeats;
        use nodelet::runtime::native::protocol::MAX_REPEATS;
        if !common::require_root() {
            return;
        }
        let tmp = common::test_dir();
        let run_dir = tmp.path().join("run");
        let rt = runtime(&run_dir);
        sleeping_app(&rt, tmp.path(), "uid-5").await;
        let every = |first, args: &[&str]| {
            let args: Vec<String> = args.iter().map(|a| (*a).to_string()).collect();
            let rt = &rt;
            async move {
                rt.exec_every(
                    "uid-5",
                    "app",
                    &args,
                    Duration::from_secs(5),
                    1024,
                    first,
                    Duration::from_secs(1),
                    1,
                )
                .await
                .unwrap()
            }
        };
        let now = tokio::time::Instant::now();
        let mut runs = every(now, &["sh", "-c", "echo out; echo err >&2; exit 2"])
            .await
            .unwrap();
        let first = runs.next().await.unwrap();
        assert_eq!(first.len(), 1);
        let r = first[0].result.as_ref().unwrap();
        assert_eq!(
            (r.exit_code, r.stdout.as_str(), r.stderr.as_str()),
            (2, "out\n", "err\n")
        );
        // Subscriptions that will not run within the test fill the shim up.
        let later = now + Duration::from_secs(3600);
        let mut held = Vec::new();
        for _ in 1..MAX_REPEATS {
            held.push(every(later, &["true"]).await.expect("within the limit"));
        }
        assert!(every(later, &["true"]).await.is_none(), "past the limit");
        // Once some are dropped, the shim takes new ones again.
        held.truncate(10);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(every(later, &["true"]).await.is_some());
        drop((held, runs));
        rt.remove_sandbox("uid-5").await.unwrap();
    }

    /// A listener on 127.0.0.1 inside the network namespace of process
    /// `pid` (made by a thread that enters it; the socket keeps it).
    fn listener_in_netns_of(pid: i32) -> std::net::TcpListener {
        let ns = fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
        std::thread::spawn(move || {
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            std::net::TcpListener::bind("127.0.0.1:0").unwrap()
        })
        .join()
        .unwrap()
    }

    /// A listener on 127.0.0.1 in the network namespace of `pid` whose
    /// accept queue is full (a SYN to it is dropped), and the connections
    /// that fill it.
    fn full_listener_in_netns_of(pid: i32) -> (std::net::TcpListener, Vec<std::net::TcpStream>) {
        use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, SockaddrIn};
        use std::os::fd::AsRawFd;
        let ns = fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
        std::thread::spawn(move || {
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let fd = socket::socket(
                AddressFamily::Inet,
                SockType::Stream,
                SockFlag::SOCK_CLOEXEC,
                None,
            )
            .unwrap();
            socket::bind(fd.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, 0)).unwrap();
            socket::listen(&fd, Backlog::new(0).unwrap()).unwrap();
            let l = std::net::TcpListener::from(fd);
            let addr = l.local_addr().unwrap();
            let mut queued = Vec::new();
            while let Ok(s) =
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200))
            {
                queued.push(s);
                assert!(queued.len() < 16, "the accept queue never filled");
            }
            (l, queued)
        })
        .join()
        .unwrap()
    }

    /// Serves probe paths on `l`; every request's first lines go to `seen`.
    fn probe_server(l: std::net::TcpListener, seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        use std::io::{Read, Write};
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut c) = conn else { return };
                let seen = std::sync::Arc::clone(&seen);
                std::thread::spawn(move || {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match c.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let req = String::from_utf8_lossy(&req).into_owned();
                    let path = req.split(' ').nth(1).unwrap_or_default().to_string();
                    seen.lock().unwrap().push(req);
                    let answer = match path.as_str() {
                        "/ok" => "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfine".to_string(),
                        "/fail" => "HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n".into(),
                        "/moved" => "HTTP/1.1 302 Found\r\nLocation: /ok\r\nContent-Length: 0\r\n\r\n".into(),
                        "/away" => "HTTP/1.1 302 Found\r\nLocation: http://192.0.2.1/x\r\nContent-Length: 5\r\n\r\nmoved".into(),
                        "/tls" => "HTTP/1.1 301 Moved\r\nLocation: https://127.0.0.1:8443/ok\r\nContent-Length: 0\r\n\r\n".into(),
                        "/slow" => {
                            std::thread::sleep(Duration::from_secs(3));
                            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".into()
                        }
                        // Close-delimited, ten times the cap.
                        "/big" => format!("HTTP/1.1 200 OK\r\n\r\n{}", "x".repeat(100 * 1024)),
                        _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".into(),
                    };
                    let _ = c.write_all(answer.as_bytes());
                });
            }
        });
    }

    /// Plain-HTTP probes made by the shim from the pod's network
    /// namespace, on their grid, with kubelet's rules and messages; HTTPS
    /// stays with the daemon.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn repeated_http_attempts_are_made_from_the_pods_namespace() {
        use nodelet::probe::action::Outcome;
        use nodelet::probe::http1::{Get, Made, MAX_BODY, USER_AGENT};
        use nodelet::runtime::api::Repeats;
        if !common::require_root() {
            return;
        }
        let tmp = common::test_dir();
        let run_dir = tmp.path().join("run");
        let rt = runtime(&run_dir);
        new_sandbox(&rt, "uid-6", "p").await;
        let pid = shim_pid(&run_dir, "uid-6");
        let l = listener_in_netns_of(pid);
        let port = l.local_addr().unwrap().port();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        probe_server(l, std::sync::Arc::clone(&seen));
        // The same port on the host's loopback: never reached.
        let host = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        host.set_nonblocking(true).unwrap();
        let closed = listener_in_netns_of(pid).local_addr().unwrap().port();
        let get = |port: u16, path: &str| {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            Get::new(false, addr, path, vec![("X-Probe".into(), "yes".into())])
        };
        let every = |get: Get, period_ms: u64| {
            let rt = &rt;
            async move {
                rt.http_every(
                    "uid-6",
                    "app",
                    &get,
                    Duration::from_secs(1),
                    tokio::time::Instant::now(),
                    Duration::from_millis(period_ms),
                    1,
                )
                .await
                .unwrap()
                .expect("the shim makes plain-HTTP attempts")
            }
        };
        let outcomes = |runs: Vec<nodelet::runtime::api::Ran<Made>>| -> Vec<Outcome> {
            runs.into_iter()
                .map(|r| match r.result.unwrap() {
                    Made::Done(o) => o,
                    Made::Unfinished(get) => panic!("not finished: {get:?}"),
                })
                .collect()
        };

        // The first success at once with its body, later ones in a batch
        // of ten (100 ms period) without.
        let mut ok = every(get(port, "ok"), 100).await;
        let first = outcomes(ok.next().await.unwrap());
        assert_eq!(first, vec![Outcome::Success("fine".into())]);
        let began = Instant::now();
        let batch = outcomes(ok.next().await.unwrap());
        assert_eq!(batch, vec![Outcome::Success(String::new()); 10]);
        assert!(
            began.elapsed() >= Duration::from_millis(850),
            "{:?}",
            began.elapsed()
        );
        {
            let seen = seen.lock().unwrap();
            let req = &seen[0];
            assert!(req.starts_with("GET /ok HTTP/1.1\r\n"), "{req}");
            assert!(
                req.contains(&format!("\r\nHost: 127.0.0.1:{port}\r\n")),
                "{req}"
            );
            assert!(
                req.contains(&format!("\r\nUser-Agent: {USER_AGENT}\r\n")),
                "{req}"
            );
            assert!(req.contains("\r\nX-Probe: yes\r\n"), "{req}");
        }
        // Dropping the runs ends the subscription.
        drop(ok);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let count = seen.lock().unwrap().len();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            seen.lock().unwrap().len(),
            count,
            "no attempt after the drop"
        );

        // Every failure as it comes.
        let mut fail = every(get(port, "/fail"), 100).await;
        for _ in 0..2 {
            let got = outcomes(fail.next().await.unwrap());
            assert_eq!(
                got,
                vec![Outcome::Failure(
                    "HTTP probe failed with statuscode: 500".into()
                )]
            );
        }
        drop(fail);
        let refused = outcomes(every(get(closed, "/"), 1000).await.next().await.unwrap());
        assert_eq!(
            refused,
            vec![Outcome::Failure(format!(
                "Get \"http://127.0.0.1:{closed}/\": dial tcp 127.0.0.1:{closed}: connect: connection refused"
            ))]
        );
        // Redirects on the same host are followed, to another host not.
        let moved = outcomes(every(get(port, "/moved"), 1000).await.next().await.unwrap());
        assert_eq!(moved, vec![Outcome::Success("fine".into())]);
        let away = outcomes(every(get(port, "/away"), 1000).await.next().await.unwrap());
        assert_eq!(
            away,
            vec![Outcome::Warning(
                "Probe terminated redirects, Response body: moved".into()
            )]
        );
        // Redirected to HTTPS on the same host: the daemon finishes it.
        let tls = every(get(port, "/tls"), 1000).await.next().await.unwrap();
        match &tls[0].result {
            Ok(Made::Unfinished(g)) => {
                assert_eq!((g.https, g.addr.port(), g.redirects), (true, 8443, 1));
                assert_eq!(g.url(), "https://127.0.0.1:8443/ok");
            }
            other => panic!("{other:?}"),
        }
        // A body is read up to kubelet's cap.
        let big = outcomes(every(get(port, "/big"), 1000).await.next().await.unwrap());
        assert!(
            matches!(&big[..], [Outcome::Success(b)] if b.len() == MAX_BODY),
            "{:?}",
            big.iter().map(|o| o.message().len()).collect::<Vec<_>>()
        );
        // A server slower than the timeout: kubelet's timeout failure.
        let mut slow = every(get(port, "/slow"), 1000).await;
        let runs = slow.next().await.unwrap();
        assert!(
            runs[0].took >= Duration::from_millis(990),
            "{:?}",
            runs[0].took
        );
        assert_eq!(
            outcomes(runs),
            vec![Outcome::Failure(format!(
                "Get \"http://127.0.0.1:{port}/slow\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
            ))]
        );
        drop(slow);
        assert!(
            matches!(host.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "the host's loopback was reached"
        );
        // HTTPS is the daemon's.
        let mut tls = get(port, "/ok");
        tls.https = true;
        let none = rt
            .http_every(
                "uid-6",
                "app",
                &tls,
                Duration::from_secs(1),
                tokio::time::Instant::now(),
                Duration::from_secs(1),
                1,
            )
            .await
            .unwrap();
        assert!(none.is_none());
        rt.remove_sandbox("uid-6").await.unwrap();
    }

    /// A connection still being made when the shim first tries to send
    /// (the listener's accept queue is full, so the SYN is dropped and
    /// sent again a second later): the shim waits for the handshake, then
    /// sends the request and reads the answer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_shims_http_attempt_waits_for_a_slow_handshake() {
        use nodelet::probe::action::Outcome;
        use nodelet::probe::http1::{Get, Made};
        use nodelet::runtime::api::Repeats;
        if !common::require_root() {
            return;
        }
        let tmp = common::test_dir();
        let run_dir = tmp.path().join("run");
        let rt = runtime(&run_dir);
        new_sandbox(&rt, "uid-7", "p").await;
        let (l, queued) = full_listener_in_netns_of(shim_pid(&run_dir, "uid-7"));
        let port = l.local_addr().unwrap().port();
        let get = Get::new(false, ([127, 0, 0, 1], port).into(), "/ok", Vec::new());
        let now = tokio::time::Instant::now();
        let mut runs = rt
            .http_every(
                "uid-7",
                "app",
                &get,
                Duration::from_secs(5),
                now,
                Duration::from_secs(10),
                1,
            )
            .await
            .unwrap()
            .unwrap();
        // The shim's SYN is dropped meanwhile; then the queue empties, and
        // the server answers what comes next.
        tokio::time::sleep(Duration::from_millis(300)).await;
        for _ in &queued {
            drop(l.accept().unwrap());
        }
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        probe_server(l, std::sync::Arc::clone(&seen));
        let got = runs.next().await.unwrap();
        assert_eq!(got.len(), 1);
        assert!(
            got[0].took >= Duration::from_millis(500),
            "{:?}",
            got[0].took
        );
        assert_eq!(
            got[0].result.as_ref().unwrap(),
            &Made::Done(Outcome::Success("fine".into()))
        );
        assert_eq!(seen.lock().unwrap().len(), 1);
        drop((runs, queued));
        rt.remove_sandbox("uid-7").await.unwrap();
    }

    /// tcpSocket probes made by the shim: connected is success; refused and
    /// timed-out connections fail in Go's words; the pod's loopback, not
    /// the host's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn repeated_connections_for_tcp_probes_from_the_pods_namespace() {
        use nodelet::probe::action::Outcome;
        use nodelet::probe::http1::Made;
        use nodelet::runtime::api::Repeats;
        if !common::require_root() {
            return;
        }
        let tmp = common::test_dir();
        let run_dir = tmp.path().join("run");
        let rt = runtime(&run_dir);
        new_sandbox(&rt, "uid-8", "p").await;
        let pid = shim_pid(&run_dir, "uid-8");
        let open = listener_in_netns_of(pid);
        let port = open.local_addr().unwrap().port();
        // The host's loopback, same port: never reached.
        let host = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        host.set_nonblocking(true).unwrap();
        let closed = listener_in_netns_of(pid).local_addr().unwrap().port();
        // A listener whose accept queue is full: the SYN is dropped.
        let (full, _queued) = full_listener_in_netns_of(pid);
        let full_port = full.local_addr().unwrap().port();
        let dial = |port: u16| {
            let rt = &rt;
            async move {
                let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
                let now = tokio::time::Instant::now();
                let mut runs = rt
                    .dial_every(
                        "uid-8",
                        "app",
                        addr,
                        Duration::from_millis(500),
                        now,
                        Duration::from_secs(10),
                        1,
                    )
                    .await
                    .unwrap()
                    .expect("the shim makes connections");
                let got = runs.next().await.unwrap();
                assert_eq!(got.len(), 1);
                match &got[0].result {
                    Ok(Made::Done(o)) => (o.clone(), got[0].took),
                    other => panic!("{other:?}"),
                }
            }
        };
        assert_eq!(dial(port).await.0, Outcome::Success(String::new()));
        assert!(open.accept().is_ok(), "the pod's listener was reached");
        assert!(
            matches!(host.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "the host's loopback was reached"
        );
        assert_eq!(
            dial(closed).await.0,
            Outcome::Failure(format!(
                "dial tcp 127.0.0.1:{closed}: connect: connection refused"
            ))
        );
        let (timed_out, took) = dial(full_port).await;
        assert_eq!(
            timed_out,
            Outcome::Failure(format!("dial tcp 127.0.0.1:{full_port}: i/o timeout"))
        );
        assert!(took >= Duration::from_millis(490), "{took:?}");
        rt.remove_sandbox("uid-8").await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unknown_sandboxes_are_reported_not_found() {
        let tmp = common::test_dir();
        let rt = runtime(&tmp.path().join("run"));
        assert!(matches!(
            rt.container_state("nope", "x").await,
            Err(RuntimeError::SandboxNotFound(_))
        ));
    }
}

mod exec {
    use super::*;
    use nodelet::runtime::native::protocol::ExecResult;

    fn exec(pod: &Pod, id: &str, args: &[&str], timeout_ms: u64, max_output: usize) -> ExecResult {
        let r = pod.call(Op::Exec {
            id: id.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            timeout_ms,
            max_output,
        });
        assert!(r.ok, "{r:?}");
        r.exec.unwrap()
    }

    #[test]
    fn exec_runs_inside_the_container_with_its_root_and_pid_namespace() {
        if !common::require_root() {
            return;
        }
        let pod = Pod::new("ex");
        assert!(
            pod.run(
                "app",
                &[
                    "sh",
                    "-c",
                    "echo inside > /tmp/marker; echo ready; sleep 1000"
                ]
            )
            .ok
        );
        wait_for_log(&pod, "app", "ready");
        let r = exec(&pod, "app", &["sh", "-c", "cat /tmp/marker; cat /proc/1/cmdline | tr '\\0' ' '; echo; hostname; grep NoNewPrivs /proc/self/status; exit 5"], 5000, 4096);
        assert_eq!(r.exit_code, 5, "{r:?}");
        let lines: Vec<&str> = r.stdout.lines().collect();
        assert_eq!(lines[0], "inside", "same root: {r:?}");
        assert_eq!(
            lines[1].trim(),
            "sleep 1000",
            "PID 1 is the container's init: {r:?}"
        );
        assert_eq!(lines[2], "ex");
        assert_eq!(lines[3], "NoNewPrivs:\t1");
        assert!(!r.timed_out && !r.truncated);
        pod.shutdown();
    }

    /// Pod `name` running container `app` (asleep, in a cgroup under a
    /// parent of its own: removing that kills what is inside).
    fn sleeper_with_cgroup(name: &str) -> (Pod, String) {
        let cgroup = format!("/nodelet-test-shim-{}-{name}/app", std::process::id());
        let pod = Pod::new(name);
        let cg = cgroup.clone();
        let r = pod.run_config(
            "app",
            &["sh", "-c", "echo ready; exec sleep 1000"],
            move |c| {
                c.cgroup_path = Some(cg);
            },
        );
        assert!(r.ok, "{r:?}");
        wait_for_log(&pod, "app", "ready");
        (pod, cgroup)
    }

    /// Pauses land between execs, never on one being started: the shim
    /// freezes between its requests. (A freeze from outside could catch a
    /// command after it joined the cgroup and before its execve; the shim,
    /// waiting for that execve, would hang until the thaw.)
    #[test]
    fn pauses_through_the_shim_never_catch_an_exec_being_started() {
        if !common::require_root() {
            return;
        }
        let (pod, cgroup) = sleeper_with_cgroup("pause");
        let backend = nodelet::runtime::cgroup::detect().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let state = pod.state.clone();
        let flag = std::sync::Arc::clone(&stop);
        let execs = std::thread::spawn(move || {
            let (mut ran, mut refused) = (0, 0);
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let r = shim::call(
                    &state,
                    Op::Exec {
                        id: "app".into(),
                        args: vec!["true".into()],
                        timeout_ms: 5000,
                        max_output: 64,
                    },
                )
                .unwrap();
                match r.exec {
                    Some(e) if r.ok && e.exit_code == 0 => ran += 1,
                    _ if r.error.as_deref().is_some_and(|e| e.contains("paused")) => refused += 1,
                    _ => panic!("{r:?}"),
                }
            }
            (ran, refused)
        });
        for _ in 0..40 {
            let r = pod.call(Op::Pause { id: "app".into() });
            assert!(r.ok, "{r:?}");
            assert!(backend.is_frozen(&cgroup).unwrap());
            std::thread::sleep(Duration::from_millis(3));
            backend.thaw(&cgroup).unwrap();
            std::thread::sleep(Duration::from_millis(3));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (ran, refused) = execs.join().unwrap();
        assert!(ran > 0 && refused > 0, "ran {ran}, refused {refused}");
        let r = pod.call(Op::Pause { id: "nope".into() });
        assert_eq!(r.error.as_deref(), Some("container nope not found"));
        pod.shutdown();
        let _ = backend.remove(&cgroup);
        let _ = backend.remove(cgroup.trim_end_matches("/app"));
    }

    /// An `execEvery` on its own connection: acknowledged at once; the
    /// first successes in a row come as they happen, later ones in batches;
    /// a failure at once, after the successes held before it; nothing
    /// while the container is frozen; nothing more once the connection
    /// closed. Bad subscriptions are refused with the reason.
    #[test]
    fn repeated_execs_report_failures_at_once_and_end_with_their_connection() {
        use std::io::{BufRead, Write};
        if !common::require_root() {
            return;
        }
        let (pod, cgroup) = sleeper_with_cgroup("repeat");
        let every = |id: &str, args: &[&str]| Op::ExecEvery {
            id: id.into(),
            args: args.iter().map(|a| (*a).to_string()).collect(),
            max_output: 1024,
            every: nodelet::runtime::native::protocol::Every {
                timeout_ms: 5000,
                first_at: nodelet::time::monotonic_ns(),
                period_ms: 100,
                quiet_after: 2,
            },
        };
        let refused = pod.call(every("nope", &["true"]));
        assert_eq!(refused.error.as_deref(), Some("container nope not found"));
        let refused = pod.call(every("app", &[]));
        assert_eq!(
            refused.error.as_deref(),
            Some("no command given (empty args)")
        );

        let probe =
            "echo run >> /tmp/runs; if [ -e /tmp/fail ]; then echo bad; exit 3; fi; echo ok";
        let mut conn =
            std::os::unix::net::UnixStream::connect(pod.state.join("shim.sock")).unwrap();
        let req = serde_json::to_vec(&nodelet::runtime::native::protocol::Request {
            v: nodelet::runtime::native::protocol::PROTOCOL_VERSION,
            op: every("app", &["sh", "-c", probe]),
        })
        .unwrap();
        conn.write_all(&req).unwrap();
        conn.write_all(b"\n").unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut lines = std::io::BufReader::new(conn.try_clone().unwrap());
        let mut read = move || {
            let mut line = String::new();
            lines.read_line(&mut line).map(|_| {
                let r: Response = serde_json::from_str(&line).unwrap();
                assert!(r.ok, "{r:?}");
                r.runs.unwrap_or_default()
            })
        };
        assert!(read().unwrap().is_empty(), "acknowledged at once");
        for _ in 0..2 {
            let runs = read().unwrap();
            assert_eq!(runs.len(), 1, "{runs:?}");
            let e = runs[0].exec.as_ref().unwrap();
            assert_eq!((e.exit_code, e.stdout.as_str()), (0, "ok\n"));
        }
        let held = Instant::now();
        let runs = read().unwrap();
        assert_eq!(runs.len(), 10, "then a batch: {runs:?}");
        assert!(runs.iter().all(|r| r
            .exec
            .as_ref()
            .is_some_and(|e| e.exit_code == 0 && e.stdout.is_empty())));
        // Ten runs 100 ms apart, the first of them due right away.
        assert!(
            held.elapsed() >= Duration::from_millis(800),
            "{:?}",
            held.elapsed()
        );

        let r = pod.call(Op::Exec {
            id: "app".into(),
            args: vec!["touch".into(), "/tmp/fail".into()],
            timeout_ms: 5000,
            max_output: 64,
        });
        assert!(r.ok, "{r:?}");
        let runs = read().unwrap();
        let (last, before) = runs.split_last().unwrap();
        let e = last.exec.as_ref().unwrap();
        assert_eq!((e.exit_code, e.stdout.as_str()), (3, "bad\n"));
        assert!(before
            .iter()
            .all(|r| r.exec.as_ref().is_some_and(|e| e.exit_code == 0)));
        let runs = read().unwrap();
        assert_eq!(runs.len(), 1, "every failure at once: {runs:?}");

        // Frozen: no runs (one that was under way may end after the thaw).
        let backend = nodelet::runtime::cgroup::detect().unwrap();
        assert!(pod.call(Op::Pause { id: "app".into() }).ok);
        std::thread::sleep(Duration::from_millis(300));
        conn.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        while read().is_ok() {}
        conn.set_read_timeout(Some(Duration::from_millis(600)))
            .unwrap();
        assert!(read().is_err(), "a run reported while frozen");
        backend.thaw(&cgroup).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let runs = read().unwrap();
        assert_eq!(runs.last().unwrap().exec.as_ref().unwrap().exit_code, 3);

        drop((read, conn));
        std::thread::sleep(Duration::from_millis(300));
        let count = || {
            let r = pod.call(Op::Exec {
                id: "app".into(),
                args: vec!["sh".into(), "-c".into(), "wc -l < /tmp/runs".into()],
                timeout_ms: 5000,
                max_output: 64,
            });
            r.exec.unwrap().stdout.trim().parse::<u32>().unwrap()
        };
        let after_close = count();
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(
            count(),
            after_close,
            "runs went on after the connection closed"
        );
        pod.shutdown();
        let _ = backend.remove(&cgroup);
        let _ = backend.remove(cgroup.trim_end_matches("/app"));
    }

    /// The fields of /proc/<pid>/status that make a process's identity.
    const IDENTITY: &str =
        "grep -E '^(Uid|Gid|Groups|Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|SigBlk|SigIgn):'";

    #[test]
    fn an_exec_has_the_containers_identity_cgroup_and_clean_signals() {
        if !common::require_root() {
            return;
        }
        let cgroup = format!("/nodelet-test-shim-{}-ident/app", std::process::id());
        let pod = Pod::new("ident");
        let script = format!(
            "{IDENTITY} /proc/self/status > /tmp/init; cat /proc/self/cgroup > /tmp/init-cg; \
             cat /proc/self/oom_score_adj > /tmp/init-oom; ulimit -n > /tmp/init-nofile; \
             umask > /tmp/init-umask; echo ready; exec sleep 1000"
        );
        let cg = cgroup.clone();
        let r = pod.run_config("app", &["sh", "-c", &script], move |c| {
            c.uid = 1000;
            c.gid = 1001;
            c.additional_gids = vec![1002, 1003];
            c.cap_drop = vec!["CAP_CHOWN".into(), "CAP_KILL".into()];
            c.no_new_privileges = true;
            c.oom_score_adj = Some(500);
            c.cwd = "/tmp".into();
            c.cgroup_path = Some(cg);
        });
        assert!(r.ok, "{r:?}");
        wait_for_log(&pod, "app", "ready");
        let r = exec(
            &pod,
            "app",
            &[
                "sh",
                "-c",
                &format!(
                    "{IDENTITY} /proc/self/status | diff /tmp/init - && \
                     cat /proc/self/cgroup | diff /tmp/init-cg - && \
                     cat /proc/self/oom_score_adj | diff /tmp/init-oom - && \
                     ulimit -n | diff /tmp/init-nofile - && \
                     umask | diff /tmp/init-umask - && pwd && cat /tmp/init"
                ),
            ],
            5000,
            8192,
        );
        assert_eq!(r.exit_code, 0, "the exec differs from the init: {r:?}");
        let lines: Vec<&str> = r.stdout.lines().collect();
        assert_eq!(lines[0], "/tmp", "the container's cwd: {r:?}");
        // What both share is what the container asked for, and no signal
        // is blocked or ignored (the shim blocks and ignores some).
        for want in [
            "Uid:\t1000\t1000\t1000\t1000",
            "Gid:\t1001\t1001\t1001\t1001",
            "Groups:\t1002 1003 ",
            "NoNewPrivs:\t1",
            "SigBlk:\t0000000000000000",
            "SigIgn:\t0000000000000000",
        ] {
            assert!(lines.contains(&want), "{want:?} in {r:?}");
        }
        let bnd = lines
            .iter()
            .find_map(|l| l.strip_prefix("CapBnd:\t"))
            .map(|h| u64::from_str_radix(h, 16).unwrap())
            .unwrap();
        assert_eq!(bnd & (1 << 0 | 1 << 5), 0, "CAP_CHOWN and CAP_KILL dropped");
        assert_ne!(bnd & (1 << 1), 0, "CAP_DAC_OVERRIDE kept");
        // A missing program, one that is not executable, and a path that
        // does not exist: containerd's messages and codes.
        let e = exec(&pod, "app", &["/etc/passwd"], 1000, 1000);
        assert_eq!(e.exit_code, 126, "{e:?}");
        assert!(
            e.stderr
                .contains(r#"exec: "/etc/passwd": permission denied"#),
            "{e:?}"
        );
        let e = exec(&pod, "app", &["/no/such"], 1000, 1000);
        assert_eq!(e.exit_code, 127, "{e:?}");
        assert!(
            e.stderr
                .contains(r#"exec: "/no/such": stat /no/such: no such file or directory"#),
            "{e:?}"
        );
        let e = exec(&pod, "app", &["passwd"], 1000, 1000);
        assert_eq!(e.exit_code, 127, "{e:?}");
        // The shim entered the container's PID namespace for those execs
        // only: a container made after them has a namespace of its own.
        assert!(
            pod.run("next", &["sh", "-c", "echo pid $$; exec sleep 1000"])
                .ok
        );
        wait_for_log(&pod, "next", "pid 1");
        let depth = |id: &str| {
            let pid = pod.call(Op::State { id: id.into() }).state.unwrap().pid;
            let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
            nspid.split_whitespace().count()
        };
        assert_eq!(depth("next"), depth("app"), "not nested in app's namespace");
        pod.shutdown();
        let cg = nodelet::runtime::cgroup::detect().unwrap();
        assert!(!cg.exists(&cgroup), "the container's cgroup went with it");
        let (parent, _) = cgroup.rsplit_once('/').unwrap();
        cg.remove(parent).unwrap();
    }

    #[test]
    fn exec_output_is_capped_and_timeouts_kill_the_process_tree() {
        if !common::require_root() {
            return;
        }
        let pod = Pod::new("cap");
        assert!(pod.run("app", &["sleep", "1000"]).ok);
        wait_running(&pod, "app");
        let r = exec(
            &pod,
            "app",
            &[
                "sh",
                "-c",
                "dd if=/dev/zero bs=1000 count=100 2>/dev/null | tr '\\0' x",
            ],
            5000,
            1000,
        );
        assert_eq!((r.stdout.len(), r.truncated), (1000, true));
        let started = Instant::now();
        let r = exec(
            &pod,
            "app",
            &["sh", "-c", "sleep 1003 & sleep 1003"],
            300,
            1000,
        );
        assert!(r.timed_out, "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            sleeping(1003).is_empty(),
            "the exec's children died with it"
        );
        let e = exec(&pod, "app", &["nosuch"], 1000, 1000);
        assert_eq!(e.exit_code, 127, "{e:?}");
        assert!(e.stderr.contains("executable file not found"), "{e:?}");
        pod.shutdown();
    }

    #[test]
    fn exec_into_a_stopped_container_is_refused() {
        if !common::require_root() {
            return;
        }
        let pod = Pod::new("stopped");
        assert!(pod.run("app", &["true"]).ok);
        pod.wait_exit("app");
        let r = pod.call(Op::Exec {
            id: "app".into(),
            args: vec!["true".into()],
            timeout_ms: 1000,
            max_output: 10,
        });
        assert!(!r.ok && r.error.unwrap().contains("not running"));
        pod.shutdown();
    }
}

#[test]
fn a_container_that_forks_many_children_and_exits_leaves_none() {
    if !common::require_root() {
        return;
    }
    let pod = Pod::new("forky");
    assert!(pod.run("app", &["sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do sleep 1002 & done; exit 0"]).ok);
    assert_eq!(pod.wait_exit("app").exit_code, 0);
    // The init's exit took its PID namespace, and every sleep, with it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !sleeping(1002).is_empty() {
        assert!(Instant::now() < deadline, "children outlived the container");
        std::thread::sleep(Duration::from_millis(20));
    }
    pod.shutdown();
}

#[test]
fn pod_containers_share_ipc_net_and_uts_namespaces_but_not_pid_or_mount() {
    if !common::require_root() {
        return;
    }
    let pod = Pod::new("ns");
    // Both stay alive while compared: namespace inode numbers are reused
    // once a namespace is gone.
    let script =
        "for n in ipc net uts pid mnt; do readlink /proc/self/ns/$n; done; echo done; sleep 1000";
    let ns = |id: &str| {
        assert!(pod.run(id, &["sh", "-c", script]).ok);
        wait_for_log(&pod, id, "done");
        let log = fs::read_to_string(pod.log_dir(id).join("0.log")).unwrap();
        log.lines()
            .map(|l| l.rsplit(' ').next().unwrap().to_string())
            .filter(|l| l != "done")
            .collect::<Vec<_>>()
    };
    let (a, b) = (ns("a"), ns("b"));
    assert_eq!(a.len(), 5, "{a:?}");
    assert_eq!(a[..3], b[..3], "ipc, net and uts are the pod's");
    assert_ne!(a[3], b[3], "each container has its own PID namespace");
    assert_ne!(a[4], b[4], "and its own mount namespace");
    pod.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_containers_see_the_pods_hosts_hostname_and_resolv_conf() {
    use nodelet::runtime::api::{CreateContainer, Runtime, SandboxConfig};
    if !common::require_root() {
        return;
    }
    let tmp = common::test_dir();
    let rt = nodelet::runtime::native::client::NativeRuntime::new(
        &tmp.path().join("run"),
        Path::new(env!("CARGO_BIN_EXE_nodelet")),
        10 << 20,
        5,
    );
    let info = rt
        .create_sandbox(&SandboxConfig {
            id: "uid-etc".into(),
            hostname: "web-0".into(),
            cgroups: Vec::new(),
        })
        .await
        .unwrap();
    let bundle = write_bundle_with(
        tmp.path(),
        "app",
        &[
            "sh",
            "-c",
            "cat /etc/hostname; head -1 /etc/hosts; cat /etc/resolv.conf",
        ],
        |c| c.mounts.extend(info.pod_mounts()),
    );
    let req = CreateContainer {
        sandbox: "uid-etc".into(),
        id: "app".into(),
        bundle,
        log_dir: tmp.path().join("logs/app"),
        restart_count: 0,
        termination_message_file: None,
        fallback_to_logs: false,
    };
    rt.create_container(&req).await.unwrap();
    rt.start_container("uid-etc", "app").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while rt
        .container_state("uid-etc", "app")
        .await
        .unwrap()
        .exit
        .is_none()
    {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = fs::read(tmp.path().join("logs/app/0.log")).unwrap();
    let text = String::from_utf8(nodelet::runtime::logs::reassemble(&log)).unwrap();
    let host_resolv = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    assert_eq!(
        text,
        format!(
            "web-0\n# Kubernetes-managed hosts file.\n{host_resolv}{}",
            if host_resolv.is_empty() || host_resolv.ends_with('\n') {
                ""
            } else {
                "\n"
            }
        )
    );
    rt.remove_sandbox("uid-etc").await.unwrap();
}

#[test]
fn termination_messages_come_from_the_file_or_the_logs_on_error() {
    if !common::require_root() {
        return;
    }
    let pod = Pod::new("term");
    let file = |name: &str| {
        let f = pod.tmp.path().join(name);
        fs::write(&f, "").unwrap();
        f
    };
    let written = file("written");
    assert!(
        pod.run_with(
            "a",
            &[
                "sh",
                "-c",
                "echo 'disk full' > /dev/termination-log; exit 1"
            ],
            Some((written, true))
        )
        .ok
    );
    assert_eq!(pod.wait_exit("a").message, "disk full\n");
    let empty = file("empty");
    assert!(
        pod.run_with(
            "b",
            &["sh", "-c", "echo line1; echo line2; exit 2"],
            Some((empty.clone(), true))
        )
        .ok
    );
    assert_eq!(
        pod.wait_exit("b").message,
        "line1\nline2\n",
        "FallbackToLogsOnError with an empty file"
    );
    assert!(
        pod.run_with(
            "c",
            &["sh", "-c", "echo out; exit 0"],
            Some((file("ok"), true))
        )
        .ok
    );
    assert_eq!(
        pod.wait_exit("c").message,
        "",
        "exit 0 never reads the logs"
    );
    assert!(
        pod.run_with(
            "d",
            &["sh", "-c", "echo out; exit 3"],
            Some((file("policy-file"), false))
        )
        .ok
    );
    assert_eq!(
        pod.wait_exit("d").message,
        "",
        "policy File never reads the logs"
    );
    pod.shutdown();
}

/// `Watch` answers at once with the shim's change count when asked with
/// another, and otherwise waits until a container exits.
#[test]
fn watch_answers_when_a_container_exits() {
    if !common::require_root() {
        return;
    }
    let pod = Pod::new("watch");
    let now = pod.call(Op::Watch { since: u64::MAX });
    assert!(now.ok, "{now:?}");
    let seq = now.seq.unwrap();
    assert!(pod.run("short", &["sleep", "1"]).ok);
    let state = pod.state.clone();
    let waiter = std::thread::spawn(move || {
        let t = Instant::now();
        let r = shim::call(&state, Op::Watch { since: seq }).unwrap();
        (r, t.elapsed())
    });
    let (r, waited) = waiter.join().unwrap();
    assert_eq!(r.seq, Some(seq + 1), "{r:?}");
    assert!(
        waited >= Duration::from_millis(500),
        "answered before the exit: {waited:?}"
    );
    let st = pod.call(Op::State { id: "short".into() }).state.unwrap();
    assert_eq!(
        st.status,
        Status::Exited,
        "answered before the exit was recorded"
    );
    // Asked with an old count: answered at once.
    let r = pod.call(Op::Watch { since: seq });
    assert_eq!(r.seq, Some(seq + 1));
    pod.shutdown();
}

/// A container that closes its stdout and stderr, and a finished exec,
/// leave the shim asleep in its poll loop (a hung-up pipe left in the poll
/// set would wake it at once, forever).
#[test]
fn closed_output_pipes_do_not_keep_the_shim_awake() {
    if !common::require_root() {
        return;
    }
    let pod = Pod::new("quiet");
    assert!(
        pod.run("closer", &["sh", "-c", "exec >&- 2>&-; sleep 30"])
            .ok
    );
    wait_running(&pod, "closer");
    let r = pod.call(Op::Exec {
        id: "closer".into(),
        args: vec!["true".into()],
        timeout_ms: 5000,
        max_output: 1024,
    });
    assert!(r.ok, "{r:?}");
    std::thread::sleep(Duration::from_millis(200));
    assert_asleep(&pod);
    pod.shutdown();
}

/// A connection that hangs up while its exec runs, with its socket still
/// open in a created container's init (which holds copies of the shim's
/// descriptors until it execs), leaves the shim's readiness set: a
/// stale entry would report the hang-up at every wait.
#[test]
fn a_connection_gone_mid_exec_does_not_keep_the_shim_awake() {
    if !common::require_root() {
        return;
    }
    let pod = Pod::new("hangup");
    assert!(pod.run("app", &["sleep", "30"]).ok);
    wait_running(&pod, "app");
    use std::io::Write;
    let mut conn = std::os::unix::net::UnixStream::connect(pod.state.join("shim.sock")).unwrap();
    let req = serde_json::to_vec(&nodelet::runtime::native::protocol::Request {
        v: nodelet::runtime::native::protocol::PROTOCOL_VERSION,
        op: Op::Exec {
            id: "app".into(),
            args: vec!["sleep".into(), "1".into()],
            timeout_ms: 5000,
            max_output: 1024,
        },
    })
    .unwrap();
    conn.write_all(&req).unwrap();
    conn.write_all(b"\n").unwrap();
    // Created, not started: its init now holds the connection too.
    let bundle = write_bundle(pod.tmp.path(), "held", &["true"]);
    let r = pod.create("held", &bundle, None);
    assert!(r.ok, "{r:?}");
    drop(conn);
    std::thread::sleep(Duration::from_millis(100));
    assert_asleep(&pod);
    let st = pod.call(Op::State { id: "app".into() }).state.unwrap();
    assert_eq!(st.status, Status::Running);
    pod.shutdown();
}

/// The shim sleeps: sampled 40 times over 2 s, a spinning shim is nearly
/// always running.
fn assert_asleep(pod: &Pod) {
    let mut sleeping = 0;
    for _ in 0..40 {
        let stat = fs::read_to_string(format!("/proc/{}/stat", pod.pid)).unwrap();
        let state = stat.rsplit_once(") ").unwrap().1.chars().next().unwrap();
        sleeping += usize::from(state == 'S');
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        sleeping >= 30,
        "the shim slept in only {sleeping} of 40 samples"
    );
}

/// CVE-2019-5736: the shim, and with it every exec helper and container
/// init it forks, runs from a sealed in-memory copy of nodelet, so
/// `/proc/<pid>/exe` never leads to a writable binary on the host.
#[test]
fn the_shim_runs_from_a_sealed_copy_of_the_binary() {
    if !common::require_root() {
        return;
    }
    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    let pod = Pod::new("sealed");
    let exe = format!("/proc/{}/exe", pod.pid);
    let target = fs::read_link(&exe).unwrap();
    assert!(
        target.to_string_lossy().starts_with("/memfd:nodelet"),
        "{}",
        target.display()
    );
    let f = fs::File::open(&exe).unwrap();
    let seals = SealFlag::from_bits_truncate(fcntl(&f, FcntlArg::F_GET_SEALS).unwrap());
    assert!(
        seals.contains(
            SealFlag::F_SEAL_WRITE
                | SealFlag::F_SEAL_SHRINK
                | SealFlag::F_SEAL_GROW
                | SealFlag::F_SEAL_SEAL
        ),
        "{seals:?}"
    );
    // Not even root on the host can write through it.
    let mut w = fs::OpenOptions::new().write(true).open(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&f)
    ));
    if let Ok(w) = w.as_mut() {
        use std::io::Write;
        assert!(w.write_all(b"x").is_err(), "wrote into the sealed binary");
    }
    pod.shutdown();
}
