#![allow(dead_code, clippy::unwrap_used)]

pub mod faultserver;
pub mod oci;
pub mod registry;
pub mod tarball;
pub mod testbed;

/// A temporary directory named so `make clean-test` finds what a crashed
/// run left under it (`/tmp/nodelet-test-*`).
pub fn test_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("nodelet-test-")
        .tempdir()
        .unwrap()
}

/// Integration tests run real mounts, devices and registries: they need root.
/// Without it they fail, unless NODELET_SKIP_ROOT_TESTS=1 asks to skip.
pub fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("NODELET_SKIP_ROOT_TESTS").as_deref() == Ok("1") {
        eprintln!("skipping: needs root (NODELET_SKIP_ROOT_TESTS=1)");
        return false;
    }
    panic!("this test needs root; run as root or set NODELET_SKIP_ROOT_TESTS=1 to skip");
}
