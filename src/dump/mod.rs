//! The database dump format: a zstd-compressed SQL script that `psql` can load as it is, with
//! a manifest that lets this tool verify it without a database.
//!
//! ```text
//! -- dailyreps-backup-server dump
//! -- restore without this tool: set -o pipefail; zstd -dc FILE | psql -v ON_ERROR_STOP=1 -d "$DATABASE_URL"
//! -- manifest: {"format_version":4,"created_at":…,"server_version":…,"schema_version":…}
//! SET …;
//! BEGIN;
//! -- begin schema
//! …the migrations' SQL up to schema_version…
//! -- end schema
//! -- table: users
//! COPY public.users (…) FROM stdin;
//! …rows in COPY text format…
//! \.
//! …one block per table…
//! -- begin sequences
//! …setval calls…
//! -- end sequences
//! COMMIT;
//! -- end: {"tables":[{"name","rows","checksum"}],"body_checksum":…}
//! ```
//!
//! The last line holds each table's row count and checksum (XXH3-128; SHA-256 in format 1) of
//! its COPY data, and a checksum of everything before it (every line, with each table's data
//! standing in by its digest, so no byte is hashed twice); zstd's own frame checksum covers the
//! compressed bytes.

pub mod checksum;
pub mod naming;
pub mod reader;
pub mod sequences;
pub mod writer;

use std::io::{BufReader, Read, Write};

use serde::{Deserialize, Serialize};

use self::reader::DumpReader;

/// zstd level 1: on the benchmark's workout logs it is both the fastest level and the smallest
/// (bench/README.md, "Figures behind choices in the code").
const ZSTD_LEVEL: i32 = 1;
/// zstd's compressing threads. With one, a job queued behind the one being compressed stalls
/// the reading side whenever the worker is descheduled; two keep `backup-db` close to the read
/// floor on two cores (bench/README.md), for 2 MiB more memory. The output is the same bytes
/// either way.
const WORKERS: u32 = 2;
/// Bytes a zstd worker compresses at a time.
const JOB_SIZE: u32 = 1 << 20;

/// The compressor a dump is written through (with zstd's frame checksum on). It compresses on
/// worker threads of its own, so compressing overlaps with checksumming and reading.
pub fn compress<W: Write>(inner: W) -> std::io::Result<zstd::Encoder<'static, W>> {
    let mut encoder = zstd::Encoder::new(inner, ZSTD_LEVEL)?;
    encoder.include_checksum(true)?;
    encoder.multithread(WORKERS)?;
    // Small jobs keep the workers' buffers, and so memory, small.
    encoder.set_parameter(zstd::stream::raw::CParameter::JobSize(JOB_SIZE))?;
    Ok(encoder)
}

/// A reader of a compressed dump.
pub type CompressedReader<R> = DumpReader<BufReader<zstd::Decoder<'static, BufReader<R>>>>;

/// The largest zstd window a reader accepts, as a power of two: 8 MiB. Our writer's level 1
/// uses 512 KiB (format 1's level 3, 2 MiB); a hostile frame may ask for up to 2 GiB.
const MAX_WINDOW_LOG: u32 = 23;

/// Opens a compressed dump.
pub fn open<R: Read>(inner: R) -> Result<CompressedReader<R>, DumpError> {
    let mut decoder = zstd::Decoder::new(inner)?;
    decoder.window_log_max(MAX_WINDOW_LOG)?;
    DumpReader::open(BufReader::with_capacity(256 * 1024, decoder))
}

/// Reads a whole dump, checking every byte; returns its header and trailer.
pub fn verify<R: std::io::BufRead>(mut reader: DumpReader<R>) -> Result<(Header, Trailer), DumpError> {
    while reader.next_event()?.is_some() {}
    let trailer = reader.trailer().cloned().expect("the reader ends only after the trailer");
    Ok((reader.header().clone(), trailer))
}

