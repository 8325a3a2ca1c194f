//! A damaged chunk (a bad sector, a botched manual fix) never makes an upload's answer a lie:
//! every 201 or 200 reads back, bytes sent under a damaged chunk's hash heal it, and a document
//! equal to a latest backup that does not read back is stored anew rather than deduplicated.

use reqwest::{Method, StatusCode};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::common::{TestApp, TestUser};
use crate::dedup::{download, unreferenced_chunks, workout_log};

/// Changes one character of the user's first chunk, keeping its length and the JSON valid.
async fn damage_first_chunk(pool: &PgPool, user: Uuid) {
    let damaged = sqlx::query(
        "UPDATE chunks SET data = overlay(data PLACING '9' FROM 20 FOR 1) \
         WHERE id = (SELECT min(id) FROM chunks WHERE user_id = $1)",
    )
    .bind(user)
    .execute(pool)
    .await
    .unwrap();
    assert_eq!(damaged.rows_affected(), 1);
}

/// Uploads a document; returns the answer's status and backup id.
async fn upload(app: &TestApp, user: &TestUser, document: &str) -> (StatusCode, Uuid) {
    let response = app.upload(user, document.as_bytes()).await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    (status, body["backup_id"].as_str().unwrap_or_else(|| panic!("{status}: {body}")).parse().unwrap())
}

async fn latest_status(app: &TestApp, user: &TestUser) -> StatusCode {
    app.authed(user, Method::GET, "/api/backups/latest", b"").send().await.unwrap().status()
}

/// Both ways an upload reaches the database: whole (up to 128 KiB, every chunk sent) and after
/// asking which chunks are stored (above it, where the damaged chunk is found stored and not
/// sent).
#[tokio::test]
async fn the_next_uploads_heal_a_damaged_chunk_and_every_acknowledged_backup_reads_back() {
    let app = TestApp::spawn().await;
    // 47 KB and 159 KB.
    for days in [300, 1000] {
        let user = app.register().await;
        let first = workout_log(days, &[]);
        let (status, first_id) = upload(&app, &user, &first).await;
        assert_eq!(status, StatusCode::CREATED);
        damage_first_chunk(&app.pool, user.id).await;
        assert_eq!(latest_status(&app, &user).await, StatusCode::INTERNAL_SERVER_ERROR, "{days} days: damaged");

        // The same document again: answered with a backup that reads back.
        let (status, again) = upload(&app, &user, &first).await;
        assert!(status.is_success(), "{days} days: {status}");
        assert_eq!(download(&app, &user, again).await, first, "{days} days: what the answer names reads back");
        assert_eq!(download(&app, &user, first_id).await, first, "{days} days: the damaged chunk was healed");

        // The log grows: each answer reads back.
        for more in 1..=3 {
            let grown = workout_log(days + more, &[]);
            let (status, id) = upload(&app, &user, &grown).await;
            assert_eq!(status, StatusCode::CREATED, "{days} days");
            assert_eq!(download(&app, &user, id).await, grown, "{days} days + {more}");
        }
        assert_eq!(latest_status(&app, &user).await, StatusCode::OK);
    }
    assert_eq!(unreferenced_chunks(&app.pool).await, 0);
}

/// The latest backup names a chunk it should not (its list damaged): nothing the upload sends
/// can heal it, so an equal document is stored as a new backup, not deduplicated onto it.
#[tokio::test]
async fn an_equal_document_is_not_deduplicated_onto_a_latest_that_does_not_read_back() {
    let app = TestApp::spawn().await;
    let user = app.register().await;
    let document = workout_log(300, &[]);
    let (_, first) = upload(&app, &user, &document).await;
    let cut = sqlx::query("UPDATE backups SET chunk_ids = chunk_ids[2:] WHERE id = $1 AND cardinality(chunk_ids) > 1")
        .bind(first)
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(cut.rows_affected(), 1);
    let response = app.upload(&user, document.as_bytes()).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["deduplicated"], false);
    let id: Uuid = body["backup_id"].as_str().unwrap().parse().unwrap();
    assert_ne!(id, first);
    assert_eq!(download(&app, &user, id).await, document);
}

async fn scrub(app: &TestApp) -> (i32, Value) {
    let url = crate::backup_db::app_url(app);
    let outcome = crate::common::binary::run(&["scrub", "--json"], &[("DATABASE_URL", &url)]).await;
    let report = serde_json::from_str(&outcome.stdout).unwrap_or_else(|_| panic!("{outcome:?}"));
    (outcome.code, report)
}

#[tokio::test]
async fn scrub_names_each_damaged_chunk_and_backup_with_its_user_and_whether_it_heals() {
    let app = TestApp::spawn().await;
    let (alice, bob) = (app.register().await, app.register().await);
    for days in [300, 301] {
        upload(&app, &alice, &workout_log(days, &[])).await;
    }
    let (_, bobs) = upload(&app, &bob, &workout_log(200, &[])).await;
    let (code, clean) = scrub(&app).await;
    assert_eq!(code, 0, "{clean}");
    assert_eq!(clean["ok"], true);
    assert_eq!(clean["backups_checked"], 3);
    let chunks: i64 = sqlx::query_scalar("SELECT count(*) FROM chunks").fetch_one(&app.pool).await.unwrap();
    assert_eq!(clean["chunks_checked"], chunks);

    damage_first_chunk(&app.pool, alice.id).await;
    sqlx::query("UPDATE backups SET chunk_ids = chunk_ids[2:] WHERE id = $1")
        .bind(bobs)
        .execute(&app.pool)
        .await
        .unwrap();
    let (code, report) = scrub(&app).await;
    assert_eq!(code, 3, "{report}");
    assert_eq!(report["ok"], false);
    let chunks = report["damaged_chunks"].as_array().unwrap();
    assert_eq!(chunks.len(), 1, "{report}");
    assert_eq!(chunks[0]["user_id"], alice.id.to_string());
    assert_eq!(chunks[0]["backups"], 2, "both of alice's backups name her first chunk");
    assert_eq!(chunks[0]["in_latest"], true, "so her next upload heals it");
    let backups = report["damaged_backups"].as_array().unwrap();
    assert_eq!(backups.len(), 3, "{report}");
    let of = |user: Uuid| backups.iter().filter(move |b| b["user_id"] == user.to_string());
    assert!(of(alice.id).all(|b| b["bad_chunks"] == 1), "{report}");
    let bobs_report: Vec<&Value> = of(bob.id).collect();
    assert_eq!(bobs_report.len(), 1);
    assert_eq!(bobs_report[0]["backup_id"], bobs.to_string());
    assert_eq!(bobs_report[0]["bad_chunks"], 0, "its list is wrong, not a chunk: {report}");
    assert_eq!(bobs_report[0]["latest"], true);

    // Alice's app uploads her log again: her chunk heals, and only bob's backup is left.
    upload(&app, &alice, &workout_log(302, &[])).await;
    let (code, report) = scrub(&app).await;
    assert_eq!(code, 3);
    assert_eq!(report["damaged_chunks"].as_array().unwrap().len(), 0, "{report}");
    assert_eq!(report["damaged_backups"].as_array().unwrap().len(), 1, "{report}");
}
