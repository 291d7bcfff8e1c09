//! Image pulls against real Distribution registries on loopback, pulled by
//! our own client: tags, digests, indexes, zstd, auth, the faults of the
//! Images issue, and import of OCI layouts. Needs root (unpacking keeps
//! ownership and makes device nodes) and the Debian packages of `make deps`.

#![allow(clippy::unwrap_used, clippy::needless_pass_by_value)]

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::Arc;

use common::testbed::{self, LAYERED, MULTIARCH, NOISY, SMALL, ZSTD};
use nodelet::image::platform::Platform;
use nodelet::image::registry::{Credentials, RegistryError};
use nodelet::image::store::{ImageError, ImageStore, Progress, PullOptions};

fn quiet(_: Progress) {}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

struct Store {
    _tmp: tempfile::TempDir,
    store: Arc<ImageStore>,
}

fn store() -> Store {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path()).unwrap();
    Store { _tmp: tmp, store }
}

fn pull(
    s: &Arc<ImageStore>,
    reference: &str,
    opts: &PullOptions,
) -> Result<nodelet::image::store::PullReport, ImageError> {
    rt().block_on(s.pull(reference, opts, &quiet))
}

/// Nothing half-done anywhere in the store.
fn assert_clean(s: &ImageStore) {
    assert_eq!(s.content.ingest_entries(), 0, "ingest is empty");
    assert_eq!(s.snapshots.pending_builds(), 0, "no partial snapshot");
}

