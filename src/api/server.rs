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

use super::body::Strict;
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
        EngineError::Conflict(_) => (StatusCode::CONFLICT, "Conflict"),
        EngineError::Storage(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
    };
    (
        code,
        Json(status_body(code.as_u16(), reason, &e.to_string())),
    )
        .into_response()
}

type Shared<R, I> = State<Arc<Engine<R, I>>>;

#[derive(Debug, Deserialize)]
struct WatchQuery {
    #[serde(default)]
    watch: bool,
}

fn watch_line(kind: &str, object: &impl serde::Serialize) -> String {
    format!("{}\n", json!({"type": kind, "object": object}))
}

fn streaming<S>(stream: S) -> Response
where
    S: futures_util::Stream<Item = String> + Send + 'static,
{
    use futures_util::StreamExt;
    axum::body::Body::from_stream(stream.map(Ok::<_, std::io::Error>)).into_response()
}

/// `GET /api/v1/pods` (`?watch=true`: Kubernetes watch events, one JSON
/// object per line: ADDED, MODIFIED, DELETED).
async fn list<R: Runtime, I: ImageService>(
    State(e): Shared<R, I>,
    Query(w): Query<WatchQuery>,
) -> Response {
    if !w.watch {
        return Json(
            json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": e.api_list()}),
        )
        .into_response();
    }
    let seen: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    let stream = futures_util::stream::unfold((e, seen, true), |(e, mut seen, first)| async move {
        loop {
            if !first || !seen.is_empty() {
                tokio::time::sleep(FOLLOW_POLL).await;
            }
            let pods = e.api_list();
            let mut out = String::new();
            let mut now = std::collections::HashMap::new();
            for p in &pods {
                let uid = p.metadata.uid.clone().unwrap_or_default();
                let text = serde_json::to_string(p).unwrap_or_default();
                match seen.get(&uid) {
                    None => out.push_str(&watch_line("ADDED", p)),
                    Some(old) if *old != text => out.push_str(&watch_line("MODIFIED", p)),
                    Some(_) => {}
                }
                now.insert(uid, text);
            }
            for (uid, text) in &seen {
                if !now.contains_key(uid) {
                    let p: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
                    out.push_str(&watch_line("DELETED", &p));
                }
            }
            seen = now;
            if !out.is_empty() {
                return Some((out, (e, seen, false)));
            }
        }
    });
    streaming(stream)
}

/// `POST /api/v1/namespaces/{ns}/pods`: defaulted and validated as the API
/// server would, then started; 409 if the name is taken.
async fn create<R: Runtime, I: ImageService>(
    State(e): Shared<R, I>,
    UrlPath(ns): UrlPath<String>,
    Strict(mut pod): Strict<k8s_openapi::api::core::v1::Pod>,
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
        .insert(crate::pod::CONFIG_SOURCE_ANNOTATION.into(), "api".into());
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
struct PauseQuery {
    container: Option<String>,
}

/// `POST …/pause` and `…/unpause`: the pod with its new status.
async fn pause<R: Runtime, I: ImageService>(
    e: Arc<Engine<R, I>>,
    ns: String,
    name: String,
    q: PauseQuery,
    freeze: bool,
) -> Response {
    match e.pause(&ns, &name, q.container.as_deref(), freeze).await {
        Ok(_) => e
            .get(&ns, &name)
            .map(|h| Json(h.pod()).into_response())
            .unwrap_or_else(|| StatusCode::OK.into_response()),
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
    #[serde(default)]
    follow: bool,
}

/// Turns CRI log bytes into the lines a reader sees: `P` fragments joined,
/// optionally prefixed with their first fragment's timestamp.
struct LogLines {
    timestamps: bool,
    /// An incomplete physical line (the file is being written).
    pending: Vec<u8>,
    /// A logical line still missing its `F` fragment.
    partial: String,
}

impl LogLines {
    fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        self.pending.extend_from_slice(bytes);
        let Some(end) = self.pending.iter().rposition(|b| *b == b'\n') else {
            return Vec::new();
        };
        let complete: Vec<u8> = self.pending.drain(..=end).collect();
        let mut out = Vec::new();
        for raw in complete.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let Some(entry) = crate::runtime::logs::parse_line(raw) else {
                continue;
            };
            if self.partial.is_empty() && self.timestamps {
                self.partial.push_str(&entry.timestamp);
                self.partial.push(' ');
            }
            self.partial
                .push_str(&String::from_utf8_lossy(&entry.content));
            if !entry.partial {
                out.push(std::mem::take(&mut self.partial));
            }
        }
        out
    }
}

