//! Pod volumes on the host: emptyDir (a directory, or tmpfs for
//! `medium: Memory`), hostPath with every `type:` check, and configMap,
//! secret and downwardAPI files from the node's objects, written as
//! kubelet's AtomicWriter writes them so they can follow updates. Laid out
//! like kubelet's `<pod dir>/volumes/<plugin>/<name>`.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, KeyToPath, Pod, Volume};

use super::container::{field_ref, resource_field_ref, Downward};
use super::objects::Objects;
use super::state::spec;
use crate::runtime::plan::BindMount;

/// A volume failed to set up: the `FailedMount` event reads
/// `MountVolume.SetUp failed for volume "<v>" : <message>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("MountVolume.SetUp failed for volume \"{volume}\" : {message}")]
pub struct VolumeError {
    pub volume: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedVolume {
    pub path: PathBuf,
    /// configMap, secret and downwardAPI are always mounted read-only.
    pub force_readonly: bool,
}

/// The pod's volumes by name.
pub type Volumes = BTreeMap<String, PreparedVolume>;

fn io_msg(what: &str, p: &Path, e: &io::Error) -> String {
    format!("{what} {}: {e}", p.display())
}

/// Sets up every volume of `pod` under `pod_dir`. On error, what was set
/// up stays for [`teardown`] to remove.
pub fn setup(
    pod: &Pod,
    objects: &Objects,
    dw: &Downward,
    pod_dir: &Path,
) -> Result<Volumes, VolumeError> {
    let mut out = Volumes::new();
    // The pod's directory holds its volumes and bundles: root and the
    // group only (kubelet's pod directories are 0750).
    fs::create_dir_all(pod_dir)
        .and_then(|()| fs::set_permissions(pod_dir, fs::Permissions::from_mode(POD_DIR_MODE)))
        .map_err(|e| VolumeError {
            volume: String::new(),
            message: io_msg("create", pod_dir, &e),
        })?;
    for v in spec(pod).volumes.iter().flatten() {
        let err = |message: String| VolumeError {
            volume: v.name.clone(),
            message,
        };
        let prepared = setup_one(pod, v, objects, dw, pod_dir).map_err(err)?;
        out.insert(v.name.clone(), prepared);
    }
    Ok(out)
}

/// Projects the configMap and secret volumes of `pod` again from
/// `objects`, as a kubelet's sync remounts them: the names of the volumes
/// whose files changed. A volume whose object is gone (and not optional)
/// keeps its files and is reported.
pub fn refresh(
    pod: &Pod,
    objects: &Objects,
    dw: &Downward,
    pod_dir: &Path,
) -> (Vec<String>, Vec<VolumeError>) {
    let (mut changed, mut errors) = (Vec::new(), Vec::new());
    let projected = spec(pod)
        .volumes
        .iter()
        .flatten()
        .filter(|v| v.config_map.is_some() || v.secret.is_some());
    for v in projected {
        let plugin = if v.secret.is_some() {
            "secret"
        } else {
            "configmap"
        };
        let link = plugin_dir(pod_dir, plugin, &v.name).join(DATA_LINK);
        let before = fs::read_link(&link).ok();
        match setup_one(pod, v, objects, dw, pod_dir) {
            Ok(_) if fs::read_link(&link).ok() != before => changed.push(v.name.clone()),
            Ok(_) => {}
            Err(message) => errors.push(VolumeError {
                volume: v.name.clone(),
                message,
            }),
        }
    }
    (changed, errors)
}

/// Mode of `<root>/pods/<uid>`.
pub const POD_DIR_MODE: u32 = 0o750;

/// Mounts a tmpfs of its own at `path` (made if missing) unless one is
/// there already: secrets live in memory, never on the node's disk.
fn tmpfs_at(path: &Path, opts: &str, noexec: bool) -> Result<(), String> {
    use nix::mount::MsFlags;
    fs::create_dir_all(path).map_err(|e| io_msg("create", path, &e))?;
    if is_mountpoint(path) {
        return Ok(());
    }
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if noexec {
        flags |= MsFlags::MS_NOEXEC;
    }
    nix::mount::mount(Some("tmpfs"), path, Some("tmpfs"), flags, Some(opts))
        .map_err(|e| format!("mount tmpfs on {}: {e}", path.display()))
}

fn plugin_dir(pod_dir: &Path, plugin: &str, name: &str) -> PathBuf {
    pod_dir
        .join("volumes")
        .join(format!("kubernetes.io~{plugin}"))
        .join(name)
}

fn setup_one(
    pod: &Pod,
    v: &Volume,
    objects: &Objects,
    dw: &Downward,
    pod_dir: &Path,
) -> Result<PreparedVolume, String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    if let Some(e) = &v.empty_dir {
        let path = plugin_dir(pod_dir, "empty-dir", &v.name);
        fs::create_dir_all(&path).map_err(|e| io_msg("create", &path, &e))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o777))
            .map_err(|e| io_msg("chmod", &path, &e))?;
        if e.medium.as_deref() == Some("Memory") {
            let mut opts = "mode=0777".to_string();
            if let Some(limit) = &e.size_limit {
                let q = crate::quantity::Quantity::parse(&limit.0)
                    .map_err(|e| format!("sizeLimit: {e}"))?;
                opts.push_str(&format!(",size={}", q.value_ceil()));
            }
            tmpfs_at(&path, &opts, false)?;
        }
        return Ok(PreparedVolume {
            path,
            force_readonly: false,
        });
    }
    if let Some(h) = &v.host_path {
        return host_path(&h.path, h.type_.as_deref().unwrap_or_default()).map(|path| {
            PreparedVolume {
                path,
                force_readonly: false,
            }
        });
    }
    let (plugin, data, items, mode) = if let Some(c) = &v.config_map {
        let data = match objects.config_map(ns, &c.name) {
            Some(d) => d,
            None if c.optional == Some(true) => BTreeMap::new(),
            None => return Err(format!("configmap \"{}\" not found", c.name)),
        };
        let items = key_items(
            c.items.as_deref(),
            &data,
            c.optional == Some(true),
            "configmap",
        )?;
        ("configmap", data, items, c.default_mode)
    } else if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let data = match objects.secret(ns, &name) {
            Some(d) => d,
            None if s.optional == Some(true) => BTreeMap::new(),
            None => return Err(format!("secret \"{name}\" not found")),
        };
        let items = key_items(
            s.items.as_deref(),
            &data,
            s.optional == Some(true),
            "secret",
        )?;
        ("secret", data, items, s.default_mode)
    } else if let Some(d) = &v.downward_api {
        let mut data = BTreeMap::new();
        let mut items = Vec::new();
        for i in d.items.iter().flatten() {
            let value = if let Some(f) = &i.field_ref {
                field_ref(pod, f, dw).map_err(|e| e.0)?
            } else if let Some(r) = &i.resource_field_ref {
                let c = find_app_or_init(pod, r.container_name.as_deref().unwrap_or_default())
                    .ok_or_else(|| format!("container {:?} not found", r.container_name))?;
                resource_field_ref(c, r, dw).map_err(|e| e.0)?
            } else {
                continue;
            };
            data.insert(i.path.clone(), value.into_bytes());
            items.push((i.path.clone(), i.path.clone(), i.mode));
        }
        ("downward-api", data, items, d.default_mode)
    } else {
        return Err("volume type is not supported by nodelet".into());
    };
    let path = plugin_dir(pod_dir, plugin, &v.name);
    if plugin == "secret" {
        // kubelet's secret volumes are a memory-backed emptyDir.
        tmpfs_at(&path, "mode=0755", true)?;
    }
    write_files(
        &path,
        &data,
        &items,
        mode.unwrap_or(crate::manifest::defaults::DEFAULT_VOLUME_MODE),
    )?;
    Ok(PreparedVolume {
        path,
        force_readonly: true,
    })
}