#[test]
fn pulls_by_tag_unpack_into_snapshots_and_are_listed() {
    if !common::require_root() {
        return;
    }
    let bed = testbed::get();
    let s = store();
    let r = pull(&s.store, &bed.anon_ref(SMALL), &PullOptions::default()).unwrap();
    assert_eq!(r.record.name, format!("{}/{SMALL}", bed.anon.addr));
    assert_eq!(r.record.layers.len(), 1);
    assert_eq!(r.reused_layers, 0);
    assert!(r.downloaded > 500_000, "busybox was downloaded");
    let lower = &s.store.lower_dirs(&r.record)[0];
    assert_eq!(
        fs::read(lower.join("bin/busybox")).unwrap(),
        fs::read("/bin/busybox").unwrap()
    );
    assert_eq!(
        fs::read_link(lower.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    assert_eq!(s.store.list().unwrap().len(), 1);
    let cfg = s.store.config(&r.record).unwrap();
    assert_eq!(
        cfg.config().as_ref().unwrap().stop_signal().as_deref(),
        Some("SIGQUIT")
    );
    // A second pull reuses every layer and downloads nothing.
    let again = pull(&s.store, &bed.anon_ref(SMALL), &PullOptions::default()).unwrap();
    assert_eq!((again.reused_layers, again.downloaded), (1, 0));
    assert_clean(&s.store);
}

#[test]
fn pulls_by_digest_and_checks_it() {
    if !common::require_root() {
        return;
    }
    let bed = testbed::get();
    let s = store();
    let first = pull(&s.store, &bed.anon_ref(SMALL), &PullOptions::default()).unwrap();
    let by_digest = format!(
        "{}/nodelet/busybox@{}",
        bed.anon.addr, first.record.manifest_digest
    );
    let r = pull(&s.store, &by_digest, &PullOptions::default()).unwrap();
    assert_eq!(r.record.manifest_digest, first.record.manifest_digest);
    assert_eq!(r.record.tag, None);
}

#[test]
fn layered_images_stack_with_whiteouts_opaque_dirs_and_links() {
    if !common::require_root() {
        return;
    }
    let bed = testbed::get();
    let s = store();
    let r = pull(&s.store, &bed.anon_ref(LAYERED), &PullOptions::default()).unwrap();
    let lowers = s.store.lower_dirs(&r.record);
    assert_eq!(lowers.len(), 2);
    let top = &lowers[0];
    let wh = fs::symlink_metadata(top.join("etc/motd")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "whiteout"
    );
    assert_eq!(
        fs::metadata(top.join("bin/suid")).unwrap().mode() & 0o7777,
        0o4755
    );
    assert_eq!(
        fs::metadata(top.join("data/hard")).unwrap().ino(),
        fs::metadata(top.join("data/original")).unwrap().ino()
    );
    // Mounted as overlay lower dirs, the stack shows the image's filesystem.
    let tmp = tempfile::tempdir().unwrap();
    let merged = tmp.path().join("m");
    fs::create_dir(&merged).unwrap();
    let lower = lowers
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::MS_RDONLY,
        Some(format!("lowerdir={lower}").as_str()),
    )
    .unwrap();
    let view = (
        merged.join("etc/motd").exists(),
        merged.join("var/cache/old").exists(),
        merged.join("var/cache/new").exists(),
        merged.join("bin/busybox").exists(),
    );
    nix::mount::umount(&merged).unwrap();
    assert_eq!(view, (false, false, true, true));
}

#[test]
fn indexes_resolve_to_the_host_platform_or_the_one_asked_for() {
    if !common::require_root() {
        return;
    }
    let bed = testbed::get();
    let s = store();
    let host = pull(&s.store, &bed.anon_ref(MULTIARCH), &PullOptions::default()).unwrap();
    assert_eq!(host.record.platform, "linux/amd64");
    assert!(host.record.index_digest.is_some());
    let arm = pull(
        &s.store,
        &bed.anon_ref(MULTIARCH),
        &PullOptions {
            platform: Platform::parse("linux/arm64").unwrap(),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(arm.record.platform, "linux/arm64");
    assert_ne!(arm.record.manifest_digest, host.record.manifest_digest);
    let before = s.store.list().unwrap();
    let err = pull(
        &s.store,
        &bed.anon_ref(MULTIARCH),
        &PullOptions {
            platform: Platform::parse("linux/s390x").unwrap(),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(
        matches!(&err, ImageError::PlatformNotFound { available, .. } if available == &["linux/amd64", "linux/arm64"]),
        "{err}"
    );
    assert_eq!(s.store.list().unwrap(), before, "store unchanged");
    assert_clean(&s.store);
}

#[test]
fn a_single_platform_image_for_another_platform_is_refused() {
    if !common::require_root() {
        return;
    }
    let bed = testbed::get();
    let s = store();
    let arm = PullOptions {
        platform: Platform::parse("linux/arm64").unwrap(),
        ..Default::default()
    };
    let err = pull(&s.store, &bed.anon_ref(SMALL), &arm).unwrap_err();
    assert!(
        matches!(&err, ImageError::PlatformNotFound { available, .. } if available == &["linux/amd64"]),
        "{err}"
    );
    assert_clean(&s.store);
}

#[test]
fn zstd_layers_unpack() {
    if !common::require_root() {
        return;
    }
    let bed = testbed::get();
    let s = store();
    let r = pull(&s.store, &bed.anon_ref(ZSTD), &PullOptions::default()).unwrap();
    assert!(s.store.lower_dirs(&r.record)[0]
        .join("bin/busybox")
        .is_file());
}

#[test]
fn basic_auth_needs_the_right_credentials() {
    if !common::require_root() {
        return;
    }
    let bed = testbed::get();
    let s = store();
    let none = pull(&s.store, &bed.auth_ref(SMALL), &PullOptions::default()).unwrap_err();
    assert!(
        matches!(
            none,
            ImageError::Registry(RegistryError::Unauthorized { .. })
        ),
        "{none}"
    );
    let wrong = PullOptions {
        creds: Some(Credentials {
            username: "tester".into(),
            password: "nope".into(),
        }),
        ..Default::default()
    };
    let err = pull(&s.store, &bed.auth_ref(SMALL), &wrong).unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::Registry(RegistryError::Unauthorized { .. })
        ),
        "{err}"
    );
    assert!(s.store.list().unwrap().is_empty());
    let right = PullOptions {
        creds: Some(Credentials {
            username: "tester".into(),
            password: "s3cret-pass".into(),
        }),
        ..Default::default()
    };
    pull(&s.store, &bed.auth_ref(SMALL), &right).unwrap();
    assert_clean(&s.store);
}

#[test]
fn unknown_images_are_not_found_and_name_the_reference() {
    if !common::require_root() {
        return;
    }
    let bed = testbed::get();
    let s = store();
    let reference = bed.anon_ref("nodelet/nosuch:1");
    let err = pull(&s.store, &reference, &PullOptions::default()).unwrap_err();
    assert!(
        matches!(err, ImageError::Registry(RegistryError::NotFound { .. })),
        "{err}"
    );
    assert!(err.to_string().contains(&reference), "{err}");
    let err = pull(
        &s.store,
        &bed.anon_ref("nodelet/busybox:nosuchtag"),
        &PullOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err, ImageError::Registry(RegistryError::NotFound { .. })),
        "{err}"
    );
}

#[test]
fn an_unreachable_registry_fails_after_bounded_retries() {
    if !common::require_root() {
        return;
    }
    let s = store();
    let port = common::registry::free_port();
    let started = std::time::Instant::now();
    let err = pull(
        &s.store,
        &format!("127.0.0.1:{port}/x/y:1"),
        &PullOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err, ImageError::Registry(RegistryError::Unreachable { .. })),
        "{err}"
    );
    assert!(started.elapsed().as_secs() < 30, "retries are bounded");
}

#[test]
fn invalid_references_fail_before_any_request() {
    let s = store();
    for bad in ["BusyBox", "a//b", "x:", "busybox@sha256:short"] {
        let err = pull(&s.store, bad, &PullOptions::default()).unwrap_err();
        assert!(matches!(err, ImageError::Reference(_)), "{bad}: {err}");
    }
}

#[test]
fn concurrent_pulls_of_one_image_download_once() {
    if !common::require_root() {
        return;
    }
    let bed = testbed::get();
    let s = store();
    let (a, b) = rt().block_on(async {
        let opts = PullOptions::default();
        let r = bed.anon_ref(LAYERED);
        tokio::join!(
            s.store.pull(&r, &opts, &quiet),
            s.store.pull(&r, &opts, &quiet)
        )
    });
    let (a, b) = (a.unwrap(), b.unwrap());
    let layer_bytes: u64 = a.record.size;
    assert!(
        a.downloaded + b.downloaded <= layer_bytes,
        "each layer fetched once: {} + {} vs {layer_bytes}",
        a.downloaded,
        b.downloaded
    );
    assert_eq!(a.reused_layers + b.reused_layers, 2);
    assert_clean(&s.store);
}

#[test]
fn a_blob_that_does_not_match_its_digest_never_enters_the_store() {
    if !common::require_root() {
        return;
    }
    let bed = testbed::get();
    // A registry of our own for this test, since we tamper with its storage.
    let reg = common::registry::TestRegistry::start(&bed.dir, "tamper", false);
    reg.push_as(&bed.layout, "busybox-1", "nodelet/busybox", "1");
    let s = store();
    let good = pull(
        &s.store,
        &format!("{}/{SMALL}", reg.addr),
        &PullOptions::default(),
    )
    .unwrap();
    let layer = good.record.layers[0].clone();
    let file = reg.blob_file(layer.hex());
    let mut data = fs::read(&file).unwrap();
    let n = data.len();
    data[n / 2] ^= 0xff;
    fs::write(&file, &data).unwrap();
    let fresh = store();
    let err = pull(
        &fresh.store,
        &format!("{}/{SMALL}", reg.addr),
        &PullOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err, ImageError::Layer { .. } | ImageError::Content(_)),
        "{err}"
    );
    assert!(!fresh.store.content.contains(&layer));
    assert!(fresh.store.list().unwrap().is_empty());
    assert!(fresh.store.snapshots.list().unwrap().is_empty());
    assert_clean(&fresh.store);
}

