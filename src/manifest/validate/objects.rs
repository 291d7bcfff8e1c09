//! ConfigMap and Secret validation as the API server's `ValidateConfigMap`,
//! `ValidateSecret` and their `…Update` (`k8s:pkg/apis/core/validation/
//! validation.go`), on objects normalized by [`normalize_secret`] and with
//! a namespace.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::ByteString;

use super::object_meta;
use crate::manifest::field::{forbidden, invalid, required, too_long, ErrorList, Path};

/// `core.MaxSecretSize`, also the bound of a ConfigMap's data.
pub const MAX_DATA_SIZE: usize = 1024 * 1024;

const IMMUTABLE: &str = "field is immutable when `immutable` is set";

fn keys<'a>(errs: &mut ErrorList, path: &Path, keys: impl Iterator<Item = &'a String>) {
    for k in keys {
        for m in super::names::config_map_key(k) {
            errs.push(invalid(&path.key(k), k.as_str(), &m));
        }
    }
}

/// Secret `stringData` folded into `data` (the API server's conversion:
/// `stringData` is write-only and wins over `data`), and the namespace
/// defaulted.
pub fn normalize_secret(s: &mut Secret) {
    if let Some(strings) = s.string_data.take() {
        let data = s.data.get_or_insert_with(BTreeMap::new);
        for (k, v) in strings {
            data.insert(k, ByteString(v.into_bytes()));
        }
    }
    if s.type_.as_deref().unwrap_or_default().is_empty() {
        s.type_ = Some("Opaque".into());
    }
    default_namespace(&mut s.metadata.namespace);
}

/// The namespace a ConfigMap or Secret without one lives in.
pub fn default_namespace(ns: &mut Option<String>) {
    if ns.as_deref().unwrap_or_default().is_empty() {
        *ns = Some("default".into());
    }
}

pub fn validate_config_map(c: &ConfigMap) -> ErrorList {
    let mut errs = object_meta(&c.metadata, &Path::new("metadata"));
    let data = Path::new("data");
    keys(&mut errs, &data, c.data.iter().flatten().map(|(k, _)| k));
    for k in c.data.iter().flatten().map(|(k, _)| k) {
        if c.binary_data.as_ref().is_some_and(|b| b.contains_key(k)) {
            errs.push(invalid(
                &data.key(k),
                k.as_str(),
                "duplicate of key present in binaryData",
            ));
        }
    }
    let binary = Path::new("binaryData");
    keys(
        &mut errs,
        &binary,
        c.binary_data.iter().flatten().map(|(k, _)| k),
    );
    let size: usize = c.data.iter().flatten().map(|(_, v)| v.len()).sum::<usize>()
        + c.binary_data
            .iter()
            .flatten()
            .map(|(_, v)| v.0.len())
            .sum::<usize>();
    if size > MAX_DATA_SIZE {
        errs.push(too_long(&Path::new(""), MAX_DATA_SIZE));
    }
    errs
}

/// Keys a Secret of a well-known type must have (`ValidateSecret`).
fn required_keys(ty: &str) -> &'static [&'static str] {
    match ty {
        "kubernetes.io/dockercfg" => &[".dockercfg"],
        "kubernetes.io/dockerconfigjson" => &[".dockerconfigjson"],
        "kubernetes.io/ssh-auth" => &["ssh-privatekey"],
        "kubernetes.io/tls" => &["tls.crt", "tls.key"],
        _ => &[],
    }
}

pub fn validate_secret(s: &Secret) -> ErrorList {
    let mut errs = object_meta(&s.metadata, &Path::new("metadata"));
    let data = Path::new("data");
    let entries = s.data.clone().unwrap_or_default();
    keys(&mut errs, &data, entries.keys());
    if entries.values().map(|v| v.0.len()).sum::<usize>() > MAX_DATA_SIZE {
        errs.push(too_long(&data, MAX_DATA_SIZE));
    }
    let ty = s.type_.as_deref().unwrap_or("Opaque");
    for k in required_keys(ty) {
        if !entries.contains_key(*k) {
            errs.push(required(&data.key(k), ""));
        }
    }
    for k in [".dockercfg", ".dockerconfigjson"] {
        let wanted = required_keys(ty).contains(&k);
        if let Some(v) = entries.get(k).filter(|_| wanted) {
            if let Err(e) = serde_json::from_slice::<serde_json::Value>(&v.0) {
                errs.push(invalid(
                    &data.key(k),
                    "<secret contents redacted>",
                    &e.to_string(),
                ));
            }
        }
    }
    match ty {
        "kubernetes.io/basic-auth"
            if !entries.contains_key("username") && !entries.contains_key("password") =>
        {
            errs.push(required(&data.key("username"), ""));
            errs.push(required(&data.key("password"), ""));
        }
        "kubernetes.io/service-account-token"
            if !s
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key("kubernetes.io/service-account.name")) =>
        {
            errs.push(required(
                &Path::new("metadata")
                    .child("annotations")
                    .key("kubernetes.io/service-account.name"),
                "",
            ));
        }
        _ => {}
    }
    errs
}

