//! The JSON shapes of manifests and indexes (OCI and Docker schema 2 share
//! them), parsed leniently where the specs allow and strictly where safety
//! needs it (digests, sizes).

use serde::{Deserialize, Serialize};

use super::digest::Digest;
use super::platform::Platform;
use super::registry::{MEDIA_DOCKER_LIST, MEDIA_OCI_INDEX};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<PlatformJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformJson {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl PlatformJson {
    pub fn display(&self) -> String {
        Platform {
            os: self.os.clone(),
            architecture: self.architecture.clone(),
            variant: self.variant.clone(),
        }
        .to_string()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

pub fn is_index(media_type: &str) -> bool {
    media_type == MEDIA_OCI_INDEX || media_type == MEDIA_DOCKER_LIST
}

/// The entry of `index` for `want`, or the platforms it does offer.
pub fn select_platform<'a>(
    index: &'a Index,
    want: &Platform,
) -> Result<&'a Descriptor, Vec<String>> {
    let candidates: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|d| !is_index(&d.media_type) || d.platform.is_some())
        .collect();
    let exact = candidates.iter().find(|d| {
        d.platform.as_ref().is_some_and(|p| {
            p.os == want.os
                && p.architecture == want.architecture
                && p.variant.as_deref() == want.variant.as_deref()
        })
    });
    let loose = candidates.iter().find(|d| {
        d.platform
            .as_ref()
            .is_some_and(|p| want.matches(&p.os, &p.architecture, p.variant.as_deref()))
    });
    exact.or(loose).copied().ok_or_else(|| {
        index
            .manifests
            .iter()
            .filter_map(|d| d.platform.as_ref().map(PlatformJson::display))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(os: &str, arch: &str, variant: Option<&str>, n: u8) -> Descriptor {
        Descriptor {
            media_type: super::super::registry::MEDIA_OCI_MANIFEST.into(),
            digest: Digest::of(&[n]),
            size: 1,
            platform: Some(PlatformJson {
                os: os.into(),
                architecture: arch.into(),
                variant: variant.map(str::to_string),
            }),
            urls: None,
            annotations: None,
        }
    }

    #[test]
    fn the_host_platform_is_chosen_from_an_index() {
        let idx = Index {
            schema_version: 2,
            media_type: None,
            manifests: vec![
                entry("linux", "arm", Some("v6"), 1),
                entry("linux", "arm", Some("v7"), 2),
                entry("linux", "amd64", None, 3),
            ],
        };
        let want = Platform::parse("linux/arm/v7").unwrap();
        assert_eq!(
            select_platform(&idx, &want).unwrap().digest,
            Digest::of(&[2])
        );
        let want = Platform::parse("linux/amd64").unwrap();
        assert_eq!(
            select_platform(&idx, &want).unwrap().digest,
            Digest::of(&[3])
        );
        let missing = select_platform(&idx, &Platform::parse("linux/s390x").unwrap()).unwrap_err();
        assert_eq!(missing, ["linux/arm/v6", "linux/arm/v7", "linux/amd64"]);
    }
}