fn find_app_or_init<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    super::state::find_container(pod, name).map(|(_, c)| c)
}

/// (key, relative path, mode) for every file to write.
type Item = (String, String, Option<i32>);

fn key_items(
    items: Option<&[KeyToPath]>,
    data: &BTreeMap<String, Vec<u8>>,
    optional: bool,
    kind: &str,
) -> Result<Vec<Item>, String> {
    let Some(items) = items.filter(|i| !i.is_empty()) else {
        return Ok(data.keys().map(|k| (k.clone(), k.clone(), None)).collect());
    };
    let mut out = Vec::new();
    for i in items {
        if !data.contains_key(&i.key) {
            if optional {
                continue;
            }
            return Err(format!(
                "{kind} references non-existent config key: {}",
                i.key
            ));
        }
        out.push((i.key.clone(), i.path.clone(), i.mode));
    }
    Ok(out)
}

/// Where the current payload of an atomically written volume is.
const DATA_LINK: &str = "..data";

/// Writes `items` of `data` into `dir` as kubelet's `AtomicWriter` does
/// (`k8s:pkg/volume/util/atomic_writer.go`): the files go into a new
/// timestamped directory `..<time>`, the `..data` symlink is swapped to it
/// with one rename, and each top-level entry is a symlink through
/// `..data` — so a container reading the volume sees the old set or the
/// new one, never a mix, and an update is one rename. Nothing is written
/// when the payload is unchanged; true when it was written.
fn write_files(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: &[Item],
    default_mode: i32,
) -> Result<bool, String> {
    let mut payload: BTreeMap<PathBuf, (Vec<u8>, u32)> = BTreeMap::new();
    for (key, rel, mode) in items {
        if Path::new(rel)
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
            || rel.starts_with("..")
        {
            return Err(format!(
                "invalid path {rel:?}: must be relative without '..'"
            ));
        }
        let m = u32::try_from(mode.unwrap_or(default_mode)).unwrap_or(0o644) & 0o7777;
        let bytes = data.get(key).cloned().unwrap_or_default();
        payload.insert(PathBuf::from(rel), (bytes, m));
    }
    fs::create_dir_all(dir).map_err(|e| io_msg("create", dir, &e))?;
    let current = dir.join(DATA_LINK);
    if same_payload(&current, &payload) {
        return Ok(false);
    }
    let stamp = time_dir_name();
    let fresh = dir.join(&stamp);
    for (rel, (bytes, mode)) in &payload {
        let target = fresh.join(rel);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(|e| io_msg("create", parent, &e))?;
        }
        fs::write(&target, bytes).map_err(|e| io_msg("write", &target, &e))?;
        fs::set_permissions(&target, fs::Permissions::from_mode(*mode))
            .map_err(|e| io_msg("chmod", &target, &e))?;
    }
    let old = fs::read_link(&current).ok();
    let tmp = dir.join("..data_tmp");
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp).map_err(|e| io_msg("link", &tmp, &e))?;
    fs::rename(&tmp, &current).map_err(|e| io_msg("swap", &current, &e))?;
    // The user-visible names: a symlink through `..data` for each
    // top-level entry; whatever else is there (an old payload's names, a
    // previous layout's plain files) goes.
    let top: std::collections::BTreeSet<std::ffi::OsString> = payload
        .keys()
        .filter_map(|p| p.components().next())
        .map(|c| c.as_os_str().to_os_string())
        .collect();
    for e in fs::read_dir(dir)
        .map_err(|e| io_msg("read", dir, &e))?
        .flatten()
    {
        let name = e.file_name();
        let hidden = name.to_string_lossy().starts_with("..");
        if hidden || top.contains(&name) {
            continue;
        }
        let p = e.path();
        let _ = fs::remove_dir_all(&p).or_else(|_| fs::remove_file(&p));
    }
    for name in &top {
        let link = dir.join(name);
        let want = Path::new(DATA_LINK).join(name);
        if fs::read_link(&link).is_ok_and(|l| l == want) {
            continue;
        }
        let _ = fs::remove_dir_all(&link).or_else(|_| fs::remove_file(&link));
        std::os::unix::fs::symlink(&want, &link).map_err(|e| io_msg("link", &link, &e))?;
    }
    if let Some(old) = old.filter(|o| o != Path::new(&stamp)) {
        let _ = fs::remove_dir_all(dir.join(old));
    }
    Ok(true)
}

