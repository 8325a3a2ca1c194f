//! Each bad setting: one clear line naming it, exit 2 (4 when the database does not answer), no
//! panic, no secret.

use crate::common::{TEST_SECRET, TestDb, binary};

fn assert_clean_failure(outcome: &binary::Outcome, code: i32, expected: &[&str], secrets: &[&str]) {
    assert_eq!(outcome.code, code, "stderr: {}", outcome.stderr);
    let lines: Vec<&str> = outcome.stderr.lines().filter(|line| line.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "one error line: {}", outcome.stderr);
    for fragment in expected {
        assert!(lines[0].contains(fragment), "{fragment:?} missing from {:?}", lines[0]);
    }
    for secret in secrets {
        assert!(
            !outcome.stderr.contains(secret) && !outcome.stdout.contains(secret),
            "{secret:?} leaked: {}",
            outcome.stderr
        );
    }
    assert!(!outcome.stderr.contains("panicked") && !outcome.stderr.contains("backtrace"), "{}", outcome.stderr);
}

#[tokio::test]
async fn missing_database_url_is_named() {
    let outcome = binary::run(&["serve"], &[("APP_SIGNING_SECRET", TEST_SECRET)]).await;
    assert_clean_failure(&outcome, 2, &["DATABASE_URL is not set", "serve --dev"], &[TEST_SECRET]);
    let outcome = binary::run(&["migrate"], &[]).await;
    assert_clean_failure(&outcome, 2, &["DATABASE_URL is not set"], &[]);
}

#[tokio::test]
async fn malformed_database_url_is_named_without_its_password() {
    let url = "postgres://app:s3cret-pa55word@db.internal:notaport/dailyreps";
    let outcome = binary::run(&["serve"], &[("DATABASE_URL", url), ("APP_SIGNING_SECRET", TEST_SECRET)]).await;
    assert_clean_failure(&outcome, 2, &["DATABASE_URL is invalid"], &["s3cret-pa55word", TEST_SECRET]);
    let outcome = binary::run(&["migrate", "--database-url", "mysql://root:s3cret-pa55word@x/y"], &[]).await;
    assert_clean_failure(&outcome, 2, &["DATABASE_URL is invalid", "postgres://"], &["s3cret-pa55word"]);
}

#[tokio::test]
async fn unreachable_database_names_host_and_port_and_suggests_the_proxy() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("postgres://app:s3cret-pa55word@127.0.0.1:{port}/dailyreps");
    let outcome = binary::run(&["migrate", "status"], &[("DATABASE_URL", &url)]).await;
    // Refused is said as refused (at once), not as a timeout after retrying.
    assert_clean_failure(
        &outcome,
        4,
        &[&format!("127.0.0.1:{port}: connection refused"), "fly proxy"],
        &["s3cret-pa55word"],
    );
    let outcome = binary::run(&["serve"], &[("DATABASE_URL", &url), ("APP_SIGNING_SECRET", TEST_SECRET)]).await;
    assert_clean_failure(
        &outcome,
        4,
        &[&format!("could not connect to PostgreSQL at 127.0.0.1:{port}")],
        &["s3cret-pa55word"],
    );
}

#[tokio::test]
async fn an_answer_from_postgres_is_its_own_line_without_the_proxy_hint() {
    let db = TestDb::migrated().await;
    let missing_database = crate::common::with_database(&db.url, "no_such_database");
    let outcome = binary::run(&["migrate", "status"], &[("DATABASE_URL", &missing_database)]).await;
    assert_clean_failure(
        &outcome,
        1,
        &["database \"no_such_database\" does not exist", "check the database name"],
        &[],
    );
    assert!(!outcome.stderr.contains("fly proxy"), "PostgreSQL answered: {}", outcome.stderr);

    let missing_role = db.url.replacen("postgres://postgres@", "postgres://no_such_role@", 1);
    assert_ne!(missing_role, db.url);
    let outcome = binary::run(&["migrate", "status"], &[("DATABASE_URL", &missing_role)]).await;
    assert_clean_failure(&outcome, 1, &["role \"no_such_role\" does not exist", "check the user name"], &[]);
    assert!(!outcome.stderr.contains("fly proxy"), "PostgreSQL answered: {}", outcome.stderr);
}

#[tokio::test]
async fn an_unmigrated_database_says_to_run_migrate() {
    let db = TestDb::empty().await;
    let dir = crate::common::scratch_dir("unmigrated");
    let dump = dir.join("x.sql.zst");
    let dump = dump.to_str().unwrap();
    for args in [
        &["inspect", "users"][..],
        &["inspect", "stats"],
        &["prune", "--keep-last", "1", "--dry-run"],
        &["backup-db", "-o", dump],
    ] {
        let outcome = binary::run(args, &[("DATABASE_URL", &db.url)]).await;
        assert_clean_failure(&outcome, 1, &["does not exist", "run `migrate` first"], &[]);
        assert_eq!(outcome.stderr.matches("does not exist").count(), 1, "{args:?}, said once: {}", outcome.stderr);
        assert!(!outcome.stderr.contains("at line"), "{}", outcome.stderr);
    }
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "backup-db left nothing behind");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn timeouts_take_a_duration_on_the_command_line_and_seconds_from_the_environment() {
    let outcome = binary::run(&["serve", "--body-timeout", "60"], &[]).await;
    assert_eq!(outcome.code, 2, "a bare number is a usage error: {}", outcome.stderr);
    assert!(outcome.stderr.contains("has no unit"), "{}", outcome.stderr);
    let db = TestDb::migrated().await;
    // The environment's seconds are read: zero of them is refused, naming the variable.
    let env = [("DATABASE_URL", db.url.as_str()), ("APP_SIGNING_SECRET", TEST_SECRET), ("BODY_TIMEOUT_SECONDS", "0")];
    let outcome = binary::run(&["serve"], &env).await;
    assert_clean_failure(
        &outcome,
        2,
        &["--body-timeout (BODY_TIMEOUT_SECONDS) must be longer than 0s"],
        &[TEST_SECRET],
    );
    // The flag wins over its variable, as for every setting: its zero is the one refused.
    let env_5 = [env[0], env[1], ("BODY_TIMEOUT_SECONDS", "5")];
    let outcome = binary::run(&["serve", "--body-timeout", "0s"], &env_5).await;
    assert_clean_failure(
        &outcome,
        2,
        &["--body-timeout (BODY_TIMEOUT_SECONDS) must be longer than 0s"],
        &[TEST_SECRET],
    );
    let outcome = binary::run(&["serve", "--request-timeout", "0s"], &env[..2]).await;
    assert_clean_failure(
        &outcome,
        2,
        &["--request-timeout (REQUEST_TIMEOUT_SECONDS) must be longer than 0s"],
        &[TEST_SECRET],
    );
}

