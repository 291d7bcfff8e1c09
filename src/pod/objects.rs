//! ConfigMaps and Secrets that pods may reference. `nodelet run` has the
//! ones given alongside its pods; the daemon keeps a store that the API
//! writes (`nodelet apply`), saved under `<root>/state/objects/` so a
//! restart keeps them. Every write bumps a counter that pod workers watch:
//! their configMap and secret volumes follow the change, as a kubelet's
//! sync does (environment variables keep the values their container
//! started with, as under a kubelet).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;

use crate::manifest::field::ErrorList;
use crate::manifest::validate::objects as validate;

/// (namespace, name).
type Key = (String, String);

/// A kind the store keeps.
pub trait Stored: Clone + PartialEq + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// `ConfigMap`.
    const KIND: &'static str;
    /// `configmaps`: the API's resource name, and the store's directory.
    const RESOURCE: &'static str;
    fn meta(&self) -> &ObjectMeta;
    fn meta_mut(&mut self) -> &mut ObjectMeta;
    /// What the API server does to a written object before validating it.
    fn normalize(&mut self);
    fn validate(&self) -> ErrorList;
    fn validate_update(&self, old: &Self) -> ErrorList;
    /// The kind's table in the store.
    fn table(t: &Tables) -> &BTreeMap<Key, Self>;
    fn table_mut(t: &mut Tables) -> &mut BTreeMap<Key, Self>;
}

impl Stored for ConfigMap {
    const KIND: &'static str = "ConfigMap";
    const RESOURCE: &'static str = "configmaps";
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
    fn normalize(&mut self) {
        validate::default_namespace(&mut self.metadata.namespace);
    }
    fn validate(&self) -> ErrorList {
        validate::validate_config_map(self)
    }
    fn validate_update(&self, old: &Self) -> ErrorList {
        validate::validate_config_map_update(self, old)
    }
    fn table(t: &Tables) -> &BTreeMap<Key, Self> {
        &t.config_maps
    }
    fn table_mut(t: &mut Tables) -> &mut BTreeMap<Key, Self> {
        &mut t.config_maps
    }
}

impl Stored for Secret {
    const KIND: &'static str = "Secret";
    const RESOURCE: &'static str = "secrets";
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
    fn normalize(&mut self) {
        validate::normalize_secret(self);
    }
    fn validate(&self) -> ErrorList {
        validate::validate_secret(self)
    }
    fn validate_update(&self, old: &Self) -> ErrorList {
        validate::validate_secret_update(self, old)
    }
    fn table(t: &Tables) -> &BTreeMap<Key, Self> {
        &t.secrets
    }
    fn table_mut(t: &mut Tables) -> &mut BTreeMap<Key, Self> {
        &mut t.secrets
    }
}

#[derive(Debug, Clone, Default)]
pub struct Tables {
    config_maps: BTreeMap<Key, ConfigMap>,
    secrets: BTreeMap<Key, Secret>,
}

/// Why a write was refused; worded as the API server words it.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("{resource} \"{name}\" not found")]
    NotFound {
        resource: &'static str,
        name: String,
    },
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists {
        resource: &'static str,
        name: String,
    },
    #[error("{kind} \"{name}\" is invalid: {}", .errors.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    Invalid {
        kind: &'static str,
        name: String,
        errors: ErrorList,
    },
    #[error("save {kind} {name}: {source}")]
    Save {
        kind: &'static str,
        name: String,
        #[source]
        source: crate::runtime::record::RecordError,
    },
}

struct Store {
    tables: RwLock<Tables>,
    /// Where the daemon keeps them; none for `nodelet run`.
    dir: Option<PathBuf>,
    /// Bumped on every write (pod workers watch it), and the source of
    /// `resourceVersion`.
    version: watch::Sender<u64>,
}

/// The objects pods on this node may reference; clones share one store.
#[derive(Clone)]
pub struct Objects(Arc<Store>);

impl Default for Objects {
    fn default() -> Self {
        Objects::with(Tables::default(), None, 0)
    }
}

impl std::fmt::Debug for Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Objects").field("dir", &self.0.dir).finish()
    }
}

fn key_of(meta: &ObjectMeta) -> Key {
    (
        meta.namespace.clone().unwrap_or_else(|| "default".into()),
        meta.name.clone().unwrap_or_default(),
    )
}

/// `<dir>/<resource>/<namespace>_<name>.json` (neither may hold `_`).
fn file_of(dir: &Path, resource: &str, key: &Key) -> PathBuf {
    dir.join(resource).join(format!("{}_{}.json", key.0, key.1))
}

