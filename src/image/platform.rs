//! Platforms (`os/arch[/variant]`) and choosing one from an index.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid platform {0:?}: expected os/arch[/variant], e.g. linux/amd64 or linux/arm/v7")]
pub struct PlatformError(pub String);

impl Platform {
    /// The platform of this host, in OCI spelling (`GOARCH` names).
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            other => (other, None),
        };
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: variant.map(str::to_string),
        }
    }

    pub fn parse(s: &str) -> Result<Platform, PlatformError> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, variant] if !os.is_empty() && !arch.is_empty() && !variant.is_empty() => {
                Ok(Platform {
                    os: os.to_string(),
                    architecture: arch.to_string(),
                    variant: Some(variant.to_string()),
                })
            }
            _ => Err(PlatformError(s.to_string())),
        }
    }

    /// Whether an index entry for `(os, arch, variant)` runs here. A missing
    /// variant matches; arm64 entries without a variant match `v8`.
    pub fn matches(&self, os: &str, arch: &str, variant: Option<&str>) -> bool {
        if os != self.os || arch != self.architecture {
            return false;
        }
        match (&self.variant, variant) {
            (_, None) => true,
            (None, Some(_)) => true,
            (Some(want), Some(got)) => want == got,
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_with_optional_variant() {
        assert_eq!(
            Platform::parse("linux/arm/v7").unwrap().variant.as_deref(),
            Some("v7")
        );
        assert_eq!(
            Platform::parse("linux/amd64").unwrap().to_string(),
            "linux/amd64"
        );
        for bad in ["linux", "linux/", "/amd64", "a/b/c/d"] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn variants_must_agree_when_both_are_given() {
        let p = Platform::parse("linux/arm/v7").unwrap();
        assert!(p.matches("linux", "arm", Some("v7")));
        assert!(!p.matches("linux", "arm", Some("v6")));
        assert!(p.matches("linux", "arm", None));
        assert!(!p.matches("windows", "arm", None));
    }
}
