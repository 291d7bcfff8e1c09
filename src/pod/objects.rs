//! ConfigMaps and Secrets that pods may reference: on a node without an API
//! server, the ones given alongside the pods (same manifest set).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};

#[derive(Debug, Clone, Default)]
pub struct Objects {
    config_maps: BTreeMap<(String, String), ConfigMap>,
    secrets: BTreeMap<(String, String), Secret>,
}

fn key(ns: Option<&String>, name: Option<&String>) -> (String, String) {
    (
        ns.cloned().unwrap_or_else(|| "default".into()),
        name.cloned().unwrap_or_default(),
    )
}

impl Objects {
    pub fn new(config_maps: Vec<ConfigMap>, secrets: Vec<Secret>) -> Self {
        Objects {
            config_maps: config_maps
                .into_iter()
                .map(|c| {
                    (
                        key(c.metadata.namespace.as_ref(), c.metadata.name.as_ref()),
                        c,
                    )
                })
                .collect(),
            secrets: secrets
                .into_iter()
                .map(|s| {
                    (
                        key(s.metadata.namespace.as_ref(), s.metadata.name.as_ref()),
                        s,
                    )
                })
                .collect(),
        }
    }

    /// A ConfigMap's data: `data` as bytes plus `binaryData`.
    pub fn config_map(&self, ns: &str, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let c = self.config_maps.get(&(ns.to_string(), name.to_string()))?;
        let mut out: BTreeMap<String, Vec<u8>> = c
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
            .collect();
        for (k, v) in c.binary_data.iter().flatten() {
            out.insert(k.clone(), v.0.clone());
        }
        Some(out)
    }

    /// A Secret's data: `data` plus `stringData` (which wins, as the API
    /// server merges it on write).
    pub fn secret(&self, ns: &str, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let s = self.secrets.get(&(ns.to_string(), name.to_string()))?;
        let mut out: BTreeMap<String, Vec<u8>> = s
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect();
        for (k, v) in s.string_data.iter().flatten() {
            out.insert(k.clone(), v.clone().into_bytes());
        }
        Some(out)
    }
}
