//! Layer unpacking: correctness of every entry kind, overlay whiteouts, and
//! a corpus of malicious layers, each rejected with the offending entry
//! named and nothing written outside the snapshot. Needs root (devices,
//! ownership, trusted.* xattrs).

#![allow(clippy::unwrap_used, clippy::needless_pass_by_value)]

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::tarball::Layer;
use nodelet::image::unpack::{LayerApplier, UnpackError};
use tar::EntryType;

struct Bed {
    _tmp: tempfile::TempDir,
    base: PathBuf,
    snap: PathBuf,
}

fn bed() -> Bed {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().to_path_buf();
    let snap = base.join("snap");
    fs::create_dir(&snap).unwrap();
    fs::create_dir(base.join("outside")).unwrap();
    fs::write(base.join("outside/canary"), b"untouched").unwrap();
    Bed {
        _tmp: tmp,
        base,
        snap,
    }
}

impl Bed {
    fn apply(&self, layer: Vec<u8>) -> Result<(), UnpackError> {
        self.apply_with_lowers(&layer, &[])
    }

    fn apply_with_lowers(&self, layer: &[u8], lowers: &[PathBuf]) -> Result<(), UnpackError> {
        let mut a = LayerApplier::new(&self.snap)?;
        a.apply(layer)?;
        a.finish(lowers).map(|_| ())
    }

    /// Everything outside the snapshot is as the bed made it.
    fn assert_outside_untouched(&self) {
        let mut names: Vec<String> = fs::read_dir(&self.base)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["outside", "snap"]);
        let outside: Vec<_> = fs::read_dir(self.base.join("outside")).unwrap().collect();
        assert_eq!(outside.len(), 1);
        assert_eq!(
            fs::read(self.base.join("outside/canary")).unwrap(),
            b"untouched"
        );
        let m = fs::metadata(self.base.join("outside/canary")).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o644);
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.snap.join(rel)
    }
}

fn xattr(path: &Path, key: &str) -> Option<Vec<u8>> {
    let parent = fs::File::open(path.parent().unwrap()).unwrap();
    nodelet::sys::lgetxattr_at(
        std::os::fd::AsFd::as_fd(&parent),
        &path.file_name().unwrap().to_string_lossy(),
        key,
    )
    .unwrap()
}

