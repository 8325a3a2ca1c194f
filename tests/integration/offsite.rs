//! `backup-db --to`, `list-backups`, and `verify-backup` / `restore-db` from a bucket, against a
//! real S3-compatible server (moto): encrypted round trips, the manifest written last,
//! interrupted and killed uploads, and the errors an operator sees.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::backup_db::{app_url, fingerprint, populated_app};
use crate::common::s3::{SECRET_KEY, TestBucket};
use crate::common::{TestDb, binary, scratch_dir, wait_until_blocked_on_lock};

/// An age key pair made with the age CLI: (identity file, public key).
pub(crate) fn keypair(dir: &Path, name: &str) -> (PathBuf, String) {
    std::fs::create_dir_all(dir).unwrap();
    let identity = dir.join(name);
    let made = std::process::Command::new("age-keygen").arg("-o").arg(&identity).stderr(Stdio::null()).status();
    assert!(made.expect("age-keygen (apt-get install age)").success());
    let public = std::process::Command::new("age-keygen").arg("-y").arg(&identity).output().unwrap();
    (identity, String::from_utf8(public.stdout).unwrap().trim().to_owned())
}

pub(crate) async fn run_with(args: &[&str], bucket: &TestBucket, extra: &[(&str, &str)]) -> binary::Outcome {
    let mut env: Vec<(&str, String)> = bucket.env();
    env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let outcome = binary::run(args, &env).await;
    assert!(!outcome.stderr.contains(SECRET_KEY) && !outcome.stdout.contains(SECRET_KEY), "the secret key leaked");
    outcome
}