/// The objects of one kind saved under `dir`; a file that cannot be read
/// is kept aside as `<file>.unreadable` and reported.
fn load<T: Stored>(dir: &Path, into: &mut BTreeMap<Key, T>, version: &mut u64) {
    let sub = dir.join(T::RESOURCE);
    for e in std::fs::read_dir(&sub).into_iter().flatten().flatten() {
        let path = e.path();
        if path.extension().and_then(|x| x.to_str()) != Some("json") {
            continue;
        }
        let read = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<T>(&b).map_err(|e| e.to_string()));
        match read {
            Ok(obj) => {
                let rv = obj.meta().resource_version.as_deref().unwrap_or("0");
                *version = (*version).max(rv.parse().unwrap_or(0));
                into.insert(key_of(obj.meta()), obj);
            }
            Err(err) => {
                let aside = path.with_extension("json.unreadable");
                let _ = std::fs::rename(&path, &aside);
                tracing::error!(kind = T::KIND, file = %aside.display(), error = %err, "saved object unreadable: kept aside");
            }
        }
    }
}

impl Objects {
    fn with(tables: Tables, dir: Option<PathBuf>, version: u64) -> Self {
        let (tx, _) = watch::channel(version);
        Objects(Arc::new(Store {
            tables: RwLock::new(tables),
            dir,
            version: tx,
        }))
    }

    /// The objects given with the pods of a `nodelet run`.
    pub fn new(config_maps: Vec<ConfigMap>, secrets: Vec<Secret>) -> Self {
        let tables = Tables {
            config_maps: config_maps
                .into_iter()
                .map(|c| (key_of(&c.metadata), c))
                .collect(),
            secrets: secrets
                .into_iter()
                .map(|s| (key_of(&s.metadata), s))
                .collect(),
        };
        Objects::with(tables, None, 0)
    }

