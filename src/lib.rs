//! nodelet: a kubelet-style single-node container agent.
//!
//! The library holds everything; `src/main.rs` only parses the command line
//! and calls [`cli::main`].

pub mod api;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod image;
pub mod manifest;
pub mod metrics;
pub mod pod;
pub mod probe;
pub mod quantity;
pub mod runtime;
pub mod sys;
pub mod time;

/// An error and its sources, `: `-separated, for messages shown to users.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}
