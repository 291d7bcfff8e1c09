//! The OCI distribution API client: manifests and blobs over HTTP(S), with
//! the 401 challenge → token dance done by `oci-client`, and our own
//! requests so that manifest bodies are capped while streaming and blobs
//! stream into the content store and the unpacker.

use std::net::IpAddr;
use std::time::Duration;

use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::StatusCode;

use super::digest::Digest;
use super::reference::Reference;

pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MEDIA_DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const MEDIA_DOCKER_SCHEMA1_SIGNED: &str =
    "application/vnd.docker.distribution.manifest.v1+prettyjws";
/// All four: the Distribution registry answers MANIFEST_UNKNOWN for an OCI
/// image when the OCI types are missing from Accept.
pub const MANIFEST_ACCEPT: &[&str] = &[
    MEDIA_OCI_MANIFEST,
    MEDIA_OCI_INDEX,
    MEDIA_DOCKER_MANIFEST,
    MEDIA_DOCKER_LIST,
];
/// containerd caps manifests at 4 MiB.
pub const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;
const ATTEMPTS: u32 = 3;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl Credentials {
    /// `user:pass` as `--creds` takes it.
    pub fn parse(s: &str) -> Option<Credentials> {
        let (u, p) = s.split_once(':')?;
        (!u.is_empty()).then(|| Credentials {
            username: u.to_string(),
            password: p.to_string(),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("failed to resolve reference \"{reference}\": {reference}: not found")]
    NotFound { reference: String },
    #[error("pull access to \"{reference}\" denied: unauthorized: {detail}")]
    Unauthorized { reference: String, detail: String },
    #[error("pull access to \"{reference}\" denied: forbidden")]
    Forbidden { reference: String },
    #[error("registry {registry} unreachable after {ATTEMPTS} attempts")]
    Unreachable {
        registry: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("registry answered {status} for {url}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("manifest {reference} is larger than the {MAX_MANIFEST_BYTES}-byte (4 MiB) limit")]
    ManifestTooLarge { reference: String },
    #[error("manifest {reference} uses Docker schema 1 ({media_type}), which was removed from Docker and containerd; rebuild or re-push the image")]
    Schema1 {
        reference: String,
        media_type: String,
    },
    #[error("manifest {reference} has unsupported media type {media_type:?} (supported: OCI and Docker schema 2 manifests and indexes)")]
    UnsupportedMediaType {
        reference: String,
        media_type: String,
    },
    #[error("authenticate to {registry}")]
    Auth {
        registry: String,
        #[source]
        source: oci_client::errors::OciDistributionError,
    },
    #[error("read response from {url}")]
    Body {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("build HTTP client")]
    Client {
        #[source]
        source: reqwest::Error,
    },
}

/// A manifest as fetched: exact bytes, the media type the registry gave,
/// and the digest of the bytes.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: Digest,
}

pub struct Registry {
    http: reqwest::Client,
    base: String,
    reference: String,
    registry: String,
    authorization: Option<HeaderValue>,
}

/// 127.0.0.0/8, ::1 and `localhost` are spoken to over plain HTTP, like
/// Docker's default insecure set; so are hosts listed in the config.
pub fn plain_http_allowed(registry: &str, insecure: &[String]) -> bool {
    if insecure.iter().any(|h| h == registry) {
        return true;
    }
    let host = match registry.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|c| c.is_ascii_digit()) => h,
        _ => registry,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host == "localhost" || insecure.iter().any(|h| h == host) {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Docker Hub's API lives on a different host than its name.
fn api_host(registry: &str) -> &str {
    if registry == "docker.io" {
        "registry-1.docker.io"
    } else {
        registry
    }
}

impl Registry {
    /// Resolves the endpoint and authenticates for pulling `reference`.
    pub async fn connect(
        reference: &Reference,
        creds: Option<&Credentials>,
        insecure: &[String],
    ) -> Result<Registry, RegistryError> {
        let plain = plain_http_allowed(&reference.registry, insecure);
        let scheme = if plain { "http" } else { "https" };
        let host = api_host(&reference.registry).to_string();
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("nodelet/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| RegistryError::Client { source })?;
        let oci = oci_client::Client::new(oci_client::client::ClientConfig {
            protocol: if plain {
                oci_client::client::ClientProtocol::Http
            } else {
                oci_client::client::ClientProtocol::Https
            },
            ..Default::default()
        });
        let oci_ref = oci_client::Reference::with_tag(
            reference.registry.clone(),
            reference.repository.clone(),
            "latest".into(),
        );
        let auth = match creds {
            Some(c) => {
                oci_client::secrets::RegistryAuth::Basic(c.username.clone(), c.password.clone())
            }
            None => oci_client::secrets::RegistryAuth::Anonymous,
        };
        let token = retry(&reference.registry, || {
            oci.auth(&oci_ref, &auth, oci_client::RegistryOperation::Pull)
        })
        .await?;
        let authorization = match (token, creds) {
            (Some(t), _) => HeaderValue::from_str(&format!("Bearer {t}")).ok(),
            (None, Some(c)) => {
                use base64_lite::encode;
                HeaderValue::from_str(&format!(
                    "Basic {}",
                    encode(format!("{}:{}", c.username, c.password).as_bytes())
                ))
                .ok()
            }
            (None, None) => None,
        };
        Ok(Registry {
            http,
            base: format!("{scheme}://{host}/v2/{}", reference.repository),
            reference: reference.to_string(),
            registry: reference.registry.clone(),
            authorization,
        })
    }

    async fn get(
        &self,
        url: &str,
        accept: Option<&str>,
    ) -> Result<reqwest::Response, RegistryError> {
        let mut last = None;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            let mut req = self.http.get(url);
            if let Some(a) = accept {
                req = req.header(ACCEPT, a);
            }
            if let Some(h) = &self.authorization {
                req = req.header(AUTHORIZATION, h.clone());
            }
            match req.send().await {
                Ok(resp) if resp.status().is_server_error() && attempt + 1 < ATTEMPTS => {
                    tracing::debug!(
                        url,
                        status = resp.status().as_u16(),
                        "server error, retrying"
                    );
                }
                Ok(resp) => return Ok(resp),
                Err(e) if e.is_connect() || e.is_timeout() => last = Some(e),
                Err(e) => {
                    return Err(RegistryError::Body {
                        url: url.to_string(),
                        source: e,
                    })
                }
            }
        }
        match last {
            Some(source) => Err(RegistryError::Unreachable {
                registry: self.registry.clone(),
                source,
            }),
            None => Err(RegistryError::Status {
                url: url.to_string(),
                status: 500,
                body: "server error on every attempt".into(),
            }),
        }
    }

    /// The response if it succeeded, else the error it means (with the
    /// start of the body for unexpected statuses).
    async fn checked(
        &self,
        resp: reqwest::Response,
        url: &str,
    ) -> Result<reqwest::Response, RegistryError> {
        let reference = self.reference.clone();
        match resp.status() {
            s if s.is_success() => Ok(resp),
            StatusCode::NOT_FOUND => Err(RegistryError::NotFound { reference }),
            StatusCode::UNAUTHORIZED => Err(RegistryError::Unauthorized {
                reference,
                detail: "authentication required or credentials rejected".into(),
            }),
            StatusCode::FORBIDDEN => Err(RegistryError::Forbidden { reference }),
            s => {
                let body = resp.text().await.unwrap_or_default();
                let body: String = body.chars().take(200).collect();
                Err(RegistryError::Status {
                    url: url.to_string(),
                    status: s.as_u16(),
                    body: body.trim().to_string(),
                })
            }
        }
    }

    /// Fetches a manifest by tag or digest, capped at 4 MiB while reading.
    pub async fn manifest(&self, tag_or_digest: &str) -> Result<FetchedManifest, RegistryError> {
        let url = format!("{}/manifests/{tag_or_digest}", self.base);
        let resp = self.get(&url, Some(&MANIFEST_ACCEPT.join(", "))).await?;
        let mut resp = self.checked(resp, &url).await?;
        if resp
            .content_length()
            .is_some_and(|l| l > MAX_MANIFEST_BYTES)
        {
            return Err(RegistryError::ManifestTooLarge {
                reference: self.reference.clone(),
            });
        }
        let media_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or_default().trim().to_string())
            .unwrap_or_default();
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|source| RegistryError::Body {
            url: url.clone(),
            source,
        })? {
            if (bytes.len() + chunk.len()) as u64 > MAX_MANIFEST_BYTES {
                return Err(RegistryError::ManifestTooLarge {
                    reference: self.reference.clone(),
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        let media_type = effective_media_type(&media_type, &bytes);
        if media_type == MEDIA_DOCKER_SCHEMA1 || media_type == MEDIA_DOCKER_SCHEMA1_SIGNED {
            return Err(RegistryError::Schema1 {
                reference: self.reference.clone(),
                media_type,
            });
        }
        if !MANIFEST_ACCEPT.contains(&media_type.as_str()) {
            return Err(RegistryError::UnsupportedMediaType {
                reference: self.reference.clone(),
                media_type,
            });
        }
        let digest = Digest::of(&bytes);
        Ok(FetchedManifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// Starts a blob download; the caller streams and verifies the body.
    pub async fn blob(&self, digest: &Digest) -> Result<reqwest::Response, RegistryError> {
        let url = format!("{}/blobs/{digest}", self.base);
        let resp = self.get(&url, None).await?;
        match self.checked(resp, &url).await {
            Err(RegistryError::NotFound { .. }) => Err(RegistryError::Status {
                url,
                status: 404,
                body: format!("blob {digest} unknown to registry"),
            }),
            other => other,
        }
    }
}

/// Registries may send a generic Content-Type; the manifest's own
/// `mediaType` (or `schemaVersion: 1`) then tells.
fn effective_media_type(header: &str, body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        schema_version: Option<u32>,
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    let probe: Option<Probe> = serde_json::from_slice(body).ok();
    if let Some(p) = &probe {
        if p.schema_version == Some(1) {
            return MEDIA_DOCKER_SCHEMA1_SIGNED.to_string();
        }
    }
    if MANIFEST_ACCEPT.contains(&header)
        || header == MEDIA_DOCKER_SCHEMA1
        || header == MEDIA_DOCKER_SCHEMA1_SIGNED
    {
        return header.to_string();
    }
    match probe {
        Some(Probe {
            media_type: Some(m),
            ..
        }) => m,
        Some(Probe {
            manifests: Some(_), ..
        }) => MEDIA_OCI_INDEX.to_string(),
        Some(_) => MEDIA_OCI_MANIFEST.to_string(),
        None => header.to_string(),
    }
}

async fn retry<T, F, Fut>(registry: &str, mut f: F) -> Result<T, RegistryError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, oci_client::errors::OciDistributionError>>,
{
    let mut attempt = 0;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(oci_client::errors::OciDistributionError::RequestError(e))
                if (e.is_connect() || e.is_timeout()) && attempt + 1 < ATTEMPTS =>
            {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            Err(oci_client::errors::OciDistributionError::RequestError(e))
                if e.is_connect() || e.is_timeout() =>
            {
                return Err(RegistryError::Unreachable {
                    registry: registry.to_string(),
                    source: e,
                });
            }
            Err(source) => {
                return Err(RegistryError::Auth {
                    registry: registry.to_string(),
                    source,
                })
            }
        }
    }
}

/// Base64 for a Basic header (RFC 4648, with padding).
mod base64_lite {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(data: &[u8]) -> String {
        let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
        for chunk in data.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(char::from(TABLE[((n >> (18 - 6 * i)) & 63) as usize]));
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[cfg(test)]
    #[test]
    fn encodes_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("user:pass", "dXNlcjpwYXNz"),
        ] {
            assert_eq!(encode(i.as_bytes()), o);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_listed_hosts_may_use_plain_http() {
        assert!(plain_http_allowed("127.0.0.1:5000", &[]));
        assert!(plain_http_allowed("127.8.9.10", &[]));
        assert!(plain_http_allowed("localhost:5000", &[]));
        assert!(plain_http_allowed("[::1]:5000", &[]));
        assert!(!plain_http_allowed("10.0.0.1:5000", &[]));
        assert!(!plain_http_allowed("docker.io", &[]));
        assert!(plain_http_allowed(
            "registry.lab:5000",
            &["registry.lab:5000".into()]
        ));
        assert!(plain_http_allowed(
            "registry.lab:5000",
            &["registry.lab".into()]
        ));
    }

    #[test]
    fn schema1_is_recognised_from_the_body() {
        assert_eq!(
            effective_media_type("application/json", br#"{"schemaVersion":1,"name":"x"}"#),
            MEDIA_DOCKER_SCHEMA1_SIGNED
        );
        assert_eq!(
            effective_media_type("application/json", br#"{"schemaVersion":2,"manifests":[]}"#),
            MEDIA_OCI_INDEX
        );
        assert_eq!(
            effective_media_type(MEDIA_DOCKER_MANIFEST, b"{}"),
            MEDIA_DOCKER_MANIFEST
        );
    }

    #[test]
    fn creds_split_at_the_first_colon() {
        assert_eq!(
            Credentials::parse("u:p:q"),
            Some(Credentials {
                username: "u".into(),
                password: "p:q".into()
            })
        );
        assert_eq!(Credentials::parse("nocolon"), None);
        assert_eq!(Credentials::parse(":p"), None);
    }
}
