//! Test images built offline from Debian's busybox-static into OCI image
//! layouts, by our own code: no network, no docker.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use nodelet::image::digest::Digest;
use serde_json::json;

use super::tarball::Layer;

pub const BUSYBOX: &str = "/bin/busybox";
/// Applets linked in the test images.
pub const APPLETS: &[&str] = &[
    "sh", "ls", "cat", "echo", "sleep", "true", "false", "id", "hostname", "env", "mkdir", "touch",
    "rm", "httpd", "wget", "nc", "grep", "ps", "kill", "test", "stat", "readlink", "head", "wc",
    "printf", "pwd", "mount", "dd", "sed",
];

#[derive(Clone, Copy)]
pub enum Comp {
    Gzip,
    Zstd,
    None,
}

impl Comp {
    fn media_type(self) -> &'static str {
        match self {
            Comp::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Comp::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            Comp::None => "application/vnd.oci.image.layer.v1.tar",
        }
    }

    fn compress(self, tar: &[u8]) -> Vec<u8> {
        match self {
            Comp::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(tar).unwrap();
                e.finish().unwrap()
            }
            Comp::Zstd => zstd::encode_all(tar, 3).unwrap(),
            Comp::None => tar.to_vec(),
        }
    }
}

/// The base layer: busybox, its applets as symlinks, /etc/passwd and /etc/group.
pub fn base_layer() -> Vec<u8> {
    let bin = fs::read(BUSYBOX).expect("busybox-static must be installed (make deps)");
    let mut l = Layer::new()
        .dir("bin", 0o755)
        .file_with("bin/busybox", &bin, 0o755, 0, 0)
        .dir("etc", 0o755)
        .file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\napp:x:1000:1000:app:/home/app:/bin/sh\n")
        .file("etc/group", b"root:x:0:\nnobody:x:65534:\napp:x:1000:\nextra:x:2000:app\n")
        .file("etc/motd", b"welcome\n")
        .dir("tmp", 0o1777)
        .dir("var", 0o755)
        .dir("var/cache", 0o755)
        .file("var/cache/old", b"old\n")
        .dir("root", 0o700);
    for a in APPLETS {
        l = l.symlink(&format!("bin/{a}"), "busybox");
    }
    l.build()
}

/// The base layer unpacked once per test process into a directory used
/// read-only as an overlay lower dir.
pub fn busybox_lower() -> &'static Path {
    static LOWER: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    LOWER.get_or_init(|| {
        let l = tempfile::tempdir().unwrap().keep().join("lower");
        fs::create_dir(&l).unwrap();
        let mut a = nodelet::image::unpack::LayerApplier::new(&l).unwrap();
        a.apply(&base_layer()[..]).unwrap();
        a.finish(&[]).unwrap();
        l
    })
}

pub struct Built {
    pub blob: Vec<u8>,
    pub diff_id: Digest,
    pub media_type: &'static str,
}

pub fn layer(tar: &[u8], comp: Comp) -> Built {
    Built {
        blob: comp.compress(tar),
        diff_id: Digest::of(tar),
        media_type: comp.media_type(),
    }
}

/// An OCI layout being assembled.
pub struct LayoutBuilder {
    pub dir: PathBuf,
    manifests: Vec<serde_json::Value>,
}

impl LayoutBuilder {
    pub fn new(dir: &Path) -> Self {
        fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        LayoutBuilder {
            dir: dir.to_path_buf(),
            manifests: Vec::new(),
        }
    }

    pub fn blob(&self, data: &[u8]) -> (Digest, u64) {
        let d = Digest::of(data);
        fs::write(self.dir.join("blobs/sha256").join(d.hex()), data).unwrap();
        (d, data.len() as u64)
    }

    /// Writes config + manifest for `layers`; returns the manifest descriptor.
    pub fn image(
        &self,
        layers: &[Built],
        arch: &str,
        cmd: &[&str],
        extra_config: serde_json::Value,
    ) -> serde_json::Value {
        let mut config = json!({
            "created": "2026-01-01T00:00:00Z",
            "architecture": arch,
            "os": "linux",
            "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": cmd, "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>()},
        });
        if let serde_json::Value::Object(extra) = extra_config {
            for (k, v) in extra {
                config["config"][k] = v;
            }
        }
        let (cd, cs) = self.blob(&serde_json::to_vec(&config).unwrap());
        let layer_descs: Vec<_> = layers
            .iter()
            .map(|l| {
                let (d, s) = self.blob(&l.blob);
                json!({"mediaType": l.media_type, "digest": d.to_string(), "size": s})
            })
            .collect();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.to_string(), "size": cs},
            "layers": layer_descs,
        });
        let (md, ms) = self.blob(&serde_json::to_vec(&manifest).unwrap());
        json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md.to_string(), "size": ms,
               "platform": {"os": "linux", "architecture": arch}})
    }

    /// Lists `desc` in index.json under tag `tag`.
    pub fn tag(&mut self, mut desc: serde_json::Value, tag: &str) {
        desc["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        self.manifests.push(desc);
    }

    /// An image index over several manifest descriptors, returned as a descriptor.
    pub fn index(&self, entries: &[serde_json::Value]) -> serde_json::Value {
        let idx = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries});
        let (d, s) = self.blob(&serde_json::to_vec(&idx).unwrap());
        json!({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": d.to_string(), "size": s})
    }

    pub fn finish(&self) {
        let idx = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": self.manifests});
        fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&idx).unwrap(),
        )
        .unwrap();
    }
}

/// Bytes that do not compress (for the `big` image and slow pulls).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407)
        | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}