#[test]
fn a_manifest_that_does_not_match_the_digest_asked_for_is_refused() {
    if !common::require_root() {
        return;
    }
    let bed = testbed::get();
    let reg = common::registry::TestRegistry::start(&bed.dir, "tamper-manifest", false);
    reg.push_as(&bed.layout, "busybox-1", "nodelet/busybox", "1");
    let s = store();
    let good = pull(
        &s.store,
        &format!("{}/{SMALL}", reg.addr),
        &PullOptions::default(),
    )
    .unwrap();
    let md = good.record.manifest_digest.clone();
    let file = reg.blob_file(md.hex());
    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&file).unwrap()).unwrap();
    v["annotations"] = serde_json::json!({"tampered": "yes"});
    fs::write(&file, serde_json::to_vec(&v).unwrap()).unwrap();
    let fresh = store();
    let err = pull(
        &fresh.store,
        &format!("{}/nodelet/busybox@{md}", reg.addr),
        &PullOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, ImageError::ManifestDigest { .. }), "{err}");
    assert!(fresh.store.list().unwrap().is_empty());
    assert_clean(&fresh.store);
}

#[test]
fn disk_full_during_unpack_leaves_nothing_behind() {
    if !common::require_root() {
        return;
    }
    let bed = testbed::get();
    let tmp = tempfile::tempdir().unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        tmp.path(),
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=1m"),
    )
    .unwrap();
    let res = std::panic::catch_unwind(|| {
        let store = ImageStore::open(tmp.path()).unwrap();
        let err = pull(&store, &bed.anon_ref(SMALL), &PullOptions::default()).unwrap_err();
        let no_space = std::error::Error::source(&err)
            .map(|e| format!("{e:?}"))
            .unwrap_or_default()
            + &format!("{err:?}");
        assert!(
            no_space.contains("StorageFull")
                || no_space.contains("No space left")
                || no_space.contains("28"),
            "{err:?}"
        );
        assert!(store.list().unwrap().is_empty());
        assert_clean(&store);
    });
    nix::mount::umount(tmp.path()).unwrap();
    res.unwrap();
}

