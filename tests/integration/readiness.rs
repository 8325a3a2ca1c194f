use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dailyreps_backup_server::config::ApiSettings;
use dailyreps_backup_server::config::Limits;
use dailyreps_backup_server::db::migrations;
use dailyreps_backup_server::local_postgres::LocalCluster;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::common::{self, TestApp, TestDb};

#[tokio::test]
async fn readyz_reports_the_schema_version_of_a_migrated_database() {
    let app = TestApp::spawn().await;
    let response = app.get("/readyz").await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["schema_version"], migrations::latest_known_version());
}

#[tokio::test]
async fn readyz_is_503_naming_the_missing_migrations_until_migrate_runs() {
    let db = TestDb::empty().await;
    let app = TestApp::spawn_on(&db.url).await;
    let response = app.get("/readyz").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("schema is behind"), "{message}");
    assert!(message.contains(&migrations::latest_known_version().to_string()), "{message}");

    migrations::apply(&app.pool).await.unwrap();
    // The last answer is served for up to a second.
    wait_for_readyz(&app, StatusCode::OK).await;
}

/// Waits until `/readyz` answers `status` (it serves a check at most a second old).
pub(crate) async fn wait_for_readyz(app: &TestApp, status: StatusCode) -> reqwest::Response {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let response = app.get("/readyz").await;
        if response.status() == status {
            return response;
        }
        assert!(Instant::now() < deadline, "still {} 15 s on", response.status());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A deploy in progress: the database has a migration this binary does not know. Ready while
/// that migration says this binary may serve on it; 503, saying why, when it needs a newer one
/// or says nothing.
#[tokio::test]
async fn a_newer_schema_is_ready_only_while_it_says_this_binary_may_serve_on_it() {
    let known = migrations::latest_known_version();
    for (oldest, ready) in [(Some(known), true), (Some(99990101000000), false), (None, false)] {
        let app = TestApp::spawn().await;
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (99990101000000, 'from a newer deploy', true, '\\x00', 1)",
        )
        .execute(&app.pool)
        .await
        .unwrap();
        if let Some(oldest) = oldest {
            sqlx::query("INSERT INTO schema_compatibility (version, oldest_compatible) VALUES (99990101000000, $1)")
                .bind(oldest)
                .execute(&app.pool)
                .await
                .unwrap();
        }
        let response = app.get("/readyz").await;
        let body: Value = response.json().await.unwrap();
        if ready {
            assert_eq!(body["schema_version"], 99990101000000_i64, "{body}");
            assert_eq!(body["binary_schema_version"], known, "{body}");
        } else {
            let message = body["error"]["message"].as_str().unwrap_or_else(|| panic!("{oldest:?}: {body}"));
            assert!(
                message.contains("newer than this binary's") && message.contains("replace this machine"),
                "{message}"
            );
        }
    }
}

