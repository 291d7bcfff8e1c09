//! The shared test bed: test images, built once per test binary, pushed to
//! an anonymous and an authenticated registry on loopback.

use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::json;

use super::oci::{base_layer, layer, noise, Comp, LayoutBuilder};
use super::registry::TestRegistry;
use super::tarball::Layer;

pub struct TestBed {
    pub dir: PathBuf,
    pub layout: PathBuf,
    pub anon: TestRegistry,
    pub auth: TestRegistry,
}

pub const SMALL: &str = "nodelet/busybox:1";
pub const LAYERED: &str = "nodelet/layered:1";
pub const MULTIARCH: &str = "nodelet/multiarch:1";
pub const ZSTD: &str = "nodelet/zstd:1";
pub const NOISY: &str = "nodelet/noisy:1";

static BED: OnceLock<TestBed> = OnceLock::new();

impl TestBed {
    /// `registry/repo:tag` on the anonymous registry.
    pub fn anon_ref(&self, image: &str) -> String {
        format!("{}/{image}", self.anon.addr)
    }

    pub fn auth_ref(&self, image: &str) -> String {
        format!("{}/{image}", self.auth.addr)
    }
}

pub fn get() -> &'static TestBed {
    BED.get_or_init(build)
}

fn build() -> TestBed {
    let dir = std::env::temp_dir().join(format!("nodelet-test-bed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    remove_on_exit(&dir);
    let layout = dir.join("layout");
    let mut lb = LayoutBuilder::new(&layout);
    let base = base_layer();

    let small = lb.image(
        &[layer(&base, Comp::Gzip)],
        "amd64",
        &["sh"],
        json!({"StopSignal": "SIGQUIT", "Labels": {"org.example": "small"}}),
    );
    lb.tag(small.clone(), "busybox-1");

    // Second layer: deletes a file, makes a dir opaque, adds links and a setuid file.
    let top = Layer::new()
        .dir("etc", 0o755)
        .file("etc/.wh.motd", b"")
        .dir("var/cache", 0o755)
        .file("var/cache/.wh..wh..opq", b"")
        .file("var/cache/new", b"new\n")
        .file_with("bin/suid", b"#!/bin/sh\n", 0o4755, 0, 0)
        .symlink("bin/link-to-motd", "/etc/motd")
        .file("data/original", b"hardlinked\n")
        .hardlink("data/hard", "data/original")
        .build();
    let layered = lb.image(
        &[layer(&base, Comp::Gzip), layer(&top, Comp::Gzip)],
        "amd64",
        &["sh"],
        json!({}),
    );
    lb.tag(layered, "layered-1");

    let arm = lb.image(&[layer(&base, Comp::Gzip)], "arm64", &["sh"], json!({}));
    let idx = lb.index(&[small.clone(), arm]);
    lb.tag(idx, "multiarch-1");

    let z = lb.image(&[layer(&base, Comp::Zstd)], "amd64", &["sh"], json!({}));
    lb.tag(z, "zstd-1");

    // A layer of incompressible data, big enough to interrupt mid-pull.
    let noisy_tar = Layer::new()
        .file("noise", &noise(24 * 1024 * 1024, 7))
        .build();
    let noisy = lb.image(
        &[layer(&base, Comp::Gzip), layer(&noisy_tar, Comp::Gzip)],
        "amd64",
        &["sh"],
        json!({}),
    );
    lb.tag(noisy, "noisy-1");
    lb.finish();

    let anon = TestRegistry::start(&dir, "anon", false);
    let auth = TestRegistry::start(&dir, "auth", true);
    for (tag, repo) in [
        ("busybox-1", "nodelet/busybox"),
        ("layered-1", "nodelet/layered"),
        ("multiarch-1", "nodelet/multiarch"),
        ("zstd-1", "nodelet/zstd"),
        ("noisy-1", "nodelet/noisy"),
    ] {
        let (name, t) = (repo, "1");
        anon.push_as(&layout, tag, name, t);
    }
    auth.push_as(&layout, "busybox-1", "nodelet/busybox", "1");
    TestBed {
        dir,
        layout,
        anon,
        auth,
    }
}

/// Removes `dir` once this test process has exited (a detached watcher).
#[allow(clippy::zombie_processes)] // the watcher must outlive us; init reaps it
fn remove_on_exit(dir: &std::path::Path) {
    std::process::Command::new("sh")
        .args([
            "-c",
            "while kill -0 \"$1\" 2>/dev/null; do sleep 0.5; done; sleep 1; rm -rf \"$2\"",
            "sh",
            &std::process::id().to_string(),
            dir.to_str().unwrap(),
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
}
