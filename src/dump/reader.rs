//! Reads and checks a dump from any `BufRead` (normally a zstd decoder over a file).

use std::io::{BufRead, Read};

use super::checksum::Checksum;
use super::{
    DumpError, END_OF_DATA, END_PREFIX, FORMAT_VERSION, Header, MAGIC, MANIFEST_PREFIX, MAX_LINE_BYTES, MAX_ROW_BYTES,
    MAX_SECTION_BYTES, TABLE_PREFIX, Trailer, is_plain_name,
};
use crate::encoding::hex;

/// Table data is handed out in chunks of about this many bytes.
const CHUNK: usize = 256 * 1024;

/// Bytes of comment lines tolerated before the manifest.
const PREAMBLE_LIMIT: usize = 64 * 1024;

/// A piece of a dump, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A block of SQL (`schema`, `sequences`) to run as it is.
    Section {
        /// Which block.
        kind: String,
        /// The block's SQL, which the reader checks but never runs.
        sql: String,
    },
    /// A table's data begins; `copy` is its `COPY … FROM stdin` statement.
    Table {
        /// Table name.
        name: String,
        /// The COPY statement.
        copy: String,
    },
    /// Whole rows of the current table, in COPY text format.
    Data(Vec<u8>),
    /// The current table's data ended.
    TableEnd,
}

/// A dump being read. Every byte is checked against the manifest as it goes; the last event
/// comes only once the whole file has checked out. Nothing in the file is trusted before then,
/// and memory stays bounded whatever it holds: every line, section and chunk has a cap no
/// dump of ours comes near.
pub struct DumpReader<R: BufRead> {
    inner: R,
    header: Header,
    body: Checksum,
    table: Option<(String, u64, Checksum)>,
    /// The current table's end marker was read while handing out its last rows.
    table_ended: bool,
    tables: Vec<(String, u64, String)>,
    trailer: Option<Trailer>,
    line: Vec<u8>,
}

impl<R: BufRead> DumpReader<R> {
    /// Opens a dump and reads its header.
    pub fn open(mut inner: R) -> Result<Self, DumpError> {
        let mut line = Vec::new();
        let result = read_line(&mut inner, &mut line, MAX_LINE_BYTES).map(|_| ());
        match result {
            // Not zstd at all, or nothing in it.
            Err(DumpError::Corrupt(_)) => return Err(DumpError::NotADump("it is not zstd-compressed".into())),
            other => other?,
        }
        if line != format!("{MAGIC}\n").as_bytes() {
            return Err(DumpError::NotADump("it does not start with the dump's first line".into()));
        }
        // The lines up to the manifest are checksummed once it says with what. The writer puts
        // one comment before it; a few more are tolerated, not an endless run of them.
        let mut preamble = line.clone();
        let header = loop {
            if preamble.len() > PREAMBLE_LIMIT {
                return Err(DumpError::Corrupt("no manifest line".into()));
            }
            line.clear();
            read_line(&mut inner, &mut line, MAX_LINE_BYTES)?;
            preamble.extend_from_slice(&line);
            let text = String::from_utf8_lossy(&line);
            if let Some(json) = text.strip_prefix(MANIFEST_PREFIX) {
                break serde_json::from_str::<Header>(json.trim_end())
                    .map_err(|e| DumpError::Corrupt(format!("manifest: {e}")))?;
            }
            if !text.starts_with("--") {
                return Err(DumpError::Corrupt("no manifest line".into()));
            }
        };
        if header.format_version > FORMAT_VERSION {
            return Err(DumpError::UnsupportedVersion(header.format_version));
        }
        header.check()?;
        let mut body = Checksum::for_format(header.format_version);
        body.update(&preamble);
        Ok(Self { inner, header, body, table: None, table_ended: false, tables: Vec::new(), trailer: None, line })
    }

    /// The manifest's header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The trailer, once [`Self::next_event`] has returned `None`.
    pub fn trailer(&self) -> Option<&Trailer> {
        self.trailer.as_ref()
    }

    /// The next piece; `Ok(None)` at the end, after the checksums matched.
    pub fn next_event(&mut self) -> Result<Option<Event>, DumpError> {
        if self.trailer.is_some() {
            return Ok(None);
        }
        if self.table.is_some() {
            return self.next_data().map(Some);
        }
        loop {
            self.line.clear();
            read_line(&mut self.inner, &mut self.line, MAX_LINE_BYTES)?;
            let text = String::from_utf8(self.line.clone())
                .map_err(|_| DumpError::Corrupt("a line outside table data is not UTF-8".into()))?;
            if let Some(json) = text.strip_prefix(END_PREFIX) {
                self.check_trailer(json.trim_end())?;
                return Ok(None);
            }
            self.body.update(&self.line);
            if let Some(kind) = text.strip_prefix("-- begin ").map(|k| k.trim_end().to_owned()) {
                let sql = self.read_section(&kind)?;
                return Ok(Some(Event::Section { kind, sql }));
            }
            if let Some(name) = text.strip_prefix(TABLE_PREFIX).map(|n| n.trim_end().to_owned()) {
                if !is_plain_name(&name) {
                    return Err(DumpError::Corrupt("a table name is not a plain lowercase name".into()));
                }
                self.line.clear();
                read_line(&mut self.inner, &mut self.line, MAX_LINE_BYTES)?;
                self.body.update(&self.line);
                let copy =
                    String::from_utf8(self.line.clone()).map_err(|_| DumpError::Corrupt("bad COPY line".into()))?;
                if !copy.starts_with("COPY ") || !copy.trim_end().ends_with("FROM stdin;") {
                    return Err(DumpError::Corrupt(format!("table {name} has no COPY statement")));
                }
                self.table = Some((name.clone(), 0, Checksum::for_format(self.header.format_version)));
                return Ok(Some(Event::Table { name, copy: copy.trim_end().to_owned() }));
            }
            // The script's own transaction (format 4) is psql's business, not this reader's.
            if !(text.starts_with("--") || text.starts_with("SET ") || text == "BEGIN;\n" || text == "COMMIT;\n") {
                return Err(DumpError::Corrupt(format!(
                    "unexpected line: {}",
                    text.chars().take(60).collect::<String>()
                )));
            }
        }
    }

