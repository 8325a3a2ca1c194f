//! The only writer to stdout: tables for people, tab-separated rows or JSON for scripts. Status
//! lines, prompts and progress go to stderr.

mod table;

use std::io::{self, IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use time::OffsetDateTime;

pub use self::table::{Cell, Fit, Rows};

/// How a command speaks: to people at a terminal (tables drawn, progress bars, status lines) or
/// to a script at a pipe (tab-separated rows; footers and hints on stderr), loud or `--quiet`.
/// One value, made once from the command line and handed to the command.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    quiet: bool,
    for_people: bool,
}

impl Printer {
    /// The printer for this process: people's tables when stdout is a terminal (or
    /// `CLICOLOR_FORCE` asks for a terminal's output), else scripts'.
    pub fn new(quiet: bool) -> Self {
        Self { quiet, for_people: io::stdout().is_terminal() || env_set("CLICOLOR_FORCE") }
    }

    /// Whether stdout is read by people (a drawn table) rather than a script (tab-separated).
    pub fn for_people(self) -> bool {
        self.for_people
    }

    /// A status line on stderr; none with `--quiet`.
    pub fn status(self, line: &str) {
        if !self.quiet {
            eprintln!("{line}");
        }
    }

    /// Text beside a table (a footer, a summary): under it on stdout for people; for a script,
    /// on stderr (none with `--quiet`), so that stdout holds only rows.
    pub fn aside(self, text: &str) -> io::Result<()> {
        if self.for_people {
            write_stdout(&format!("{text}\n"))
        } else {
            self.status(text);
            Ok(())
        }
    }

    /// Rows on stdout: a table fitted to the terminal for people, tab-separated for scripts.
    pub fn rows(self, rows: &Rows) -> io::Result<()> {
        if self.for_people {
            write_stdout(&format!("{}\n", rows.for_people(width(), colour(), OffsetDateTime::now_utc())))
        } else {
            write_stdout(&rows.for_scripts())
        }
    }

    /// A progress bar on stderr counting `unit` (rows, say) towards `total`, drawn only on a
    /// terminal and without `--quiet`. A total that is an estimate (`about`) is shown with a `~`
    /// and grows if passed.
    pub fn progress(self, total: u64, unit: &str, about: bool) -> ProgressBar {
        let about = if about { "~" } else { "" };
        let template = format!("{{bar:30}} {{pos}}/{about}{{len}} {unit} ({{rate}}, {{eta}} left) {{msg}}");
        self.bar(total, &template)
    }

    /// A progress bar on stderr counting bytes towards `total`, drawn as [`Self::progress`].
    pub fn progress_bytes(self, total: u64) -> ProgressBar {
        self.bar(total, BYTES_TEMPLATE)
    }

    /// A bar that counts bytes without being drawn, until [`Self::show_bytes`].
    pub fn counting_bytes(self) -> ProgressBar {
        ProgressBar::hidden()
    }

    /// Draws `bar`, which counted in hidden until now (work begun before the operator was
    /// asked), as [`Self::progress_bytes`] would, towards `total`.
    pub fn show_bytes(self, bar: &ProgressBar, total: u64) {
        bar.set_length(total);
        self.draw(bar, BYTES_TEMPLATE);
    }

    fn bar(self, total: u64, template: &str) -> ProgressBar {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
        self.draw(&bar, template);
        bar
    }

    fn draw(self, bar: &ProgressBar, template: &str) {
        if interactive() && !self.quiet {
            bar.set_draw_target(ProgressDrawTarget::stderr());
        }
        let style = ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            // A whole count a second (`1,283/s`): indicatif's own {per_sec} prints four decimals.
            .with_key("rate", |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{}/s", indicatif::HumanCount(state.per_sec() as u64));
            });
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(200));
    }
}

/// How a bar counting bytes is drawn.
const BYTES_TEMPLATE: &str = "{bar:30} {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left) {msg}";

/// Whether an environment variable is set to something other than empty or `0`.
fn env_set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|value| !value.is_empty() && value != "0")
}

