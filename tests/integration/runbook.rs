//! The README's "Disaster recovery", run as written: every line of its shell blocks that is not
//! a `fly` command runs, in order, in one bash, against a local S3 server holding an encrypted
//! backup and a fresh PostgreSQL, with nothing but the age identity, a read-only key and the
//! signing secret. The `fly` lines are checked against flyctl's own flags.
//!
//! What stands in for Fly, and nothing else: the PostgreSQL `fly proxy` would reach is the test
//! cluster (the URL's `localhost:15432/DATABASE` becomes its address and a fresh name), the
//! bucket is a moto bucket (`s3://dailyreps-backups/` becomes its name), `fly deploy` starts
//! `serve` on the restored database, and the deployment's URL is that server's.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::backup_db::{app_url, populated_app};
use crate::common::s3::TestBucket;
use crate::common::{TEST_SECRET, TestDb, binary};

const README: &str = include_str!("../../README.md");
const FLYCTL_FLAGS: &str = include_str!("../fixtures/flyctl/flags.txt");

/// The text under `## heading`, up to the next `## `.
fn section(heading: &str) -> &'static str {
    let start = README.find(&format!("\n## {heading}\n")).unwrap_or_else(|| panic!("README has ## {heading}"));
    let rest = &README[start + heading.len() + 5..];
    &rest[..rest.find("\n## ").unwrap_or(rest.len())]
}

/// The commands of a section's ```sh blocks, in order, with `\`-continued lines joined.
fn commands(section: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut inside = false;
    let mut pending = String::new();
    for line in section.lines().map(str::trim) {
        if line.starts_with("```") {
            inside = line == "```sh";
            continue;
        }
        if !inside || (pending.is_empty() && (line.is_empty() || line.starts_with('#'))) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => pending.push_str(&format!("{} ", head.trim_end())),
            None => commands.push(std::mem::take(&mut pending) + line),
        }
    }
    commands
}

/// flyctl's flags by command (`postgres create`), with `*` for the global ones.
fn flyctl_flags() -> BTreeMap<&'static str, Vec<&'static str>> {
    FLYCTL_FLAGS
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (command, flags) = line.split_once(':').expect("COMMAND: FLAGS");
            (command.trim(), flags.split_whitespace().collect())
        })
        .collect()
}

/// What is wrong with a `fly …` line: a command flyctl's list lacks, or a flag it does not have.
fn fly_line_problems(line: &str, flyctl: &BTreeMap<&str, Vec<&str>>) -> Vec<String> {
    let words: Vec<&str> = line.split_whitespace().skip(1).collect();
    let command = flyctl
        .keys()
        .filter(|command| **command != "*")
        .filter(|command| {
            let parts: Vec<&str> = command.split(' ').collect();
            words.len() >= parts.len() && words[..parts.len()] == parts[..]
        })
        .max_by_key(|command| command.len());
    let Some(command) = command else {
        return vec![format!("`{line}`: no recorded flyctl command")];
    };
    words
        .iter()
        .filter(|word| word.starts_with('-'))
        .map(|word| word.split('=').next().unwrap())
        .filter(|flag| !flyctl[command].contains(flag) && !flyctl["*"].contains(flag))
        .map(|flag| format!("`fly {command}` has no {flag} (in `{line}`)"))
        .collect()
}

#[test]
fn every_fly_line_of_the_runbook_uses_flags_flyctl_has() {
    let flyctl = flyctl_flags();
    let runbook = commands(section("Disaster recovery"));
    let fly: Vec<&String> = runbook.iter().filter(|line| line.starts_with("fly ")).collect();
    assert!(fly.len() >= 4, "create, proxy, secrets, deploy: {fly:?}");
    let problems: Vec<String> = fly.iter().flat_map(|line| fly_line_problems(line, &flyctl)).collect();
    assert!(problems.is_empty(), "{problems:#?}");
    // The check can fail: a flag flyctl lacks is caught.
    assert_eq!(fly_line_problems("fly postgres attach x --app y", &flyctl).len(), 1);
    assert_eq!(fly_line_problems("fly postgres create --name x --no-such-flag", &flyctl).len(), 1);
    // The pinned major and the chosen password, never `attach` (it stops at an existing DATABASE_URL).
    assert!(
        fly.iter().any(|l| l.starts_with("fly postgres create") && l.contains("--image-ref flyio/postgres-flex:16"))
    );
    assert!(fly.iter().any(|l| l.starts_with("fly postgres create") && l.contains("--password")));
    assert!(!fly.iter().any(|l| l.contains("postgres attach")));
}

/// The variables the operator brings, which the runbook's `export X=…` lines stand for.
const BROUGHT: [&str; 5] =
    ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "APP_SIGNING_SECRET"];

/// Whether `line` exports what the operator brings (and only that).
fn brings(line: &str) -> bool {
    let Some(exports) = line.strip_prefix("export ") else { return false };
    let names: Vec<&str> = exports.split_whitespace().filter_map(|word| word.split_once('=')).map(|(n, _)| n).collect();
    let brought = names.iter().filter(|name| BROUGHT.contains(name)).count();
    assert!(brought == 0 || brought == names.len(), "`{line}` mixes what the operator brings with the runbook's own");
    brought > 0
}

