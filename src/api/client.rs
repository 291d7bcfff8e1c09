//! A small HTTP/1 client for the API socket.

use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to nodelet at {}: {}", path.display(), connect_hint(source))]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("API request {what}: {message}")]
    Http { what: String, message: String },
    /// The API answered with an error `Status`.
    #[error("{message}")]
    Status {
        code: u16,
        reason: String,
        message: String,
    },
}

/// Why a connect failed, in the user's terms.
fn connect_hint(e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        "Permission denied: the API socket is root's only".into()
    } else {
        "is `nodelet daemon` (or `nodelet run`) running?".into()
    }
}

pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: &Path) -> Self {
        Client {
            socket: socket.to_path_buf(),
        }
    }

    /// Connects, sends one request, and returns the reply with its body
    /// still to read.
    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let http = |message: String| ClientError::Http {
            what: format!("{method} {path}"),
            message,
        };
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| ClientError::Connect {
                path: self.socket.clone(),
                source,
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| http(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let data = body.map(|b| b.to_string()).unwrap_or_default();
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "nodelet")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(data)))
            .map_err(|e| http(e.to_string()))?;
        sender
            .send_request(req)
            .await
            .map_err(|e| http(e.to_string()))
    }

    /// The body of a reply, or its `Status` error when it is not a 2xx.
    async fn body(
        what: &str,
        resp: hyper::Response<hyper::body::Incoming>,
    ) -> Result<Bytes, ClientError> {
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Http {
                what: what.to_string(),
                message: e.to_string(),
            })?
            .to_bytes();
        if status.is_success() {
            return Ok(bytes);
        }
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        Err(ClientError::Status {
            code: status.as_u16(),
            reason: v["reason"].as_str().unwrap_or_default().to_string(),
            message: v["message"].as_str().map_or_else(
                || String::from_utf8_lossy(&bytes).into_owned(),
                str::to_string,
            ),
        })
    }

    /// Sends a request; returns the body of a 2xx reply, a `Status` error otherwise.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<Bytes, ClientError> {
        let resp = self.send(method, path, body).await?;
        Self::body(&format!("{method} {path}"), resp).await
    }

    /// GETs `path` and hands each chunk of the body to `sink` as it
    /// arrives (follow and watch requests).
    pub async fn stream(&self, path: &str, mut sink: impl FnMut(&[u8])) -> Result<(), ClientError> {
        let what = format!("GET {path}");
        let resp = self.send("GET", path, None).await?;
        if !resp.status().is_success() {
            return Self::body(&what, resp).await.map(|_| ());
        }
        let mut body = resp.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ClientError::Http {
                what: what.clone(),
                message: e.to_string(),
            })?;
            if let Some(data) = frame.data_ref() {
                sink(data);
            }
        }
        Ok(())
    }

    pub async fn get_json(&self, path: &str) -> Result<serde_json::Value, ClientError> {
        let b = self.call("GET", path, None).await?;
        serde_json::from_slice(&b).map_err(|e| ClientError::Http {
            what: format!("GET {path}"),
            message: e.to_string(),
        })
    }
}
