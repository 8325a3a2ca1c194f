//! Backups that are watched: each one recorded in the database (and its identity sequence
//! carried across a restore), `serve`'s gauge of the last success, and the dead-man's-switch
//! ping on success and failure.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::backup_db::{app_url, backup, populated_app, restore};
use crate::common::s3::TestBucket;
use crate::common::{TestApp, TestDb, binary, scratch_dir};

/// A monitor that answers 200 to everything and reports each request's line and body.
pub(crate) async fn ping_stub() -> (String, mpsc::UnboundedReceiver<(String, String)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/ping/check-1", listener.local_addr().unwrap());
    let (seen, pings) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                // Headers, then as much body as Content-Length says.
                loop {
                    let n = stream.read(&mut buffer).await.unwrap_or(0);
                    request.extend_from_slice(&buffer[..n]);
                    let text = String::from_utf8_lossy(&request).into_owned();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let length = head
                            .lines()
                            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(str::to_owned))
                            .and_then(|l| l.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if body.len() >= length || n == 0 {
                            let line = head.lines().next().unwrap_or_default().to_owned();
                            let _ = seen.send((line, body.to_owned()));
                            break;
                        }
                    }
                    if n == 0 {
                        break;
                    }
                }
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nOK").await;
            });
        }
    });
    (url, pings)
}

pub(crate) async fn next_ping(pings: &mut mpsc::UnboundedReceiver<(String, String)>) -> (String, String) {
    tokio::time::timeout(Duration::from_secs(20), pings.recv()).await.expect("a ping").expect("the stub runs")
}

#[tokio::test]
async fn a_backup_pings_start_and_success_and_a_failing_one_start_and_fail() {
    let (app, _) = populated_app().await;
    let (url, mut pings) = ping_stub().await;
    let dir = scratch_dir("dumps");
    backup(&app_url(&app), &dir, &["--ping", &url]).await;
    assert_eq!(next_ping(&mut pings).await.0, "POST /ping/check-1/start HTTP/1.1");
    let (success, summary) = next_ping(&mut pings).await;
    assert_eq!(success, "POST /ping/check-1 HTTP/1.1");
    assert!(summary.contains("dailyreps-") && summary.contains("bytes"), "{summary}");

    let bucket = TestBucket::new().await;
    let mut env: Vec<(&str, String)> = bucket.env();
    env.push(("DATABASE_URL", app_url(&app)));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let failed =
        binary::run(&["backup-db", "--to", "s3://no-such-bucket-here/db", "--no-encryption", "--ping", &url], &env)
            .await;
    assert_eq!(failed.code, 1);
    assert_eq!(next_ping(&mut pings).await.0, "POST /ping/check-1/start HTTP/1.1");
    let (fail, error) = next_ping(&mut pings).await;
    assert_eq!(fail, "POST /ping/check-1/fail HTTP/1.1");
    assert!(error.contains("no-such-bucket-here"), "the error goes along: {error}");

    // A monitor that does not answer never fails the backup.
    let unreachable = backup(&app_url(&app), &dir, &["--ping", "http://127.0.0.1:1/ping"]).await;
    assert!(unreachable["path"].is_string());
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn each_backup_is_recorded_and_serve_exports_the_last_success() {
    let (app, _) = populated_app().await;
    let dir = scratch_dir("dumps");
    let first = backup(&app_url(&app), &dir, &[]).await;
    let second = backup(&app_url(&app), &dir, &[]).await;
    let recorded: Vec<(i64, String, i64)> =
        sqlx::query_as("SELECT id, location, bytes FROM database_backups ORDER BY id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(recorded.len(), 2);
    assert_eq!(recorded[1].1, second["path"].as_str().unwrap());
    assert_eq!(Some(recorded[0].2), first["bytes"].as_i64());

    // The second dump holds the first's record, and the identity sequence carries on.
    let target = TestDb::empty().await;
    let restored = restore(&target.url, second["path"].as_str().unwrap(), &[]).await;
    assert_eq!(restored.code, 0, "{}", restored.stderr);
    let pool = target.pool().await;
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM database_backups").fetch_all(&pool).await.unwrap();
    assert_eq!(ids, [recorded[0].0]);
    let next: i64 =
        sqlx::query_scalar("INSERT INTO database_backups (location, bytes, seconds) VALUES ('x', 0, 0) RETURNING id")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(next, recorded[0].0 + 1, "the sequence was set from the dump");

    let copy = TestApp::spawn_on(&target.url).await;
    let finished: time::OffsetDateTime =
        sqlx::query_scalar("SELECT max(finished_at) FROM database_backups").fetch_one(&pool).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text =
            copy.client.get(format!("{}/metrics", copy.metrics_address)).send().await.unwrap().text().await.unwrap();
        let value = text
            .lines()
            .find(|l| l.starts_with("dailyreps_database_backup_last_success_timestamp_seconds "))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .expect("the gauge is exported");
        if (value - finished.unix_timestamp() as f64).abs() < 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "the gauge never showed the last backup: {value}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::remove_dir_all(dir).unwrap();
}