/// `..<YYYY_MM_DD_hh_mm_ss.nnnnnnnnn>`, as kubelet names a payload.
fn time_dir_name() -> String {
    let now = std::time::SystemTime::now();
    let stamp = crate::time::rfc3339_nano(now);
    // 2026-12-07T23:21:02.123456789Z → 2026_12_07_23_21_02.123456789
    let mut out: String = stamp
        .trim_end_matches('Z')
        .chars()
        .map(|c| if matches!(c, '-' | 'T' | ':') { '_' } else { c })
        .collect();
    out.insert_str(0, "..");
    out
}

/// Whether the payload under `current` is `payload`, file for file.
fn same_payload(current: &Path, payload: &BTreeMap<PathBuf, (Vec<u8>, u32)>) -> bool {
    if !current.exists() {
        return false;
    }
    let mut found = 0;
    let mut same = true;
    walk_files(current, Path::new(""), &mut |rel, path| {
        found += 1;
        let meta = fs::metadata(path).ok();
        let now = (
            fs::read(path).unwrap_or_default(),
            meta.map_or(0, |m| m.permissions().mode() & 0o7777),
        );
        same &= payload.get(rel) == Some(&now);
    });
    same && found == payload.len()
}

fn walk_files(dir: &Path, rel: &Path, f: &mut dyn FnMut(&Path, &Path)) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let (path, rel) = (e.path(), rel.join(e.file_name()));
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            walk_files(&path, &rel, f);
        } else {
            f(&rel, &path);
        }
    }
}

