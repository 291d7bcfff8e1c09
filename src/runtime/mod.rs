//! The container runtime: the plan (an OCI runtime spec) and the native
//! Linux backend. Knows nothing of Kubernetes.

pub mod logs;
pub mod native;
pub mod plan;
pub mod record;
