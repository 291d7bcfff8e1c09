//! nodelet: a kubelet-style single-node container agent.
//!
//! The library holds everything; `src/main.rs` only parses the command line
//! and calls [`cli::main`].

pub mod cli;
pub mod config;
pub mod image;
pub mod manifest;
pub mod quantity;
pub mod runtime;
pub mod sys;
pub mod time;