fn render(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// How often `follow` looks for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

async fn log<R: Runtime, I: ImageService>(
    State(e): Shared<R, I>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
    Query(q): Query<LogQuery>,
) -> Response {
    let files = match e.log_files(&ns, &name, q.container.as_deref(), q.previous) {
        Ok(f) => f,
        Err(err) => return error(&err),
    };
    let mut reader = LogLines {
        timestamps: q.timestamps,
        pending: Vec::new(),
        partial: String::new(),
    };
    let mut lines = Vec::new();
    let mut offset = 0u64;
    for f in &files {
        let bytes = std::fs::read(f).unwrap_or_default();
        offset = bytes.len() as u64;
        lines.extend(reader.feed(&bytes));
    }
    if !q.follow && !reader.partial.is_empty() {
        lines.push(std::mem::take(&mut reader.partial));
    }
    if let Some(n) = q.tail_lines {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    let first = render(&lines);
    let live = match (q.follow && !q.previous, files.last()) {
        (true, Some(f)) => f.clone(),
        _ => return first.into_response(),
    };
    // Follow: new lines as they are written, until the container instance
    // is no longer running (or the client goes away).
    let watch = e.instance(&ns, &name, q.container.as_deref());
    let state = (
        e,
        ns,
        name,
        q.container,
        watch,
        live,
        offset,
        reader,
        Some(first),
    );
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        if let Some(first) = st.8.take() {
            return Some((Ok::<_, std::io::Error>(first), st));
        }
        loop {
            tokio::time::sleep(FOLLOW_POLL).await;
            let len = std::fs::metadata(&st.5).map(|m| m.len()).unwrap_or(0);
            if len < st.6 {
                // Rotated: the live file starts over.
                st.6 = 0;
            }
            let mut chunk = String::new();
            if len > st.6 {
                let bytes = std::fs::read(&st.5).unwrap_or_default();
                let from = usize::try_from(st.6).unwrap_or(usize::MAX).min(bytes.len());
                st.6 = bytes.len() as u64;
                chunk = render(&st.7.feed(&bytes[from..]));
            }
            if !chunk.is_empty() {
                return Some((Ok(chunk), st));
            }
            let now = st.0.instance(&st.1, &st.2, st.3.as_deref());
            if now.as_ref().map(|(id, running)| (id, *running))
                != st.4.as_ref().map(|(id, _)| (id, true))
            {
                return None;
            }
        }
    });
    axum::body::Body::from_stream(stream).into_response()
}

