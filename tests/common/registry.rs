//! Real Distribution registries (`docker-registry`) on 127.0.0.1 for the
//! tests: one anonymous, one with htpasswd (bcrypt) basic auth. Images are
//! pushed with skopeo. A watcher shell kills each registry when the test
//! process exits, so nothing outlives the run.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const USER: &str = "tester";
pub const PASSWORD: &str = "s3cret-pass";

pub struct TestRegistry {
    pub addr: String,
    pub storage: PathBuf,
    pub auth: bool,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl TestRegistry {
    #[allow(clippy::zombie_processes)] // the watcher outlives us on purpose; init reaps it
    pub fn start(base: &Path, name: &str, auth: bool) -> TestRegistry {
        let dir = base.join(name);
        let storage = dir.join("storage");
        fs::create_dir_all(&storage).unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            storage.display()
        );
        if auth {
            let out = Command::new("htpasswd")
                .args(["-Bbn", USER, PASSWORD])
                .output()
                .expect("htpasswd (apache2-utils) must be installed");
            assert!(out.status.success());
            fs::write(dir.join("htpasswd"), &out.stdout).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: nodelet-test\n    path: {}\n",
                dir.join("htpasswd").display()
            ));
        }
        let cfg = dir.join("config.yml");
        fs::write(&cfg, config).unwrap();
        let watcher = "docker-registry serve \"$1\" >\"$3\" 2>&1 & r=$!; while kill -0 \"$2\" 2>/dev/null && kill -0 $r 2>/dev/null; do sleep 0.5; done; kill $r 2>/dev/null";
        Command::new("sh")
            .args([
                "-c",
                watcher,
                "sh",
                cfg.to_str().unwrap(),
                &std::process::id().to_string(),
                dir.join("registry.log").to_str().unwrap(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "registry on {addr} did not start; log: {}",
                fs::read_to_string(dir.join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        TestRegistry {
            addr,
            storage,
            auth,
        }
    }

    /// Pushes `layout:tag` to `repo:dest_tag` (all platforms of an index).
    pub fn push_as(&self, layout: &Path, tag: &str, repo: &str, dest_tag: &str) {
        let mut cmd = Command::new("skopeo");
        cmd.args([
            "copy",
            "--quiet",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
        ]);
        if self.auth {
            cmd.arg(format!("--dest-creds={USER}:{PASSWORD}"));
        }
        cmd.arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{repo}:{dest_tag}", self.addr));
        let out = cmd.output().expect("skopeo must be installed");
        assert!(
            out.status.success(),
            "skopeo push failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The file holding a blob in the registry's own storage (to tamper with).
    pub fn blob_file(&self, hex: &str) -> PathBuf {
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}