/// Whether tables may be coloured: never with `NO_COLOR` set (no-color.org), always with
/// `CLICOLOR_FORCE` set, else when stdout is a terminal.
fn colour() -> bool {
    if std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty()) {
        return false;
    }
    env_set("CLICOLOR_FORCE") || io::stdout().is_terminal()
}

/// The width tables must fit: `COLUMNS` when set (as shells and `fly ssh console` do), else
/// the terminal's; none when neither says (whole rows).
fn width() -> Option<u16> {
    let columns = std::env::var("COLUMNS").ok().and_then(|text| text.trim().parse::<u16>().ok());
    let terminal = || io::stdout().is_terminal().then(|| comfy_table::Table::new().width()).flatten();
    columns.or_else(terminal).filter(|&c| c >= 20)
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

/// Asks a yes/no question on the terminal; anything but y/yes is no.
pub fn confirm(question: &str) -> io::Result<bool> {
    let answer = ask(&format!("{question} [y/N]"))?;
    Ok(matches!(answer.to_ascii_lowercase().as_str(), "y" | "yes"))
}

/// Asks the operator to type `expected` (a count of what goes), for steps a reflexive "y" must
/// not take; anything else is no.
pub fn confirm_typing(question: &str, expected: &str) -> io::Result<bool> {
    Ok(ask(question)? == expected)
}

/// The operator's answer to `question`, asked on stderr, without surrounding whitespace.
fn ask(question: &str) -> io::Result<String> {
    eprint!("{question} ");
    io::stderr().flush()?;
    let mut answer = String::new();
    io::stdin().read_line(&mut answer)?;
    Ok(answer.trim().to_owned())
}

/// Bytes for people: `512 B`, `12.40 MiB` (indicatif's binary units), with a sign when negative
/// (a shrinking database's growth).
pub fn bytes(n: i64) -> String {
    let size = indicatif::HumanBytes(n.unsigned_abs());
    if n < 0 { format!("-{size}") } else { size.to_string() }
}

/// A past time for people: `just now`, `5 minutes ago`, `27 hours ago`, `3 days ago`. Hours
/// up to two days: the thresholds it is read against are in hours (a backup is late after 26),
/// and "1 day ago" next to "older than 26 hours" reads as a contradiction.
pub fn ago(at: OffsetDateTime, now: OffsetDateTime) -> String {
    let seconds = (now - at).whole_seconds().max(0);
    let (count, unit) = match seconds {
        0..60 => return "just now".to_owned(),
        60..3600 => (seconds / 60, "minute"),
        3600..172_800 => (seconds / 3600, "hour"),
        172_800..2_592_000 => (seconds / 86_400, "day"),
        2_592_000..31_536_000 => (seconds / 2_592_000, "month"),
        _ => (seconds / 31_536_000, "year"),
    };
    format!("{count} {unit}{} ago", if count == 1 { "" } else { "s" })
}

/// A past time exactly, and for people: `2026-12-07T03:12:09Z (27 hours ago)`. In a message that
/// may decide what an operator does, "3 days ago" alone could be 72 hours or 95.
pub fn when(at: OffsetDateTime, now: OffsetDateTime) -> String {
    format!("{} ({})", rfc3339(at), ago(at, now))
}

/// A path as one word of a POSIX shell, for a line to paste: single-quoted, each `'` in it
/// closed, escaped and reopened.
pub fn shell_word(path: &std::path::Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
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
        assert_eq!(ago_by(27 * 3600 + 5), "27 hours ago");
        assert_eq!(ago_by(2 * 86_400), "2 days ago");
        assert_eq!(ago_by(3 * 86_400 + 5), "3 days ago");
        assert_eq!(ago_by(400 * 86_400), "1 year ago");
    }

    #[test]
    fn a_path_is_one_shell_word_whatever_it_holds() {
        assert_eq!(shell_word(std::path::Path::new("/home/you/it's here")), r"'/home/you/it'\''s here'");
    }

    #[test]
    fn a_time_in_a_message_is_exact_and_readable() {
        let now = time::macros::datetime!(2026-12-07 06:12:09 UTC);
        let at = now - time::Duration::hours(27);
        assert_eq!(when(at, now), "2026-12-06T03:12:09Z (27 hours ago)");
    }
}
