//! `backup-status s3://… --max-age 26h`: is the newest complete backup in the bucket recent,
//! and as large as the ones before it? Exit 3 when not, so a second place (a CI job on a
//! schedule, a cron elsewhere) can watch the backups independently of the job that takes them.

use anyhow::Context;
use serde::Serialize;
use time::OffsetDateTime;

use crate::cli::BackupStatusArgs;
use crate::commands::ExitStatus;
use crate::output::{self, Printer};
use crate::remote::Bucket;
use crate::remote::catalog::{Listed, newest};
use crate::remote::retention::is_ahead;

/// How many earlier backups the newest is compared with.
const COMPARED_WITH: usize = 7;
/// The newest is suspicious below this share of the earlier ones' median size: a near-empty
/// dump is the classic silent failure.
const SMALL_SHARE: f64 = 0.5;

#[derive(Serialize)]
struct Status {
    ok: bool,
    newest: Option<Newest>,
    age_seconds: Option<i64>,
    problems: Vec<String>,
}

#[derive(Serialize)]
struct Newest {
    key: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    bytes: u64,
}

/// Runs `backup-status`.
pub async fn run(args: &BackupStatusArgs, printer: Printer) -> anyhow::Result<ExitStatus> {
    let bucket = Bucket::from_env(&args.url)?;
    let complete = bucket.complete().await?;
    let now = OffsetDateTime::now_utc();
    let problems = problems(&complete, now, args.max_age.0, &args.url.to_string());
    let newest = newest(&complete, now).map(|listed| Newest {
        key: bucket.url.key(&listed.manifest.data),
        created_at: listed.manifest.created_at,
        bytes: listed.manifest.bytes,
    });
    let status = Status {
        ok: problems.is_empty(),
        age_seconds: newest.as_ref().map(|n| (now - n.created_at).whole_seconds()),
        newest,
        problems,
    };
    if args.json {
        output::print_json(&status).context("could not write the status")?;
    } else if let Some(newest) = &status.newest {
        printer.status(&format!(
            "newest backup: {} ({}, {})",
            newest.key,
            output::ago(newest.created_at, now),
            output::bytes(i64::try_from(newest.bytes).unwrap_or(i64::MAX))
        ));
    }
    if !status.ok {
        output::warning(&status.problems.join("; "));
        return Ok(ExitStatus::Warned);
    }
    if !args.json {
        printer.status("ok");
    }
    Ok(ExitStatus::Success)
}

/// What is wrong with the backups listed (newest first).
fn problems(complete: &[Listed], now: OffsetDateTime, max_age: std::time::Duration, url: &str) -> Vec<String> {
    let mut problems: Vec<String> = complete
        .iter()
        .filter(|listed| is_ahead(listed.manifest.created_at, now))
        .map(|listed| {
            format!(
                "{} is dated in the future, {} (a clock that was wrong, or a copy renamed); it is not counted as the newest",
                listed.manifest.data,
                output::rfc3339(listed.manifest.created_at)
            )
        })
        .collect();
    let Some(newest) = newest(complete, now) else {
        problems.push(format!("{url} holds no complete backup"));
        return problems;
    };
    let age = now - newest.manifest.created_at;
    if age > max_age {
        problems.push(format!(
            "the newest backup is {} old, more than {}",
            output::ago(newest.manifest.created_at, now).trim_end_matches(" ago"),
            crate::config::HumanDuration(max_age)
        ));
    }
    let mut earlier: Vec<u64> = complete
        .iter()
        .filter(|l| l.manifest.created_at < newest.manifest.created_at)
        .take(COMPARED_WITH)
        .map(|l| l.manifest.bytes)
        .collect();
    if !earlier.is_empty() {
        earlier.sort_unstable();
        let median = earlier[earlier.len() / 2];
        if (newest.manifest.bytes as f64) < SMALL_SHARE * median as f64 {
            problems.push(format!(
                "the newest backup is {} bytes, less than half the {} of the ones before it",
                newest.manifest.bytes, median
            ));
        }
    }
    problems
}
