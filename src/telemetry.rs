//! Logging: tracing to stderr, human-readable on a terminal, JSON for log collectors.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber: JSON lines when `json` (by default, when stderr is not a
/// terminal), else lines for people. `RUST_LOG` overrides `default_filter`.
pub fn init(json: Option<bool>, default_filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let json = json.unwrap_or(!std::io::stderr().is_terminal());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        // The request span's fields (its id) go on every line logged inside it.
        builder.json().flatten_event(true).with_current_span(true).with_span_list(false).init();
    } else {
        builder.with_ansi(std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()).init();
    }
}
