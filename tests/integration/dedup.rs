//! Documents stored as chunks, each kept once per user: what a growing log stores, what is
//! freed and when, and that a damaged chunk is never answered as a document.

use reqwest::{Method, StatusCode};
use sqlx::PgPool;
use uuid::Uuid;

use crate::common::binary::{self, Server, next_log};
use crate::common::{
    TEST_SECRET, TestApp, TestDb, TestUser, http_client, now, signed_request, stored_document, test_settings,
};
use crate::prune::{assert_figures, counts};
use dailyreps_backup_server::config::ApiSettings;
use dailyreps_backup_server::config::Limits;

/// A workout log of `days` workouts, as the app writes one: each day's entry differs (reps,
/// weights, notes), and `edited` days carry a changed note.
pub(crate) fn workout_log(days: usize, edited: &[usize]) -> String {
    let entries: Vec<String> = (0..days)
        .map(|day| {
            let seed = day.wrapping_mul(2_654_435_761) % 1_000_003;
            let sets: Vec<String> = (0..4)
                .map(|set| format!(r#"{{"reps":{},"kg":{}.5}}"#, 3 + (seed + set) % 9, 40 + (seed / 7 + set * 5) % 80))
                .collect();
            let note = if edited.contains(&day) { "edited: felt strong ✓" } else { "ok" };
            format!(
                r#"{{"day":{day},"date":"2026-{:02}-{:02}","exercise":"lift-{}","sets":[{}],"note":"{note}"}}"#,
                1 + day / 28 % 12,
                1 + day % 28,
                seed % 17,
                sets.join(",")
            )
        })
        .collect();
    format!(r#"{{"settings":{{"units":"kg"}},"workouts":[{}]}}"#, entries.join(","))
}

async fn chunk_count(pool: &PgPool, user: Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM chunks WHERE user_id = $1").bind(user).fetch_one(pool).await.unwrap()
}

/// Chunks that no backup of their user names: there should never be any.
pub(crate) async fn unreferenced_chunks(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM chunks c \
         WHERE NOT EXISTS (SELECT 1 FROM backups b WHERE b.user_id = c.user_id AND c.id = ANY (b.chunk_ids))",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

pub(crate) async fn download(app: &TestApp, user: &TestUser, id: Uuid) -> String {
    let response = app.authed(user, Method::GET, &format!("/api/backups/{id}"), b"").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let length = response.content_length();
    let body = response.text().await.unwrap();
    assert_eq!(length, Some(body.len() as u64), "Content-Length is the document's");
    body
}

#[tokio::test]
async fn a_growing_log_stores_only_its_new_chunks_and_another_user_shares_none() {
    let app = TestApp::spawn().await;
    let user = app.register().await;
    let mut uploaded = Vec::new();
    let mut chunks_before = 0;
    for day in 0..12 {
        let edited = if day == 7 { vec![300] } else { vec![] };
        let document = workout_log(1_200 + day, &edited);
        let id = app.upload_ok(&user, document.as_bytes()).await;
        let chunks = chunk_count(&app.pool, user.id).await;
        if day > 0 {
            assert!(
                chunks - chunks_before <= 3,
                "day {day}: {} new chunks for one more workout",
                chunks - chunks_before
            );
        }
        chunks_before = chunks;
        uploaded.push((id, document));
    }
    let logical: usize = uploaded.iter().map(|(_, d)| d.len()).sum();
    let (stored_text, stored_bytes): (i64, i64) = sqlx::query_as(
        "SELECT sum(length(data))::bigint, sum(pg_column_size(data))::bigint FROM chunks WHERE user_id = $1",
    )
    .bind(user.id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let last = uploaded.last().unwrap().1.len() as i64;
    assert!(stored_text < last * 2, "12 backups of {logical} bytes keep {stored_text} bytes of chunks");
    assert!(stored_bytes < stored_text, "chunks are compressed: {stored_bytes} of {stored_text}");
    for (id, document) in &uploaded {
        assert!(download(&app, &user, *id).await == *document, "backup {id} reads back byte for byte");
    }

    // Another user with the very same document stores it whole, in chunks of their own.
    let other = app.register().await;
    let (_, last_document) = uploaded.last().unwrap();
    let other_id = app.upload_ok(&other, last_document.as_bytes()).await;
    let pieces = dailyreps_backup_server::backups::chunking::chunks(last_document)
        .collect::<std::collections::HashSet<_>>()
        .len() as i64;
    assert_eq!(chunk_count(&app.pool, other.id).await, pieces, "nothing reused across accounts");
    assert_eq!(chunk_count(&app.pool, user.id).await, chunks_before, "the first user's chunks are untouched");
    let shared: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM backups b, unnest(b.chunk_ids) AS part(id) JOIN chunks c ON c.id = part.id \
         WHERE c.user_id <> b.user_id",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(shared, 0, "no backup names another user's chunk");

    // Deleting the first account leaves the second whole.
    let deleted = app.authed(&user, Method::DELETE, "/api/users/me", b"").send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(chunk_count(&app.pool, user.id).await, 0);
    assert!(download(&app, &other, other_id).await == *last_document);
}

#[tokio::test]
async fn retention_and_the_delete_route_free_the_chunks_no_backup_names() {
    let settings = ApiSettings { limits: Limits { max_backups_kept: 3, ..test_settings().limits }, ..test_settings() };
    let app = TestApp::spawn_with(settings).await;
    let user = app.register().await;
    // Logs that share nothing: each upload's chunks are its own.
    let documents: Vec<String> =
        (0..5).map(|n| workout_log(300, &[]).replace("\"day\":", &format!("\"day{n}\":"))).collect();
    let mut ids = Vec::new();
    for document in &documents {
        ids.push(app.upload_ok(&user, document.as_bytes()).await);
    }
    let kept: std::collections::HashSet<&str> =
        documents[2..].iter().flat_map(|d| dailyreps_backup_server::backups::chunking::chunks(d)).collect();
    assert_eq!(chunk_count(&app.pool, user.id).await, kept.len() as i64, "only the kept backups' chunks remain");
    assert_eq!(unreferenced_chunks(&app.pool).await, 0);

    let newest = *ids.last().unwrap();
    let response = app.authed(&user, Method::DELETE, &format!("/api/backups/{newest}"), b"").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let kept: std::collections::HashSet<&str> =
        documents[2..4].iter().flat_map(|d| dailyreps_backup_server::backups::chunking::chunks(d)).collect();
    assert_eq!(chunk_count(&app.pool, user.id).await, kept.len() as i64, "the deleted backup's chunks went with it");
    assert_eq!(unreferenced_chunks(&app.pool).await, 0);
    assert!(download(&app, &user, ids[3]).await == documents[3]);

    let response = app.authed(&user, Method::DELETE, "/api/users/me", b"").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM chunks").fetch_one(&app.pool).await.unwrap();
    assert_eq!(left, 0, "an account's deletion leaves no chunk");
}

#[tokio::test]
async fn prune_frees_only_the_chunks_no_kept_backup_names_and_says_how_much() {
    let app = TestApp::spawn().await;
    let user = app.register().await;
    for day in 0..4 {
        app.upload_ok(&user, workout_log(800 + day, &[]).as_bytes()).await;
    }
    let latest = workout_log(803, &[]);
    let before = counts(&app.pool).await;
    let url = crate::backup_db::app_url(&app);
    let outcome = binary::run(&["prune", "--json", "--keep-last", "1", "--yes"], &[("DATABASE_URL", &url)]).await;
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    let report: serde_json::Value = serde_json::from_str(&outcome.stdout).unwrap();
    let after = counts(&app.pool).await;
    assert_figures(&report, before, after);
    let (documents, freed) = (report["document_bytes"].as_i64().unwrap(), report["bytes_freed"].as_i64().unwrap());
    assert!(
        freed > 0 && freed * 10 < documents,
        "3 near-copies of a log: {documents} bytes of documents, {freed} freed"
    );
    assert_eq!(unreferenced_chunks(&app.pool).await, 0);
    let response = app.authed(&user, Method::GET, "/api/backups/latest", b"").send().await.unwrap();
    assert!(response.text().await.unwrap() == latest, "the kept backup is whole");
}

#[tokio::test]
async fn a_damaged_chunk_is_answered_500_and_logged_with_the_backup_id() {
    let db = TestDb::migrated().await;
    let mut server = Server::start(&db.url, &[]).await;
    let client = http_client();
    let call = |method: Method, path: &str, body: &[u8]| {
        signed_request(&client, &server.address, TEST_SECRET, now(), method, path, body)
    };
    let registered: serde_json::Value =
        call(Method::POST, "/api/users", b"").send().await.unwrap().json().await.unwrap();
    let token = registered["token"].as_str().unwrap().to_owned();
    let document = workout_log(400, &[]);
    let stored = call(Method::POST, "/api/backup", document.as_bytes())
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(stored.status(), StatusCode::CREATED);
    let backup_id = stored.json::<serde_json::Value>().await.unwrap()["backup_id"].as_str().unwrap().to_owned();

    // One character of one chunk changes on disk, its length and the JSON still valid.
    let pool = db.pool().await;
    let damaged = sqlx::query(
        "UPDATE chunks SET data = overlay(data PLACING '9' FROM 20 FOR 1) WHERE id = (SELECT min(id) FROM chunks)",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(damaged.rows_affected(), 1);
    let response = call(Method::GET, "/api/backups/latest", b"").bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "internal");
    let logged = next_log(&mut server.logs, "internal error").await;
    let line = logged.to_string();
    assert!(line.contains(&backup_id) && line.contains(&request_id), "{line}");
    server.child.start_kill().unwrap();
}

#[tokio::test]
async fn a_chunk_neither_stored_nor_sent_writes_nothing() {
    let app = TestApp::spawn().await;
    let user = app.register().await;
    app.upload_ok(&user, br#"{"first": true}"#).await;
    let before = counts(&app.pool).await;
    let outcome: String = sqlx::query_scalar(
        "SELECT outcome FROM store_backup_v4($1, gen_random_uuid(), 20, sha256('{\"second\": true, \"x\": 1}'), \
         ARRAY[sha256('{\"second\": true,'), sha256(' \"x\": 1}')], ARRAY[sha256('{\"second\": true,')], \
         ARRAY['{\"second\": true,'], 30, 'key-1')",
    )
    .bind(user.id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(outcome, "missing");
    assert_eq!(counts(&app.pool).await, before, "no backup, no chunk");
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_keys").fetch_one(&app.pool).await.unwrap();
    assert_eq!(keys, 0, "the key is not remembered for an upload that did not happen");
}

#[tokio::test]
async fn a_chunk_freed_between_the_lookup_and_the_store_is_sent_on_the_second_try() {
    let app = TestApp::spawn().await;
    let user = app.register().await;
    let old = workout_log(1_000, &[]);
    let old_id = app.upload_ok(&user, old.as_bytes()).await;
    let document = workout_log(1_001, &[]);
    // The upload finds most chunks stored (the old backup's), then waits for its user's row,
    // which this transaction holds while it deletes the old backup and so frees those chunks.
    let mut tx = app.pool.begin().await.unwrap();
    sqlx::query("SELECT FROM users WHERE id = $1 FOR UPDATE").bind(user.id).execute(&mut *tx).await.unwrap();
    let request = app.authed(&user, Method::POST, "/api/backup", document.as_bytes());
    let upload = tokio::spawn(request.header("content-type", "application/json").send());
    crate::common::wait_until_blocked_on_lock(&app.pool, "SELECT outcome").await;
    let deleted = sqlx::query("DELETE FROM backups WHERE id = $1").bind(old_id).execute(&mut *tx).await.unwrap();
    assert_eq!(deleted.rows_affected(), 1);
    tx.commit().await.unwrap();
    let response = upload.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::CREATED, "stored by sending every chunk the second time");
    let body: serde_json::Value = response.json().await.unwrap();
    let id: Uuid = body["backup_id"].as_str().unwrap().parse().unwrap();
    assert!(download(&app, &user, id).await == document);
}

/// A database at schema 5 (whole documents, the release before migration 6), with one user.
async fn at_schema_5() -> (TestDb, PgPool, Uuid) {
    use dailyreps_backup_server::db::migrations::MIGRATOR;
    let db = TestDb::empty().await;
    let pool = db.pool().await;
    let before_chunks = 20_261_202_000_006;
    let mut conn = pool.acquire().await.unwrap();
    dailyreps_backup_server::db::dump::create_schema(&mut conn, before_chunks - 1).await.unwrap();
    for migration in MIGRATOR.iter().filter(|m| m.version < before_chunks) {
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES ($1, $2, true, $3, 0)",
        )
        .bind(migration.version)
        .bind(migration.description.as_ref())
        .bind(migration.checksum.as_ref())
        .execute(&mut *conn)
        .await
        .unwrap();
    }
    let user = Uuid::new_v4();
    sqlx::query("INSERT INTO users (id, token_hash) VALUES ($1, sha256('t'))")
        .bind(user)
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    (db, pool, user)
}

/// The release before 6's upload of `document` (its store_backup) in `tx`: the new backup's id.
async fn store_at_schema_5(tx: &mut sqlx::PgConnection, user: Uuid, document: &str) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::new_v4();
    let outcome: String = sqlx::query_scalar(
        "SELECT outcome FROM store_backup($1, $2, $3, sha256(convert_to($4, 'UTF8')), $4, 30, NULL)",
    )
    .bind(user)
    .bind(id)
    .bind(document.len() as i32)
    .bind(document)
    .fetch_one(tx)
    .await?;
    assert_eq!(outcome, "stored");
    Ok(id)
}

/// The documents a database at schema 5 (whole documents) holds, converted by `migrate`.
#[tokio::test]
async fn migrate_converts_stored_documents_into_chunks_byte_for_byte() {
    let (db, pool, user) = at_schema_5().await;
    let mut conn = pool.acquire().await.unwrap();
    // Three backups of a growing log (multi-byte characters across piece boundaries) and an
    // empty-ish one.
    let documents = [workout_log(500, &[3]), workout_log(520, &[3]), workout_log(540, &[3, 9]), "{}".to_owned()];
    let mut ids = Vec::new();
    for (n, document) in documents.iter().enumerate() {
        let id = Uuid::new_v4();
        sqlx::query(
            "INSERT INTO backups (id, user_id, created_at, size_bytes, sha256, document) \
             VALUES ($1, $2, now() - make_interval(mins => $3), $4, sha256(convert_to($5, 'UTF8')), $5)",
        )
        .bind(id)
        .bind(user)
        .bind(10 - n as i32)
        .bind(document.len() as i32)
        .bind(document)
        .execute(&mut *conn)
        .await
        .unwrap();
        ids.push(id);
    }
    drop(conn);
    let migrated = binary::run(&["migrate"], &[("DATABASE_URL", &db.url)]).await;
    assert_eq!(migrated.code, 0, "{}", migrated.stderr);
    for (id, document) in ids.iter().zip(&documents) {
        assert!(stored_document(&pool, *id).await == *document, "backup {id} converted byte for byte");
    }
    let (chunks, pieces): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM chunks), (SELECT sum(cardinality(chunk_ids)) FROM backups)::bigint",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(chunks < pieces, "equal pieces of one user are kept once: {chunks} chunks for {pieces} pieces");
    assert_eq!(unreferenced_chunks(&pool).await, 0);
}

/// An upload the release before answers while this release's `migrate` runs (Fly's
/// release_command, before the machines are replaced), committed once the migration has begun:
/// converted with the rest, never dropped with the old table or copied without its chunks.
#[tokio::test]
async fn an_upload_the_release_before_commits_during_migration_6_is_converted() {
    let (db, pool, user) = at_schema_5().await;
    let document = workout_log(300, &[2]);
    // The release before's upload: its store_backup, in its own transaction, not yet committed.
    let mut upload = pool.begin().await.unwrap();
    let id = store_at_schema_5(&mut upload, user, &document).await.unwrap();
    let url = db.url.clone();
    let migrating = tokio::spawn(async move { binary::run(&["migrate"], &[("DATABASE_URL", &url)]).await });
    crate::common::wait_until_blocked_on_lock(&pool, "").await;
    upload.commit().await.unwrap();
    let migrated = migrating.await.unwrap();
    assert_eq!(migrated.code, 0, "{}", migrated.stderr);
    assert!(stored_document(&pool, id).await == document, "the upload acknowledged during the migration reads back");
}

/// An upload of the release before that has locked its user when `migrate` starts, and writes
/// `backups` only after: migration 6 alone then waits on the user while the upload waits on
/// `backups`, a deadlock PostgreSQL breaks by cancelling one of them (a failed deploy or a
/// 500). `migrate` takes every table at once between requests instead, so both go through.
#[tokio::test]
async fn migrate_and_an_upload_that_locked_its_user_first_do_not_deadlock() {
    let (db, pool, user) = at_schema_5().await;
    let document = workout_log(300, &[4]);
    let mut upload = pool.begin().await.unwrap();
    sqlx::query("SELECT FROM users WHERE id = $1 FOR UPDATE").bind(user).execute(&mut *upload).await.unwrap();
    let url = db.url.clone();
    let migrating = tokio::spawn(async move { binary::run(&["migrate"], &[("DATABASE_URL", &url)]).await });
    crate::common::wait_until_blocked_on_lock(&pool, "").await;
    let id =
        store_at_schema_5(&mut upload, user, &document).await.expect("the upload is not cancelled to break a deadlock");
    upload.commit().await.unwrap();
    let migrated = migrating.await.unwrap();
    assert_eq!(migrated.code, 0, "{}", migrated.stderr);
    assert!(stored_document(&pool, id).await == document, "the upload reads back, converted");
}
