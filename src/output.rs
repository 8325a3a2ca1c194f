//! The only writer to stdout: tables for people, JSON for scripts. Status lines go to stderr.

use std::io::{self, IsTerminal, Write};

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use comfy_table::presets::{ASCII_MARKDOWN, UTF8_FULL_CONDENSED};
use comfy_table::{Cell, Color, ColumnConstraint, ContentArrangement, Table};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use time::OffsetDateTime;

/// Whether `--quiet` was given: no status lines, no progress; data and errors still.
static QUIET: AtomicBool = AtomicBool::new(false);

/// Silences status lines and progress bars for the rest of the process (`--quiet`).
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// Whether tables may be coloured: never with `NO_COLOR` set (no-color.org), always with
/// `CLICOLOR_FORCE` set (not `0`), else when stdout is a terminal.
pub fn colour() -> bool {
    let set = |name: &str| std::env::var_os(name).is_some_and(|value| !value.is_empty() && value != "0");
    if std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty()) {
        return false;
    }
    set("CLICOLOR_FORCE") || io::stdout().is_terminal()
}

/// A table with our style: box drawing on a terminal, plain ASCII elsewhere.
pub fn table<I: IntoIterator<Item = &'static str>>(headers: I) -> Table {
    let mut table = Table::new();
    let preset = if io::stdout().is_terminal() { UTF8_FULL_CONDENSED } else { ASCII_MARKDOWN };
    table.load_style(preset).set_header(headers);
    // Wrapped to the width there is; whole rows where there is none known (a pipe, or a
    // terminal that reports no size, where comfy-table would squeeze every column to a letter).
    match width() {
        Some(width) => table.set_content_arrangement(ContentArrangement::Dynamic).set_width(width),
        None => table.set_content_arrangement(ContentArrangement::Disabled),
    };
    if colour() {
        table.enforce_styling();
    } else {
        table.force_no_tty();
    }
    table
}

/// A status cell: `good` in green, `bad` in red, where colour is allowed ([`colour`]).
pub fn verdict(ok: bool, good: &str, bad: &str) -> Cell {
    if ok { Cell::new(good).fg(Color::Green) } else { Cell::new(bad).fg(Color::Red) }
}

/// How a column of a [`fitted_table`] gives way when the terminal is narrow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// Never wrapped nor hidden: ids, which must stay whole to be copied.
    Whole,
    /// May wrap.
    Wrap,
    /// Hidden when the table is too wide, lowest rank first (a column of little use in a
    /// narrow terminal; `--json` still has it).
    Hide(u8),
}

/// A table fitted to the terminal, and the columns hidden to fit it.
pub struct Fitted {
    table: Table,
    hidden: Vec<&'static str>,
    width: Option<u16>,
}

impl std::fmt::Display for Fitted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.table)?;
        if let (false, Some(width)) = (self.hidden.is_empty(), self.width) {
            write!(f, "\n(hidden at {width} columns: {}; --json has all)", self.hidden.join(", "))?;
        }
        Ok(())
    }
}

/// The width tables must fit: `COLUMNS` when set (as shells and `fly ssh console` do), else
/// the terminal's; none when stdout is not a terminal (scripts get whole rows).
pub fn width() -> Option<u16> {
    let columns = std::env::var("COLUMNS").ok().and_then(|text| text.trim().parse::<u16>().ok());
    let terminal = || io::stdout().is_terminal().then(|| Table::new().width()).flatten();
    columns.or_else(terminal).filter(|&c| c >= 20)
}

