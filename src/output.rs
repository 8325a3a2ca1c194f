//! The only writer to stdout: tables for people, JSON for scripts. Status lines go to stderr.

use std::io::{self, IsTerminal, Write};

use comfy_table::presets::{ASCII_MARKDOWN, UTF8_FULL_CONDENSED};
use comfy_table::{ContentArrangement, Table};
use serde::Serialize;

/// A table with our style: box drawing on a terminal, plain ASCII elsewhere.
pub fn table<I: IntoIterator<Item = &'static str>>(headers: I) -> Table {
    let mut table = Table::new();
    let preset = if io::stdout().is_terminal() { UTF8_FULL_CONDENSED } else { ASCII_MARKDOWN };
    table.load_style(preset).set_content_arrangement(ContentArrangement::Dynamic).set_header(headers);
    if std::env::var_os("NO_COLOR").is_some() {
        table.force_no_tty();
    }
    table
}

/// Prints a table to stdout.
pub fn print_table(table: &Table) -> io::Result<()> {
    write_stdout(&format!("{table}\n"))
}

/// Prints one JSON document to stdout.
pub fn print_json(value: &impl Serialize) -> io::Result<()> {
    let mut text = serde_json::to_string_pretty(value).map_err(io::Error::other)?;
    text.push('\n');
    write_stdout(&text)
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
pub fn write_stdout(text: &str) -> io::Result<()> {
    write_stdout_bytes(text.as_bytes())
}

/// Writes raw bytes to stdout (a document exactly as served); a closed pipe is not an error.
pub fn write_stdout_bytes(bytes: &[u8]) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// A status line for the operator, on stderr.
pub fn status(line: &str) {
    eprintln!("{line}");
}
