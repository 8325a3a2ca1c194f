//! Exit codes and `--json` a script can branch on (SPEC.md's CLI section): every command with
//! `--json` prints one JSON document on stdout when it fails, with the code its exit status
//! names, and the same message as its one `error:` line.

use crate::common::{TestDb, binary, s3};

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Asserts that `args` exits `code` with one failure document naming `name`.
fn assert_failure_document(args: &[&str], outcome: &binary::Outcome, code: i32, name: &str) {
    assert_eq!(outcome.code, code, "{args:?}: {}", outcome.stderr);
    let document: serde_json::Value = serde_json::from_str(&outcome.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: stdout is one JSON document ({e}): {:?}", outcome.stdout));
    assert_eq!(document["ok"], false, "{args:?}: {document}");
    assert_eq!(document["error"]["code"], name, "{args:?}: {document}");
    let message = document["error"]["message"].as_str().expect("a message");
    let said = outcome.stderr.lines().find_map(|line| line.strip_prefix("error: ")).expect("an error line");
    assert_eq!(message, said, "{args:?}: the document says what stderr says");
}

#[tokio::test]
async fn every_json_command_that_cannot_reach_its_database_prints_a_failure_document_and_exits_4() {
    let url = format!("postgres://app:s3cret-pa55word@127.0.0.1:{}/dailyreps", closed_port());
    let dir = crate::common::scratch_dir("exit-codes");
    std::fs::create_dir(&dir).unwrap();
    let dump = dir.join("x.sql.zst");
    let dump = dump.to_str().unwrap();
    // A good dump: restore-db checks the file before it connects.
    let db = TestDb::migrated().await;
    let made = binary::run(&["backup-db", "-o", dump], &[("DATABASE_URL", &db.url)]).await;
    assert_eq!(made.code, 0, "{}", made.stderr);
    let commands: &[&[&str]] = &[
        &["backup-db", "--json", "-o", dir.to_str().unwrap()],
        &["restore-db", "--json", dump],
        &["inspect", "--json", "users"],
        &["inspect", "--json", "user", "0b6f9a8e-7f0a-4d5e-9f55-2a3c2b1d4e5f"],
        &["inspect", "--json", "backups"],
        &["inspect", "--json", "stats"],
        &["inspect", "--json", "health"],
        &["prune", "--json", "--older-than", "90d", "--dry-run"],
        &["scrub", "--json"],
        &["reserve", "--json"],
        &["migrate", "status", "--json"],
    ];
    for args in commands {
        let outcome = binary::run(args, &[("DATABASE_URL", &url)]).await;
        assert_failure_document(args, &outcome, 4, "unreachable");
        assert!(!outcome.stdout.contains("s3cret-pa55word") && !outcome.stderr.contains("s3cret-pa55word"));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_bucket_that_does_not_answer_exits_4_and_one_without_credentials_exits_2() {
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let keys = [
        ("AWS_ENDPOINT_URL_S3", endpoint.as_str()),
        ("AWS_REGION", "auto"),
        ("AWS_ACCESS_KEY_ID", s3::ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", s3::SECRET_KEY),
    ];
    for args in [
        &["list-backups", "--json", "s3://nowhere/db"][..],
        &["backup-status", "--json", "s3://nowhere/db"],
        &["verify-backup", "--json", "s3://nowhere/db/latest"],
    ] {
        let outcome = binary::run(args, &keys).await;
        assert_failure_document(args, &outcome, 4, "unreachable");
        assert!(outcome.stderr.contains(&endpoint), "names the endpoint: {}", outcome.stderr);
        let outcome = binary::run(args, &keys[..2]).await;
        assert_failure_document(args, &outcome, 2, "usage");
        assert!(outcome.stderr.contains("AWS_ACCESS_KEY_ID"), "names the setting: {}", outcome.stderr);
    }
}

#[tokio::test]
async fn failures_with_an_answer_are_1_and_a_missing_setting_is_2_with_a_document() {
    let db = TestDb::migrated().await;
    let env = [("DATABASE_URL", db.url.as_str())];
    let args = ["inspect", "--json", "user", "0b6f9a8e-7f0a-4d5e-9f55-2a3c2b1d4e5f"];
    assert_failure_document(&args, &binary::run(&args, &env).await, 1, "failed");
    let args = ["prune", "--json", "--older-than", "1d"];
    let outcome = binary::run(&args, &env).await;
    // Nothing is selected in an empty database, so nothing is asked: a plan with nothing to do.
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    let args = ["smoke-test", "--json"];
    assert_failure_document(&args, &binary::run(&args, &[]).await, 2, "usage");
    let args = ["inspect", "--json", "stats"];
    assert_failure_document(&args, &binary::run(&args, &[]).await, 2, "usage");
}

#[tokio::test]
async fn a_damaged_dump_is_a_verdict_document_with_its_error_and_exit_1() {
    let dir = crate::common::scratch_dir("exit-codes-damaged");
    std::fs::create_dir(&dir).unwrap();
    let dump = dir.join("x.sql.zst");
    std::fs::write(&dump, b"not a dump at all").unwrap();
    let args = ["verify-backup", "--json", dump.to_str().unwrap()];
    let outcome = binary::run(&args, &[]).await;
    assert_failure_document(&args, &outcome, 1, "failed");
    let document: serde_json::Value = serde_json::from_str(&outcome.stdout).unwrap();
    assert_eq!(document["path"], dump.to_str().unwrap(), "the verdict keeps its keys: {document}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_check_that_warns_exits_3_with_its_report() {
    let db = TestDb::migrated().await;
    // A database that was never backed up: the backup check warns.
    let outcome = binary::run(&["inspect", "--json", "health"], &[("DATABASE_URL", &db.url)]).await;
    assert_eq!(outcome.code, 3, "{}", outcome.stderr);
    let report: serde_json::Value = serde_json::from_str(&outcome.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert!(report["checks"].as_array().unwrap().iter().any(|c| c["name"] == "backup" && c["ok"] == false));
    assert!(outcome.stderr.starts_with("warning: "), "{}", outcome.stderr);
}
