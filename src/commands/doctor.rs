//! `doctor`: the operator's side checked in one go, as `fly doctor` checks flyctl's: can this
//! laptop (or Machine) reach the database, is its schema this binary's, can it list the backups,
//! would its identity file open the newest, is the signing secret usable, and how old is the
//! newest backup. Each check is one line with its fix; exit 3 when any warns.

use std::path::Path;

use anyhow::Context;
use serde::Serialize;
use sqlx::PgPool;
use time::OffsetDateTime;

use crate::cli::DoctorArgs;
use crate::commands::{ExitStatus, connect_cli, describe_error};
use crate::config::{MIN_SECRET_BYTES, SigningSecrets};
use crate::crypt::Identities;
use crate::database_health::Check;
use crate::db::{database_backups, migrations};
use crate::output::{self, Printer};
use crate::remote::Bucket;
use crate::remote::catalog::{Manifest, newest};

#[derive(Serialize)]
struct Report {
    ok: bool,
    checks: Vec<Check>,
}

/// Runs `doctor`.
pub async fn run(args: DoctorArgs, printer: Printer) -> anyhow::Result<ExitStatus> {
    let now = OffsetDateTime::now_utc();
    let pool = connect_cli(&args.database).await;
    let mut checks = vec![match &pool {
        Ok(_) => Check::ok("database", "reachable".to_owned()),
        Err(error) => Check::warn("database", describe_error(error)),
    }];
    let pool = pool.ok();
    checks.push(schema(pool.as_ref()).await);
    let (bucket_check, newest_manifest) = bucket(&args, now).await;
    checks.push(bucket_check);
    checks.push(identity(args.identity.as_deref(), newest_manifest.as_ref()));
    checks.push(signing_secret(&args));
    checks.push(newest_backup(pool.as_ref(), newest_manifest.as_ref(), &args, now).await);

    let report = Report { ok: checks.iter().all(|check| check.ok), checks };
    if args.json { output::print_json(&report) } else { printer.rows(&crate::commands::check_rows(&report.checks)) }
        .context("could not write the report")?;
    if report.ok {
        return Ok(ExitStatus::Success);
    }
    let warned: Vec<&str> = report.checks.iter().filter(|check| !check.ok).map(|check| check.name).collect();
    output::warning(&format!("{} of {} checks warn: {}", warned.len(), report.checks.len(), warned.join(", ")));
    Ok(ExitStatus::Warned)
}

async fn schema(pool: Option<&PgPool>) -> Check {
    let Some(pool) = pool else {
        return Check::warn("schema", "not checked: the database cannot be reached".to_owned());
    };
    let status = async { migrations::status(&mut *pool.acquire().await?).await }.await;
    match status {
        Err(error) => Check::warn("schema", format!("cannot read the migrations: {}", describe_error(&error.into()))),
        Ok(status) if status.applied.is_empty() => {
            Check::warn("schema", "no migration applied: an empty database; run `migrate` (or `restore-db`)".into())
        }
        Ok(status) if !status.pending.is_empty() => Check::warn(
            "schema",
            format!("{} migrations pending: run `migrate` (the deploy's release command does)", status.pending.len()),
        ),
        Ok(status) => {
            let version = status.applied.iter().map(|a| a.version).max().unwrap_or_default();
            Check::ok("schema", format!("current: schema version {version}"))
        }
    }
}

/// The bucket check, and the newest complete backup's manifest when the bucket could be listed.
async fn bucket(args: &DoctorArgs, now: OffsetDateTime) -> (Check, Option<Manifest>) {
    let Some(url) = &args.bucket else {
        let fix = "not checked: pass --bucket s3://BUCKET/PREFIX (or set BACKUP_BUCKET_URL) with the bucket's key in \
                   AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY";
        return (Check::warn("bucket", fix.to_owned()), None);
    };
    let listed = match Bucket::from_env(url) {
        Ok(bucket) => bucket.complete().await,
        Err(error) => Err(error),
    };
    match listed {
        Err(error) => (Check::warn("bucket", error.to_string()), None),
        Ok(complete) => {
            let count = complete.len();
            let manifest = newest(&complete, now).map(|listed| listed.manifest.clone());
            let detail = format!("{url} lists with this key: {count} complete backups");
            (Check::ok("bucket", detail), manifest)
        }
    }
}

fn identity(path: Option<&Path>, newest: Option<&Manifest>) -> Check {
    let Some(path) = path else {
        return Check::warn(
            "identity",
            "not checked: pass --identity FILE (or set BACKUP_AGE_IDENTITY_FILE), the age key a restore needs".into(),
        );
    };
    let identities = match Identities::from_file(path) {
        Ok(identities) => identities,
        Err(error) => return Check::warn("identity", error.to_string()),
    };
    match newest {
        None => Check::ok("identity", format!("{} holds an age identity (no backup to match it with)", path.display())),
        Some(manifest) if !manifest.encrypted => {
            Check::warn("identity", format!("the newest backup, {}, is not encrypted", manifest.data))
        }
        Some(manifest) if manifest.recipients.is_empty() => Check::ok(
            "identity",
            format!(
                "{} holds an age identity; {}'s manifest predates recorded recipients",
                path.display(),
                manifest.data
            ),
        ),
        Some(manifest) => match identities.check_opens(&manifest.recipients) {
            Ok(()) => Check::ok("identity", format!("{} opens the newest backup, {}", path.display(), manifest.data)),
            Err(error) => Check::warn("identity", format!("{}: {error}", manifest.data)),
        },
    }
}

fn signing_secret(args: &DoctorArgs) -> Check {
    match SigningSecrets::from_setting(args.signing_secret.as_ref()) {
        Ok(secrets) => {
            let count = secrets.iter().count();
            Check::ok("signing_secret", format!("{count} set, each at least {MIN_SECRET_BYTES} bytes"))
        }
        Err(error) => Check::warn("signing_secret", error.to_string()),
    }
}

async fn newest_backup(
    pool: Option<&PgPool>,
    manifest: Option<&Manifest>,
    args: &DoctorArgs,
    now: OffsetDateTime,
) -> Check {
    // The bucket's newest when it was listed; else what the database recorded of its backups.
    let (at, source) = match (manifest, pool) {
        (Some(manifest), _) => (Some(manifest.created_at), "in the bucket"),
        (None, Some(pool)) => match database_backups::last_success(pool).await {
            Ok(at) => (at, "recorded in the database"),
            Err(error) => {
                return Check::warn("newest_backup", format!("cannot read: {}", describe_error(&error.into())));
            }
        },
        (None, None) => return Check::warn("newest_backup", "not checked: neither the bucket nor the database".into()),
    };
    let Some(at) = at else {
        return Check::warn(
            "newest_backup",
            format!("no backup {source}: schedule `backup-db --to s3://…` (README: Automatic database backups)"),
        );
    };
    let detail = format!("{} {source}", output::when(at, now));
    if now - at > args.max_age.0 {
        return Check::warn(
            "newest_backup",
            format!("{detail}, older than {}: is the schedule running?", args.max_age),
        );
    }
    Check::ok("newest_backup", detail)
}