/// The version of this layout: 4 since the script opens its own transaction and commits it on
/// its last statement (so psql commits nothing of a truncated file), 3 since documents are
/// stored as chunks (the `chunks` table before `backups`, whose rows name their chunks), 2
/// since the checksums are XXH3-128 (1 had SHA-256). This tool reads all four: older dumps
/// restore at their own schema version, and the migrations after it convert their documents.
pub const FORMAT_VERSION: u32 = 4;
/// The first format whose script is one transaction of its own: `BEGIN;` after the session
/// settings, `COMMIT;` just before the last line.
const FIRST_IN_ONE_TRANSACTION: u32 = 4;
const COMMIT: &[u8] = b"COMMIT;\n";
/// The first line of every dump.
const MAGIC: &str = "-- dailyreps-backup-server dump";
/// How a dump is restored without this tool.
/// Not `--single-transaction`: the script commits itself on its last statement, so a file cut
/// short leaves the transaction open when psql reaches its end, and the server rolls it back.
/// `pipefail` makes the pipeline fail when zstd does (psql alone would exit 0).
pub const RESTORE_ONE_LINER: &str = r#"set -o pipefail; zstd -dc FILE | psql -v ON_ERROR_STOP=1 -d "$DATABASE_URL""#;
const MANIFEST_PREFIX: &str = "-- manifest: ";
const TABLE_PREFIX: &str = "-- table: ";
const END_PREFIX: &str = "-- end: ";
const END_OF_DATA: &[u8] = b"\\.\n";

/// The largest document the server accepts at most (`MAX_BACKUP_BYTES` cannot be set higher),
/// so that every row it stores can be dumped and read back within [`MAX_ROW_BYTES`].
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;
/// The longest row of table data a reader accepts: COPY's text format at most doubles a
/// document (each escaped byte takes two), plus the row's other columns.
pub const MAX_ROW_BYTES: usize = 2 * MAX_DOCUMENT_BYTES + 64 * 1024;
/// The longest line outside table data (comments, the manifest, COPY and SQL lines).
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// The largest SQL section (the schema is the migrations' text, a few KiB).
pub const MAX_SECTION_BYTES: usize = 1024 * 1024;
/// The longest version string a manifest may carry.
const MAX_VERSION_CHARS: usize = 64;

/// What is known when a dump starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// When the snapshot was taken (RFC 3339).
    pub created_at: String,
    /// This tool's version.
    pub server_version: String,
    /// The PostgreSQL server's version.
    pub postgres_version: String,
    /// The newest migration applied in the dumped database.
    pub schema_version: i64,
}

impl Header {
    /// Checks what a reader will print or act on: a manifest is untrusted input.
    fn check(&self) -> Result<(), DumpError> {
        let bad = |what: &str| Err(DumpError::Corrupt(format!("manifest: {what}")));
        if time::OffsetDateTime::parse(&self.created_at, &time::format_description::well_known::Rfc3339).is_err() {
            return bad("created_at is not an RFC 3339 time");
        }
        for (field, value) in [("server_version", &self.server_version), ("postgres_version", &self.postgres_version)] {
            if value.len() > MAX_VERSION_CHARS || !value.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
                return bad(&format!("{field} is not a short printable version"));
            }
        }
        if self.schema_version < 0 {
            return bad("schema_version is negative");
        }
        Ok(())
    }
}

/// Whether `name` is a plain lowercase SQL name, as every table of ours is (table names from a
/// dump are printed and looked up, so nothing else is accepted).
fn is_plain_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
}

/// One table's data in a dump.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSummary {
    /// Table name.
    pub name: String,
    /// Rows.
    pub rows: u64,
    /// Hex checksum of the table's COPY data (see [`checksum`]).
    #[serde(alias = "sha256")]
    pub checksum: String,
}

/// What is known when a dump ends: the last line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trailer {
    /// Every table, in load order.
    pub tables: Vec<TableSummary>,
    /// Hex checksum of everything before the last line (table data by its digest).
    #[serde(alias = "body_sha256")]
    pub body_checksum: String,
}

