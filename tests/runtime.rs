//! Conformance of the native runtime, checked from inside real containers
//! (busybox, overlay rootfs, new namespaces), as youki's runtimetest does.
//! Containers run through the hidden `nodelet run-container BUNDLE`, since
//! forking needs a single-threaded process. Needs root.

#![allow(clippy::unwrap_used, clippy::needless_pass_by_value)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use nodelet::runtime::plan::{build_spec, BindMount, ContainerConfig, Rootfs};

struct Bundle {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

fn bundle(args: &[&str], edit: impl FnOnce(&mut ContainerConfig, &Path)) -> Bundle {
    let tmp = common::test_dir();
    let dir = tmp.path().join("bundle");
    for d in ["upper", "work"] {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
    let rootfs = Rootfs::Overlay {
        lower: vec![common::oci::busybox_lower().to_path_buf()],
        upper: dir.join("upper"),
        work: dir.join("work"),
    };
    let mut cfg = ContainerConfig::new(rootfs, args.iter().map(|s| s.to_string()).collect());
    cfg.hostname = "web".into();
    edit(&mut cfg, tmp.path());
    let spec = build_spec(&cfg).unwrap();
    fs::write(
        dir.join("config.json"),
        serde_json::to_vec_pretty(&spec).unwrap(),
    )
    .unwrap();
    Bundle { _tmp: tmp, dir }
}

fn run(b: &Bundle) -> Output {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nodelet"))
        .args(["run-container", b.dir.to_str().unwrap()])
        .output()
        .unwrap();
    // Nothing of the container outlives it on the host: its mounts lived in
    // its own mount namespace.
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(b.dir.to_str().unwrap()),
        "a mount of the bundle leaked:\n{mounts}"
    );
    out
}

fn sh(script: &str) -> Output {
    run(&bundle(&["sh", "-c", script], |_, _| {}))
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn the_entrypoint_is_pid_1_with_the_planned_hostname() {
    if !common::require_root() {
        return;
    }
    let o = sh("echo $$; hostname");
    assert_eq!(
        stdout(&o),
        "1\nweb",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn no_new_privs_and_dockers_default_capabilities() {
    if !common::require_root() {
        return;
    }
    let o = sh("grep -E '^(NoNewPrivs|CapEff|CapBnd|CapPrm):' /proc/self/status");
    let out = stdout(&o);
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    // CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP
    assert!(out.contains("CapEff:\t00000000a80425fb"), "{out}");
    assert!(out.contains("CapBnd:\t00000000a80425fb"), "{out}");
}

#[test]
fn capabilities_follow_drops_and_adds() {
    if !common::require_root() {
        return;
    }
    let b = bundle(&["sh", "-c", "grep CapEff /proc/self/status"], |c, _| {
        c.cap_drop = vec!["ALL".into()];
        c.cap_add = vec!["CAP_NET_ADMIN".into()];
    });
    assert_eq!(stdout(&run(&b)), "CapEff:\t0000000000001000");
}

#[test]
fn only_the_planned_mounts_are_visible() {
    if !common::require_root() {
        return;
    }
    let host_dir = common::test_dir();
    fs::write(host_dir.path().join("f"), "shared").unwrap();
    let src = host_dir.path().to_path_buf();
    let b = bundle(
        &["sh", "-c", "cut -d' ' -f2 /proc/mounts; cat /data/f"],
        move |c, _| {
            c.mounts.push(BindMount {
                source: src,
                destination: "/data".into(),
                readonly: true,
                propagation: None,
            });
        },
    );
    let o = run(&b);
    let out = stdout(&o);
    let mut points: Vec<&str> = out.lines().collect();
    assert_eq!(points.pop(), Some("shared"));
    points.sort_unstable();
    let mut want = vec![
        "/",
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
        "/sys",
        "/data",
        "/dev/null",
        "/dev/zero",
        "/dev/full",
        "/dev/random",
        "/dev/urandom",
        "/dev/tty",
    ];
    // Masked and read-only paths are mounted when the kernel has them (the
    // container's /proc and /sys are the host kernel's).
    let plan = nodelet::runtime::plan::MASKED_PATHS
        .iter()
        .chain(nodelet::runtime::plan::READONLY_PATHS);
    want.extend(plan.copied().filter(|p| Path::new(p).exists()));
    want.sort_unstable();
    assert_eq!(points, want, "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn masked_paths_are_empty_and_sys_is_read_only() {
    if !common::require_root() {
        return;
    }
    let o = sh("cat /proc/timer_list | wc -c; ls /sys/firmware | wc -l; touch /sys/x 2>&1 || echo sys-ro; echo 1 > /proc/sys/kernel/domainname 2>&1 || echo procsys-ro");
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "0", "{out}");
    assert_eq!(lines[1], "0", "{out}");
    assert!(
        out.contains("sys-ro") && out.contains("procsys-ro"),
        "{out}"
    );
}

#[test]
fn user_groups_env_and_cwd_are_as_planned() {
    if !common::require_root() {
        return;
    }
    let b = bundle(
        &[
            "sh",
            "-c",
            "id; pwd; echo $GREETING; touch /root/x 2>/dev/null || echo denied",
        ],
        |c, _| {
            c.uid = 1000;
            c.gid = 1000;
            c.additional_gids = vec![2000];
            c.cwd = "/tmp".into();
            c.env.push("GREETING=hello world".into());
        },
    );
    let o = run(&b);
    assert_eq!(
        stdout(&o),
        "uid=1000(app) gid=1000(app) groups=2000(extra)\n/tmp\nhello world\ndenied",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn file_descriptors_above_2_are_closed() {
    if !common::require_root() {
        return;
    }
    // `ls` lists its own fds: 0-2 and the directory it reads (3).
    let o = sh("ls /proc/self/fd");
    assert_eq!(
        stdout(&o).split_whitespace().collect::<Vec<_>>(),
        ["0", "1", "2", "3"]
    );
}

#[test]
fn exit_codes_and_signals_are_reported_like_containerd() {
    if !common::require_root() {
        return;
    }
    assert_eq!(sh("exit 3").status.code(), Some(3));
    let b = bundle(&["sleep", "1234"], |_, _| {});
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_nodelet"))
        .args(["run-container", b.dir.to_str().unwrap()])
        .spawn()
        .unwrap();
    // Find the container's sleep from the host and SIGKILL it.
    let mut killed = false;
    for _ in 0..200 {
        for e in fs::read_dir("/proc").unwrap().flatten() {
            let cmd = fs::read(e.path().join("cmdline")).unwrap_or_default();
            if cmd == b"sleep\x001234\x00" {
                let pid: i32 = e.file_name().to_string_lossy().parse().unwrap();
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                )
                .unwrap();
                killed = true;
            }
        }
        if killed {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    assert!(killed);
    assert_eq!(child.wait_with_output().unwrap().status.code(), Some(137));
}

#[test]
fn a_missing_executable_is_a_start_error() {
    if !common::require_root() {
        return;
    }
    let o = run(&bundle(&["foo"], |_, _| {}));
    assert_eq!(o.status.code(), Some(128));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains(r#"exec: "foo": executable file not found in $PATH"#),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = run(&bundle(&["/etc/passwd"], |_, _| {}));
    assert_eq!(o.status.code(), Some(128));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("permission denied"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn a_working_dir_that_is_a_file_is_a_start_error() {
    if !common::require_root() {
        return;
    }
    let o = run(&bundle(&["true"], |c, _| c.cwd = "/etc/passwd".into()));
    assert_eq!(o.status.code(), Some(128));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("chdir to cwd"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn a_bind_mount_over_a_symlink_stays_inside_the_rootfs() {
    if !common::require_root() {
        return;
    }
    // CVE-2021-30465 shape: the image points a mount destination at a host path.
    let outside = common::test_dir();
    let src = common::test_dir();
    fs::write(src.path().join("payload"), "x").unwrap();
    let (outside_path, src_path) = (outside.path().to_path_buf(), src.path().to_path_buf());
    let b = bundle(&["sh", "-c", "ls /evil/x"], move |c, _| {
        c.mounts.push(BindMount {
            source: src_path,
            destination: "/evil/x".into(),
            readonly: false,
            propagation: None,
        });
    });
    // The upper dir holds a symlink /evil -> <host dir>, as a malicious image would.
    std::os::unix::fs::symlink(&outside_path, b.dir.join("upper/evil")).unwrap();
    let o = run(&b);
    assert_eq!(
        stdout(&o),
        "payload",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        fs::read_dir(outside.path()).unwrap().count(),
        0,
        "nothing created on the host side"
    );
}

#[test]
fn the_network_namespace_has_loopback_up() {
    if !common::require_root() {
        return;
    }
    let o = sh("cat /sys/class/net/lo/operstate /sys/class/net/lo/flags; ls /sys/class/net");
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[1], "0x9", "lo is UP|LOOPBACK: {out}");
    assert_eq!(lines[2], "lo", "only loopback in a fresh netns: {out}");
}

#[test]
fn a_missing_bind_source_is_a_start_error() {
    if !common::require_root() {
        return;
    }
    let o = run(&bundle(&["true"], |c, tmp| {
        c.mounts.push(BindMount {
            source: tmp.join("does-not-exist"),
            destination: "/data".into(),
            readonly: false,
            propagation: None,
        });
    }));
    assert_eq!(o.status.code(), Some(128));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("bind mount source"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A cgroup path of this test process's own.
fn test_cgroup(tag: &str) -> String {
    format!("/nodelet-test-rt-{}-{tag}", std::process::id())
}

/// The container's output and stderr, for messages.
fn both(o: &Output) -> String {
    format!(
        "{}\n--- stderr ---\n{}",
        stdout(o),
        String::from_utf8_lossy(&o.stderr).trim()
    )
}

#[test]
fn a_container_cannot_open_a_host_block_device_it_made() {
    if !common::require_root() {
        return;
    }
    // The attack of the security issue: mknod of loop0 (b 7:0) and of
    // loop-control (c 10:237) works, opening them must not.
    let script =
        "mknod /dev/l0 b 7 0 && echo made; head -c 1 /dev/l0 >/dev/null 2>/tmp/e; cat /tmp/e; \
                  mknod /dev/lc c 10 237 && head -c 1 /dev/lc 2>&1 >/dev/null; \
                  head -c 1 /dev/zero | wc -c; echo ok > /dev/null && echo null-ok; \
                  head -c 4 /dev/urandom | wc -c";
    let cg = test_cgroup("devices");
    let b = bundle(&["sh", "-c", script], |c, _| {
        c.cgroup_path = Some(cg.clone())
    });
    let o = run(&b);
    let out = both(&o);
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    assert_eq!(lines.first(), Some(&"made"), "{out}");
    assert!(
        lines
            .iter()
            .filter(|l| l.contains("Operation not permitted"))
            .count()
            == 2,
        "both host devices must be refused: {out}"
    );
    assert_eq!(&lines[lines.len() - 3..], ["1", "null-ok", "4"], "{out}");
}

#[test]
fn a_privileged_container_gets_every_device_capability_and_a_writable_sys() {
    if !common::require_root() {
        return;
    }
    let script = "grep CapEff /proc/self/status; \
                  mkdir -p /m && mount -t tmpfs t /m && echo mounted; \
                  grep -E ' /sys ' /proc/mounts | cut -d' ' -f4 | cut -d, -f1; \
                  cat /proc/timer_list | wc -c; \
                  test -c /dev/loop-control && echo host-devices; \
                  grep Seccomp: /proc/self/status";
    let cg = test_cgroup("privileged");
    let b = bundle(&["sh", "-c", script], |c, _| {
        c.cgroup_path = Some(cg.clone());
        c.privileged = true;
        c.no_new_privileges = false;
        c.devices = nodelet::runtime::plan::host_devices();
    });
    let o = run(&b);
    let out = both(&o);
    assert!(stdout(&o).contains("mounted"), "{out}");
    assert!(
        stdout(&o).contains("\nrw\n"),
        "/sys must be writable: {out}"
    );
    assert!(!stdout(&o).contains("\n0\n"), "nothing masked: {out}");
    assert!(stdout(&o).contains("host-devices"), "{out}");
    assert!(stdout(&o).contains("Seccomp:\t0"), "{out}");
    assert!(!stdout(&o).contains("CapEff:\t00000000a80425fb"), "{out}");

    // The same mount in a default container is refused.
    let o = sh("mkdir -p /m; mount -t tmpfs t /m 2>&1 || echo refused");
    assert!(stdout(&o).contains("refused"), "{}", both(&o));
}

fn runtime_default() -> serde_json::Value {
    nodelet::runtime::seccomp::runtime_default(
        &nodelet::runtime::plan::DEFAULT_CAPABILITIES
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>(),
    )
}

#[test]
fn runtime_default_seccomp_refuses_what_the_profile_blocks() {
    if !common::require_root() {
        return;
    }
    // unshare(CLONE_NEWUSER) needs no capability: only the profile stops it.
    let script = "grep Seccomp: /proc/self/status; unshare -U true 2>&1 && echo unshared";
    for nnp in [true, false] {
        let b = bundle(&["sh", "-c", script], |c, _| {
            c.seccomp = Some(runtime_default());
            c.no_new_privileges = nnp;
        });
        let o = run(&b);
        let out = both(&o);
        assert!(stdout(&o).contains("Seccomp:\t2"), "{out}");
        assert!(stdout(&o).contains("Operation not permitted"), "{out}");
        assert!(!stdout(&o).contains("unshared"), "{out}");
    }
    // Unconfined: the same call works.
    let o = sh(script);
    assert!(stdout(&o).contains("Seccomp:\t0"), "{}", both(&o));
    assert!(stdout(&o).contains("unshared"), "{}", both(&o));
}

#[test]
fn a_localhost_profile_that_blocks_mkdir_is_honoured() {
    if !common::require_root() {
        return;
    }
    let profile = nodelet::runtime::seccomp::from_file_profile(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}"#,
        &[],
    )
    .unwrap();
    let b = bundle(
        &[
            "sh",
            "-c",
            "mkdir /made 2>&1 || echo refused; touch /file && echo touched",
        ],
        |c, _| c.seccomp = Some(profile),
    );
    let o = run(&b);
    assert!(
        stdout(&o).contains("Operation not permitted"),
        "{}",
        both(&o)
    );
    assert!(stdout(&o).contains("refused\ntouched"), "{}", both(&o));
}