/// Every migration from 6 on says which binaries may serve on it (`schema_compatibility`): the
/// release before reads it during the next deploy.
#[tokio::test]
async fn every_migration_since_6_says_which_binaries_may_serve_on_it() {
    let app = TestApp::spawn().await;
    let unlisted: Vec<i64> = sqlx::query_scalar(
        "SELECT version FROM _sqlx_migrations WHERE version >= 20261202000006 \
         EXCEPT SELECT version FROM schema_compatibility ORDER BY 1",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(unlisted, Vec::<i64>::new(), "add a row to schema_compatibility in each new migration");
}

/// A cluster of the test's own (it is stopped half-way), migrated.
async fn migrated_cluster() -> LocalCluster {
    let cluster = common::start_cluster().await;
    let admin = common::connect(&cluster.url("postgres")).await;
    migrations::apply(&admin).await.unwrap();
    admin.close().await;
    cluster
}

async fn stop_database(cluster: LocalCluster) -> LocalCluster {
    tokio::task::spawn_blocking(move || {
        cluster.stop_server().unwrap();
        cluster
    })
    .await
    .unwrap()
}

/// Starts the stopped cluster again; keep what it returns, since dropping it stops it.
async fn restart_database(cluster: LocalCluster) -> LocalCluster {
    tokio::task::spawn_blocking(move || cluster.start_server().map(|()| cluster)).await.unwrap().unwrap()
}

#[tokio::test]
async fn readyz_goes_503_while_the_database_is_down_and_recovers_without_a_restart() {
    let cluster = migrated_cluster().await;
    let app = TestApp::spawn_on(&cluster.url("postgres")).await;
    assert_eq!(app.get("/readyz").await.status(), StatusCode::OK);

    let cluster = stop_database(cluster).await;
    let started = Instant::now();
    let down = wait_for_readyz(&app, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(started.elapsed() < Duration::from_secs(10), "readyz took {:?} to answer", started.elapsed());
    let body: Value = down.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("database unreachable"), "{body}");
    // Liveness does not depend on the database; the API says 503, not 500.
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    let api = app.signed(reqwest::Method::POST, "/api/users", b"").send().await.unwrap();
    assert_eq!(api.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(api.headers().contains_key("retry-after"));
    assert_eq!(crate::common::error_code(api).await, "unavailable");

    // Keep the cluster: dropping it stops it.
    let _cluster = restart_database(cluster).await;
    wait_for_readyz(&app, StatusCode::OK).await;
}

/// What the uploaders of the outage test have seen so far.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    created: usize,
    unavailable: usize,
}

#[tokio::test]
async fn under_load_a_database_outage_gets_prompt_503s_and_uploads_resume_when_it_returns() {
    let cluster = migrated_cluster().await;
    // The bound under test: no request waits longer than this for the database.
    let request_timeout = Duration::from_secs(2);
    let limits = Limits { request_timeout, ..common::test_settings().limits };
    let settings = ApiSettings { limits, ..common::test_settings() };
    let app = Arc::new(TestApp::spawn_on_with(&cluster.url("postgres"), settings).await);
    let (seen, mut progress) = watch::channel(Seen::default());
    let seen = Arc::new(seen);
    let stop = Arc::new(AtomicBool::new(false));
    let mut uploaders = JoinSet::new();
    for client in 0..8 {
        let (app, seen, stop) = (app.clone(), seen.clone(), stop.clone());
        let user = app.register().await;
        uploaders.spawn(async move {
            let mut answers = Vec::new();
            for n in 0.. {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let started = Instant::now();
                let response = app.upload(&user, format!(r#"{{"client": {client}, "n": {n}}}"#).as_bytes()).await;
                let status = response.status();
                answers.push((status, started.elapsed()));
                seen.send_modify(|seen| match status {
                    StatusCode::CREATED => seen.created += 1,
                    StatusCode::SERVICE_UNAVAILABLE => seen.unavailable += 1,
                    _ => {}
                });
            }
            answers
        });
    }
    let wait_for = |progress: &mut watch::Receiver<Seen>, what: &'static str, done: Box<dyn Fn(&Seen) -> bool>| {
        let mut progress = progress.clone();
        async move {
            let waited = tokio::time::timeout(Duration::from_secs(30), progress.wait_for(|seen| done(seen))).await;
            *waited.unwrap_or_else(|_| panic!("no {what} within 30 s")).unwrap()
        }
    };

    wait_for(&mut progress, "uploads", Box::new(|seen| seen.created >= 50)).await;
    let cluster = stop_database(cluster).await;
    let before = wait_for(&mut progress, "503s", Box::new(|seen| seen.unavailable >= 8)).await;
    wait_for_readyz(&app, StatusCode::SERVICE_UNAVAILABLE).await;

    let _cluster = restart_database(cluster).await;
    let resumed = before.created + 50;
    wait_for(&mut progress, "uploads after the outage", Box::new(move |seen| seen.created >= resumed)).await;
    wait_for_readyz(&app, StatusCode::OK).await;

    stop.store(true, Ordering::SeqCst);
    while let Some(answers) = uploaders.join_next().await {
        for (status, took) in answers.unwrap() {
            assert!(
                status == StatusCode::CREATED || status == StatusCode::SERVICE_UNAVAILABLE,
                "an upload got {status} during the outage"
            );
            // The timeout, plus room for a loaded machine; not the pool's 10 s acquire timeout.
            assert!(took < request_timeout * 3, "an upload took {took:?} to be answered {status}");
        }
    }
}