#[tokio::test]
async fn missing_or_short_signing_secret_is_named_without_the_secret() {
    let db = TestDb::migrated().await;
    let outcome = binary::run(&["serve"], &[("DATABASE_URL", &db.url)]).await;
    assert_clean_failure(&outcome, 2, &["APP_SIGNING_SECRET is not set", "32 bytes"], &[]);
    let short = "tooshort-but-secret";
    let outcome = binary::run(&["serve"], &[("DATABASE_URL", &db.url), ("APP_SIGNING_SECRET", short)]).await;
    assert_clean_failure(&outcome, 2, &["APP_SIGNING_SECRET is invalid", "at least 32"], &[short]);
}

#[tokio::test]
async fn a_port_in_use_is_named_with_its_setting() {
    let db = TestDb::migrated().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let outcome = binary::run(
        &["serve", "--bind", &addr, "--metrics-bind", "127.0.0.1:0"],
        &[("DATABASE_URL", &db.url), ("APP_SIGNING_SECRET", TEST_SECRET)],
    )
    .await;
    assert_clean_failure(&outcome, 1, &[&format!("could not listen on {addr}"), "PORT"], &[TEST_SECRET]);
}

#[tokio::test]
async fn usage_errors_exit_2_and_help_shows_the_environment_fallbacks() {
    let outcome = binary::run(&["serve", "--no-such-flag"], &[]).await;
    assert_eq!(outcome.code, 2, "{}", outcome.stderr);
    let outcome = binary::run(&["frobnicate"], &[]).await;
    assert_eq!(outcome.code, 2, "{}", outcome.stderr);
    let help = binary::run(&["serve", "--help"], &[]).await;
    assert_eq!(help.code, 0);
    for env in
        ["[env: DATABASE_URL", "[env: APP_SIGNING_SECRET", "[env: PORT", "[env: METRICS_BIND", "[env: LOG_FORMAT"]
    {
        assert!(help.stdout.contains(env), "{env} missing from --help");
    }
}

#[tokio::test]
async fn a_budget_that_cannot_hold_one_maximal_gzip_upload_is_refused_with_the_minimum() {
    let db = TestDb::migrated().await;
    let env = [("DATABASE_URL", db.url.as_str()), ("APP_SIGNING_SECRET", TEST_SECRET)];
    let outcome = binary::run(&["serve", "--memory-budget-mb", "30"], &env).await;
    assert_clean_failure(&outcome, 2, &["MEMORY_BUDGET_MB (30 MiB)", "needs at least 41 MiB"], &[TEST_SECRET]);
    let too_large = binary::run(&["serve", "--max-backup-bytes", "16777217"], &env).await;
    assert_eq!(too_large.code, 2, "documents over 16 MiB could not be dumped: {}", too_large.stderr);
}

#[tokio::test]
async fn quiet_keeps_stderr_for_errors_and_colour_honours_no_color() {
    let db = TestDb::empty().await;
    let env = [("DATABASE_URL", db.url.as_str())];
    let loud = binary::run(&["migrate"], &env).await;
    assert!(loud.stderr.contains("applied"), "{}", loud.stderr);
    let quiet = binary::run(&["migrate", "--quiet"], &env).await;
    assert_eq!((quiet.code, quiet.stderr.as_str()), (0, ""), "nothing but errors on stderr");
    let failed = binary::run(&["-q", "inspect", "user", &uuid::Uuid::new_v4().to_string()], &env).await;
    assert_eq!(failed.code, 1);
    assert!(failed.stderr.starts_with("error: no user"), "errors still show: {}", failed.stderr);

    // Status cells are coloured when forced (as on a terminal), never with NO_COLOR.
    let health = |extra: &'static [(&'static str, &'static str)]| {
        let mut env = vec![("DATABASE_URL", db.url.as_str())];
        env.extend_from_slice(extra);
        async move { binary::run(&["inspect", "health"], &env).await.stdout }
    };
    let piped = health(&[]).await;
    assert!(piped.lines().any(|line| line.starts_with("version\tok\t")) && !piped.contains('\u{1b}'), "{piped}");
    let forced = health(&[("CLICOLOR_FORCE", "1")]).await;
    assert!(forced.contains('\u{1b}'), "coloured: {forced:?}");
    let no_color = health(&[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")]).await;
    assert!(!no_color.contains('\u{1b}'), "{no_color:?}");
}
