//! Image references, parsed and normalized like Docker's distribution
//! reference library: `busybox` → `docker.io/library/busybox:latest`.

use std::fmt;

pub const DEFAULT_REGISTRY: &str = "docker.io";
pub const DEFAULT_TAG: &str = "latest";
const NAME_TOTAL_MAX: usize = 255;
const TAG_MAX: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid reference format: {reference:?} is empty")]
    Empty { reference: String },
    #[error("invalid reference format: repository name in {reference:?} must be lowercase")]
    Uppercase { reference: String },
    #[error("invalid reference format: {reference:?}: {what}")]
    Syntax {
        reference: String,
        what: &'static str,
    },
    #[error("invalid reference format: repository name in {reference:?} must not be more than {NAME_TOTAL_MAX} characters")]
    NameTooLong { reference: String },
}

/// A fully qualified image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// `docker.io`, `127.0.0.1:5000`, `ghcr.io`…
    pub registry: String,
    /// `library/busybox`
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:<hex>`
    pub digest: Option<String>,
}

impl Reference {
    /// Parses and normalizes; a reference with neither tag nor digest gets `:latest`.
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        let mut r = Self::parse_raw(s)?;
        if r.tag.is_none() && r.digest.is_none() {
            r.tag = Some(DEFAULT_TAG.to_string());
        }
        Ok(r)
    }

    /// Parses without adding the default tag.
    pub fn parse_raw(s: &str) -> Result<Reference, ReferenceError> {
        let syntax = |what| ReferenceError::Syntax {
            reference: s.to_string(),
            what,
        };
        if s.is_empty() {
            return Err(ReferenceError::Empty {
                reference: s.to_string(),
            });
        }
        let (rest, digest) = match s.split_once('@') {
            Some((n, d)) => {
                check_digest(d).map_err(syntax)?;
                (n, Some(d.to_string()))
            }
            None => (s, None),
        };
        // A tag follows the last ':' that comes after the last '/'.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&rest[..at], Some(rest[at + 1..].to_string()))
            }
            None => (rest, None),
        };
        if let Some(t) = &tag {
            check_tag(t).map_err(syntax)?;
        }
        if name.is_empty() {
            return Err(syntax("repository name is empty"));
        }
        if name.len() > NAME_TOTAL_MAX {
            return Err(ReferenceError::NameTooLong {
                reference: s.to_string(),
            });
        }
        let (registry, path) = split_domain(name);
        if let Some(reg) = &registry {
            check_domain(reg).map_err(syntax)?;
        }
        if path.bytes().any(|c| c.is_ascii_uppercase()) {
            return Err(ReferenceError::Uppercase {
                reference: s.to_string(),
            });
        }
        for component in path.split('/') {
            check_path_component(component).map_err(syntax)?;
        }
        let registry = match registry {
            Some("index.docker.io") | None => DEFAULT_REGISTRY.to_string(),
            Some(r) => r.to_string(),
        };
        let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// The tag the API server's defaulting sees (`parsers.ParseImageName`):
/// the explicit tag, `latest` when there is neither tag nor digest, and
/// `None` for a digest-only or unparsable reference.
pub fn defaulting_tag(image: &str) -> Option<String> {
    let r = Reference::parse_raw(image).ok()?;
    match (r.tag, r.digest) {
        (Some(t), _) => Some(t),
        (None, None) => Some(DEFAULT_TAG.to_string()),
        (None, Some(_)) => None,
    }
}

/// Docker's `splitDockerDomain`: the first component is a registry if it
/// contains '.' or ':', is `localhost`, or has upper-case letters.
fn split_domain(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|c| c.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

fn check_domain(d: &str) -> Result<(), &'static str> {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || d.starts_with('[') => (h, Some(p)),
        _ => (d, None),
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|c| c.is_ascii_digit()) {
            return Err("registry port must be numeric");
        }
    }
    let host_ok = if host.starts_with('[') && host.ends_with(']') {
        host[1..host.len() - 1]
            .parse::<std::net::Ipv6Addr>()
            .is_ok()
    } else {
        !host.is_empty()
            && host.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            })
    };
    if host_ok {
        Ok(())
    } else {
        Err("registry host is not a valid domain name or address")
    }
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
fn check_path_component(c: &str) -> Result<(), &'static str> {
    const MSG: &str = "repository path components must be lowercase alphanumerics separated by '.', '_', '__' or '-'";
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return Err(MSG);
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: '.', '_', '__', or one or more '-'.
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return Err(MSG);
        }
    }
    Ok(())
}

/// `[\w][\w.-]{0,127}`
fn check_tag(t: &str) -> Result<(), &'static str> {
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    let b = t.as_bytes();
    if b.is_empty()
        || b.len() > TAG_MAX
        || !word(b[0])
        || !b.iter().all(|&x| word(x) || x == b'.' || x == b'-')
    {
        return Err("tag must be 1 to 128 of [A-Za-z0-9_.-], not starting with '.' or '-'");
    }
    Ok(())
}

fn check_digest(d: &str) -> Result<(), &'static str> {
    match d.split_once(':') {
        Some(("sha256", hex))
            if hex.len() == 64 && hex.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) =>
        {
            Ok(())
        }
        Some(("sha512", hex))
            if hex.len() == 128 && hex.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) =>
        {
            Ok(())
        }
        _ => Err("digest must be sha256:<64 lowercase hex> or sha512:<128 lowercase hex>"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn short_names_normalize_to_docker_hub_library() {
        assert_eq!(
            Reference::parse("busybox").unwrap().to_string(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            Reference::parse("user/app").unwrap().to_string(),
            "docker.io/user/app:latest"
        );
        assert_eq!(
            Reference::parse("index.docker.io/busybox:1.36")
                .unwrap()
                .to_string(),
            "docker.io/library/busybox:1.36"
        );
    }

    #[test]
    fn first_component_with_dot_colon_or_localhost_is_a_registry() {
        let r = Reference::parse("127.0.0.1:5000/busybox:1").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("127.0.0.1:5000", "busybox", Some("1"))
        );
        assert_eq!(
            Reference::parse("localhost/app").unwrap().registry,
            "localhost"
        );
        assert_eq!(
            Reference::parse("ghcr.io/a/b/c").unwrap().repository,
            "a/b/c"
        );
    }

    #[test]
    fn digest_only_references_get_no_tag() {
        let r = Reference::parse(&format!("busybox@{D}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(D));
        let r = Reference::parse(&format!("busybox:1.36@{D}")).unwrap();
        assert_eq!(r.tag.as_deref(), Some("1.36"));
    }

    #[test]
    fn bad_references_are_rejected() {
        assert!(matches!(
            Reference::parse("BusyBox"),
            Err(ReferenceError::Uppercase { .. })
        ));
        for bad in [
            "",
            "busybox:",
            "busybox@sha256:abc",
            "a//b",
            "-a",
            "a:b:c",
            "busybox:-x",
            "host:port/x",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaulting_tag_is_latest_without_tag_or_digest() {
        assert_eq!(defaulting_tag("busybox").as_deref(), Some("latest"));
        assert_eq!(defaulting_tag("busybox:latest").as_deref(), Some("latest"));
        assert_eq!(defaulting_tag("busybox:1.36").as_deref(), Some("1.36"));
        assert_eq!(defaulting_tag(&format!("busybox@{D}")), None);
    }
}