/// `count` backups of 384 KB of random hex each (half of it survives zstd), so a dump takes
/// several 8 MiB parts.
pub(crate) async fn add_incompressible_backups(pool: &sqlx::PgPool, count: i32) {
    sqlx::query(
        "INSERT INTO backups (id, user_id, size_bytes, sha256, chunk_ids) \
         SELECT gen_random_uuid(), u.id, 0, sha256(''), \
                test_chunks(u.id, (SELECT string_agg(md5(random()::text || n || g), '') FROM generate_series(1, 12000) g)) \
         FROM (SELECT id FROM users LIMIT 1) u, generate_series(1, $1) n",
    )
    .bind(count)
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn an_encrypted_backup_round_trips_through_the_bucket_and_only_its_identity_opens_it() {
    let (app, _) = populated_app().await;
    let bucket = TestBucket::new().await;
    let keys = scratch_dir("keys");
    let (identity, recipient) = keypair(&keys, "key.txt");
    let (other_identity, other_recipient) = keypair(&keys, "other.txt");
    let url = bucket.url("db/prod");
    let db = app_url(&app);
    let taken = run_with(
        &["backup-db", "--to", &url, "--json"],
        &bucket,
        &[("DATABASE_URL", &db), ("BACKUP_AGE_RECIPIENTS", &recipient)],
    )
    .await;
    assert_eq!(taken.code, 0, "{}", taken.stderr);
    let summary: Value = serde_json::from_str(&taken.stdout).unwrap();
    let data_key =
        summary["path"].as_str().unwrap().strip_prefix(&format!("s3://{}/", bucket.name)).unwrap().to_owned();
    assert!(data_key.starts_with("db/prod/dailyreps-") && data_key.ends_with(".sql.zst.age"), "{data_key}");
    let keys_in_bucket = bucket.keys().await;
    assert_eq!(keys_in_bucket.len(), 2, "the data and its manifest, no upload record: {keys_in_bucket:?}");
    assert!(bucket.uploads_in_progress().await.is_empty());

    let stored = bucket.object(&data_key).await;
    assert_eq!(summary["bytes"].as_u64(), Some(stored.len() as u64));
    assert!(stored.starts_with(b"age-encryption.org/v1\n"));
    for plaintext in [&b"COPY public."[..], b"tab\\there", b"ntext"] {
        assert!(!stored.windows(plaintext.len()).any(|w| w == plaintext), "plaintext in the stored bytes");
    }

    let listed = run_with(&["list-backups", &url, "--json"], &bucket, &[]).await;
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    let listed: Value = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(listed["backups"].as_array().unwrap().len(), 1);
    assert_eq!(listed["backups"][0]["key"], data_key.as_str());
    assert_eq!(listed["backups"][0]["encrypted"], true);
    assert_eq!(listed["backups"][0]["bytes"], stored.len());
    // For people at 80 columns: the key whole on one line, nothing wider.
    let [force, no_colour] = binary::AS_ON_A_TERMINAL;
    let text = run_with(&["list-backups", &url], &bucket, &[("COLUMNS", "80"), force, no_colour]).await;
    assert!(text.stdout.lines().any(|line| line.contains(data_key.as_str())), "{}", text.stdout);
    assert!(text.stdout.lines().all(|line| line.chars().count() <= 80), "{}", text.stdout);

    let latest = format!("{url}/latest");
    let stored_only = run_with(&["verify-backup", &latest], &bucket, &[]).await;
    assert_eq!(stored_only.code, 0, "{}", stored_only.stderr);
    assert!(stored_only.stderr.contains("pass --identity"), "{}", stored_only.stderr);
    let stored_only = run_with(&["verify-backup", &latest, "--json"], &bucket, &[]).await;
    let report: Value = serde_json::from_str(&stored_only.stdout).unwrap();
    assert_eq!((report["ok"].as_bool(), report["checked"].as_str()), (Some(true), Some("stored_bytes")), "{report}");
    let id = identity.to_str().unwrap();
    let whole = run_with(&["verify-backup", &latest, "--identity", id, "--json"], &bucket, &[]).await;
    assert_eq!(whole.code, 0, "{}", whole.stderr);
    let tables = serde_json::from_str::<Value>(&whole.stdout).unwrap()["tables"].clone();
    let backups = tables.as_array().unwrap().iter().find(|table| table["name"] == "backups").unwrap();
    assert_eq!(backups["rows"], 12);
    // The manifest records whom it is encrypted to, so a wrong identity file is named, with
    // both sides' public keys, before a byte is read; and so is a manifest from before they
    // were recorded, when age finds no key of the file's.
    let manifest_key = bucket.keys().await.into_iter().find(|key| key.ends_with(".manifest.json")).unwrap();
    let manifest: Value = serde_json::from_slice(&bucket.object(&manifest_key).await).unwrap();
    assert_eq!(manifest["recipients"], serde_json::json!([recipient]));
    let other = other_identity.to_str().unwrap();
    let wrong = run_with(&["verify-backup", &latest, "--identity", other], &bucket, &[]).await;
    assert_eq!(wrong.code, 1);
    for named in [recipient.as_str(), other_recipient.as_str(), other, "none of them a recipient"] {
        assert!(wrong.stderr.contains(named), "{named} missing: {}", wrong.stderr);
    }
    let mut older = manifest.clone();
    older.as_object_mut().unwrap().remove("recipients");
    bucket.put(&manifest_key, older.to_string().into_bytes()).await;
    let wrong = run_with(
        &["restore-db", &latest, "--identity", other],
        &bucket,
        &[("DATABASE_URL", "postgres://x@127.0.0.1:1/x")],
    )
    .await;
    assert_eq!(wrong.code, 1);
    assert!(wrong.stderr.contains(&other_recipient) && wrong.stderr.contains("none of them"), "{}", wrong.stderr);
    bucket.put(&manifest_key, manifest.to_string().into_bytes()).await;

    let target = TestDb::empty().await;
    let restored =
        run_with(&["restore-db", &latest, "--identity", id], &bucket, &[("DATABASE_URL", &target.url)]).await;
    assert_eq!(restored.code, 0, "{}", restored.stderr);
    assert_eq!(fingerprint(&target.pool().await).await, fingerprint(&app.pool).await);

    // Without this tool: age -d | zstd -dc | psql.
    let by_hand = TestDb::empty().await;
    let file = keys.join("downloaded.sql.zst.age");
    std::fs::write(&file, &stored).unwrap();
    let pipeline = format!(
        "set -o pipefail; age -d -i {id} {} | zstd -dc | psql -v ON_ERROR_STOP=1 -d \"$DATABASE_URL\"",
        file.display()
    );
    let status = tokio::process::Command::new("bash")
        .args(["-c", &pipeline])
        .env("DATABASE_URL", &by_hand.url)
        .stdout(Stdio::null())
        .status()
        .await
        .unwrap();
    assert!(status.success(), "{pipeline}");
    assert_eq!(fingerprint(&by_hand.pool().await).await, fingerprint(&app.pool).await);
    std::fs::remove_dir_all(keys).unwrap();
}

#[tokio::test]
async fn an_unencrypted_upload_needs_saying_so_and_data_without_a_manifest_is_no_backup() {
    let (app, _) = populated_app().await;
    let bucket = TestBucket::new().await;
    let url = bucket.url("db");
    let db = app_url(&app);
    let refused = run_with(&["backup-db", "--to", &url], &bucket, &[("DATABASE_URL", &db)]).await;
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(refused.stderr.contains("--no-encryption"), "{}", refused.stderr);
    assert!(bucket.keys().await.is_empty());

    let taken =
        run_with(&["backup-db", "--to", &url, "--no-encryption", "--json"], &bucket, &[("DATABASE_URL", &db)]).await;
    assert_eq!(taken.code, 0, "{}", taken.stderr);
    let verified = run_with(&["verify-backup", &format!("{url}/latest")], &bucket, &[]).await;
    assert_eq!(verified.code, 0, "{}", verified.stderr);
    assert!(verified.stderr.contains("is intact"), "the whole dump is checked: {}", verified.stderr);

    // A flipped byte in the stored object fails both the stored-bytes check and the dump's.
    let data_key = bucket.keys().await.into_iter().find(|k| k.ends_with(".sql.zst")).unwrap();
    let mut damaged = bucket.object(&data_key).await;
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x20;
    bucket.put(&data_key, damaged).await;
    let refused = run_with(&["verify-backup", &format!("{url}/latest")], &bucket, &[]).await;
    assert_eq!(refused.code, 1, "{}", refused.stderr);

    // A truncated object is named as truncated, not as something that is not zstd.
    let whole = bucket.object(&data_key).await;
    bucket.put(&data_key, whole[..whole.len() / 2].to_vec()).await;
    let truncated = run_with(&["verify-backup", &format!("{url}/latest")], &bucket, &[]).await;
    assert_eq!(truncated.code, 1, "{}", truncated.stderr);
    assert!(
        truncated.stderr.contains(&format!("holds {} bytes where its manifest says", whole.len() / 2)),
        "{}",
        truncated.stderr
    );

    // Without its manifest the data is not a backup: not listed, not the latest.
    let manifest = bucket.keys().await.into_iter().find(|k| k.ends_with(".manifest.json")).unwrap();
    bucket.delete(&manifest).await;
    let listed = run_with(&["list-backups", &url, "--json"], &bucket, &[]).await;
    assert_eq!(serde_json::from_str::<Value>(&listed.stdout).unwrap()["backups"], serde_json::json!([]));
    let target = TestDb::empty().await;
    let nothing = run_with(&["restore-db", &format!("{url}/latest")], &bucket, &[("DATABASE_URL", &target.url)]).await;
    assert_eq!(nothing.code, 1);
    assert!(nothing.stderr.contains("holds no complete backup"), "{}", nothing.stderr);
}

#[tokio::test]
async fn restore_db_reads_the_dump_from_the_bucket_once() {
    let (app, _) = populated_app().await;
    let bucket = TestBucket::new().await;
    let url = bucket.url("db");
    let db = app_url(&app);
    let taken = run_with(&["backup-db", "--to", &url, "--no-encryption"], &bucket, &[("DATABASE_URL", &db)]).await;
    assert_eq!(taken.code, 0, "{}", taken.stderr);
    let log = RequestLog::default();
    let proxy = logging_proxy(bucket.endpoint.clone(), "\0", "\0", log.clone()).await;
    let target = TestDb::empty().await;
    let restored = run_with(
        &["restore-db", &format!("{url}/latest")],
        &bucket,
        &[("DATABASE_URL", &target.url), ("AWS_ENDPOINT_URL_S3", &proxy)],
    )
    .await;
    assert_eq!(restored.code, 0, "{}", restored.stderr);
    let requests = log.lock().unwrap().clone();
    let data_reads = requests.iter().filter(|line| line.starts_with("GET ") && line.contains(".sql.zst")).count();
    assert_eq!(data_reads, 1, "the header and the rows come from one read of the object: {requests:#?}");
    assert_eq!(fingerprint(&target.pool().await).await, fingerprint(&app.pool).await);
}

/// A `backup-db --to` held in the middle of its dump (at `idempotency_keys`, which a
/// transaction holds locked) once one of its parts is up, with stderr piped.
struct HeldBackup {
    child: tokio::process::Child,
    blocker: sqlx::Transaction<'static, sqlx::Postgres>,
    /// The multipart upload's id.
    upload: String,
}

/// Takes one good backup (returned as its JSON summary), then starts a second and holds it.
async fn hold_a_backup_mid_upload(app: &crate::common::TestApp, bucket: &TestBucket, url: &str) -> (Value, HeldBackup) {
    let db = app_url(app);
    // Enough data that parts go up before the dump reaches `idempotency_keys`, where it waits.
    add_incompressible_backups(&app.pool, 120).await;
    let first =
        run_with(&["backup-db", "--to", url, "--no-encryption", "--json"], bucket, &[("DATABASE_URL", &db)]).await;
    assert_eq!(first.code, 0, "{}", first.stderr);
    let first: Value = serde_json::from_str(&first.stdout).unwrap();
    assert!(first["bytes"].as_u64().unwrap() > 2 * 8 * 1024 * 1024, "several parts: {first}");
    let mut blocker = app.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE idempotency_keys IN ACCESS EXCLUSIVE MODE").execute(&mut *blocker).await.unwrap();
    let mut child = binary::command()
        .args(["backup-db", "--to", url, "--no-encryption"])
        .envs(bucket.env())
        .env("DATABASE_URL", &db)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until_blocked_on_lock(&app.pool, "COPY public.idempotency_keys").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let upload = loop {
        if let Some(upload) = bucket.uploads_in_progress().await.into_iter().next() {
            let key = bucket.keys().await.into_iter().find(|k| k.ends_with(".upload.json")).expect("recorded");
            let record: Value = serde_json::from_slice(&bucket.object(&key).await).unwrap();
            if bucket.parts(&format!("db/{}", record["data"].as_str().unwrap()), &upload).await > 0 {
                break upload;
            }
        }
        if Instant::now() > deadline {
            child.start_kill().unwrap();
            let output = child.wait_with_output().await.unwrap();
            panic!("no part went up: {}; {:?}", String::from_utf8_lossy(&output.stderr), bucket.keys().await);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    (first, HeldBackup { child, blocker, upload })
}

#[tokio::test]
async fn a_backup_killed_mid_upload_leaves_no_backup_and_the_next_run_aborts_its_upload() {
    let (app, _) = populated_app().await;
    let bucket = TestBucket::new().await;
    let url = bucket.url("db");
    let db = app_url(&app);
    let (first, mut held) = hold_a_backup_mid_upload(&app, &bucket, &url).await;
    held.child.start_kill().unwrap();
    held.child.wait().await.unwrap();
    held.blocker.rollback().await.unwrap();

    let listed = run_with(&["list-backups", &url, "--json"], &bucket, &[]).await;
    let listed: Value = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(listed["backups"].as_array().unwrap().len(), 1, "no manifest for the killed one");
    assert_eq!(
        format!("s3://{}/{}", bucket.name, listed["backups"][0]["key"].as_str().unwrap()),
        first["path"].as_str().unwrap(),
        "latest is still the previous backup"
    );
    let next = run_with(&["backup-db", "--to", &url, "--no-encryption"], &bucket, &[("DATABASE_URL", &db)]).await;
    assert_eq!(next.code, 0, "{}", next.stderr);
    assert!(next.stderr.contains("aborted the unfinished upload"), "{}", next.stderr);
    assert!(!bucket.uploads_in_progress().await.contains(&held.upload), "the orphaned upload is aborted");
    assert!(bucket.uploads_in_progress().await.is_empty());
    assert!(!bucket.keys().await.iter().any(|k| k.ends_with(".upload.json")));
}

/// Ctrl-C, or the dump's session ended under it (a database restart, a dropped `fly proxy`):
/// the upload is aborted, not completed short, and the bucket holds exactly what it held.
#[tokio::test]
async fn an_interrupted_or_failed_backup_completes_no_object() {
    let (app, _) = populated_app().await;
    let bucket = TestBucket::new().await;
    let url = bucket.url("db");
    for ending in ["ctrl-c", "session ended"] {
        let (_, held) = hold_a_backup_mid_upload(&app, &bucket, &url).await;
        let before: Vec<String> = bucket.keys().await.into_iter().filter(|k| !k.ends_with(".upload.json")).collect();
        match ending {
            "ctrl-c" => {
                let pid = held.child.id().expect("running").to_string();
                assert!(std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
            }
            _ => {
                sqlx::query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE starts_with(query, 'COPY public.idempotency_keys')",
                )
                .execute(&app.pool)
                .await
                .unwrap();
            }
        }
        let output = held.child.wait_with_output().await.unwrap();
        held.blocker.rollback().await.unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        // A session the server ended is a database gone away: 4, worth trying again.
        let expected_code = if ending == "ctrl-c" { 130 } else { 4 };
        assert_eq!(output.status.code(), Some(expected_code), "{ending}: {stderr}");
        assert_eq!(bucket.keys().await, before, "{ending}: no object was added: {stderr}");
        assert!(bucket.uploads_in_progress().await.is_empty(), "{ending}: the upload was aborted: {stderr}");
    }
}

#[tokio::test]
async fn a_missing_bucket_or_an_endpoint_that_does_not_answer_is_named_without_secrets() {
    let db = TestDb::migrated().await;
    let bucket = TestBucket::new().await;
    let missing = run_with(
        &["backup-db", "--to", "s3://no-such-bucket-here/db", "--no-encryption"],
        &bucket,
        &[("DATABASE_URL", &db.url)],
    )
    .await;
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("no-such-bucket-here") && missing.stderr.contains(&bucket.endpoint),
        "{}",
        missing.stderr
    );
    // One line that says what to check: no XML.
    assert!(
        missing.stderr.contains(&format!("there is no bucket no-such-bucket-here at {}", bucket.endpoint))
            && missing.stderr.contains("check the bucket's name"),
        "{}",
        missing.stderr
    );
    assert!(!missing.stderr.contains('<') && missing.stderr.trim_end().lines().count() == 1, "{}", missing.stderr);
    let silent =
        run_with(&["list-backups", &bucket.url("db")], &bucket, &[("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:1")]).await;
    assert_eq!(silent.code, 4, "a bucket that does not answer exits 4");
    assert!(
        silent.stderr.contains(&format!("http://127.0.0.1:1 does not answer (bucket {})", bucket.name))
            && silent.stderr.contains("check AWS_ENDPOINT_URL_S3")
            && silent.stderr.trim_end().lines().count() == 1,
        "{}",
        silent.stderr
    );
}

/// A backup of another day, as earlier runs would have left it: its data and its manifest.
pub(crate) async fn plant_backup(bucket: &TestBucket, prefix: &str, days_ago: i64) -> String {
    let at = time::OffsetDateTime::now_utc() - time::Duration::days(days_ago);
    let stem = dailyreps_backup_server::dump::naming::stem(at);
    let data = format!("{stem}.sql.zst");
    bucket.put(&format!("{prefix}/{data}"), b"old dump".to_vec()).await;
    let manifest = serde_json::json!({
        "format_version": 1, "data": data,
        "created_at": at.format(&time::format_description::well_known::Rfc3339).unwrap(),
        "server_version": "0.1.0", "postgres_version": "16.4", "schema_version": 20261129000003i64,
        "tables": [], "bytes": 8, "sha256": "00", "encrypted": false
    });
    bucket.put(&format!("{prefix}/{stem}.manifest.json"), manifest.to_string().into_bytes()).await;
    data
}

#[tokio::test]
async fn retention_keeps_the_calendars_picks_and_touches_nothing_it_did_not_write() {
    let (app, _) = populated_app().await;
    let bucket = TestBucket::new().await;
    let url = bucket.url("db");
    // One backup a day for 20 days, 3 to 22 days ago; and objects that are not ours to touch.
    let mut planted = Vec::new();
    for days_ago in 3..23 {
        planted.push(plant_backup(&bucket, "db", days_ago).await);
    }
    let foreign =
        ["db/notes.txt", "db/dailyreps-before-upgrade.sql.zst", "other/dailyreps-20200101T000000.000Z.sql.zst"];
    for key in foreign {
        bucket.put(key, b"not ours".to_vec()).await;
    }
    let rules = ["--keep-daily", "5", "--keep-weekly", "0", "--keep-monthly", "0", "--keep-min", "2"];

    // The dry run: list-backups says what the rules keep and what would go, deleting nothing.
    let mut listing = vec!["list-backups", url.as_str(), "--json"];
    listing.extend(rules);
    let verdicts = async |bucket: &TestBucket| {
        let listed = run_with(&listing, bucket, &[]).await;
        assert_eq!(listed.code, 0, "{}", listed.stderr);
        let listed: Value = serde_json::from_str(&listed.stdout).unwrap();
        listed["backups"].as_array().unwrap().iter().map(|b| b["kept_by"].clone()).collect::<Vec<Value>>()
    };
    let stopped = verdicts(&bucket).await;
    assert!(
        stopped.iter().all(|kept| kept.to_string().contains("backups stopped")),
        "the newest is 3 days old: {stopped:?}"
    );
    planted.insert(0, plant_backup(&bucket, "db", 1).await);
    let before = bucket.keys().await;
    let kept = verdicts(&bucket).await.iter().filter(|kept| kept != &&serde_json::json!([])).count();
    assert_eq!(kept, 5, "the five newest days");
    assert_eq!(bucket.keys().await, before, "a dry run deletes nothing");

    let mut backing_up = vec!["backup-db", "--to", url.as_str(), "--no-encryption"];
    backing_up.extend(rules);
    let db = app_url(&app);
    let taken = run_with(&backing_up, &bucket, &[("DATABASE_URL", &db)]).await;
    assert_eq!(taken.code, 0, "{}", taken.stderr);
    let keys = bucket.keys().await;
    for key in foreign {
        assert!(keys.contains(&key.to_owned()), "{key} untouched");
    }
    // Five days: today's new backup and those of 1, 3, 4 and 5 days ago, manifests too.
    let kept: Vec<&String> = planted.iter().filter(|data| keys.contains(&format!("db/{data}"))).collect();
    assert_eq!(kept, planted.iter().take(4).collect::<Vec<_>>(), "{keys:?}");
    let manifests = keys.iter().filter(|k| k.ends_with(".manifest.json")).count();
    assert_eq!(manifests, 5, "{keys:?}");
    assert_eq!(taken.stderr.matches("(retention)").count(), 17, "{}", taken.stderr);
}

#[tokio::test]
async fn an_append_only_key_backs_up_and_says_why_it_cannot_prune_or_abort() {
    let (app, _) = populated_app().await;
    let (bucket, key) = TestBucket::with_policy(&["s3:PutObject", "s3:GetObject", "s3:ListBucket"]).await;
    let url = bucket.url("db");
    let db = app_url(&app);
    // Three backups of a month ago that retention would delete, and an upload a killed run left.
    for days_ago in 30..33 {
        plant_backup(&bucket, "db", days_ago).await;
    }
    let stem = dailyreps_backup_server::dump::naming::stem(time::OffsetDateTime::now_utc() - time::Duration::days(2));
    let killed = format!("{stem}.sql.zst");
    let upload_id = bucket.start_upload(&format!("db/{killed}")).await;
    let record = serde_json::json!({"data": killed, "upload_id": upload_id});
    bucket.put(&format!("db/{stem}.upload.json"), record.to_string().into_bytes()).await;
    bucket.enforce_keys().await;

    let rules = ["--keep-daily", "1", "--keep-weekly", "0", "--keep-monthly", "0", "--keep-min", "1"];
    let mut env: Vec<(&str, &str)> = vec![("DATABASE_URL", &db)];
    env.extend(key.env());
    for run in 1..=2 {
        let mut args = vec!["backup-db", "--to", url.as_str(), "--no-encryption"];
        args.extend(rules);
        let taken = run_with(&args, &bucket, &env).await;
        assert_eq!(taken.code, 0, "run {run}: the backup itself is allowed: {}", taken.stderr);
        assert!(!taken.stderr.contains(&key.secret), "the key's secret leaked");
        assert!(
            taken.stderr.contains("retention was not applied: this key may not delete")
                && taken.stderr.contains("nothing was deleted"),
            "run {run}: {}",
            taken.stderr
        );
        assert!(
            taken.stderr.contains(&format!("may not abort the unfinished upload of s3://{}/db/{killed}", bucket.name)),
            "run {run}: {}",
            taken.stderr
        );
        assert!(!taken.stderr.contains("(retention)"), "run {run}: {}", taken.stderr);
        let listed = run_with(&["list-backups", &url, "--json"], &bucket, &key.env()).await;
        assert_eq!(listed.code, 0, "{}", listed.stderr);
        let listed: Value = serde_json::from_str(&listed.stdout).unwrap();
        assert_eq!(listed["backups"].as_array().unwrap().len(), 3 + run, "nothing deleted: {listed}");
    }
    let verified = run_with(&["verify-backup", &format!("{url}/latest")], &bucket, &key.env()).await;
    assert_eq!(verified.code, 0, "a key that may read verifies: {}", verified.stderr);
}

#[tokio::test]
async fn backup_status_fails_when_the_newest_is_stale_or_suspiciously_small() {
    let bucket = TestBucket::new().await;
    let url = bucket.url("db");
    let status = async |bucket: &TestBucket, max_age: &str| {
        let outcome = run_with(&["backup-status", &url, "--max-age", max_age, "--json"], bucket, &[]).await;
        (outcome.code, serde_json::from_str::<Value>(&outcome.stdout).unwrap())
    };
    let (code, empty) = status(&bucket, "26h").await;
    assert_eq!((code, &empty["newest"]), (3, &Value::Null), "no backup at all: {empty}");

    plant_backup(&bucket, "db", 2).await;
    let (code, stale) = status(&bucket, "26h").await;
    assert_eq!(code, 3, "{stale}");
    assert!(stale["problems"][0].as_str().unwrap().contains("more than 26 hours"), "{stale}");
    assert!(stale["age_seconds"].as_i64().unwrap() > 2 * 86_399);
    let (code, fine) = status(&bucket, "3d").await;
    assert_eq!((code, &fine["ok"]), (0, &Value::Bool(true)), "{fine}");

    // The (planted) earlier ones are 8 bytes; a real dump is far larger, so a planted one of
    // 1 byte after real ones is the near-empty dump.
    let (app, _) = populated_app().await;
    let db = app_url(&app);
    for _ in 0..2 {
        let taken = run_with(&["backup-db", "--to", &url, "--no-encryption"], &bucket, &[("DATABASE_URL", &db)]).await;
        assert_eq!(taken.code, 0, "{}", taken.stderr);
    }
    let (code, healthy) = status(&bucket, "26h").await;
    assert_eq!(code, 0, "{healthy}");
    let newest = plant_backup(&bucket, "db", 0).await;
    let manifest_key = format!("db/{}", newest.replace(".sql.zst", ".manifest.json"));
    let mut manifest: Value = serde_json::from_slice(&bucket.object(&manifest_key).await).unwrap();
    manifest["bytes"] = 1.into();
    bucket.put(&manifest_key, manifest.to_string().into_bytes()).await;
    let (code, small) = status(&bucket, "26h").await;
    assert_eq!(code, 3, "{small}");
    assert!(small["problems"][0].as_str().unwrap().contains("less than half"), "{small}");
}

/// A proxy to `upstream` that answers 500 to every request whose first line contains `fail`
/// (each request on a connection of its own, so every one is seen).
async fn failing_proxy(upstream: String, fail: &'static str) -> String {
    proxy(upstream, fail, "\0").await
}

/// [`failing_proxy`], which also flips the last byte of the answer to every GET whose first
/// line contains `corrupt`: a store that gives back other bytes than it was sent.
async fn proxy(upstream: String, fail: &'static str, corrupt: &'static str) -> String {
    logging_proxy(upstream, fail, corrupt, RequestLog::default()).await
}

/// The first line of each request a proxy passed on, in order.
type RequestLog = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// [`proxy`], which also writes the first line of every request into `log`.
async fn logging_proxy(upstream: String, fail: &'static str, corrupt: &'static str, log: RequestLog) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let (upstream, log) = (upstream.clone(), log.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if client.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                log.lock().unwrap().push(text.lines().next().unwrap_or_default().to_owned());
                if text.lines().next().unwrap_or_default().contains(fail) {
                    // The body read first, as a store does: closing on a client still sending
                    // would make its failure a dropped connection, not this answer.
                    let length = text.lines().find_map(|line| {
                        let (name, value) = line.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<u64>().ok()).flatten()
                    });
                    let _ = tokio::io::copy(&mut (&mut client).take(length.unwrap_or(0)), &mut tokio::io::sink()).await;
                    let _ = client
                        .write_all(
                            b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                    return;
                }
                let kept: String = text
                    .trim_end()
                    .lines()
                    .filter(|line| !line.to_ascii_lowercase().starts_with("connection:"))
                    .map(|line| format!("{line}\r\n"))
                    .collect();
                let mut server = tokio::net::TcpStream::connect(upstream.trim_start_matches("http://")).await.unwrap();
                server.write_all(format!("{kept}connection: close\r\n\r\n").as_bytes()).await.unwrap();
                let first = text.lines().next().unwrap_or_default();
                if first.starts_with("GET ") && first.contains(corrupt) {
                    // A GET has no body to pass on; the answer is read whole (the server closes).
                    let mut answer = Vec::new();
                    server.read_to_end(&mut answer).await.unwrap();
                    if let Some(last) = answer.last_mut() {
                        *last ^= 0x01;
                    }
                    let _ = client.write_all(&answer).await;
                    return;
                }
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    address
}

#[tokio::test]
async fn a_part_that_keeps_failing_completes_nothing_and_pings_fail() {
    let (app, _) = populated_app().await;
    add_incompressible_backups(&app.pool, 80).await;
    let bucket = TestBucket::new().await;
    let proxy = failing_proxy(bucket.endpoint.clone(), "partNumber=2").await;
    let (ping, mut pings) = super::backup_watch::ping_stub().await;
    let url = bucket.url("db");
    let db = app_url(&app);
    let failed = run_with(
        &["backup-db", "--to", &url, "--no-encryption", "--ping", &ping],
        &bucket,
        &[("DATABASE_URL", &db), ("AWS_ENDPOINT_URL_S3", &proxy)],
    )
    .await;
    assert_eq!(failed.code, 1, "{}", failed.stderr);
    assert!(failed.stderr.contains("uploading part 2"), "{}", failed.stderr);
    assert!(bucket.keys().await.is_empty(), "no object, no manifest, no record: {:?}", bucket.keys().await);
    assert!(bucket.uploads_in_progress().await.is_empty(), "the upload was aborted");
    assert_eq!(super::backup_watch::next_ping(&mut pings).await.0, "POST /ping/check-1/start HTTP/1.1");
    let (fail, error) = super::backup_watch::next_ping(&mut pings).await;
    assert_eq!(fail, "POST /ping/check-1/fail HTTP/1.1");
    assert!(error.contains("part 2"), "{error}");
}

/// The manifest is written only once the stored object reads back as it was sent.
#[tokio::test]
async fn an_object_that_does_not_read_back_as_sent_gets_no_manifest() {
    let (app, _) = populated_app().await;
    let bucket = TestBucket::new().await;
    let proxy = proxy(bucket.endpoint.clone(), "\0", ".sql.zst HTTP/1.1").await;
    let url = bucket.url("db");
    let failed = run_with(
        &["backup-db", "--to", &url, "--no-encryption"],
        &bucket,
        &[("DATABASE_URL", &app_url(&app)), ("AWS_ENDPOINT_URL_S3", &proxy)],
    )
    .await;
    assert_eq!(failed.code, 1, "{}", failed.stderr);
    assert!(failed.stderr.contains("does not read back as it was sent"), "{}", failed.stderr);
    let keys = bucket.keys().await;
    assert!(!keys.iter().any(|k| k.ends_with(".manifest.json")), "no manifest: {keys:?}");
    let listed = run_with(&["list-backups", &url, "--json"], &bucket, &[]).await;
    let listed: Value = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(listed["backups"], serde_json::json!([]));
}

#[tokio::test]
async fn backups_listed_after_more_than_a_thousand_other_objects_are_found() {
    let bucket = TestBucket::new().await;
    // Names that sort before ours, so ours are on the second page of a listing.
    let mut planting = tokio::task::JoinSet::new();
    for n in 0..1010 {
        let (endpoint, name) = (bucket.endpoint.clone(), bucket.name.clone());
        planting.spawn(async move {
            TestBucket { endpoint, name }.put(&format!("db/aaa-{n:04}.txt"), b"x".to_vec()).await;
        });
        if planting.len() >= 32 {
            planting.join_next().await.unwrap().unwrap();
        }
    }
    planting.join_all().await;
    let newest = plant_backup(&bucket, "db", 0).await;
    plant_backup(&bucket, "db", 1).await;
    let listed = run_with(&["list-backups", &bucket.url("db"), "--json"], &bucket, &[]).await;
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    let listed: Value = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(listed["backups"].as_array().unwrap().len(), 2, "{listed}");
    assert_eq!(listed["backups"][0]["key"], format!("db/{newest}"));
}
