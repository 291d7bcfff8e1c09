//! The native Linux runtime: containers run by nodelet itself, each pod's
//! under a per-pod shim.

mod attempt;
pub mod client;
pub mod container;
pub mod exec;
pub mod protocol;
mod readiness;
mod repeat;
mod runs;
pub mod shim;