/// Why a dump cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Not a dump of this tool.
    #[error("not a dailyreps-backup-server dump: {0}")]
    NotADump(String),
    /// A dump of a newer format.
    #[error("dump format {0} is newer than this tool's ({FORMAT_VERSION}); use a newer dailyreps-backup-server")]
    UnsupportedVersion(u32),
    /// The file ends early.
    #[error("the dump is truncated: {0}")]
    Truncated(String),
    /// The contents do not match the manifest, or do not parse.
    #[error("the dump is corrupt: {0}")]
    Corrupt(String),
}

#[cfg(test)]
mod tests {
    use super::reader::Event;
    use super::writer::DumpWriter;
    use super::*;

    fn header() -> Header {
        Header {
            format_version: FORMAT_VERSION,
            created_at: "2026-11-29T00:00:00Z".into(),
            server_version: "0.1.0".into(),
            postgres_version: "15.0".into(),
            schema_version: 7,
        }
    }

    fn sample() -> Vec<u8> {
        let mut writer = DumpWriter::new(compress(Vec::new()).unwrap(), &header()).unwrap();
        writer.section("schema", "CREATE TABLE t (a int, b text);\nCREATE INDEX ON t (a);").unwrap();
        writer.begin_table("t", &["a".into(), "b".into()]).unwrap();
        for n in 0..5000 {
            writer.table_data(format!("{n}\trow \\. with a tab\\t and ünicode {n}\n").as_bytes()).unwrap();
        }
        let summary = writer.end_table().unwrap();
        assert_eq!(summary.rows, 5000);
        writer.begin_table("empty", &["x".into()]).unwrap();
        writer.end_table().unwrap();
        writer.section("sequences", "SELECT 1;").unwrap();
        let (encoder, trailer) = writer.finish().unwrap();
        assert_eq!(trailer.tables.len(), 2);
        encoder.finish().unwrap()
    }

    #[test]
    fn a_dump_reads_back_event_by_event_and_verifies() {
        let bytes = sample();
        let mut reader = open(bytes.as_slice()).unwrap();
        assert_eq!(reader.header(), &header());
        let mut events = Vec::new();
        let mut rows = 0;
        while let Some(event) = reader.next_event().unwrap() {
            match event {
                Event::Data(chunk) => {
                    rows += chunk.iter().filter(|&&b| b == b'\n').count();
                }
                other => events.push(other),
            }
        }
        assert_eq!(rows, 5000);
        assert_eq!(
            events[0],
            Event::Section {
                kind: "schema".into(),
                sql: "CREATE TABLE t (a int, b text);\nCREATE INDEX ON t (a);\n".into()
            }
        );
        assert_eq!(events[1], Event::Table { name: "t".into(), copy: "COPY public.t (a, b) FROM stdin;".into() });
        assert_eq!(events[2], Event::TableEnd);
        assert_eq!(events[4], Event::TableEnd);
        assert!(matches!(&events[5], Event::Section { kind, .. } if kind == "sequences"));
        let (_, trailer) = verify(open(bytes.as_slice()).unwrap()).unwrap();
        assert_eq!(trailer.tables[0].rows, 5000);
    }

    #[test]
    fn dumps_of_format_1_with_sha256_still_verify() {
        // Written by the format-1 `backup-db` of 2026-11-29 from a small database.
        let fixture = include_bytes!("../../tests/fixtures/format-v1.sql.zst");
        let (header, trailer) = verify(open(&fixture[..]).unwrap()).unwrap();
        assert_eq!(header.format_version, 1);
        let rows: Vec<u64> = trailer.tables.iter().map(|t| t.rows).collect();
        assert_eq!(rows, [3, 2, 3, 1]);
        assert_eq!(trailer.tables[1].checksum.len(), 64, "SHA-256, read from the field format 1 named sha256");

        let mut plain = Vec::new();
        zstd::stream::copy_decode(&fixture[..], &mut plain).unwrap();
        let position = plain.windows(5).position(|w| w == b"squat").unwrap();
        plain[position] = b'S';
        let recompressed = zstd::encode_all(plain.as_slice(), 1).unwrap();
        let error = open(recompressed.as_slice()).and_then(verify).unwrap_err();
        assert!(matches!(error, DumpError::Corrupt(_)), "format 1's checksums are still checked: {error}");
    }

