//! `verify-backup`: reads a dump through, checking every byte against its manifest.

use std::fs::File;

use anyhow::{Context, bail};
use serde::Serialize;

use crate::cli::VerifyBackupArgs;
use crate::commands::TableRows;
use crate::dump;
use crate::output;

/// The result of checking a dump (`verify-backup` and `restore-db`).
#[derive(Serialize)]
pub struct Checked {
    /// Whether it checked out.
    pub ok: bool,
    /// The file.
    pub path: String,
    /// Its tables and rows.
    pub tables: Vec<TableRows>,
    /// Why not, when not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Checks the dump at `path`; returns its header and trailer.
pub fn check(path: &std::path::Path) -> Result<(dump::Header, dump::Trailer), dump::DumpError> {
    let file = File::open(path)?;
    dump::verify(dump::open(file)?)
}

/// Runs `verify-backup`.
pub fn run(args: &VerifyBackupArgs) -> anyhow::Result<()> {
    let path = args.file.display().to_string();
    let result = check(&args.file);
    let checked = match &result {
        Ok((_, trailer)) => Checked { ok: true, path: path.clone(), tables: TableRows::of(trailer), error: None },
        Err(error) => Checked { ok: false, path: path.clone(), tables: Vec::new(), error: Some(error.to_string()) },
    };
    if args.json {
        output::print_json(&checked).context("could not write the result")?;
    }
    match result {
        Ok((header, _)) => {
            if !args.json {
                output::print_table(&TableRows::table(&checked.tables)).context("could not write the result")?;
                output::status(&format!(
                    "{path} is intact: taken {} by version {}, schema version {}",
                    header.created_at, header.server_version, header.schema_version
                ));
            }
            Ok(())
        }
        Err(error) => bail!("{path}: {error}"),
    }
}