    /// The daemon's store, saved under `dir` (made 0700: Secrets).
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        for sub in [ConfigMap::RESOURCE, Secret::RESOURCE] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        let mut tables = Tables::default();
        let mut version = 0;
        load(dir, &mut tables.config_maps, &mut version);
        load(dir, &mut tables.secrets, &mut version);
        Ok(Objects::with(tables, Some(dir.to_path_buf()), version))
    }

    /// Changes to watch: the value moves on every write.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.version.subscribe()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Tables> {
        self.0
            .tables
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Tables> {
        self.0
            .tables
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn get<T: Stored>(&self, ns: &str, name: &str) -> Option<T> {
        T::table(&self.read())
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    /// Every object of a kind, by namespace and name.
    pub fn list<T: Stored>(&self) -> Vec<T> {
        T::table(&self.read()).values().cloned().collect()
    }

    /// Saves `obj` (or removes its file with `None`) under `key`.
    fn save<T: Stored>(&self, key: &Key, obj: Option<&T>) -> Result<(), ObjectError> {
        let Some(dir) = &self.0.dir else {
            return Ok(());
        };
        let path = file_of(dir, T::RESOURCE, key);
        let saved = match obj {
            Some(o) => {
                let bytes = serde_json::to_vec(o).unwrap_or_default();
                crate::runtime::record::write_atomic(&path, &bytes)
            }
            None => match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(crate::runtime::record::RecordError {
                        action: "remove",
                        path: path.clone(),
                        source: e,
                    })
                }
                _ => Ok(()),
            },
        };
        saved.map_err(|source| ObjectError::Save {
            kind: T::KIND,
            name: key.1.clone(),
            source,
        })
    }

    /// The next `resourceVersion`, once the write is saved.
    fn next_version(&self) -> u64 {
        *self.0.version.borrow() + 1
    }

    fn published(&self, version: u64) {
        self.0.version.send_replace(version);
    }

    /// `POST`: a new object, normalized and validated as the API server
    /// does; `Err` if one of that name exists.
    pub fn create<T: Stored>(&self, mut obj: T) -> Result<T, ObjectError> {
        obj.normalize();
        let key = key_of(obj.meta());
        let errors = obj.validate();
        if !errors.is_empty() {
            return Err(ObjectError::Invalid {
                kind: T::KIND,
                name: key.1,
                errors,
            });
        }
        let mut tables = self.write();
        if T::table(&tables).contains_key(&key) {
            return Err(ObjectError::AlreadyExists {
                resource: T::RESOURCE,
                name: key.1,
            });
        }
        let version = self.next_version();
        let meta = obj.meta_mut();
        meta.uid = Some(super::engine::new_uid());
        meta.creation_timestamp = Some(super::status::time(std::time::SystemTime::now()));
        meta.resource_version = Some(version.to_string());
        self.save(&key, Some(&obj))?;
        T::table_mut(&mut tables).insert(key, obj.clone());
        drop(tables);
        self.published(version);
        Ok(obj)
    }

    /// `PUT`: replaces an object (keeping its identity), validated as an
    /// update; the unchanged object comes back as it was.
    pub fn replace<T: Stored>(&self, mut obj: T) -> Result<T, ObjectError> {
        obj.normalize();
        let key = key_of(obj.meta());
        let mut tables = self.write();
        let Some(old) = T::table(&tables).get(&key).cloned() else {
            return Err(ObjectError::NotFound {
                resource: T::RESOURCE,
                name: key.1,
            });
        };
        {
            let (m, o) = (obj.meta_mut(), old.meta());
            m.uid.clone_from(&o.uid);
            m.creation_timestamp.clone_from(&o.creation_timestamp);
            m.resource_version.clone_from(&o.resource_version);
        }
        if obj == old {
            return Ok(old);
        }
        let errors = obj.validate_update(&old);
        if !errors.is_empty() {
            return Err(ObjectError::Invalid {
                kind: T::KIND,
                name: key.1,
                errors,
            });
        }
        let version = self.next_version();
        obj.meta_mut().resource_version = Some(version.to_string());
        self.save(&key, Some(&obj))?;
        T::table_mut(&mut tables).insert(key, obj.clone());
        drop(tables);
        self.published(version);
        Ok(obj)
    }

    /// `DELETE`: the object as it was.
    pub fn delete<T: Stored>(&self, ns: &str, name: &str) -> Result<T, ObjectError> {
        let key = (ns.to_string(), name.to_string());
        let mut tables = self.write();
        let Some(gone) = T::table(&tables).get(&key).cloned() else {
            return Err(ObjectError::NotFound {
                resource: T::RESOURCE,
                name: key.1,
            });
        };
        self.save::<T>(&key, None)?;
        T::table_mut(&mut tables).remove(&key);
        drop(tables);
        self.published(self.next_version());
        Ok(gone)
    }

    /// A ConfigMap's data: `data` as bytes plus `binaryData`.
    pub fn config_map(&self, ns: &str, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let c: ConfigMap = self.get(ns, name)?;
        let mut out: BTreeMap<String, Vec<u8>> = c
            .data
            .into_iter()
            .flatten()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect();
        for (k, v) in c.binary_data.into_iter().flatten() {
            out.insert(k, v.0);
        }
        Some(out)
    }

    /// A Secret's data: `data` plus `stringData` (which wins, as the API
    /// server merges it on write).
    pub fn secret(&self, ns: &str, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let s: Secret = self.get(ns, name)?;
        let mut out: BTreeMap<String, Vec<u8>> = s
            .data
            .into_iter()
            .flatten()
            .map(|(k, v)| (k, v.0))
            .collect();
        for (k, v) in s.string_data.into_iter().flatten() {
            out.insert(k, v.into_bytes());
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn cm(name: &str, value: &str) -> ConfigMap {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name}, "data": {"k": value}
        }))
        .unwrap()
    }

    #[test]
    fn writes_are_checked_saved_reloaded_and_announced() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("objects");
        let store = Objects::open(&dir).unwrap();
        let mut changes = store.subscribe();
        let made = store.create(cm("c", "1")).unwrap();
        assert_eq!(made.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(made.metadata.resource_version.as_deref(), Some("1"));
        assert!(changes.has_changed().unwrap());
        changes.borrow_and_update();
        assert!(matches!(
            store.create(cm("c", "2")),
            Err(ObjectError::AlreadyExists { .. })
        ));
        // The same content again changes nothing, not even the version.
        let same = store.replace(cm("c", "1")).unwrap();
        assert_eq!(same, made);
        assert!(!changes.has_changed().unwrap());
        let new = store.replace(cm("c", "2")).unwrap();
        assert_eq!(new.metadata.uid, made.metadata.uid);
        assert_eq!(new.metadata.resource_version.as_deref(), Some("2"));
        assert!(changes.has_changed().unwrap());
        assert_eq!(store.config_map("default", "c").unwrap()["k"], b"2");
        let bad = store.create(cm("Bad", "1")).unwrap_err().to_string();
        assert!(
            bad.starts_with("ConfigMap \"Bad\" is invalid: metadata.name: Invalid value"),
            "{bad}"
        );
        let secret: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "s", "namespace": "prod"}, "stringData": {"password": "hunter2"}
        }))
        .unwrap();
        store.create(secret).unwrap();
        // Secrets are kept by root alone.
        let file = dir.join("secrets/prod_s.json");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        // A restart finds them all, and versions go on from the highest.
        std::fs::write(dir.join("configmaps/default_torn.json"), b"{\"meta").unwrap();
        let again = Objects::open(&dir).unwrap();
        assert_eq!(again.config_map("default", "c").unwrap()["k"], b"2");
        assert_eq!(again.secret("prod", "s").unwrap()["password"], b"hunter2");
        assert!(dir.join("configmaps/default_torn.json.unreadable").exists());
        let deleted: ConfigMap = again.delete("default", "c").unwrap();
        assert_eq!(deleted.metadata.name.as_deref(), Some("c"));
        assert!(again.config_map("default", "c").is_none());
        assert!(!dir.join("configmaps/default_c.json").exists());
        assert_eq!(*again.subscribe().borrow(), 4);
        assert!(matches!(
            again.delete::<ConfigMap>("default", "c"),
            Err(ObjectError::NotFound { .. })
        ));
    }
}