    #[test]
    fn new_dumps_carry_xxh3_checksums() {
        let (_, trailer) = verify(open(sample().as_slice()).unwrap()).unwrap();
        assert_eq!(trailer.tables[0].checksum.len(), 32, "XXH3-128");
        assert_eq!(trailer.body_checksum.len(), 32);
    }

    #[test]
    fn a_flipped_byte_anywhere_is_detected() {
        let bytes = sample();
        for position in [0, 20, bytes.len() / 3, bytes.len() / 2, bytes.len() - 10, bytes.len() - 1] {
            let mut damaged = bytes.clone();
            damaged[position] ^= 0x40;
            let result = open(damaged.as_slice()).and_then(verify);
            assert!(result.is_err(), "a flip at {position} of {} went unnoticed", bytes.len());
        }
    }

    #[test]
    fn a_flipped_byte_in_the_uncompressed_text_is_detected() {
        // Damage the text before compressing it, so zstd's checksum cannot be what notices.
        let bytes = sample();
        let mut plain = Vec::new();
        zstd::stream::copy_decode(bytes.as_slice(), &mut plain).unwrap();
        let position = plain.len() / 2;
        plain[position] = if plain[position] == b'7' { b'8' } else { b'7' };
        let recompressed = zstd::encode_all(plain.as_slice(), 3).unwrap();
        let error = open(recompressed.as_slice()).and_then(verify).unwrap_err();
        assert!(matches!(error, DumpError::Corrupt(_)), "{error}");
    }

    #[test]
    fn truncation_and_foreign_files_are_named() {
        let bytes = sample();
        for cut in [bytes.len() / 2, bytes.len() - 1] {
            let error = open(&bytes[..cut]).and_then(verify).unwrap_err();
            assert!(matches!(error, DumpError::Truncated(_) | DumpError::Corrupt(_)), "cut at {cut}: {error}");
        }
        let not_zstd = open(&b"PGDMP this is a pg_dump file"[..]).err().expect("refused");
        assert!(matches!(not_zstd, DumpError::NotADump(_)), "{not_zstd}");
        let other_text = zstd::encode_all(&b"hello\nworld\n"[..], 3).unwrap();
        assert!(matches!(open(other_text.as_slice()).err(), Some(DumpError::NotADump(_))));
        assert!(
            matches!(open(&[][..]).err(), Some(DumpError::Truncated(_))),
            "an empty file is a dump cut before its first line"
        );
        let mut endless_comments = b"-- dailyreps-backup-server dump\n".to_vec();
        endless_comments.extend(b"-- a comment, and no manifest after it\n".repeat(10_000));
        let compressed = zstd::encode_all(endless_comments.as_slice(), 1).unwrap();
        let error = open(compressed.as_slice()).err().expect("refused");
        assert!(matches!(&error, DumpError::Corrupt(m) if m == "no manifest line"), "{error}");
    }

    /// A dump's text with `line` where its first row of data was.
    fn with_first_row(line: &[u8]) -> Vec<u8> {
        let mut plain = zstd::decode_all(sample().as_slice()).unwrap();
        let start = plain.windows(2).position(|w| w == b"0\t").unwrap();
        let end = start + plain[start..].iter().position(|&b| b == b'\n').unwrap() + 1;
        plain.splice(start..end, line.iter().copied());
        zstd::encode_all(plain.as_slice(), 1).unwrap()
    }

    #[test]
    fn a_line_longer_than_any_dump_has_is_refused_before_it_is_held() {
        let mut huge = vec![b'x'; MAX_ROW_BYTES + 1];
        huge.push(b'\n');
        let compressed = with_first_row(&huge);
        assert!(compressed.len() < 64 * 1024, "a small file: {}", compressed.len());
        let error = open(compressed.as_slice()).and_then(verify).unwrap_err();
        assert!(matches!(&error, DumpError::Corrupt(m) if m.contains("longer than any")), "{error}");

        // A row as long as the longest document can make still reads (and then fails its checksum).
        let mut longest = vec![b'x'; MAX_ROW_BYTES - 1];
        longest.push(b'\n');
        let error = open(with_first_row(&longest).as_slice()).and_then(verify).unwrap_err();
        assert!(matches!(&error, DumpError::Corrupt(m) if m.contains("match") || m.contains("differ")), "{error}");
    }

