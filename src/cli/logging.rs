//! The tracing subscriber: human-readable on stderr, or JSON lines with
//! `--log-format json`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use super::{GlobalArgs, LogFormat};

pub fn init(global: &GlobalArgs) {
    let filter = EnvFilter::try_from_env("NODELET_LOG")
        .or_else(|_| EnvFilter::try_new(&global.log_level))
        .unwrap_or_else(|_| EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let res = match global.log_format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    let _ = res;
}