    fn read_section(&mut self, kind: &str) -> Result<String, DumpError> {
        if !is_plain_name(kind) {
            return Err(DumpError::Corrupt("a section name is not a plain lowercase name".into()));
        }
        let end = format!("-- end {kind}\n");
        let mut sql = String::new();
        loop {
            self.line.clear();
            read_line(&mut self.inner, &mut self.line, MAX_LINE_BYTES)?;
            self.body.update(&self.line);
            if self.line == end.as_bytes() {
                return Ok(sql);
            }
            if sql.len() + self.line.len() > MAX_SECTION_BYTES {
                return Err(DumpError::Corrupt(format!("the {kind} section is larger than any this tool writes")));
            }
            sql.push_str(
                std::str::from_utf8(&self.line).map_err(|_| DumpError::Corrupt(format!("{kind} is not UTF-8")))?,
            );
        }
    }

    fn next_data(&mut self) -> Result<Event, DumpError> {
        if self.table_ended {
            return Ok(self.end_table());
        }
        let mut chunk = Vec::new();
        loop {
            self.line.clear();
            read_line(&mut self.inner, &mut self.line, MAX_ROW_BYTES)?;
            if self.line == END_OF_DATA {
                if chunk.is_empty() {
                    return Ok(self.end_table());
                }
                self.table_ended = true;
                return Ok(Event::Data(chunk));
            }
            let (_, rows, hash) = self.table.as_mut().expect("inside a table");
            *rows += 1;
            hash.update(&self.line);
            if chunk.is_empty() && self.line.len() >= CHUNK {
                // A row as large as a chunk is handed out as it is, not copied.
                chunk = std::mem::take(&mut self.line);
            } else {
                if chunk.is_empty() {
                    chunk.reserve(CHUNK + 1024);
                }
                chunk.extend_from_slice(&self.line);
            }
            if chunk.len() >= CHUNK {
                return Ok(Event::Data(chunk));
            }
        }
    }

    fn end_table(&mut self) -> Event {
        let (name, rows, hash) = self.table.take().expect("inside a table");
        // As the writer does: the table's digest, then its end marker.
        let digest = hash.digest();
        self.body.update(&digest);
        self.body.update(END_OF_DATA);
        self.tables.push((name, rows, hex(&digest)));
        self.table_ended = false;
        Event::TableEnd
    }

    fn check_trailer(&mut self, json: &str) -> Result<(), DumpError> {
        let trailer: Trailer = serde_json::from_str(json).map_err(|e| DumpError::Corrupt(format!("last line: {e}")))?;
        if hex(&self.body.digest()) != trailer.body_checksum {
            return Err(DumpError::Corrupt("the checksum of the contents does not match the manifest".into()));
        }
        let seen: Vec<(&str, u64, &str)> = self.tables.iter().map(|(n, r, h)| (n.as_str(), *r, h.as_str())).collect();
        let listed: Vec<(&str, u64, &str)> =
            trailer.tables.iter().map(|t| (t.name.as_str(), t.rows, t.checksum.as_str())).collect();
        if seen != listed {
            return Err(DumpError::Corrupt("tables, row counts or checksums differ from the manifest".into()));
        }
        // Reading to the end also makes zstd check its frame checksum.
        if !self.inner.fill_buf().map_err(io_error)?.is_empty() {
            return Err(DumpError::Corrupt("data after the last line".into()));
        }
        self.trailer = Some(trailer);
        Ok(())
    }
}

/// Errors of the file or of its decompression.
fn io_error(error: std::io::Error) -> DumpError {
    match error.kind() {
        std::io::ErrorKind::UnexpectedEof => DumpError::Truncated("the compressed stream ends early".into()),
        // zstd reports damaged input as "other" errors carrying its own message.
        std::io::ErrorKind::Other | std::io::ErrorKind::InvalidData => {
            DumpError::Corrupt(format!("the compressed data is damaged ({error})"))
        }
        _ => DumpError::Io(error),
    }
}

/// Reads one line of at most `max` bytes, newline included, into `line`; a missing newline
/// means the file was cut, and a longer line is refused before more of it is held.
fn read_line<'a, R: BufRead>(inner: &mut R, line: &'a mut Vec<u8>, max: usize) -> Result<&'a [u8], DumpError> {
    let n = inner.by_ref().take(max as u64 + 1).read_until(b'\n', line).map_err(io_error)?;
    if n == 0 {
        return Err(DumpError::Truncated("the file ends before its last line".into()));
    }
    if n > max {
        return Err(DumpError::Corrupt(format!("a line is longer than any this tool writes ({max} bytes)")));
    }
    if !line.ends_with(b"\n") {
        return Err(DumpError::Truncated("the file ends in the middle of a line".into()));
    }
    Ok(line)
}