/// What an update may not change: the data of an immutable object, its
/// `immutable` flag once set, a Secret's type.
fn update(old_immutable: Option<bool>, new_immutable: Option<bool>, same_data: bool) -> ErrorList {
    let mut errs = ErrorList::new();
    if old_immutable == Some(true) {
        if new_immutable != Some(true) {
            errs.push(forbidden(&Path::new("immutable"), IMMUTABLE));
        }
        if !same_data {
            errs.push(forbidden(&Path::new("data"), IMMUTABLE));
        }
    }
    errs
}

pub fn validate_config_map_update(new: &ConfigMap, old: &ConfigMap) -> ErrorList {
    let mut errs = validate_config_map(new);
    let same = new.data == old.data && new.binary_data == old.binary_data;
    errs.extend(update(old.immutable, new.immutable, same));
    errs
}

pub fn validate_secret_update(new: &Secret, old: &Secret) -> ErrorList {
    let mut errs = validate_secret(new);
    if new.type_ != old.type_ {
        errs.push(invalid(
            &Path::new("type"),
            new.type_.as_deref().unwrap_or_default(),
            IMMUTABLE.trim_end_matches(" when `immutable` is set"),
        ));
    }
    errs.extend(update(old.immutable, new.immutable, new.data == old.data));
    errs
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn cm(v: serde_json::Value) -> ConfigMap {
        serde_json::from_value(v).unwrap()
    }

    fn secret(v: serde_json::Value) -> Secret {
        let mut s: Secret = serde_json::from_value(v).unwrap();
        normalize_secret(&mut s);
        s
    }

    fn texts(errs: &ErrorList) -> Vec<String> {
        errs.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn config_maps_are_checked_as_the_api_server_does() {
        let ok = cm(
            serde_json::json!({"metadata": {"name": "c", "namespace": "default"},
            "data": {"a.conf": "x"}, "binaryData": {"b": "eA=="}}),
        );
        assert!(validate_config_map(&ok).is_empty());
        let bad = cm(
            serde_json::json!({"metadata": {"name": "Bad_Name", "namespace": "default"},
            "data": {"..x": "1", "b": "2"}, "binaryData": {"b": "eA=="}}),
        );
        assert_eq!(
            texts(&validate_config_map(&bad)),
            [
                "metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
                "data[..x]: Invalid value: \"..x\": must not start with '..'",
                "data[b]: Invalid value: \"b\": duplicate of key present in binaryData",
            ]
        );
        let big = cm(
            serde_json::json!({"metadata": {"name": "c", "namespace": "default"},
            "data": {"a": "x".repeat(MAX_DATA_SIZE + 1)}}),
        );
        assert_eq!(
            texts(&validate_config_map(&big)),
            [": Too long: may not be more than 1048576 bytes"]
        );
    }

    #[test]
    fn secrets_fold_string_data_and_check_their_type() {
        let s = secret(serde_json::json!({"metadata": {"name": "s"},
            "data": {"a": "eA=="}, "stringData": {"a": "y", "b": "z"}}));
        assert_eq!(s.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(s.type_.as_deref(), Some("Opaque"));
        assert!(s.string_data.is_none());
        let data = s.data.clone().unwrap();
        assert_eq!(
            (data["a"].0.as_slice(), data["b"].0.as_slice()),
            (&b"y"[..], &b"z"[..])
        );
        assert!(validate_secret(&s).is_empty());
        let tls = secret(
            serde_json::json!({"metadata": {"name": "t"}, "type": "kubernetes.io/tls",
            "stringData": {"tls.crt": "c"}}),
        );
        assert_eq!(
            texts(&validate_secret(&tls)),
            ["data[tls.key]: Required value"]
        );
        let docker = secret(serde_json::json!({"metadata": {"name": "d"},
            "type": "kubernetes.io/dockerconfigjson", "stringData": {".dockerconfigjson": "{"}}));
        let errs = texts(&validate_secret(&docker));
        assert!(
            errs.len() == 1
                && errs[0].starts_with(
                    "data[.dockerconfigjson]: Invalid value: \"<secret contents redacted>\": "
                ),
            "{errs:?}"
        );
    }

    #[test]
    fn immutable_objects_keep_their_data_and_secrets_their_type() {
        let old = cm(
            serde_json::json!({"metadata": {"name": "c", "namespace": "default"},
            "data": {"a": "1"}, "immutable": true}),
        );
        let mut new = old.clone();
        new.data = Some(BTreeMap::from([("a".to_string(), "2".to_string())]));
        new.immutable = None;
        assert_eq!(
            texts(&validate_config_map_update(&new, &old)),
            [
                "immutable: Forbidden: field is immutable when `immutable` is set",
                "data: Forbidden: field is immutable when `immutable` is set",
            ]
        );
        let old =
            secret(serde_json::json!({"metadata": {"name": "s"}, "stringData": {"username": "u"}}));
        let mut new = old.clone();
        new.type_ = Some("kubernetes.io/basic-auth".into());
        assert_eq!(
            texts(&validate_secret_update(&new, &old)),
            ["type: Invalid value: \"kubernetes.io/basic-auth\": field is immutable"]
        );
    }
}
