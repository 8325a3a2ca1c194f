//! Tables of typed cells: drawn for people at a terminal (fitted to its width, sizes and ages as
//! people say them), tab-separated for scripts (as gh prints for a pipe: no header, exact RFC
//! 3339 times, integer bytes, nothing cut).

use std::io::{self, IsTerminal};

use comfy_table::presets::{ASCII_MARKDOWN, UTF8_FULL_CONDENSED};
use comfy_table::{Color, ColumnConstraint, ContentArrangement, Table};
use time::OffsetDateTime;

/// One cell, as a value: each way of printing says it its own way.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// Text, the same for people and scripts.
    Text(String),
    /// Bytes: `12.40 MiB` for people, `13002342` for scripts.
    Bytes(i64),
    /// A past moment: `3 days ago` for people, RFC 3339 for scripts.
    Ago(OffsetDateTime),
    /// A moment: RFC 3339 for both.
    Time(OffsetDateTime),
    /// No moment: `never` for people, empty for scripts.
    Never,
    /// A hash in hex: its first 12 digits for people, whole for scripts.
    Hash(String),
    /// A verdict: `good` in green or `bad` in red for people; the word for scripts.
    Verdict {
        /// Whether all is well.
        ok: bool,
        /// The word when it is.
        good: &'static str,
        /// The word when it is not.
        bad: &'static str,
    },
}

impl From<String> for Cell {
    fn from(text: String) -> Self {
        Self::Text(text)
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Self {
        Self::Text(text.to_owned())
    }
}

impl From<i64> for Cell {
    fn from(count: i64) -> Self {
        Self::Text(count.to_string())
    }
}

impl From<Option<OffsetDateTime>> for Cell {
    fn from(at: Option<OffsetDateTime>) -> Self {
        at.map_or(Self::Never, Self::Ago)
    }
}

impl Cell {
    /// A verdict cell.
    pub fn verdict(ok: bool, good: &'static str, bad: &'static str) -> Self {
        Self::Verdict { ok, good, bad }
    }

    fn for_people(&self, now: OffsetDateTime) -> (String, Option<Color>) {
        match self {
            Self::Text(text) => (text.clone(), None),
            Self::Bytes(n) => (super::bytes(*n), None),
            Self::Ago(at) => (super::ago(*at, now), None),
            Self::Time(at) => (super::rfc3339(*at), None),
            Self::Never => ("never".to_owned(), None),
            Self::Hash(hex) => (hex.chars().take(12).collect(), None),
            Self::Verdict { ok: true, good, .. } => ((*good).to_owned(), Some(Color::Green)),
            Self::Verdict { ok: false, bad, .. } => ((*bad).to_owned(), Some(Color::Red)),
        }
    }

    /// The cell for a tab-separated line: exact, on one line, without tabs.
    fn for_scripts(&self) -> String {
        let text = match self {
            Self::Text(text) => text.clone(),
            Self::Bytes(n) => n.to_string(),
            Self::Ago(at) | Self::Time(at) => super::rfc3339(*at),
            Self::Never => String::new(),
            Self::Hash(hex) => hex.clone(),
            Self::Verdict { ok, good, bad } => (if *ok { good } else { bad }).to_string(),
        };
        text.replace(['\t', '\n', '\r'], " ")
    }
}

/// How a column gives way when the terminal is narrow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// Never wrapped nor hidden: ids, which must stay whole to be copied.
    Whole,
    /// May wrap.
    Wrap,
    /// Hidden when the table is too wide, lowest rank first (a column of little use in a
    /// narrow terminal; `--json` and scripts still have it).
    Hide(u8),
}

