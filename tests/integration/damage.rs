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

/// Both ways an upload reaches the database: whole (up to 64 KiB, every chunk sent) and after
/// asking which chunks are stored (above it, where the damaged chunk is found stored and not
/// sent).
#[tokio::test]
async fn the_next_uploads_heal_a_damaged_chunk_and_every_acknowledged_backup_reads_back() {
    let app = TestApp::spawn().await;
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
