//! `verify-backup`: reads a dump through, checking every byte against its manifest; for a
//! backup in a bucket, its stored bytes against the bucket's manifest too.

use std::sync::Arc;

use anyhow::Context;
use serde::Serialize;

use crate::cli::VerifyBackupArgs;
use crate::commands::dump_source::{self, Located, Raw};
use crate::commands::exit::ErrorJson;
use crate::commands::{ExitStatus, TableRows};
use crate::crypt::{self, Identities};
use crate::dump;
use crate::output::{self, Printer};

/// The result of checking a dump: what the text says, for scripts.
#[derive(Serialize)]
struct Checked<'a> {
    ok: bool,
    path: String,
    /// `dump` (every checksum of the dump inside), `stored_bytes` (an encrypted backup's bytes
    /// against its manifest, without an identity to open it), or none when the check failed.
    checked: Option<&'static str>,
    /// The dump's manifest header: when, by which version, at which schema version.
    header: Option<&'a dump::Header>,
    tables: Vec<TableRows>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorJson<'a>>,
}

/// What was checked.
enum Outcome {
    /// The whole dump: every checksum, and the stored bytes where a manifest lists them.
    Dump(dump::Header, dump::Trailer),
    /// Only the stored bytes of an encrypted backup (no identity to open it).
    StoredBytes,
}

/// Runs `verify-backup`.
pub async fn run(args: &VerifyBackupArgs, printer: Printer) -> anyhow::Result<ExitStatus> {
    let located = Located::find(&args.source).await?;
    let identities = dump_source::identities(args.identity.as_deref())?;
    located.check_identity(identities.as_deref())?;
    let path = located.label();
    let (raw, digest) = located.raw().await?;
    let checked = tokio::task::spawn_blocking(move || check(raw, identities)).await?;
    let result = checked.and_then(|outcome| located.check_stored(&digest).map(|()| outcome));
    let (checked, header, tables) = match &result {
        Ok(Outcome::Dump(header, trailer)) => (Some("dump"), Some(header), TableRows::of(trailer)),
        Ok(Outcome::StoredBytes) => (Some("stored_bytes"), None, Vec::new()),
        Err(_) => (None, None, Vec::new()),
    };
    let failed = result.as_ref().err().map(|error| (ExitStatus::of(error), format!("{path}: {error:#}")));
    let error = failed.as_ref().map(|(status, message)| ErrorJson { code: status.name(), message });
    let report = Checked { ok: result.is_ok(), path: path.clone(), checked, header, tables, error };
    if args.json {
        output::print_json(&report).context("could not write the result")?;
    }
    match &result {
        Ok(Outcome::Dump(header, _)) => {
            if !args.json {
                printer.rows(&TableRows::rows(&report.tables)).context("could not write the result")?;
                printer.status(&format!(
                    "{path} is intact: taken {} by version {}, schema version {}",
                    header.created_at, header.server_version, header.schema_version
                ));
            }
            Ok(ExitStatus::Success)
        }
        Ok(Outcome::StoredBytes) => {
            printer.status(&format!(
                "{path}: the stored bytes match its manifest; it is encrypted, so pass --identity FILE to check the dump inside"
            ));
            Ok(ExitStatus::Success)
        }
        Err(_) => {
            let (status, message) = failed.expect("a failed check has its message");
            output::failure(&message);
            Ok(status)
        }
    }
}

/// Reads everything: the dump (decrypted when it is an age file and an identity is given), or
/// only the stored bytes of an encrypted one without an identity.
fn check(raw: Raw, identities: Option<Arc<Identities>>) -> anyhow::Result<Outcome> {
    let mut buffered = std::io::BufReader::new(raw);
    if crypt::peek(&mut buffered)? && identities.is_none() {
        std::io::copy(&mut buffered, &mut std::io::sink())?;
        return Ok(Outcome::StoredBytes);
    }
    let (header, trailer) =
        dump::verify(dump::open(dump_source::compressed(Box::new(buffered), identities.as_ref())?)?)?;
    Ok(Outcome::Dump(header, trailer))
}