/// hostPath with kubelet's `type:` checks
/// (`k8s:pkg/volume/hostpath/host_path.go checkType`).
pub fn host_path(path: &str, ty: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(path);
    let meta = fs::metadata(&p);
    let fail = |what: &str| {
        Err(format!(
            "hostPath type check failed: {path} is not a {what}"
        ))
    };
    match ty {
        "" => {
            // containerd creates a missing host path as a directory.
            if meta.is_err() {
                fs::create_dir_all(&p).map_err(|e| io_msg("create", &p, &e))?;
            }
        }
        "DirectoryOrCreate" => {
            if meta.is_err() {
                fs::create_dir_all(&p).map_err(|e| io_msg("create", &p, &e))?;
                fs::set_permissions(&p, fs::Permissions::from_mode(0o755))
                    .map_err(|e| io_msg("chmod", &p, &e))?;
            } else if !meta.as_ref().is_ok_and(fs::Metadata::is_dir) {
                return fail("directory");
            }
        }
        "Directory" => {
            if !meta.is_ok_and(|m| m.is_dir()) {
                return fail("directory");
            }
        }
        "FileOrCreate" => match meta {
            Err(_) => {
                fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&p)
                    .map_err(|e| io_msg("create", &p, &e))?;
                fs::set_permissions(&p, fs::Permissions::from_mode(0o644))
                    .map_err(|e| io_msg("chmod", &p, &e))?;
            }
            Ok(m) if m.is_file() => {}
            Ok(_) => return fail("file"),
        },
        "File" => {
            if !meta.is_ok_and(|m| m.is_file()) {
                return fail("file");
            }
        }
        "Socket" => {
            if !meta.is_ok_and(|m| m.file_type().is_socket()) {
                return fail("socket file");
            }
        }
        "CharDevice" => {
            if !meta.is_ok_and(|m| m.file_type().is_char_device()) {
                return fail("character device");
            }
        }
        "BlockDevice" => {
            if !meta.is_ok_and(|m| m.file_type().is_block_device()) {
                return fail("block device");
            }
        }
        other => return Err(format!("hostPath type {other:?} is not supported")),
    }
    Ok(p)
}