#[test]
fn every_entry_kind_is_unpacked_with_its_metadata() {
    if !common::require_root() {
        return;
    }
    let b = bed();
    let long = format!("deep/{}", "n".repeat(150));
    let cap = [
        1u8, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let layer = Layer::new()
        .dir("etc", 0o755)
        .file_with("etc/secret", b"s3", 0o600, 1000, 2000)
        .file_with("bin/su", b"ELF", 0o4755, 0, 0)
        .dir("tmp", 0o1777)
        .symlink("bin/sh", "busybox")
        .file("bin/busybox", b"busybox!")
        .hardlink("bin/ls", "bin/busybox")
        .device("dev/null", EntryType::Char, 1, 3)
        .device("dev/sda", EntryType::Block, 8, 0)
        .device("run/fifo", EntryType::Fifo, 0, 0)
        .pax_file(&long, b"long", &[("path", long.as_bytes())])
        .pax_file(
            "bin/ping",
            b"ping",
            &[
                ("SCHILY.xattr.security.capability", &cap),
                ("SCHILY.xattr.user.note", b"hi"),
            ],
        )
        .build();
    b.apply(layer).unwrap();

    let m = fs::metadata(b.p("etc/secret")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1000, 2000, 0o600));
    assert_eq!(
        fs::metadata(b.p("bin/su")).unwrap().mode() & 0o7777,
        0o4755,
        "setuid kept after chown"
    );
    assert_eq!(
        fs::metadata(b.p("tmp")).unwrap().mode() & 0o7777,
        0o1777,
        "sticky bit"
    );
    assert_eq!(
        fs::read_link(b.p("bin/sh")).unwrap(),
        PathBuf::from("busybox")
    );
    assert_eq!(
        fs::metadata(b.p("bin/ls")).unwrap().ino(),
        fs::metadata(b.p("bin/busybox")).unwrap().ino(),
        "hardlink shares the inode"
    );
    let null = fs::symlink_metadata(b.p("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
    assert!(fs::symlink_metadata(b.p("dev/sda"))
        .unwrap()
        .file_type()
        .is_block_device());
    assert!(fs::symlink_metadata(b.p("run/fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(fs::read(b.p(&long)).unwrap(), b"long", "PAX long name");
    assert_eq!(xattr(&b.p("bin/ping"), "security.capability").unwrap(), cap);
    assert_eq!(xattr(&b.p("bin/ping"), "user.note").unwrap(), b"hi");
    assert_eq!(
        fs::metadata(b.p("etc/secret")).unwrap().mtime(),
        1_700_000_000
    );
    assert_eq!(
        fs::metadata(b.p("etc")).unwrap().mtime(),
        1_700_000_000,
        "directory mtime set after its children"
    );
    b.assert_outside_untouched();
}

#[test]
fn whiteouts_become_overlay_whiteouts_and_opaque_dirs() {
    if !common::require_root() {
        return;
    }
    let b = bed();
    let layer = Layer::new()
        .dir("etc", 0o755)
        .file("etc/.wh.motd", b"")
        .dir("var/cache", 0o755)
        .file("var/cache/.wh..wh..opq", b"")
        .file("var/cache/new", b"x")
        .build();
    b.apply(layer).unwrap();
    let w = fs::symlink_metadata(b.p("etc/motd")).unwrap();
    assert!(w.file_type().is_char_device());
    assert_eq!(w.rdev(), 0);
    assert!(!b.p("etc/.wh.motd").exists());
    assert_eq!(
        xattr(&b.p("var/cache"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(
        fs::read(b.p("var/cache/new")).unwrap(),
        b"x",
        "entries of an opaque dir in the same layer stay"
    );
}

#[test]
fn layers_stack_as_overlay_lower_dirs() {
    if !common::require_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mk = |name: &str| {
        let p = tmp.path().join(name);
        fs::create_dir(&p).unwrap();
        p
    };
    let (l1, l2, merged, work, upper) = (mk("l1"), mk("l2"), mk("merged"), mk("work"), mk("upper"));
    let mut a = LayerApplier::new(&l1).unwrap();
    a.apply(
        &Layer::new()
            .dir("etc", 0o755)
            .file("etc/motd", b"hi")
            .dir("cache", 0o755)
            .file("cache/old", b"o")
            .file("keep", b"k")
            .build()[..],
    )
    .unwrap();
    a.finish(&[]).unwrap();
    let mut a = LayerApplier::new(&l2).unwrap();
    a.apply(
        &Layer::new()
            .file("etc/.wh.motd", b"")
            .file("cache/.wh..wh..opq", b"")
            .file("cache/new", b"n")
            .hardlink("keep2", "keep")
            .build()[..],
    )
    .unwrap();
    a.finish(std::slice::from_ref(&l1)).unwrap();
    let opts = format!(
        "lowerdir={}:{},upperdir={},workdir={}",
        l2.display(),
        l1.display(),
        upper.display(),
        work.display()
    );
    nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(opts.as_str()),
    )
    .unwrap();
    let seen = (
        merged.join("etc/motd").exists(),
        merged.join("cache/old").exists(),
        fs::read(merged.join("cache/new")).ok(),
        fs::read(merged.join("keep2")).ok(),
    );
    nix::mount::umount(&merged).unwrap();
    assert_eq!(
        seen,
        (false, false, Some(b"n".to_vec()), Some(b"k".to_vec()))
    );
    // The implicit parent "etc" of the whiteout took its metadata from the lower layer.
    assert_eq!(fs::metadata(l2.join("etc")).unwrap().mode() & 0o777, 0o755);
}

#[test]
fn a_later_entry_replaces_an_earlier_one_without_following_it() {
    if !common::require_root() {
        return;
    }
    let b = bed();
    let outside = b.base.join("outside");
    let canary = outside.join("canary");
    // CVE-2021-32760 shape: chmod/write through a symlink the layer planted.
    let layer = Layer::new()
        .symlink("x", canary.to_str().unwrap())
        .file_with("x", b"replaced", 0o777, 0, 0)
        .symlink("d", outside.to_str().unwrap())
        .dir("d", 0o777)
        .build();
    b.apply(layer).unwrap();
    assert_eq!(fs::read(b.p("x")).unwrap(), b"replaced");
    assert!(fs::symlink_metadata(b.p("d")).unwrap().is_dir());
    b.assert_outside_untouched();
}

/// (name, layer, the entry that must be named)
fn malicious_corpus(outside: &str) -> Vec<(&'static str, Vec<u8>, String)> {
    let canary = format!("{outside}/canary");
    vec![
        (
            "dotdot prefix",
            Layer::new().file("../evil", b"x").build(),
            "../evil".into(),
        ),
        (
            "dotdot in the middle",
            Layer::new().file("a/../../evil", b"x").build(),
            "a/../../evil".into(),
        ),
        (
            "deep dotdot",
            Layer::new()
                .dir("a", 0o755)
                .file("a/b/../../../../outside/canary", b"x")
                .build(),
            "a/b/../../../../outside/canary".into(),
        ),
        (
            "symlink parent to /",
            Layer::new()
                .symlink("root", "/")
                .file("root/etc/evil", b"x")
                .build(),
            "root/etc/evil".into(),
        ),
        (
            "symlink parent to dotdot",
            Layer::new()
                .symlink("up", "..")
                .file("up/evil", b"x")
                .build(),
            "up/evil".into(),
        ),
        (
            "symlink parent to an absolute outside dir",
            Layer::new()
                .symlink("o", outside)
                .file("o/canary", b"x")
                .build(),
            "o/canary".into(),
        ),
        (
            "symlink chain as parent",
            Layer::new()
                .symlink("a", "b")
                .symlink("b", "/")
                .file("a/evil", b"x")
                .build(),
            "a/evil".into(),
        ),
        (
            "hardlink with dotdot",
            Layer::new().hardlink("h", "../outside/canary").build(),
            "h".into(),
        ),
        (
            "hardlink to an absolute host path",
            Layer::new().hardlink("h", &canary).build(),
            "h".into(),
        ),
        (
            "hardlink through a symlinked parent",
            Layer::new()
                .symlink("s", outside)
                .hardlink("h", "s/canary")
                .build(),
            "h".into(),
        ),
        (
            "whiteout of dot",
            Layer::new().file(".wh..", b"").build(),
            ".wh..".into(),
        ),
        (
            "whiteout of dotdot",
            Layer::new().file("a/.wh...", b"").build(),
            "a/.wh...".into(),
        ),
        (
            "bare whiteout",
            Layer::new().file("a/.wh.", b"").build(),
            "a/.wh.".into(),
        ),
        (
            "entry under a whited-out path",
            Layer::new()
                .file(".wh.etc", b"")
                .file("etc/passwd", b"x")
                .build(),
            "etc/passwd".into(),
        ),
        (
            "whiteout of a path the layer created",
            Layer::new().file("f", b"x").file(".wh.f", b"").build(),
            ".wh.f".into(),
        ),
        (
            "forged overlay xattr",
            Layer::new()
                .pax_file(
                    "f",
                    b"x",
                    &[("SCHILY.xattr.trusted.overlay.redirect", b"/outside")],
                )
                .build(),
            "f".into(),
        ),
        (
            "file as a parent",
            Layer::new().file("f", b"x").file("f/g", b"y").build(),
            "f/g".into(),
        ),
        (
            "opaque marker at the root",
            Layer::new().file(".wh..wh..opq", b"").build(),
            ".wh..wh..opq".into(),
        ),
    ]
}

#[test]
fn malicious_layers_are_rejected_naming_the_entry_and_write_nothing_outside() {
    if !common::require_root() {
        return;
    }
    let cases = malicious_corpus("/unused").len();
    assert!(cases >= 15, "the corpus holds at least 15 archives");
    for i in 0..cases {
        // A fresh bed per case; paths in the layer point at this bed's canary.
        let b = bed();
        let outside = b.base.join("outside").display().to_string();
        let (what, layer, entry) = malicious_corpus(&outside).swap_remove(i);
        match b.apply(layer) {
            Err(UnpackError::Unsafe { entry: e, reason }) => {
                assert_eq!(e, entry, "{what}: wrong entry named ({reason})");
            }
            other => panic!("{what}: expected rejection of {entry:?}, got {other:?}"),
        }
        b.assert_outside_untouched();
    }
}

#[test]
fn absolute_names_land_inside_the_snapshot() {
    if !common::require_root() {
        return;
    }
    let b = bed();
    b.apply(Layer::new().file("/etc/hostname", b"inside").build())
        .unwrap();
    assert_eq!(fs::read(b.p("etc/hostname")).unwrap(), b"inside");
    b.assert_outside_untouched();
}

#[test]
fn hardlink_to_a_file_of_a_lower_layer_is_copied_up() {
    if !common::require_root() {
        return;
    }
    let b = bed();
    let lower = b.base.join("outside"); // reuse as a lower layer holding "canary"
    b.apply_with_lowers(
        &Layer::new().hardlink("copy", "canary").build(),
        std::slice::from_ref(&lower),
    )
    .unwrap();
    assert_eq!(fs::read(b.p("copy")).unwrap(), b"untouched");
    assert_ne!(
        fs::metadata(b.p("copy")).unwrap().ino(),
        fs::metadata(lower.join("canary")).unwrap().ino()
    );
    b.assert_outside_untouched();
}

#[test]
fn a_truncated_archive_is_an_archive_error() {
    if !common::require_root() {
        return;
    }
    let b = bed();
    let mut layer = Layer::new().file("big", &[7u8; 4096]).build();
    layer.truncate(1024);
    assert!(matches!(b.apply(layer), Err(UnpackError::Archive { .. })));
}
