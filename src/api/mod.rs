//! The local API: HTTP/JSON over a unix socket, shaped like the Kubernetes
//! API where one exists (`/api/v1/...`, `v1` objects, `Status` errors), so
//! the CLI stays thin and other tools can talk to it.

pub mod body;
pub mod client;
pub mod images;
pub mod objects;
pub mod server;

use serde_json::json;

/// A Kubernetes `Status` object for an error reply.
pub fn status_body(code: u16, reason: &str, message: &str) -> serde_json::Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

/// The body of `POST .../pods/{name}/exec`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecRequest {
    #[serde(default)]
    pub container: Option<String>,
    pub command: Vec<String>,
    /// Kill the command after this long (default 60 s).
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
}