/// The database that was lost: `RUNBOOK_SOURCE_DATABASE_URL` (bench/runbook.py times the drill
/// on a large one), else a small one of this test's own.
async fn source() -> (Option<crate::common::TestApp>, String) {
    match std::env::var("RUNBOOK_SOURCE_DATABASE_URL") {
        Ok(url) => (None, url),
        Err(_) => {
            let (app, _) = populated_app().await;
            let url = app_url(&app);
            (Some(app), url)
        }
    }
}

#[tokio::test]
async fn the_disaster_runbook_restores_from_the_bucket_as_written() {
    // What was lost: a database with users and backups, backed up encrypted to the bucket by
    // the backup Machine's key; the operator's laptop holds a key that may only read.
    let (_app, source_url) = source().await;
    let dir = crate::common::scratch_dir("runbook");
    std::fs::create_dir(&dir).unwrap();
    let (_, recipient) = crate::offsite::keypair(&dir, "backup-key.txt");
    let writes: &[&str] =
        &["s3:PutObject", "s3:GetObject", "s3:ListBucket", "s3:DeleteObject", "s3:AbortMultipartUpload"];
    let (bucket, keys) = TestBucket::with_keys(&[writes, &["s3:GetObject", "s3:ListBucket"]]).await;
    let (machine, read_only) = (&keys[0], &keys[1]);
    bucket.enforce_keys().await;
    let mut taking: Vec<(&str, &str)> =
        vec![("DATABASE_URL", &source_url), ("AWS_ENDPOINT_URL_S3", &bucket.endpoint), ("AWS_REGION", "auto")];
    taking.extend(machine.env());
    let url = bucket.url("db");
    let taken = binary::run(&["backup-db", "--to", &url, "--encrypt-to", &recipient], &taking).await;
    assert_eq!(taken.code, 0, "{}", taken.stderr);

    let runbook = commands(section("Disaster recovery"));
    let target = crate::common::with_database(
        &TestDb::empty().await.url,
        &format!("drb_runbook_{}", uuid::Uuid::new_v4().simple()),
    );
    let (authority, database) = target.split_once('@').unwrap().1.split_once('/').unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let deployed = format!("http://127.0.0.1:{port}");
    // Each line timed, for bench/runbook.py (a line backgrounded with `&` takes no time).
    let mut script = vec![
        "set -euo pipefail".to_owned(),
        "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT".to_owned(),
        r#"step() { local t=${EPOCHREALTIME/./}; eval "$1"; echo "runbook step: $(( (${EPOCHREALTIME/./} - t) / 1000 )) ms: $1" >&2; }"#.to_owned(),
    ];
    let step = |line: &str| format!("step '{}'", line.replace('\'', r"'\''"));
    for line in &runbook {
        if line.starts_with("fly deploy") {
            let serve = format!(
                "dailyreps-backup-server serve --bind 127.0.0.1:{port} --metrics-bind 127.0.0.1:0 2>serve.log &"
            );
            script.push(step(&serve));
        } else if line.starts_with("fly ") {
            script.push(format!(": skipped, checked against flyctl: {}", line.replace('\'', "")));
        } else if brings(line) {
            // The operator's own values: the test's take their place (never Tigris's address).
        } else {
            let line = line
                .replace("localhost:15432/dailyreps_backup_server", &format!("{authority}/{database}"))
                .replace("s3://dailyreps-backups/", &format!("s3://{}/", bucket.name))
                .replace("https://dailyreps-backup-server.fly.dev", &deployed);
            script.push(step(&line));
        }
    }
    let binary_dir = std::path::Path::new(env!("CARGO_BIN_EXE_dailyreps-backup-server")).parent().unwrap();
    let path = format!("{}:{}", binary_dir.display(), std::env::var("PATH").unwrap_or_default());
    let started = Instant::now();
    let mut bash = binary::clean(tokio::process::Command::new("bash"));
    let ran = bash
        .args(["-c", &script.join("\n")])
        .current_dir(&dir)
        .env("PATH", path)
        .envs(read_only.env())
        .envs([
            ("AWS_ENDPOINT_URL_S3", bucket.endpoint.as_str()),
            ("AWS_REGION", "auto"),
            ("APP_SIGNING_SECRET", TEST_SECRET),
        ])
        .output()
        .await
        .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let (stdout, stderr) = (String::from_utf8_lossy(&ran.stdout), String::from_utf8_lossy(&ran.stderr));
    assert!(
        ran.status.success(),
        "the runbook failed:\n{}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        script.join("\n")
    );
    for line in stderr.lines().filter(|line| line.starts_with("runbook step: ")) {
        eprintln!("{line}");
    }
    eprintln!("the runbook, from the bucket to a passing smoke test: {seconds:.1} s");

    // Every row came back, and the restored service served the journey.
    assert!(stderr.contains("is intact"), "verify-backup checked it first: {stderr}");
    assert!(stderr.contains(&format!("created database {database}")), "{stderr}");
    assert!(stderr.contains("smoke test passed"), "{stderr}");
    let counts = async |url: &str| {
        let pool = crate::common::connect(url).await;
        let sql = "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM backups), (SELECT count(*) FROM chunks)";
        let counts: (i64, i64, i64) = sqlx::query_as(sql).fetch_one(&pool).await.unwrap();
        pool.close().await;
        counts
    };
    let restored = counts(&target).await;
    assert!(restored.1 > 0, "{restored:?}");
    assert_eq!(restored, counts(&source_url).await, "users, backups and chunks");
    std::fs::remove_dir_all(&dir).unwrap();
}