/// A table of `rows` under `columns` that fits [`width`]: ids are never wrapped; columns that
/// may be hidden go, lowest rank first, until the rest fit; then the wrapping columns wrap.
pub fn fitted_table(columns: &[(&'static str, Fit)], rows: Vec<Vec<String>>) -> Fitted {
    let width = width();
    // Each column's natural width: its widest cell, padded by a space on either side and
    // followed by a border.
    let natural: Vec<usize> = (0..columns.len())
        .map(|index| {
            let cells = rows.iter().map(|row| row[index].chars().count());
            cells.chain([columns[index].0.chars().count()]).max().unwrap_or(0) + 3
        })
        .collect();
    let mut shown: Vec<usize> = (0..columns.len()).collect();
    let mut hidden = Vec::new();
    if let Some(width) = width {
        let mut ranked: Vec<(u8, usize)> = (0..columns.len())
            .filter_map(|i| match columns[i].1 {
                Fit::Hide(rank) => Some((rank, i)),
                _ => None,
            })
            .collect();
        ranked.sort();
        for (_, index) in ranked {
            if shown.iter().map(|&i| natural[i]).sum::<usize>() < usize::from(width) {
                break;
            }
            shown.retain(|&i| i != index);
            hidden.push(columns[index].0);
        }
    }
    let mut table = table(shown.iter().map(|&i| columns[i].0));
    for row in &rows {
        table.add_row(shown.iter().map(|&i| row[i].clone()));
    }
    if width.is_some() {
        for (position, &index) in shown.iter().enumerate() {
            if columns[index].1 == Fit::Whole
                && let Some(column) = table.column_mut(position)
            {
                column.set_constraint(ColumnConstraint::ContentWidth);
            }
        }
    }
    Fitted { table, hidden, width }
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

/// A status line for the operator, on stderr (none with `--quiet`).
pub fn status(line: &str) {
    if !quiet() {
        eprintln!("{line}");
    }
}

/// A verdict's warning on stderr, printed even with `--quiet`: `warning: …`.
pub fn warning(line: &str) {
    eprintln!("warning: {line}");
}

/// A verdict's failure on stderr, printed even with `--quiet`: `error: …`, as `main` prints
/// the error that stops a command.
pub fn failure(line: &str) {
    eprintln!("error: {line}");
}

/// Whether a person is at the terminal (stderr is where prompts and progress go).
pub fn interactive() -> bool {
    io::stderr().is_terminal()
}

/// A progress bar on stderr counting `unit` (rows, say) towards `total`, drawn only on a
/// terminal. A total that is an estimate (`about`) is shown with a `~` and grows if passed.
pub fn progress(total: u64, unit: &str, about: bool) -> ProgressBar {
    let template =
        format!("{{bar:30}} {{pos}}/{}{{len}} {unit} ({{rate}}, {{eta}} left) {{msg}}", if about { "~" } else { "" });
    bar(total, &template)
}

/// A progress bar on stderr counting bytes towards `total`, drawn only on a terminal.
pub fn progress_bytes(total: u64) -> ProgressBar {
    bar(total, "{bar:30} {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left) {msg}")
}

fn bar(total: u64, template: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if !interactive() || quiet() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    let style = ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        // A whole count a second (`1,283/s`): indicatif's own {per_sec} prints four decimals.
        .with_key("rate", |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{}/s", indicatif::HumanCount(state.per_sec() as u64));
        });
    bar.set_style(style);
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

/// Asks the operator to type `expected` (a count of what goes), for steps a reflexive "y" must
/// not take; anything else is no.
pub fn confirm_typing(question: &str, expected: &str) -> io::Result<bool> {
    eprint!("{question} ");
    io::stderr().flush()?;
    let mut answer = String::new();
    io::stdin().read_line(&mut answer)?;
    Ok(answer.trim() == expected)
}

/// Bytes for people: `512 B`, `12.40 MiB` (indicatif's binary units), with a sign when negative
/// (a shrinking database's growth).
pub fn bytes(n: i64) -> String {
    let size = indicatif::HumanBytes(n.unsigned_abs());
    if n < 0 { format!("-{size}") } else { size.to_string() }
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
        assert_eq!(bytes(1024), "1.00 KiB");
        assert_eq!(bytes(13_002_342), "12.40 MiB");
        assert_eq!(bytes(5 * 1024 * 1024 * 1024), "5.00 GiB");
        assert_eq!(bytes(-2048), "-2.00 KiB");
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
