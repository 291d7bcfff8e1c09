//! The container runtime: the plan (an OCI runtime spec), the `Runtime`
//! trait, the native Linux backend with its per-pod shim, and a fake.
//! Knows nothing of Kubernetes.

pub mod api;
pub mod cgroup;
pub mod fake;
pub mod logs;
pub mod native;
pub mod plan;
pub mod record;
pub mod seccomp;
