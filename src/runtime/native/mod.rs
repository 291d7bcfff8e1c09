//! The native Linux runtime.

pub mod container;
