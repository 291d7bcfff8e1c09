//! The image routes: the daemon's one store, so `nodelet image …` run
//! beside a daemon goes through it (one store, one lock) and can never
//! remove an image a live pod uses.
//!
//! - `GET /images`: `ImageList` of stored images;
//! - `GET /images/inspect?name=`: record, manifest, config, snapshots;
//! - `POST /images/pull` `{image, platform?, creds?}` and
//!   `POST /images/import` `{path, name?}`: `{image, downloadedBytes,
//!   reusedLayers, elapsedSeconds}`;
//! - `DELETE /images?name=`: the removed record; 409 when a pod that has
//!   not finished uses it (crictl's "image is in use by a container");
//! - `POST /images/prune`: `{blobs, snapshots}` removed.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::body::Strict;
use super::status_body;
use crate::image::platform::Platform;
use crate::image::registry::Credentials;
use crate::image::store::{ImageError, ImageStore, PullOptions, PullReport};

/// Stored image name → the pods (`ns/name`) that use it.
pub type InUse = Box<dyn Fn() -> BTreeMap<String, Vec<String>> + Send + Sync>;

/// What the image routes need.
pub struct ImageApi {
    pub store: Arc<ImageStore>,
    /// Pull options from the config (platform and credentials per request).
    pub options: PullOptions,
    /// Credentials for a registry when the request brings none.
    pub creds: crate::pod::images::CredentialSource,
    pub in_use: InUse,
}

fn reply(code: StatusCode, reason: &str, message: &str) -> Response {
    (code, Json(status_body(code.as_u16(), reason, message))).into_response()
}

fn image_error(e: &ImageError) -> Response {
    let message = crate::error_chain(e);
    match e {
        ImageError::NotFound { .. } => reply(StatusCode::NOT_FOUND, "NotFound", &message),
        ImageError::Busy(_) => reply(StatusCode::CONFLICT, "Conflict", &message),
        ImageError::Reference(_) | ImageError::PlatformNotFound { .. } => {
            reply(StatusCode::BAD_REQUEST, "BadRequest", &message)
        }
        _ => reply(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", &message),
    }
}

#[derive(Debug, Deserialize)]
struct NameQuery {
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PullRequest {
    image: String,
    #[serde(default)]
    platform: Option<String>,
    /// `USER:PASSWORD`.
    #[serde(default)]
    creds: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportRequest {
    path: std::path::PathBuf,
    #[serde(default)]
    name: Option<String>,
}

fn pulled(report: &PullReport) -> Response {
    Json(json!({
        "image": report.record,
        "downloadedBytes": report.downloaded,
        "reusedLayers": report.reused_layers,
        "elapsedSeconds": report.elapsed.as_secs_f64(),
    }))
    .into_response()
}

async fn pull(State(api): State<Arc<ImageApi>>, Strict(req): Strict<PullRequest>) -> Response {
    let r = match crate::image::reference::Reference::parse(&req.image) {
        Ok(r) => r,
        Err(e) => return image_error(&e.into()),
    };
    let mut opts = api.options.clone();
    if let Some(p) = &req.platform {
        match Platform::parse(p) {
            Ok(p) => opts.platform = p,
            Err(e) => return reply(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string()),
        }
    }
    opts.creds = match &req.creds {
        Some(c) => match Credentials::parse(c) {
            Some(c) => Some(c),
            None => {
                return reply(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "creds: want USER:PASSWORD",
                )
            }
        },
        None => (api.creds)(&r.registry),
    };
    match api.store.pull(&req.image, &opts, &|_| {}).await {
        Ok(report) => pulled(&report),
        Err(e) => image_error(&e),
    }
}

async fn import(State(api): State<Arc<ImageApi>>, Strict(req): Strict<ImportRequest>) -> Response {
    match api
        .store
        .import(&req.path, req.name.as_deref(), &api.options, &|_| {})
        .await
    {
        Ok(report) => pulled(&report),
        Err(e) => image_error(&e),
    }
}

async fn remove(State(api): State<Arc<ImageApi>>, Query(q): Query<NameQuery>) -> Response {
    let rec = match api.store.resolve(&q.name) {
        Ok(Some(rec)) => rec,
        Ok(None) => return image_error(&ImageError::NotFound { name: q.name }),
        Err(e) => return image_error(&e),
    };
    if let Some(users) = (api.in_use)().get(&rec.name) {
        return reply(
            StatusCode::CONFLICT,
            "Conflict",
            &format!(
                "image {} is in use by pod {}: delete the pod first",
                rec.name,
                users.join(", ")
            ),
        );
    }
    match api.store.remove(&rec.name, false, &[]) {
        Ok(rec) => Json(json!({"image": rec})).into_response(),
        Err(e) => image_error(&e),
    }
}

pub fn router(api: Arc<ImageApi>) -> Router {
    Router::new()
        .route(
            "/images",
            get(|State(api): State<Arc<ImageApi>>| async move {
                match api.store.list() {
                    Ok(items) => Json(json!({"kind": "ImageList", "items": items})).into_response(),
                    Err(e) => image_error(&e),
                }
            })
            .delete(remove),
        )
        .route(
            "/images/inspect",
            get(
                |State(api): State<Arc<ImageApi>>, Query(q): Query<NameQuery>| async move {
                    match api.store.inspect(&q.name) {
                        Ok((rec, manifest, config)) => {
                            let snapshots: Vec<String> = api
                                .store
                                .lower_dirs(&rec)
                                .iter()
                                .rev()
                                .map(|p| p.display().to_string())
                                .collect();
                            Json(json!({"image": rec, "manifest": manifest, "config": config, "snapshots": snapshots}))
                                .into_response()
                        }
                        Err(e) => image_error(&e),
                    }
                },
            ),
        )
        .route("/images/pull", post(pull))
        .route("/images/import", post(import))
        .route(
            "/images/prune",
            post(|State(api): State<Arc<ImageApi>>| async move {
                match api.store.prune() {
                    Ok((blobs, snapshots)) => {
                        Json(json!({"blobs": blobs, "snapshots": snapshots})).into_response()
                    }
                    Err(e) => image_error(&e),
                }
            }),
        )
        .with_state(api)
}
