//! The server SIGKILLed under load loses no acknowledged upload.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::time::Duration;

use reqwest::{Method, StatusCode};
use tokio::io::{BufReader, Lines};
use tokio::process::ChildStderr;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::common::binary::Server;
use crate::common::{TEST_SECRET, TestDb, http_client, now, signed_request};

const CLIENTS: usize = 16;
/// Acknowledged uploads after which the server is killed, mid-stream.
const KILL_AFTER: usize = 300;

/// One acknowledged upload: who, what id, which bytes.
struct Acknowledged {
    token: String,
    backup_id: String,
    document: Vec<u8>,
}

/// Reads a server's log lines so its stderr pipe never fills and blocks it.
fn drain(mut logs: Lines<BufReader<ChildStderr>>) {
    tokio::spawn(async move { while let Ok(Some(_)) = logs.next_line().await {} });
}

async fn register(client: &reqwest::Client, base: &str) -> String {
    let response =
        signed_request(client, base, TEST_SECRET, now(), Method::POST, "/api/users", b"").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json::<serde_json::Value>().await.unwrap()["token"].as_str().unwrap().to_owned()
}

/// A workout log that differs per client and per upload, a few KiB long.
fn document(client: usize, n: usize) -> Vec<u8> {
    let sets: Vec<String> = (0..(20 + (client * 7 + n) % 60))
        .map(|i| format!(r#"{{"exercise":"squat-{client}","set":{i},"reps":{},"kg":{}.5}}"#, 5 + i % 7, 40 + n % 50))
        .collect();
    format!(r#"{{"client":{client},"upload":{n},"sets":[{}]}}"#, sets.join(",")).into_bytes()
}

/// Uploads until the server stops answering; returns what it acknowledged with 201.
async fn upload_until_refused(
    client: reqwest::Client,
    base: String,
    token: String,
    id: usize,
    acknowledged_so_far: Arc<AtomicUsize>,
    enough: Arc<Notify>,
) -> Vec<Acknowledged> {
    let mut acknowledged = Vec::new();
    for n in 0.. {
        let document = document(id, n);
        let request = signed_request(&client, &base, TEST_SECRET, now(), Method::POST, "/api/backup", &document)
            .bearer_auth(&token)
            .header("content-type", "application/json");
        let Ok(response) = request.send().await else { break };
        if response.status() != StatusCode::CREATED {
            break;
        }
        let Ok(body) = response.json::<serde_json::Value>().await else { break };
        let backup_id = body["backup_id"].as_str().unwrap().to_owned();
        acknowledged.push(Acknowledged { token: token.clone(), backup_id, document });
        if acknowledged_so_far.fetch_add(1, Ordering::SeqCst) + 1 == KILL_AFTER {
            enough.notify_one();
        }
    }
    acknowledged
}

#[tokio::test]
async fn every_upload_answered_201_survives_a_sigkill_byte_for_byte() {
    let db = TestDb::migrated().await;
    // Keep every backup, and let one IP make thousands of requests.
    let args = [
        "--max-backups-kept",
        "100000",
        "--rate-limit-register-per-minute",
        "0",
        "--rate-limit-user-per-minute",
        "0",
        "--rate-limit-ip-per-minute",
        "0",
    ];
    let mut server = Server::start(&db.url, &args).await;
    drain(server.logs);
    let client = http_client();
    let counter = Arc::new(AtomicUsize::new(0));
    let enough = Arc::new(Notify::new());
    let mut uploaders = JoinSet::new();
    for id in 0..CLIENTS {
        let token = register(&client, &server.address).await;
        let task =
            upload_until_refused(client.clone(), server.address.clone(), token, id, counter.clone(), enough.clone());
        uploaders.spawn(task);
    }

    tokio::time::timeout(Duration::from_secs(120), enough.notified())
        .await
        .expect("the uploaders stopped before the kill (a refused upload?)");
    server.child.start_kill().unwrap();
    server.child.wait().await.unwrap();
    let mut acknowledged = Vec::new();
    while let Some(result) = uploaders.join_next().await {
        acknowledged.extend(result.unwrap());
    }
    assert!(acknowledged.len() >= KILL_AFTER, "only {} acknowledged", acknowledged.len());

    let restarted = Server::start(&db.url, &args).await;
    drain(restarted.logs);
    for upload in &acknowledged {
        let path = format!("/api/backups/{}", upload.backup_id);
        let response = signed_request(&client, &restarted.address, TEST_SECRET, now(), Method::GET, &path, b"")
            .bearer_auth(&upload.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "acknowledged backup {} is gone", upload.backup_id);
        let stored = response.bytes().await.unwrap();
        assert!(stored == upload.document, "backup {} changed", upload.backup_id);
    }
}
