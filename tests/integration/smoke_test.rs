//! `smoke-test` against a real server: passes on a healthy one, fails at the right step
//! otherwise, and never leaves its account behind.

use serde_json::Value;

use crate::common::{TEST_SECRET, TestApp, binary};

async fn smoke(app_address: &str, secret: &str) -> (binary::Outcome, Value) {
    let outcome = binary::run(
        &["smoke-test", "--json", "--wait", "5s"],
        &[("SMOKE_TEST_URL", app_address), ("APP_SIGNING_SECRET", secret)],
    )
    .await;
    let report = serde_json::from_str(&outcome.stdout).unwrap_or_else(|e| panic!("{e}: {}", outcome.stdout));
    (outcome, report)
}

async fn users_left(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(&app.pool).await.unwrap()
}

fn step<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name}: {report}"))
}

#[tokio::test]
async fn a_healthy_deployment_passes_every_step_and_is_left_as_found() {
    let app = TestApp::spawn().await;
    let (outcome, report) = smoke(&app.address, TEST_SECRET).await;
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    assert_eq!(report["ok"], true);
    assert_eq!(report["url"], app.address.as_str());
    let names: Vec<&str> = report["steps"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "health",
            "readiness",
            "register",
            "account",
            "upload",
            "idempotent retry",
            "list",
            "restore",
            "not modified",
            "bad signature refused",
            "oversized refused",
            "delete backup",
            "delete account",
            "token refused"
        ]
    );
    for step in report["steps"].as_array().unwrap() {
        assert_eq!(step["ok"], true, "{step}");
        assert!(step["ms"].is_u64() && step["status"].is_u64(), "{step}");
    }
    assert_eq!(users_left(&app).await, 0);
}

#[tokio::test]
async fn another_secret_fails_at_register_with_the_servers_reason() {
    let app = TestApp::spawn().await;
    let (outcome, report) = smoke(&app.address, "a-secret-the-server-does-not-have-0123456789").await;
    assert_eq!(outcome.code, 1);
    assert_eq!(report["ok"], false);
    let register = step(&report, "register");
    assert_eq!(register["ok"], false);
    assert_eq!(register["status"], 401);
    assert!(register["error"].as_str().unwrap().contains("bad_signature"), "{register}");
    assert!(outcome.stderr.contains("step `register` failed (401)"), "{}", outcome.stderr);
    assert_eq!(users_left(&app).await, 0);
}

#[tokio::test]
async fn a_failure_after_registering_still_deletes_the_account() {
    let app = TestApp::spawn().await;
    sqlx::raw_sql(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'disk on fire'; END $$; \
         CREATE TRIGGER refuse_backups BEFORE INSERT ON backups FOR EACH ROW EXECUTE FUNCTION refuse();",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let (outcome, report) = smoke(&app.address, TEST_SECRET).await;
    assert_eq!(outcome.code, 1);
    let upload = step(&report, "upload");
    assert_eq!(upload["status"], 500, "{upload}");
    assert!(!upload["error"].as_str().unwrap().contains("disk on fire"), "internals stay inside: {upload}");
    assert_eq!(step(&report, "clean up")["ok"], true);
    assert!(outcome.stderr.contains("step `upload` failed (500)"), "{}", outcome.stderr);
    assert_eq!(users_left(&app).await, 0);
}

#[tokio::test]
async fn a_database_outage_fails_at_readiness() {
    let cluster = crate::common::start_cluster().await;
    let admin = crate::common::connect(&cluster.url("postgres")).await;
    dailyreps_backup_server::db::migrations::apply(&admin).await.unwrap();
    admin.close().await;
    let app = TestApp::spawn_on(&cluster.url("postgres")).await;
    let _cluster = tokio::task::spawn_blocking(move || cluster.stop_server().map(|()| cluster)).await.unwrap().unwrap();

    let (outcome, report) = smoke(&app.address, TEST_SECRET).await;
    assert_eq!(outcome.code, 1);
    assert_eq!(step(&report, "health")["ok"], true);
    let readiness = step(&report, "readiness");
    assert_eq!(readiness["status"], 503);
    assert!(readiness["error"].as_str().unwrap().contains("database unreachable"), "{readiness}");
    assert_eq!(report["steps"].as_array().unwrap().len(), 2, "nothing was created, so nothing to clean");
}

#[tokio::test]
async fn the_deployment_comes_from_smoke_test_url_or_dailyreps_url() {
    let app = TestApp::spawn().await;
    let outcome = binary::run(
        &["smoke-test", "--json", "--wait", "5s"],
        &[("DAILYREPS_URL", app.address.as_str()), ("APP_SIGNING_SECRET", TEST_SECRET)],
    )
    .await;
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    let report: Value = serde_json::from_str(&outcome.stdout).unwrap();
    assert_eq!(report["url"], app.address.as_str());
    let outcome = binary::run(&["smoke-test"], &[("APP_SIGNING_SECRET", TEST_SECRET)]).await;
    assert_eq!(outcome.code, 2, "{}", outcome.stderr);
    assert!(outcome.stderr.contains("SMOKE_TEST_URL or DAILYREPS_URL"), "{}", outcome.stderr);
}

#[tokio::test]
async fn nothing_listening_fails_at_health_after_the_wait() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let outcome = binary::run(
        &["smoke-test", "--url", &format!("http://127.0.0.1:{port}"), "--wait", "1s"],
        &[("APP_SIGNING_SECRET", TEST_SECRET)],
    )
    .await;
    assert_eq!(outcome.code, 1);
    assert!(outcome.stderr.contains("step `health` failed (no answer)"), "{}", outcome.stderr);
    assert!(outcome.stdout.contains("health"), "the table is printed: {}", outcome.stdout);
    // It tried for the whole wait, and says how long it did, by its own clock.
    let waited: f64 = outcome
        .stderr
        .split("no healthy answer in ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|seconds| seconds.parse().ok())
        .unwrap_or_else(|| panic!("says how long it waited: {}", outcome.stderr));
    assert!(waited >= 1.0, "gave up after {waited} s of a 1 s wait: {}", outcome.stderr);
    assert!(outcome.stderr.contains("--wait 1 second)"), "{}", outcome.stderr);
}

#[tokio::test]
async fn an_interrupted_run_still_deletes_its_account() {
    let app = TestApp::spawn().await;
    // Hold up the upload step: its statement waits for this lock.
    let mut blocker = app.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE backups IN ACCESS EXCLUSIVE MODE").execute(&mut *blocker).await.unwrap();
    let child = binary::command()
        .args(["smoke-test", "--json", "--wait", "5s", "--url", &app.address])
        .env("APP_SIGNING_SECRET", TEST_SECRET)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    crate::common::wait_until_blocked_on_lock(&app.pool, "").await;
    let pid = child.id().unwrap().to_string();
    assert!(tokio::process::Command::new("kill").args(["-INT", &pid]).status().await.unwrap().success());
    blocker.rollback().await.unwrap();
    let output = child.wait_with_output().await.unwrap();
    assert_eq!(output.status.code(), Some(130), "Ctrl-C exits 130, as everywhere");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(step(&report, "clean up")["ok"], true, "{report}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("interrupted"));
    assert_eq!(users_left(&app).await, 0);
}
