//! ConfigMaps and Secrets over the API, as the Kubernetes API serves them
//! (`/api/v1/[namespaces/{ns}/]{configmaps,secrets}[/{name}]`: list,
//! create, get, replace, delete), on the node's object store.

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use serde_json::json;

use super::body::Strict;
use super::status_body;
use crate::pod::objects::{ObjectError, Objects, Stored};

fn failure(code: StatusCode, reason: &str, message: &str) -> Response {
    (code, Json(status_body(code.as_u16(), reason, message))).into_response()
}

fn error(e: &ObjectError) -> Response {
    let (code, reason) = match e {
        ObjectError::NotFound { .. } => (StatusCode::NOT_FOUND, "NotFound"),
        ObjectError::AlreadyExists { .. } => (StatusCode::CONFLICT, "AlreadyExists"),
        ObjectError::Invalid { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "Invalid"),
        ObjectError::Save { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
    };
    failure(code, reason, &crate::error_chain(e))
}

/// A `<Kind>List` of `items`.
fn list_body<T: Stored>(items: &[T]) -> Response {
    Json(json!({
        "kind": format!("{}List", T::KIND),
        "apiVersion": "v1",
        "metadata": {},
        "items": items,
    }))
    .into_response()
}

async fn list_all<T: Stored>(State(o): State<Objects>) -> Response {
    list_body(&o.list::<T>())
}

async fn list_in<T: Stored>(State(o): State<Objects>, UrlPath(ns): UrlPath<String>) -> Response {
    let items: Vec<T> = o
        .list::<T>()
        .into_iter()
        .filter(|x| x.meta().namespace.as_deref() == Some(ns.as_str()))
        .collect();
    list_body(&items)
}

/// The body's namespace agrees with the URL's (or is set from it), and
/// its name with the URL's when there is one; `Err` is why not.
fn place<T: Stored>(obj: &mut T, ns: &str, name: Option<&str>) -> Result<(), String> {
    let meta = obj.meta_mut();
    match meta.namespace.as_deref() {
        None | Some("") => meta.namespace = Some(ns.to_string()),
        Some(n) if n == ns => {}
        Some(n) => {
            return Err(format!("the namespace of the provided object ({n}) does not match the namespace sent on the request ({ns})"))
        }
    }
    if let Some(url) = name {
        let body = meta.name.as_deref().unwrap_or_default();
        if body != url {
            return Err(format!(
                "the name of the object ({body}) does not match the name on the URL ({url})"
            ));
        }
    }
    Ok(())
}

async fn create<T: Stored>(
    State(o): State<Objects>,
    UrlPath(ns): UrlPath<String>,
    Strict(mut obj): Strict<T>,
) -> Response {
    if let Err(m) = place(&mut obj, &ns, None) {
        return failure(StatusCode::BAD_REQUEST, "BadRequest", &m);
    }
    match o.create(obj) {
        Ok(made) => (StatusCode::CREATED, Json(made)).into_response(),
        Err(e) => error(&e),
    }
}

async fn read<T: Stored>(
    State(o): State<Objects>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
) -> Response {
    match o.get::<T>(&ns, &name) {
        Some(x) => Json(x).into_response(),
        None => error(&ObjectError::NotFound {
            resource: T::RESOURCE,
            name,
        }),
    }
}

async fn replace<T: Stored>(
    State(o): State<Objects>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
    Strict(mut obj): Strict<T>,
) -> Response {
    if let Err(m) = place(&mut obj, &ns, Some(&name)) {
        return failure(StatusCode::BAD_REQUEST, "BadRequest", &m);
    }
    match o.replace(obj) {
        Ok(x) => Json(x).into_response(),
        Err(e) => error(&e),
    }
}

async fn delete<T: Stored>(
    State(o): State<Objects>,
    UrlPath((ns, name)): UrlPath<(String, String)>,
) -> Response {
    match o.delete::<T>(&ns, &name) {
        Ok(gone) => Json(json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {"name": name, "kind": T::RESOURCE, "uid": gone.meta().uid},
        }))
        .into_response(),
        Err(e) => error(&e),
    }
}

fn routes<T: Stored>(r: Router<Objects>) -> Router<Objects> {
    let res = T::RESOURCE;
    r.route(&format!("/api/v1/{res}"), get(list_all::<T>))
        .route(
            &format!("/api/v1/namespaces/{{ns}}/{res}"),
            get(list_in::<T>).post(create::<T>),
        )
        .route(
            &format!("/api/v1/namespaces/{{ns}}/{res}/{{name}}"),
            get(read::<T>).put(replace::<T>).delete(delete::<T>),
        )
}

pub fn router(objects: Objects) -> Router {
    routes::<Secret>(routes::<ConfigMap>(Router::new())).with_state(objects)
}