#[test]
fn a_pull_killed_midway_completes_on_the_next_pull() {
    if !common::require_root() {
        return;
    }
    let bed = testbed::get();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_nodelet"))
        .args([
            "--root",
            root.to_str().unwrap(),
            "image",
            "pull",
            "-q",
            &bed.anon_ref(NOISY),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the download is under way, then kill -9.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let busy = fs::read_dir(root.join("content/ingest"))
            .map(|d| d.count() > 0)
            .unwrap_or(false);
        if busy || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let store = ImageStore::open(&root).unwrap();
    assert_clean(&store);
    let r = pull(&store, &bed.anon_ref(NOISY), &PullOptions::default()).unwrap();
    assert_eq!(
        fs::metadata(store.lower_dirs(&r.record)[0].join("noise"))
            .unwrap()
            .len(),
        24 * 1024 * 1024
    );
    assert_clean(&store);
}

#[test]
fn oci_layouts_import_from_a_directory_and_an_archive() {
    if !common::require_root() {
        return;
    }
    let bed = testbed::get();
    let s = store();
    let r = rt()
        .block_on(s.store.import(
            &bed.layout,
            Some("example.com/imported/busybox:busybox-1"),
            &PullOptions::default(),
            &quiet,
        ))
        .unwrap();
    assert_eq!(r.record.name, "example.com/imported/busybox:busybox-1");
    assert!(s.store.lower_dirs(&r.record)[0]
        .join("bin/busybox")
        .is_file());
    // The layout lists several images: without --name it says which.
    let err = rt()
        .block_on(
            s.store
                .import(&bed.layout, None, &PullOptions::default(), &quiet),
        )
        .unwrap_err();
    assert!(err.to_string().contains("pass --name"), "{err}");
    // An oci-archive written by skopeo.
    let archive = tempfile::tempdir().unwrap().keep().join("img.tar");
    let out = std::process::Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            &format!("oci:{}:layered-1", bed.layout.display()),
            &format!("oci-archive:{}:layered-1", archive.display()),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s2 = store();
    let r = rt()
        .block_on(s2.store.import(
            &archive,
            Some("example.com/layered:1"),
            &PullOptions::default(),
            &quiet,
        ))
        .unwrap();
    assert_eq!(r.record.layers.len(), 2);
    assert_clean(&s2.store);
    let _ = fs::remove_dir_all(archive.parent().unwrap());
}

#[test]
fn prune_removes_what_no_image_uses() {
    if !common::require_root() {
        return;
    }
    let bed = testbed::get();
    let s = store();
    pull(&s.store, &bed.anon_ref(SMALL), &PullOptions::default()).unwrap();
    let layered = pull(&s.store, &bed.anon_ref(LAYERED), &PullOptions::default()).unwrap();
    s.store.remove(&layered.record.name, false, &[]).unwrap();
    let (blobs, snaps) = s.store.prune().unwrap();
    // The layered image's top layer, config and manifest; its base is shared.
    assert_eq!((blobs, snaps), (3, 1));
    assert_eq!(
        s.store
            .remove("nodelet/none:1", false, &[])
            .unwrap_err()
            .to_string(),
        "image \"nodelet/none:1\" not found in the store"
    );
    let users = vec!["default/web".to_string()];
    let small = s.store.list().unwrap()[0].name.clone();
    assert!(matches!(
        s.store.remove(&small, false, &users),
        Err(ImageError::InUse { .. })
    ));
    s.store.remove(&small, true, &users).unwrap();
}

/// The small image's manifest, config and layer, read from the test layout.
struct SmallImage {
    manifest: Vec<u8>,
    config_digest: String,
    config: Vec<u8>,
    layer_digest: String,
    layer: Vec<u8>,
}

fn small_image() -> SmallImage {
    let bed = testbed::get();
    let blob = |d: &str| {
        fs::read(
            bed.layout
                .join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
        )
        .unwrap()
    };
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(bed.layout.join("index.json")).unwrap()).unwrap();
    let desc = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == "busybox-1")
        .unwrap();
    let manifest = blob(desc["digest"].as_str().unwrap());
    let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let config_digest = m["config"]["digest"].as_str().unwrap().to_string();
    let layer_digest = m["layers"][0]["digest"].as_str().unwrap().to_string();
    SmallImage {
        config: blob(&config_digest),
        layer: blob(&layer_digest),
        manifest,
        config_digest,
        layer_digest,
    }
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn fault_routes(
    img: &SmallImage,
    layer: common::faultserver::Reply,
) -> std::collections::HashMap<String, common::faultserver::Reply> {
    use common::faultserver::Reply;
    let mut routes = std::collections::HashMap::new();
    routes.insert(
        "/v2/x/manifests/1".to_string(),
        Reply::Ok {
            content_type: OCI_MANIFEST.into(),
            body: img.manifest.clone(),
        },
    );
    routes.insert(
        format!("/v2/x/blobs/{}", img.config_digest),
        Reply::Ok {
            content_type: "application/octet-stream".into(),
            body: img.config.clone(),
        },
    );
    routes.insert(format!("/v2/x/blobs/{}", img.layer_digest), layer);
    routes
}

#[test]
fn a_500_on_a_blob_fails_the_pull_cleanly() {
    if !common::require_root() {
        return;
    }
    let img = small_image();
    let srv = common::faultserver::FaultServer::start(fault_routes(
        &img,
        common::faultserver::Reply::Status(500),
    ));
    let s = store();
    let err = pull(
        &s.store,
        &format!("{}/x:1", srv.addr),
        &PullOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(
            &err,
            ImageError::Registry(RegistryError::Status { status: 500, .. })
        ),
        "{err}"
    );
    assert!(s.store.list().unwrap().is_empty());
    assert_clean(&s.store);
}

#[test]
fn a_truncated_blob_fails_the_pull_cleanly() {
    if !common::require_root() {
        return;
    }
    let img = small_image();
    let half = img.layer.len() / 2;
    let srv = common::faultserver::FaultServer::start(fault_routes(
        &img,
        common::faultserver::Reply::Truncated {
            body: img.layer.clone(),
            send: half,
        },
    ));
    let s = store();
    let err = pull(
        &s.store,
        &format!("{}/x:1", srv.addr),
        &PullOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, ImageError::Download { .. } | ImageError::Layer { .. }),
        "{err}"
    );
    assert!(
        s.store.content.list().unwrap().is_empty(),
        "no partial blob stored"
    );
    assert_clean(&s.store);
}

