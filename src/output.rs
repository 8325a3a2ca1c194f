//! The only writer to stdout: tables for people, JSON for scripts. Status lines go to stderr.

use std::io::{self, IsTerminal, Write};

use std::time::Duration;

use comfy_table::presets::{ASCII_MARKDOWN, UTF8_FULL_CONDENSED};
use comfy_table::{ContentArrangement, Table};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use time::OffsetDateTime;

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

/// Writes a body as received; on a terminal a missing final newline is added, so the shell's
/// prompt does not land on the body's last line (piped, the bytes are exactly as received).
pub fn write_body(bytes: &[u8]) -> io::Result<()> {
    write_stdout_bytes(bytes)?;
    if io::stdout().is_terminal() && !bytes.is_empty() && !bytes.ends_with(b"\n") {
        write_stdout("\n")?;
    }
    Ok(())
}

/// A status line for the operator, on stderr.
pub fn status(line: &str) {
    eprintln!("{line}");
}

/// Whether a person is at the terminal (stderr is where prompts and progress go).
pub fn interactive() -> bool {
    io::stderr().is_terminal()
}

/// A progress bar on stderr, drawn only on a terminal.
pub fn progress(total: u64, unit: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if !interactive() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    let template = format!("{{bar:40}} {{pos}}/{{len}} {unit} ({{per_sec}}, {{eta}} left) {{msg}}");
    bar.set_style(ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar()));
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Asks a yes/no question on the terminal; anything but y/yes is no.
pub fn confirm(question: &str) -> io::Result<bool> {
    eprint!("{question} [y/N] ");
    io::stderr().flush()?;
    let mut answer = String::new();
    io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}

/// Bytes for people: `512 B`, `12.4 MiB`.
pub fn bytes(n: i64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n.abs() < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value.abs() >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A past time for people: `just now`, `5 minutes ago`, `3 days ago`.
pub fn ago(at: OffsetDateTime, now: OffsetDateTime) -> String {
    let seconds = (now - at).whole_seconds().max(0);
    let (count, unit) = match seconds {
        0..60 => return "just now".to_owned(),
        60..3600 => (seconds / 60, "minute"),
        3600..86_400 => (seconds / 3600, "hour"),
        86_400..2_592_000 => (seconds / 86_400, "day"),
        2_592_000..31_536_000 => (seconds / 2_592_000, "month"),
        _ => (seconds / 31_536_000, "year"),
    };
    format!("{count} {unit}{} ago", if count == 1 { "" } else { "s" })
}

/// A time in RFC 3339, UTC.
pub fn rfc3339(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC).format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_like_people_write_them() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.0 KiB");
        assert_eq!(bytes(13_002_342), "12.4 MiB");
        assert_eq!(bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
    }

    #[test]
    fn ages_read_like_people_say_them() {
        let now = OffsetDateTime::now_utc();
        let ago_by = |seconds: i64| ago(now - time::Duration::seconds(seconds), now);
        assert_eq!(ago_by(5), "just now");
        assert_eq!(ago_by(60), "1 minute ago");
        assert_eq!(ago_by(3 * 86_400 + 5), "3 days ago");
        assert_eq!(ago_by(400 * 86_400), "1 year ago");
    }
}
