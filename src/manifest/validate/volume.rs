//! `ValidateVolumes`: names, exactly one source, and the sources nodelet
//! mounts (emptyDir, hostPath, configMap, secret, downwardAPI).

use std::collections::HashSet;

use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, KeyToPath, Volume};

use super::names;
use super::push_msgs;
use crate::manifest::field::{
    duplicate, forbidden, invalid, not_supported, required, ErrorList, Path,
};
use crate::quantity::Quantity;

pub(crate) const HOST_PATH_TYPES: &[&str] = &[
    "",
    "DirectoryOrCreate",
    "Directory",
    "FileOrCreate",
    "File",
    "Socket",
    "CharDevice",
    "BlockDevice",
];
const MODE_MSG: &str = "must be a number between 0 and 0777 (octal), both inclusive";
const DOWNWARD_VOLUME_FIELDS: &[&str] = &[
    "metadata.annotations",
    "metadata.labels",
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
];

/// Returns the set of valid volume names and the errors.
pub(super) fn volumes(vols: &[Volume], path: &Path) -> (HashSet<String>, ErrorList) {
    let mut errs = ErrorList::new();
    let mut names_seen = HashSet::new();
    for (i, v) in vols.iter().enumerate() {
        let p = path.index(i);
        let name_path = p.child("name");
        let vol_errs = source(v, &p);
        if v.name.is_empty() {
            errs.push(required(&name_path, ""));
        } else {
            let msgs = names::dns1123_label(&v.name);
            let name_ok = msgs.is_empty();
            push_msgs(&mut errs, &name_path, &v.name, msgs);
            if names_seen.contains(&v.name) {
                errs.push(duplicate(&name_path, &v.name));
            } else if name_ok && vol_errs.is_empty() {
                names_seen.insert(v.name.clone());
            }
        }
        errs.extend(vol_errs);
    }
    (names_seen, errs)
}

/// The sources set on a volume, by JSON field name.
pub(crate) fn source_names(v: &Volume) -> Vec<String> {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::Object(m)) => {
            m.keys().filter(|k| k.as_str() != "name").cloned().collect()
        }
        _ => Vec::new(),
    }
}

fn source(v: &Volume, p: &Path) -> ErrorList {
    let mut errs = ErrorList::new();
    let sources = source_names(v);
    match sources.len() {
        0 => errs.push(required(p, "must specify a volume type")),
        1 => {}
        // validation.go reports each extra source at its own path.
        _ => {
            for s in &sources[1..] {
                errs.push(forbidden(
                    &p.child(s),
                    "may not specify more than 1 volume type",
                ));
            }
        }
    }
    if let Some(h) = &v.host_path {
        let hp = p.child("hostPath");
        if h.path.is_empty() {
            errs.push(required(&hp.child("path"), ""));
        } else if has_dotdot(&h.path) {
            errs.push(invalid(&hp.child("path"), &h.path, "must not contain '..'"));
        }
        let t = h.type_.as_deref().unwrap_or_default();
        if !HOST_PATH_TYPES.contains(&t) {
            errs.push(not_supported(&hp.child("type"), t, HOST_PATH_TYPES));
        }
    }
    if let Some(e) = &v.empty_dir {
        if let Some(limit) = &e.size_limit {
            let lp = p.child("emptyDir").child("sizeLimit");
            match Quantity::parse(&limit.0) {
                Ok(q) if q.is_negative() => {
                    errs.push(invalid(&lp, &limit.0, "must be greater than or equal to 0"))
                }
                Ok(_) => {}
                Err(e) => errs.push(invalid(&lp, &limit.0, &e.to_string())),
            }
        }
    }
    if let Some(c) = &v.config_map {
        let cp = p.child("configMap");
        if c.name.is_empty() {
            errs.push(required(&cp.child("name"), ""));
        }
        mode(&mut errs, &cp.child("defaultMode"), c.default_mode);
        key_to_paths(
            &mut errs,
            &cp.child("items"),
            c.items.as_deref().unwrap_or_default(),
        );
    }
    if let Some(s) = &v.secret {
        let sp = p.child("secret");
        if s.secret_name.as_deref().unwrap_or_default().is_empty() {
            errs.push(required(&sp.child("secretName"), ""));
        }
        mode(&mut errs, &sp.child("defaultMode"), s.default_mode);
        key_to_paths(
            &mut errs,
            &sp.child("items"),
            s.items.as_deref().unwrap_or_default(),
        );
    }
    if let Some(d) = &v.downward_api {
        let dp = p.child("downwardAPI");
        mode(&mut errs, &dp.child("defaultMode"), d.default_mode);
        for (i, item) in d.items.iter().flatten().enumerate() {
            downward_file(&mut errs, &dp.child("items").index(i), item);
        }
    }
    errs
}