    #[test]
    fn a_manifest_with_what_a_terminal_would_run_is_refused() {
        for (field, value) in [("created_at", "\u{1b}]0;owned\u{7}"), ("server_version", "1.0\u{1b}[2J")] {
            let mut header = serde_json::to_value(header()).unwrap();
            header[field] = value.into();
            let text = format!("{MAGIC}\n{MANIFEST_PREFIX}{header}\n");
            let compressed = zstd::encode_all(text.as_bytes(), 1).unwrap();
            let error = open(compressed.as_slice()).err().expect("refused");
            assert!(matches!(&error, DumpError::Corrupt(m) if m.contains(field)), "{field}: {error}");
        }
    }

    #[test]
    fn a_frame_asking_for_a_huge_window_is_refused() {
        let mut encoder = zstd::Encoder::new(Vec::new(), 1).unwrap();
        encoder.set_parameter(zstd::stream::raw::CParameter::WindowLog(27)).unwrap();
        encoder.set_pledged_src_size(None).unwrap();
        std::io::Write::write_all(&mut encoder, &zstd::decode_all(sample().as_slice()).unwrap()).unwrap();
        let bytes = encoder.finish().unwrap();
        assert!(open(bytes.as_slice()).and_then(verify).is_err());
    }

    mod never_panics {
        use proptest::prelude::*;

        use super::*;

        /// Lines that look like a dump's, in any order, to reach every branch of the parser.
        fn dump_like_lines() -> impl Strategy<Value = Vec<String>> {
            let line = prop_oneof![
                Just("-- dailyreps-backup-server dump".to_owned()),
                Just(format!("-- manifest: {}", serde_json::to_string(&header()).unwrap())),
                Just("SET x = 1;".to_owned()),
                Just("-- begin schema".to_owned()),
                Just("-- end schema".to_owned()),
                Just("-- table: t".to_owned()),
                Just("COPY public.t (a) FROM stdin;".to_owned()),
                Just("\\.".to_owned()),
                Just("-- end: {\"tables\":[],\"body_checksum\":\"00\"}".to_owned()),
                "[ -~]{0,40}",
            ];
            proptest::collection::vec(line, 0..40)
        }

        proptest! {
            #[test]
            fn arbitrary_bytes_are_refused_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
                prop_assert!(open(bytes.as_slice()).and_then(verify).is_err());
            }

            #[test]
            fn arbitrary_dump_like_text_never_panics(lines in dump_like_lines(), header_first in any::<bool>()) {
                let mut text = String::new();
                if header_first {
                    text.push_str("-- dailyreps-backup-server dump\n");
                }
                for line in lines {
                    text.push_str(&line);
                    text.push('\n');
                }
                let compressed = zstd::encode_all(text.as_bytes(), 1).unwrap();
                let _ = open(compressed.as_slice()).and_then(verify);
            }

            #[test]
            fn a_cut_or_flipped_dump_is_refused(cut in 0.0f64..1.0, position in 0.0f64..1.0, bit in 0u8..8) {
                let bytes = sample();
                let cut_at = (bytes.len() as f64 * cut) as usize;
                prop_assert!(open(&bytes[..cut_at]).and_then(verify).is_err());
                let mut flipped = bytes.clone();
                let at = ((bytes.len() - 1) as f64 * position) as usize;
                flipped[at] ^= 1 << bit;
                // Some bits of a zstd frame do not shape its content (the window size, padding
                // after a block's last bit-stream): a flip there decodes to the very same dump,
                // so nothing is lost and there is nothing to detect. Any other flip is refused.
                let unchanged = zstd::decode_all(flipped.as_slice()).ok() == Some(zstd::decode_all(bytes.as_slice()).unwrap());
                prop_assert!(
                    unchanged || open(flipped.as_slice()).and_then(verify).is_err(),
                    "a flip at {} changed the dump and went unnoticed", at
                );
            }
        }
    }
}