/// The bind mounts of `c`'s `volumeMounts`. A `subPath` must resolve
/// inside its volume (symlinks included); a missing one is created as a
/// directory, as kubelet does.
pub fn container_mounts(c: &Container, vols: &Volumes) -> Result<Vec<BindMount>, String> {
    let mut out = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let v = vols
            .get(&m.name)
            .ok_or_else(|| format!("volumeMount {:?}: no volume of that name", m.name))?;
        let mut source = v.path.clone();
        if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            if Path::new(sub)
                .components()
                .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
            {
                return Err(format!(
                    "subPath {sub:?} must be a relative path without '..'"
                ));
            }
            let target = v.path.join(sub);
            if fs::symlink_metadata(&target).is_err() {
                fs::create_dir_all(&target).map_err(|e| io_msg("create subPath", &target, &e))?;
            }
            let root = fs::canonicalize(&v.path).map_err(|e| io_msg("resolve", &v.path, &e))?;
            let real = fs::canonicalize(&target).map_err(|e| io_msg("resolve", &target, &e))?;
            if !real.starts_with(&root) {
                return Err(format!(
                    "subPath {sub:?} resolves outside of volume {:?}",
                    m.name
                ));
            }
            source = real;
        }
        out.push(BindMount {
            source,
            destination: m.mount_path.clone(),
            readonly: v.force_readonly || m.read_only == Some(true),
            propagation: Some(
                match m.mount_propagation.as_deref() {
                    Some("HostToContainer") => "rslave",
                    Some("Bidirectional") => "rshared",
                    _ => "rprivate",
                }
                .into(),
            ),
        });
    }
    Ok(out)
}

fn is_mountpoint(p: &Path) -> bool {
    mounts_under(p).iter().any(|m| m == p)
}

/// Mount points at or below `dir`, deepest first (from mountinfo).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(dir))
        .collect();
    v.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    v
}