fn mode(errs: &mut ErrorList, path: &Path, m: Option<i32>) {
    if let Some(m) = m {
        if !(0..=0o777).contains(&m) {
            errs.push(invalid(path, m, MODE_MSG));
        }
    }
}

fn has_dotdot(p: &str) -> bool {
    p.split('/').any(|c| c == "..")
}

/// `validateLocalDescendingPath`: relative, without `..` components.
pub(crate) fn local_descending_path(errs: &mut ErrorList, path: &Path, value: &str) {
    if value.starts_with('/') {
        errs.push(invalid(path, value, "must be a relative path"));
    }
    if has_dotdot(value) {
        errs.push(invalid(path, value, "must not contain '..'"));
    }
}

/// `validateLocalNonReservedPath`: also may not start with `..`.
fn local_non_reserved_path(errs: &mut ErrorList, path: &Path, value: &str) {
    local_descending_path(errs, path, value);
    if value.starts_with("..") {
        errs.push(invalid(path, value, "must not start with '..'"));
    }
}

fn key_to_paths(errs: &mut ErrorList, path: &Path, items: &[KeyToPath]) {
    for (i, kp) in items.iter().enumerate() {
        let ip = path.index(i);
        if kp.key.is_empty() {
            errs.push(required(&ip.child("key"), ""));
        }
        if kp.path.is_empty() {
            errs.push(required(&ip.child("path"), ""));
        }
        local_non_reserved_path(errs, &ip.child("path"), &kp.path);
        mode(errs, &ip.child("mode"), kp.mode);
    }
}

fn downward_file(errs: &mut ErrorList, path: &Path, f: &DownwardAPIVolumeFile) {
    if f.path.is_empty() {
        errs.push(required(&path.child("path"), ""));
    }
    local_non_reserved_path(errs, &path.child("path"), &f.path);
    mode(errs, &path.child("mode"), f.mode);
    match (&f.field_ref, &f.resource_field_ref) {
        (Some(r), None) => {
            let fp = path.child("fieldRef").child("fieldPath");
            if r.field_path.is_empty() {
                errs.push(required(&fp, ""));
            } else if !DOWNWARD_VOLUME_FIELDS.contains(&r.field_path.as_str())
                && !is_subscripted_meta(&r.field_path)
            {
                errs.push(not_supported(&fp, &r.field_path, DOWNWARD_VOLUME_FIELDS));
            }
        }
        (None, Some(r)) => {
            if r.container_name.as_deref().unwrap_or_default().is_empty() {
                errs.push(required(
                    &path.child("resourceFieldRef").child("containerName"),
                    "",
                ));
            }
        }
        (Some(_), Some(_)) => errs.push(invalid(
            path,
            "resource",
            "fieldRef and resourceFieldRef can not be specified simultaneously",
        )),
        (None, None) => errs.push(required(
            path,
            "one of fieldRef and resourceFieldRef is required",
        )),
    }
}

/// `metadata.labels['key']` or `metadata.annotations['key']`.
pub(crate) fn is_subscripted_meta(path: &str) -> bool {
    ["metadata.labels['", "metadata.annotations['"]
        .iter()
        .any(|prefix| {
            path.strip_prefix(prefix)
                .and_then(|rest| rest.strip_suffix("']"))
                .is_some_and(|key| !key.is_empty() && names::qualified_name(key).is_empty())
        })
}