#[test]
fn manifests_over_4_mib_are_refused() {
    use common::faultserver::Reply;
    let mut routes = std::collections::HashMap::new();
    let mut body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","annotations":{"pad":""#.to_vec();
    body.extend(std::iter::repeat_n(b'x', 5 * 1024 * 1024));
    body.extend_from_slice(br#""}}"#);
    routes.insert(
        "/v2/x/manifests/1".to_string(),
        Reply::Ok {
            content_type: OCI_MANIFEST.into(),
            body,
        },
    );
    let srv = common::faultserver::FaultServer::start(routes);
    let s = store();
    let err = pull(
        &s.store,
        &format!("{}/x:1", srv.addr),
        &PullOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::Registry(RegistryError::ManifestTooLarge { .. })
        ),
        "{err}"
    );
}

#[test]
fn schema1_and_unknown_manifest_types_are_refused_clearly() {
    use common::faultserver::Reply;
    let mut routes = std::collections::HashMap::new();
    routes.insert(
        "/v2/x/manifests/old".to_string(),
        Reply::Ok {
            content_type: "application/vnd.docker.distribution.manifest.v1+prettyjws".into(),
            body: br#"{"schemaVersion":1,"name":"x","tag":"old","fsLayers":[]}"#.to_vec(),
        },
    );
    routes.insert(
        "/v2/x/manifests/odd".to_string(),
        Reply::Ok {
            content_type: "application/vnd.example.thing+json".into(),
            body: br#"{"schemaVersion":2,"mediaType":"application/vnd.example.thing+json"}"#
                .to_vec(),
        },
    );
    let srv = common::faultserver::FaultServer::start(routes);
    let s = store();
    let err = pull(
        &s.store,
        &format!("{}/x:old", srv.addr),
        &PullOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err, ImageError::Registry(RegistryError::Schema1 { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("schema 1"), "{err}");
    let err = pull(
        &s.store,
        &format!("{}/x:odd", srv.addr),
        &PullOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::Registry(RegistryError::UnsupportedMediaType { .. })
        ),
        "{err}"
    );
}

#[test]
fn unsupported_layer_media_types_are_refused_before_downloading() {
    if !common::require_root() {
        return;
    }
    use common::faultserver::Reply;
    let img = small_image();
    let mut m: serde_json::Value = serde_json::from_slice(&img.manifest).unwrap();
    m["layers"][0]["mediaType"] = "application/vnd.example.layer.v1+squashfs".into();
    let mut routes = fault_routes(&img, Reply::Status(500));
    routes.insert(
        "/v2/x/manifests/1".to_string(),
        Reply::Ok {
            content_type: OCI_MANIFEST.into(),
            body: serde_json::to_vec(&m).unwrap(),
        },
    );
    let srv = common::faultserver::FaultServer::start(routes);
    let s = store();
    let err = pull(
        &s.store,
        &format!("{}/x:1", srv.addr),
        &PullOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, ImageError::UnsupportedLayer { .. }), "{err}");
    assert!(err.to_string().contains("squashfs"), "{err}");
}