/// Rows under named columns.
#[derive(Debug, Clone)]
pub struct Rows {
    columns: Vec<(&'static str, Fit)>,
    rows: Vec<Vec<Cell>>,
}

impl Rows {
    /// No rows yet, under `columns`.
    pub fn new(columns: &[(&'static str, Fit)]) -> Self {
        Self { columns: columns.to_vec(), rows: Vec::new() }
    }

    /// No rows yet, under columns that all may wrap.
    pub fn plain(headers: &[&'static str]) -> Self {
        Self { columns: headers.iter().map(|&name| (name, Fit::Wrap)).collect(), rows: Vec::new() }
    }

    /// Adds a row, one cell per column.
    pub fn push(&mut self, row: Vec<Cell>) {
        debug_assert_eq!(row.len(), self.columns.len(), "a cell per column");
        self.rows.push(row);
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Tab-separated lines, no header, each ending in a newline.
    pub fn for_scripts(&self) -> String {
        self.rows.iter().map(|row| row.iter().map(Cell::for_scripts).collect::<Vec<_>>().join("\t") + "\n").collect()
    }

    /// A table for people that fits `width` (none: whole rows): ids are never wrapped;
    /// columns that may be hidden go, lowest rank first, until the rest fit; then the wrapping
    /// columns wrap. Box drawing on a terminal, plain ASCII elsewhere (`COLUMNS` set for a pipe).
    pub fn for_people(&self, width: Option<u16>, colour: bool, now: OffsetDateTime) -> String {
        let cells: Vec<Vec<(String, Option<Color>)>> =
            self.rows.iter().map(|row| row.iter().map(|cell| cell.for_people(now)).collect()).collect();
        // Each column's natural width: its widest cell, padded by a space on either side and
        // followed by a border.
        let natural: Vec<usize> = (0..self.columns.len())
            .map(|index| {
                let widths = cells.iter().map(|row| row[index].0.chars().count());
                widths.chain([self.columns[index].0.chars().count()]).max().unwrap_or(0) + 3
            })
            .collect();
        let mut shown: Vec<usize> = (0..self.columns.len()).collect();
        let mut hidden = Vec::new();
        if let Some(width) = width {
            let mut ranked: Vec<(u8, usize)> = (0..self.columns.len())
                .filter_map(|i| match self.columns[i].1 {
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
                hidden.push(self.columns[index].0);
            }
        }
        let mut table = Table::new();
        let preset = if io::stdout().is_terminal() { UTF8_FULL_CONDENSED } else { ASCII_MARKDOWN };
        table.load_style(preset).set_header(shown.iter().map(|&i| self.columns[i].0));
        // Wrapped to the width there is; whole rows where there is none known (a terminal
        // that reports no size, where comfy-table would squeeze every column to a letter).
        match width {
            Some(width) => table.set_content_arrangement(ContentArrangement::Dynamic).set_width(width),
            None => table.set_content_arrangement(ContentArrangement::Disabled),
        };
        if colour {
            table.enforce_styling();
        } else {
            table.force_no_tty();
        }
        for row in &cells {
            table.add_row(shown.iter().map(|&i| {
                let (text, colour) = &row[i];
                let cell = comfy_table::Cell::new(text);
                match colour {
                    Some(colour) => cell.fg(*colour),
                    None => cell,
                }
            }));
        }
        if width.is_some() {
            for (position, &index) in shown.iter().enumerate() {
                if self.columns[index].1 == Fit::Whole
                    && let Some(column) = table.column_mut(position)
                {
                    column.set_constraint(ColumnConstraint::ContentWidth);
                }
            }
        }
        match (hidden.is_empty(), width) {
            (false, Some(width)) => {
                format!("{table}\n(hidden at {width} columns: {}; --json has all)", hidden.join(", "))
            }
            _ => table.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_get_exact_values_one_line_each_without_a_header() {
        let at = OffsetDateTime::from_unix_timestamp(1_780_000_000).unwrap();
        let mut rows = Rows::plain(&["Name", "Size", "When", "Last", "OK"]);
        rows.push(vec![
            "a\tb".into(),
            Cell::Bytes(13_002_342),
            Cell::Ago(at),
            Cell::Never,
            Cell::verdict(false, "ok", "WARN"),
        ]);
        assert_eq!(rows.for_scripts(), "a b\t13002342\t2026-05-28T20:26:40Z\t\tWARN\n");
        let people = rows.for_people(None, false, at + time::Duration::days(3));
        assert!(people.contains("12.40 MiB") && people.contains("3 days ago") && people.contains("never"), "{people}");
        assert!(people.contains("Name"), "people get the header: {people}");
    }
}
