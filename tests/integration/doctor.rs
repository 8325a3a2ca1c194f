//! `doctor`: each of the operator's settings checked, one line each with its fix, exit 3 when
//! any warns.

use serde_json::Value;

use crate::backup_db::{app_url, populated_app};
use crate::common::s3::TestBucket;
use crate::common::{TEST_SECRET, TestDb, binary};

/// An age key pair: (identity file's path, public key).
fn keypair(dir: &std::path::Path, name: &str) -> (String, String) {
    let (path, public) = crate::offsite::keypair(dir, name);
    (path.to_str().unwrap().to_owned(), public)
}

/// `doctor --json` with `env`: (exit code, check name → (ok, detail)).
async fn doctor(env: &[(&str, &str)]) -> (i32, Vec<(String, bool, String)>) {
    let outcome = binary::run(&["doctor", "--json"], env).await;
    let report: Value = serde_json::from_str(&outcome.stdout).unwrap_or_else(|e| panic!("{e}: {}", outcome.stdout));
    let checks = report["checks"].as_array().unwrap().iter().map(|check| {
        (check["name"].as_str().unwrap().to_owned(), check["ok"].as_bool().unwrap(), check["detail"].to_string())
    });
    (outcome.code, checks.collect())
}

#[tokio::test]
async fn a_laptop_set_up_for_the_worst_day_passes_every_check() {
    let (app, _) = populated_app().await;
    let dir = crate::common::scratch_dir("doctor");
    std::fs::create_dir(&dir).unwrap();
    let (identity, recipient) = keypair(&dir, "backup-key.txt");
    let bucket = TestBucket::new().await;
    let url = bucket.url("db");
    let db = app_url(&app);
    let mut env: Vec<(&str, String)> = bucket.env();
    env.push(("DATABASE_URL", db));
    env.push(("BACKUP_AGE_RECIPIENTS", recipient));
    env.push(("BACKUP_BUCKET_URL", url.clone()));
    env.push(("BACKUP_AGE_IDENTITY_FILE", identity));
    env.push(("APP_SIGNING_SECRET", TEST_SECRET.to_owned()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let taken = binary::run(&["backup-db", "--to", &url], &env).await;
    assert_eq!(taken.code, 0, "{}", taken.stderr);

    let (code, checks) = doctor(&env).await;
    let names: Vec<&str> = checks.iter().map(|(name, _, _)| name.as_str()).collect();
    assert_eq!(names, ["database", "schema", "bucket", "identity", "signing_secret", "newest_backup"]);
    assert!(checks.iter().all(|(_, ok, _)| *ok), "{checks:#?}");
    assert_eq!(code, 0);
    assert!(checks[3].2.contains("opens the newest backup"), "{checks:#?}");
    assert!(checks.iter().all(|(_, _, detail)| !detail.contains(TEST_SECRET)), "no secret in the report");

    // Another identity file: named with both sides' keys, and the exit says a check warns.
    let (other, other_public) = keypair(&dir, "other.txt");
    let mut wrong = env.clone();
    wrong.retain(|(k, _)| *k != "BACKUP_AGE_IDENTITY_FILE");
    wrong.push(("BACKUP_AGE_IDENTITY_FILE", &other));
    let (code, checks) = doctor(&wrong).await;
    assert_eq!(code, 3);
    let identity = checks.iter().find(|(name, _, _)| name == "identity").unwrap();
    assert!(!identity.1 && identity.2.contains(&other_public) && identity.2.contains("none of them"), "{identity:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn each_missing_piece_warns_with_its_fix() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let unreachable = format!("postgres://app:pw@127.0.0.1:{closed}/dailyreps");
    let (code, checks) = doctor(&[("DATABASE_URL", &unreachable), ("APP_SIGNING_SECRET", "short")]).await;
    assert_eq!(code, 3);
    let fixes: Vec<(&str, &str)> = vec![
        ("database", "fly proxy"),
        ("schema", "cannot be reached"),
        ("bucket", "--bucket"),
        ("identity", "--identity"),
        ("signing_secret", "at least 32"),
        ("newest_backup", "not checked"),
    ];
    for ((name, ok, detail), (expected, fix)) in checks.iter().zip(fixes) {
        assert_eq!((name.as_str(), *ok), (expected, false), "{checks:#?}");
        assert!(detail.contains(fix), "{name}: {fix:?} missing from {detail}");
    }

    // A reachable database that was never migrated, nor backed up.
    let empty = TestDb::empty().await;
    let (_, checks) = doctor(&[("DATABASE_URL", &empty.url)]).await;
    assert!(checks[0].1, "{checks:#?}");
    assert!(!checks[1].1 && checks[1].2.contains("run `migrate`"), "{checks:#?}");
    let migrated = TestDb::migrated().await;
    let (_, checks) = doctor(&[("DATABASE_URL", &migrated.url)]).await;
    assert!(checks[1].1, "{checks:#?}");
    assert!(!checks[5].1 && checks[5].2.contains("no backup recorded in the database"), "{checks:#?}");
}