#[test]
fn the_cli_takes_credentials_from_docker_config() {
    if !common::require_root() {
        return;
    }
    let bed = testbed::get();
    let tmp = tempfile::tempdir().unwrap();
    let docker = tmp.path().join("docker");
    fs::create_dir(&docker).unwrap();
    let auth = "dGVzdGVyOnMzY3JldC1wYXNz"; // base64("tester:s3cret-pass")
    fs::write(
        docker.join("config.json"),
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, bed.auth.addr),
    )
    .unwrap();
    let root = tmp.path().join("root");
    let run = |with_config: bool| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_nodelet"));
        c.args([
            "--root",
            root.to_str().unwrap(),
            "image",
            "pull",
            &bed.auth_ref(SMALL),
        ]);
        if with_config {
            c.env("DOCKER_CONFIG", &docker);
        } else {
            c.env("DOCKER_CONFIG", tmp.path().join("none"));
        }
        c.output().unwrap()
    };
    let denied = run(false);
    assert_eq!(denied.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("unauthorized"),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );
    let ok = run(true);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(
        out.starts_with(&format!("Pulled {}", bed.auth_ref(SMALL))),
        "{out}"
    );
    let ls = std::process::Command::new(env!("CARGO_BIN_EXE_nodelet"))
        .args([
            "--root",
            root.to_str().unwrap(),
            "image",
            "ls",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&ls.stdout).unwrap();
    assert_eq!(v[0]["name"], bed.auth_ref(SMALL));
}
