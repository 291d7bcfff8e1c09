//! The API server: routes over the engine, served on a unix socket that
//! only root may use (mode 0600; a symlink or a live socket at the path is
//! refused).

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::{status_body, ExecRequest};
use crate::pod::engine::{Engine, EngineError};
use crate::pod::images::ImageService;
use crate::runtime::api::Runtime;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("API socket {path}: {message}")]
    Socket { path: String, message: String },
    #[error("API socket {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn error(e: &EngineError) -> Response {
    let (code, reason) = match e {
        EngineError::AlreadyExists { .. } => (StatusCode::CONFLICT, "AlreadyExists"),
        EngineError::NotFound { .. } => (StatusCode::NOT_FOUND, "NotFound"),
        EngineError::BadRequest(_) => (StatusCode::BAD_REQUEST, "BadRequest"),
        EngineError::Runtime(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
    };
    (
        code,
        Json(status_body(code.as_u16(), reason, &e.to_string())),
    )
        .into_response()
}

type Shared<R, I> = State<Arc<Engine<R, I>>>;

async fn list<R: Runtime, I: ImageService>(State(e): Shared<R, I>) -> Response {
    Json(json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": e.list()}))
        .into_response()
}

/// `POST /api/v1/namespaces/{ns}/pods`: defaulted and validated as the API
/// server would, then started; 409 if the name is taken.
async fn create<R: Runtime, I: ImageService>(
    State(e): Shared<R, I>,
    UrlPath(ns): UrlPath<String>,
    Json(mut pod): Json<k8s_openapi::api::core::v1::Pod>,
) -> Response {
    match pod.metadata.namespace.as_deref() {
        None | Some("") => pod.metadata.namespace = Some(ns.clone()),
        Some(n) if n == ns => {}
        Some(n) => {
            return error(&EngineError::BadRequest(format!(
                "the namespace of the provided object ({n}) does not match the namespace sent on the request ({ns})"
            )))
        }
    }
    crate::manifest::defaults::apply(&mut pod);
    let errs = crate::manifest::validate::validate_pod(&pod);
    if !errs.is_empty() {
        let msg: Vec<String> = errs.iter().map(ToString::to_string).collect();
        let code = StatusCode::UNPROCESSABLE_ENTITY;
        return (
            code,
            Json(status_body(code.as_u16(), "Invalid", &msg.join(", "))),
        )
            .into_response();
    }
    pod.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert("kubernetes.io/config.source".into(), "api".into());
    match e.add(pod) {
        Ok(h) => (StatusCode::CREATED, Json(h.pod())).into_response(),
        Err(err) => error(&err),
    }
}

async fn get_pod<R: Runtime, I: ImageService>(
    State(e): Shared<R, I>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
) -> Response {
    match e.get(&ns, &name) {
        Some(h) => Json(h.pod()).into_response(),
        None => error(&EngineError::NotFound {
            namespace: ns,
            name,
        }),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteQuery {
    grace_period_seconds: Option<i64>,
}

async fn delete_pod<R: Runtime, I: ImageService>(
    State(e): Shared<R, I>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
    Query(q): Query<DeleteQuery>,
) -> Response {
    match e.delete(&ns, &name, q.grace_period_seconds) {
        Ok(()) => {
            // Let the worker stamp deletionTimestamp before answering.
            tokio::time::sleep(Duration::from_millis(5)).await;
            e.get(&ns, &name)
                .map(|h| Json(h.pod()).into_response())
                .unwrap_or_else(|| StatusCode::OK.into_response())
        }
        Err(err) => error(&err),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogQuery {
    container: Option<String>,
    #[serde(default)]
    previous: bool,
    tail_lines: Option<usize>,
    #[serde(default)]
    timestamps: bool,
}

async fn log<R: Runtime, I: ImageService>(
    State(e): Shared<R, I>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
    Query(q): Query<LogQuery>,
) -> Response {
    let files = match e.log_files(&ns, &name, q.container.as_deref(), q.previous) {
        Ok(f) => f,
        Err(err) => return error(&err),
    };
    let mut lines: Vec<String> = Vec::new();
    let mut partial = String::new();
    for f in files {
        let text = std::fs::read(&f).unwrap_or_default();
        for raw in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let Some(entry) = crate::runtime::logs::parse_line(raw) else {
                continue;
            };
            let content = String::from_utf8_lossy(&entry.content);
            if partial.is_empty() && q.timestamps {
                partial.push_str(&entry.timestamp);
                partial.push(' ');
            }
            partial.push_str(&content);
            if !entry.partial {
                lines.push(std::mem::take(&mut partial));
            }
        }
    }
    if !partial.is_empty() {
        lines.push(partial);
    }
    if let Some(n) = q.tail_lines {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    let mut body = lines.join("\n");
    if !lines.is_empty() {
        body.push('\n');
    }
    body.into_response()
}

async fn exec<R: Runtime, I: ImageService>(
    State(e): Shared<R, I>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
    Json(req): Json<ExecRequest>,
) -> Response {
    if req.command.is_empty() {
        return error(&EngineError::BadRequest("command must not be empty".into()));
    }
    let timeout = Duration::from_secs(req.timeout_seconds.unwrap_or(60));
    match e
        .exec(&ns, &name, req.container.as_deref(), &req.command, timeout)
        .await
    {
        Ok(r) => Json(r).into_response(),
        Err(err) => error(&err),
    }
}

async fn events<R: Runtime, I: ImageService>(State(e): Shared<R, I>) -> Response {
    let node = e.node_name().to_string();
    let items: Vec<_> = e.events().all().iter().map(|ev| ev.to_api(&node)).collect();
    Json(json!({"kind": "EventList", "apiVersion": "v1", "metadata": {}, "items": items}))
        .into_response()
}

pub fn router<R: Runtime, I: ImageService>(engine: Arc<Engine<R, I>>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/v1/pods", get(list::<R, I>))
        .route("/api/v1/namespaces/{ns}/pods", post(create::<R, I>))
        .route(
            "/api/v1/namespaces/{ns}/pods/{name}",
            get(get_pod::<R, I>).delete(delete_pod::<R, I>),
        )
        .route("/api/v1/namespaces/{ns}/pods/{name}/log", get(log::<R, I>))
        .route(
            "/api/v1/namespaces/{ns}/pods/{name}/exec",
            post(exec::<R, I>),
        )
        .route("/api/v1/events", get(events::<R, I>))
        .with_state(engine)
}

/// Binds the API socket: its directory is created 0700, a stale socket is
/// replaced, a symlink or a socket someone still serves is refused.
pub fn bind(path: &Path) -> Result<tokio::net::UnixListener, ServeError> {
    let p = path.display().to_string();
    let io = |source| ServeError::Io {
        path: p.clone(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(ServeError::Socket {
                path: p,
                message: "is a symlink; refusing to use it".into(),
            })
        }
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ServeError::Socket {
                    path: p,
                    message: "another nodelet is serving it".into(),
                });
            }
            if m.uid() != nix::unistd::geteuid().as_raw() {
                return Err(ServeError::Socket {
                    path: p,
                    message: format!("owned by uid {}, not us", m.uid()),
                });
            }
            std::fs::remove_file(path).map_err(io)?;
        }
        Ok(_) => {
            return Err(ServeError::Socket {
                path: p,
                message: "exists and is not a socket".into(),
            })
        }
        Err(_) => {}
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    Ok(listener)
}

/// Serves the API until the task is dropped.
pub async fn serve<R: Runtime, I: ImageService>(
    listener: tokio::net::UnixListener,
    engine: Arc<Engine<R, I>>,
) {
    if let Err(e) = axum::serve(listener, router(engine)).await {
        tracing::error!(error = %e, "API server stopped");
    }
}