/// Unmounts whatever is mounted under `pod_dir` and removes it.
pub fn teardown(pod_dir: &Path) -> io::Result<()> {
    for m in mounts_under(pod_dir) {
        nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH).map_err(io::Error::from)?;
    }
    match fs::remove_dir_all(pod_dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_path_type_checks() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("d");
        let f = tmp.path().join("f");
        let s = |p: &Path| p.display().to_string();
        assert_eq!(
            host_path(&s(&d), "Directory").unwrap_err(),
            format!("hostPath type check failed: {} is not a directory", s(&d))
        );
        host_path(&s(&d), "DirectoryOrCreate").unwrap();
        assert!(d.is_dir());
        host_path(&s(&d), "Directory").unwrap();
        assert!(host_path(&s(&d), "File")
            .unwrap_err()
            .ends_with("is not a file"));
        host_path(&s(&f), "FileOrCreate").unwrap();
        assert_eq!(
            fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o644
        );
        host_path(&s(&f), "File").unwrap();
        assert!(host_path(&s(&f), "DirectoryOrCreate").is_err());
        assert!(host_path(&s(&f), "Socket")
            .unwrap_err()
            .ends_with("is not a socket file"));
        assert!(host_path("/dev/null", "CharDevice").is_ok());
        assert!(host_path("/dev/null", "BlockDevice")
            .unwrap_err()
            .ends_with("is not a block device"));
        let created = tmp.path().join("new");
        host_path(&s(&created), "").unwrap();
        assert!(created.is_dir());
    }

    #[test]
    fn sub_paths_stay_inside_their_volume() {
        let tmp = tempfile::tempdir().unwrap();
        let vol = tmp.path().join("vol");
        fs::create_dir_all(&vol).unwrap();
        std::os::unix::fs::symlink("/etc", vol.join("escape")).unwrap();
        let vols: Volumes = [(
            "v".to_string(),
            PreparedVolume {
                path: vol.clone(),
                force_readonly: false,
            },
        )]
        .into();
        let c = |sub: &str| -> Container {
            serde_json::from_value(serde_json::json!({"name": "c", "volumeMounts": [{"name": "v", "mountPath": "/m", "subPath": sub}]})).unwrap()
        };
        let m = container_mounts(&c("a/b"), &vols).unwrap();
        assert!(vol.join("a/b").is_dir());
        assert_eq!(m[0].source, fs::canonicalize(vol.join("a/b")).unwrap());
        assert!(container_mounts(&c("escape"), &vols)
            .unwrap_err()
            .contains("outside of volume"));
        assert!(container_mounts(&c("../x"), &vols).is_err());
    }

    #[test]
    fn config_map_items_modes_and_missing_keys() {
        let tmp = tempfile::tempdir().unwrap();
        let cm: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "cfg", "namespace": "default"}, "data": {"a": "1", "b": "2"}}))
        .unwrap();
        let objects = Objects::new(vec![cm], vec![]);
        let pod = |vol: serde_json::Value| -> Pod {
            serde_json::from_value(
                serde_json::json!({"metadata": {"name": "p", "namespace": "default"},
                "spec": {"containers": [{"name": "c"}], "volumes": [vol]}}),
            )
            .unwrap()
        };
        let p = pod(
            serde_json::json!({"name": "v", "configMap": {"name": "cfg", "items": [{"key": "b", "path": "sub/bee", "mode": 0o600}]}}),
        );
        let v = setup(&p, &objects, &Downward::default(), tmp.path()).unwrap();
        let dir = &v["v"].path;
        assert_eq!(fs::read_to_string(dir.join("sub/bee")).unwrap(), "2");
        assert!(!dir.join("a").exists());
        assert_eq!(
            fs::metadata(dir.join("sub/bee"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        assert!(v["v"].force_readonly);
        let bad = pod(
            serde_json::json!({"name": "v", "configMap": {"name": "cfg", "items": [{"key": "zz", "path": "z"}]}}),
        );
        assert_eq!(
            setup(&bad, &objects, &Downward::default(), tmp.path()).unwrap_err().to_string(),
            "MountVolume.SetUp failed for volume \"v\" : configmap references non-existent config key: zz"
        );
        let missing = pod(serde_json::json!({"name": "v", "configMap": {"name": "nope"}}));
        assert!(setup(&missing, &objects, &Downward::default(), tmp.path())
            .unwrap_err()
            .message
            .contains("configmap \"nope\" not found"));
        let optional =
            pod(serde_json::json!({"name": "v", "configMap": {"name": "nope", "optional": true}}));
        setup(&optional, &objects, &Downward::default(), tmp.path()).unwrap();
    }

    /// kubelet's AtomicWriter layout: top-level symlinks through `..data`
    /// into a timestamped payload; an update swaps `..data`, drops keys
    /// that went and the old payload; an unchanged object writes nothing;
    /// a deleted one leaves the files.
    #[test]
    fn config_map_volumes_follow_their_object_atomically() {
        let tmp = tempfile::tempdir().unwrap();
        let objects = Objects::default();
        let cm = |data: serde_json::Value| -> k8s_openapi::api::core::v1::ConfigMap {
            serde_json::from_value(serde_json::json!({"metadata": {"name": "cfg"}, "data": data}))
                .unwrap()
        };
        objects
            .create(cm(serde_json::json!({"a": "1", "b": "2"})))
            .unwrap();
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "c"}],
                     "volumes": [{"name": "v", "configMap": {"name": "cfg"}}]}}))
        .unwrap();
        let dw = Downward::default();
        let vols = setup(&pod, &objects, &dw, tmp.path()).unwrap();
        let dir = &vols["v"].path;
        let data = dir.join(DATA_LINK);
        assert_eq!(fs::read_link(dir.join("a")).unwrap(), Path::new("..data/a"));
        assert_eq!(fs::read_to_string(dir.join("a")).unwrap(), "1");
        let first = fs::read_link(&data).unwrap();
        assert!(first.to_string_lossy().starts_with("..20"), "{first:?}");
        // Nothing changed: nothing written.
        assert_eq!(refresh(&pod, &objects, &dw, tmp.path()), (vec![], vec![]));
        assert_eq!(fs::read_link(&data).unwrap(), first);
        objects.replace(cm(serde_json::json!({"a": "3"}))).unwrap();
        assert_eq!(
            refresh(&pod, &objects, &dw, tmp.path()),
            (vec!["v".to_string()], vec![])
        );
        assert_eq!(fs::read_to_string(dir.join("a")).unwrap(), "3");
        assert!(
            fs::symlink_metadata(dir.join("b")).is_err(),
            "a key that went is gone"
        );
        assert!(!dir.join(&first).exists(), "the old payload is gone");
        let names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        let _: k8s_openapi::api::core::v1::ConfigMap = objects.delete("default", "cfg").unwrap();
        let (changed, errors) = refresh(&pod, &objects, &dw, tmp.path());
        assert!(changed.is_empty());
        assert_eq!(
            errors[0].to_string(),
            "MountVolume.SetUp failed for volume \"v\" : configmap \"cfg\" not found"
        );
        assert_eq!(fs::read_to_string(dir.join("a")).unwrap(), "3");
    }
}
