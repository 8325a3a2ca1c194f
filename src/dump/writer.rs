//! Writes a dump to any `Write` (normally a zstd encoder over a file).

use std::io::Write;

use super::checksum::Checksum;
use super::{
    COMMIT, END_OF_DATA, END_PREFIX, FIRST_IN_ONE_TRANSACTION, Header, MAGIC, MANIFEST_PREFIX, RESTORE_ONE_LINER,
    TABLE_PREFIX, TableSummary, Trailer,
};
use crate::encoding::hex;

/// A dump being written.
pub struct DumpWriter<W: Write> {
    inner: W,
    format_version: u32,
    body: Checksum,
    tables: Vec<TableSummary>,
    table: Option<(String, u64, Checksum)>,
}

impl<W: Write> DumpWriter<W> {
    /// Starts a dump: the magic line, the restore hint, the manifest and session settings.
    /// The checksums are those of the header's format version.
    pub fn new(inner: W, header: &Header) -> std::io::Result<Self> {
        let format_version = header.format_version;
        let body = Checksum::for_format(format_version);
        let mut writer = Self { inner, format_version, body, tables: Vec::new(), table: None };
        let manifest = serde_json::to_string(header).map_err(std::io::Error::other)?;
        let preamble = format!(
            "{MAGIC}\n-- restore without this tool: {RESTORE_ONE_LINER}\n{MANIFEST_PREFIX}{manifest}\n\
             SET client_encoding = 'UTF8';\nSET standard_conforming_strings = on;\nSET statement_timeout = 0;\n{}",
            if format_version >= FIRST_IN_ONE_TRANSACTION { "BEGIN;\n" } else { "" }
        );
        writer.emit(preamble.as_bytes())?;
        Ok(writer)
    }

    fn emit(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.body.update(bytes);
        self.inner.write_all(bytes)
    }

    /// A block of SQL statements (`schema`, `sequences`), run as they are.
    pub fn section(&mut self, kind: &str, sql: &str) -> std::io::Result<()> {
        let sql = sql.trim_end();
        self.emit(format!("-- begin {kind}\n{sql}\n-- end {kind}\n").as_bytes())
    }

    /// Starts a table's data.
    pub fn begin_table(&mut self, name: &str, columns: &[String]) -> std::io::Result<()> {
        assert!(self.table.is_none(), "begin_table inside a table");
        self.emit(
            format!("{TABLE_PREFIX}{name}\nCOPY public.{name} ({}) FROM stdin;\n", columns.join(", ")).as_bytes(),
        )?;
        self.table = Some((name.to_owned(), 0, Checksum::for_format(self.format_version)));
        Ok(())
    }

    /// Appends COPY text data (whole rows, each ending in a newline); returns the rows in it.
    pub fn table_data(&mut self, chunk: &[u8]) -> std::io::Result<u64> {
        let (_, rows, hash) = self.table.as_mut().expect("table_data outside a table");
        let added = chunk.iter().filter(|&&b| b == b'\n').count() as u64;
        *rows += added;
        hash.update(chunk);
        // The body checksum takes the table's digest at its end instead of hashing the data twice.
        self.inner.write_all(chunk)?;
        Ok(added)
    }

    /// Ends a table's data; returns its summary.
    pub fn end_table(&mut self) -> std::io::Result<TableSummary> {
        let (name, rows, hash) = self.table.take().expect("end_table outside a table");
        let digest = hash.digest();
        self.body.update(&digest);
        self.emit(END_OF_DATA)?;
        let summary = TableSummary { name, rows, checksum: hex(&digest) };
        self.tables.push(summary.clone());
        Ok(summary)
    }

    /// Commits (for psql) and writes the last line; returns the inner writer and the trailer.
    pub fn finish(mut self) -> std::io::Result<(W, Trailer)> {
        if self.format_version >= FIRST_IN_ONE_TRANSACTION {
            self.emit(COMMIT)?;
        }
        let trailer = Trailer { tables: std::mem::take(&mut self.tables), body_checksum: hex(&self.body.digest()) };
        let line = format!("{END_PREFIX}{}\n", serde_json::to_string(&trailer).map_err(std::io::Error::other)?);
        self.inner.write_all(line.as_bytes())?;
        Ok((self.inner, trailer))
    }
}
