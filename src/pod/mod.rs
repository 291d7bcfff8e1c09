//! Pods on this node: the planner (what next), the worker (doing it), the
//! status and events they produce, and the engine that holds them all.
//! Knows Kubernetes; talks to containers only through `runtime::Runtime`
//! and to images only through [`images::ImageService`].

pub mod backoff;
pub mod container;
pub mod engine;
pub mod events;
pub mod expand;
pub mod images;
pub mod logs;
pub mod node;
pub mod objects;
pub mod planner;
pub mod qos;
pub mod resources;
pub mod security;
pub mod state;
pub mod stats;
pub mod status;
pub mod store;
pub mod volumes;
pub mod worker;

#[cfg(test)]
mod tests;

/// Where a pod came from (kubelet's `kubernetes.io/config.source`):
/// `file` for static pods, `api` otherwise.
pub const CONFIG_SOURCE_ANNOTATION: &str = "kubernetes.io/config.source";

/// A pod's config source; `api` when unset.
pub fn config_source(pod: &k8s_openapi::api::core::v1::Pod) -> &str {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CONFIG_SOURCE_ANNOTATION))
        .map_or("api", String::as_str)
}
