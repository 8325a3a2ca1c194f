//! Logging: tracing to stderr, human-readable on a terminal, JSON for log collectors.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Installs the global subscriber. `RUST_LOG` overrides `default_filter`.
pub fn init(format: Option<LogFormat>, default_filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let format = format.unwrap_or(if std::io::stderr().is_terminal() { LogFormat::Pretty } else { LogFormat::Json });
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        // The request span's fields (its id) go on every line logged inside it.
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).with_span_list(false).init(),
        LogFormat::Pretty => {
            builder.with_ansi(std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()).init()
        }
    }
}