async fn exec<R: Runtime, I: ImageService>(
    State(e): Shared<R, I>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
    Strict(req): Strict<ExecRequest>,
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

/// `GET /api/v1/events` (`?watch=true`: every event so far, then each new
/// or repeated one as it happens).
async fn events<R: Runtime, I: ImageService>(
    State(e): Shared<R, I>,
    Query(w): Query<WatchQuery>,
) -> Response {
    let node = e.node_name().to_string();
    if !w.watch {
        let items: Vec<_> = e.events().all().iter().map(|ev| ev.to_api(&node)).collect();
        return Json(
            json!({"kind": "EventList", "apiVersion": "v1", "metadata": {}, "items": items}),
        )
        .into_response();
    }
    let rx = e.events().subscribe();
    let first: String = e
        .events()
        .all()
        .iter()
        .map(|ev| watch_line("ADDED", &ev.to_api(&node)))
        .collect();
    let stream = futures_util::stream::unfold(
        (rx, Some(first), node),
        |(mut rx, first, node)| async move {
            if let Some(f) = first {
                return Some((f, (rx, None, node)));
            }
            loop {
                match rx.recv().await {
                    Ok(ev) => {
                        let kind = if ev.count > 1 { "MODIFIED" } else { "ADDED" };
                        let line = watch_line(kind, &ev.to_api(&node));
                        return Some((line, (rx, None, node)));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    );
    streaming(stream)
}

pub fn router<R: Runtime, I: ImageService>(engine: Arc<Engine<R, I>>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/version",
            get(|| async { Json(json!({"gitVersion": concat!("v", env!("CARGO_PKG_VERSION")), "platform": "linux"})) }),
        )
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
        .route(
            "/api/v1/namespaces/{ns}/pods/{name}/pause",
            post(
                |State(e): Shared<R, I>, UrlPath((ns, name)), Query(q)| async move {
                    pause(e, ns, name, q, true).await
                },
            ),
        )
        .route(
            "/api/v1/namespaces/{ns}/pods/{name}/unpause",
            post(
                |State(e): Shared<R, I>, UrlPath((ns, name)), Query(q)| async move {
                    pause(e, ns, name, q, false).await
                },
            ),
        )
        .route(
            "/stats/summary",
            get(|State(e): Shared<R, I>| async move { Json(e.summary().await) }),
        )
        .route(
            "/metrics",
            get(|State(e): Shared<R, I>| async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    crate::metrics::render(&e.summary().await, &e.counts()),
                )
            }),
        )
        .route("/api/v1/events", get(events::<R, I>))
        .route(
            "/api/v1/sources",
            get(|State(e): Shared<R, I>| async move { Json(json!({"items": e.sources()})) }),
        )
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
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // A parent that is a symlink could be pointed anywhere by whoever
        // made it: the socket (root's API) is only made in a real directory.
        if std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(ServeError::Socket {
                path: p,
                message: format!(
                    "its directory {} is a symlink; refusing to use it",
                    dir.display()
                ),
            });
        }
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

/// Serves the API until `shutdown` resolves; requests in flight (a
/// `logs -f` whose container just ended) may then finish.
pub async fn serve(
    listener: tokio::net::UnixListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "API server stopped");
    }
}

/// The API server task and how to stop it.
pub struct Server {
    task: tokio::task::JoinHandle<()>,
    stop: Arc<tokio::sync::Notify>,
}

/// How long requests in flight may take once the server stops (watches
/// never end by themselves).
const DRAIN: Duration = Duration::from_secs(1);

impl Server {
    /// Serves `app` ([`router`], merged with the image routes where there
    /// is an image store).
    pub fn start(listener: tokio::net::UnixListener, app: Router) -> Server {
        let stop = Arc::new(tokio::sync::Notify::new());
        let s = stop.clone();
        let task = tokio::spawn(serve(listener, app, async move { s.notified().await }));
        Server { task, stop }
    }

    /// Stops accepting, lets requests in flight finish (at most [`DRAIN`]),
    /// then drops the rest.
    pub async fn stop(mut self) {
        self.stop.notify_one();
        if tokio::time::timeout(DRAIN, &mut self.task).await.is_err() {
            self.task.abort();
        }
    }
}

#[cfg(test)]
mod bind_tests {
    use super::*;

    #[tokio::test]
    async fn a_socket_whose_directory_is_a_symlink_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = bind(&link.join("nodelet.sock")).unwrap_err();
        assert!(
            e.to_string().contains("is a symlink; refusing to use it"),
            "{e}"
        );
        assert!(!real.join("nodelet.sock").exists());
        // The real directory works.
        bind(&real.join("nodelet.sock")).unwrap();
    }
}
