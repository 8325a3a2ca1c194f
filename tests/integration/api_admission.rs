//! What an unproven request may hold: bodies of clients without a valid signature or token,
//! slow bodies, `Expect: 100-continue`, downloads larger than the budget has room for, forged
//! cursors; and the request id on the error log line an operator looks for.

use std::time::{Duration, Instant};

use dailyreps_backup_server::config::ApiSettings;
use dailyreps_backup_server::config::Limits;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::binary::{Server, next_log};
use crate::common::{
    TEST_SECRET, TestApp, TestDb, TestUser, document_of, error_code, now, peak_rss, signed_request, test_settings,
};

const MIB: usize = 1024 * 1024;

/// Opens a connection that sends an upload's headers (declaring `length` bytes), from
/// `client` (as Fly's proxy names it), and one byte of body.
async fn held_upload(app: &TestApp, user: &TestUser, client: &str, length: usize, extra: &str) -> TcpStream {
    let mut stream = TcpStream::connect(app.address.trim_start_matches("http://")).await.unwrap();
    let head = format!(
        "POST /api/backup HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\nfly-client-ip: {client}\r\n\
         x-dailyreps-timestamp: {}\r\nx-dailyreps-signature: v1={}\r\ncontent-type: application/json\r\n\
         content-length: {length}\r\n{extra}\r\n{{",
        user.token,
        now(),
        "0".repeat(64)
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// The status line of the first answer on `stream`.
async fn first_status_line(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        let n = stream.read(&mut buffer).await.unwrap();
        assert!(n > 0, "closed without an answer");
        answer.extend_from_slice(&buffer[..n]);
    }
    String::from_utf8_lossy(&answer).lines().next().unwrap().to_owned()
}

#[tokio::test]
async fn sockets_without_a_valid_signature_cannot_hold_the_budget_from_others() {
    let app = TestApp::spawn().await;
    let (attacker, honest) = (app.register().await, app.register().await);
    // Ten sockets from one address, each declaring a maximal body and sending one byte: only
    // the client's share is held; the rest are answered 503 at once.
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(held_upload(&app, &attacker, "203.0.113.9", 10 * MIB, "").await);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.budget_in_use().await < (20 * MIB) as f64 {
        assert!(Instant::now() < deadline, "the sockets never held their share");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(app.budget_in_use().await <= (24 * MIB) as f64, "one client holds at most a quarter of 96 MiB");

    // An unknown token is refused before its body is read, holding nothing.
    let unknown = TestUser { id: uuid::Uuid::nil(), token: format!("drb_{}", "A".repeat(43)) };
    let mut refused = held_upload(&app, &unknown, "203.0.113.10", 10 * MIB, "").await;
    assert!(first_status_line(&mut refused).await.starts_with("HTTP/1.1 401"));

    let response = app
        .upload_with(
            &honest,
            &document_of(5 * MIB),
            &[("content-type", "application/json"), ("fly-client-ip", "198.51.100.7")],
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED, "another client is served");
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);

    // The held ones fall behind the minimum rate and are cut with 408, freeing their share.
    let started = Instant::now();
    let mut statuses = Vec::new();
    for mut stream in held {
        statuses.push(first_status_line(&mut stream).await);
    }
    assert!(started.elapsed() < Duration::from_secs(20), "cut after {:?}", started.elapsed());
    let cut = statuses.iter().filter(|s| s.starts_with("HTTP/1.1 408")).count();
    let busy = statuses.iter().filter(|s| s.starts_with("HTTP/1.1 503")).count();
    assert_eq!((cut + busy, cut > 0), (10, true), "{statuses:?}");
    assert!(app.budget_in_use().await < MIB as f64, "their share was given back");
}

#[tokio::test]
async fn a_client_waiting_for_100_continue_hears_503_instead_when_there_is_no_room() {
    let limits = Limits { max_backup_bytes: MIB, memory_budget_bytes: 5 * MIB, ..test_settings().limits };
    let app = TestApp::spawn_with(ApiSettings { limits, ..test_settings() }).await;
    let user = app.register().await;
    let mut holders = Vec::new();
    for client in 0..5 {
        holders.push(held_upload(&app, &user, &format!("192.0.2.{client}"), MIB, "").await);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.budget_in_use().await < (5 * MIB) as f64 {
        assert!(Instant::now() < deadline, "the holders never held the budget");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut waiting = held_upload(&app, &user, "192.0.2.200", MIB, "expect: 100-continue\r\n").await;
    let status = first_status_line(&mut waiting).await;
    assert!(status.starts_with("HTTP/1.1 503"), "not 100 Continue: {status}");
    drop(holders);
}

#[tokio::test]
async fn a_download_holds_room_for_its_document_before_reading_it() {
    let limits = Limits { max_backup_bytes: 2 * MIB, memory_budget_bytes: 9 * MIB, ..test_settings().limits };
    let app = TestApp::spawn_with(ApiSettings { limits, ..test_settings() }).await;
    let (big, small) = (app.register().await, app.register().await);
    let large = document_of(2 * MIB);
    let large_id = app.upload_ok(&big, &large).await;
    app.upload_ok(&small, br#"{"small": true}"#).await;
    // Hold all but about 3 MiB: a 2 MiB document needs 4 while it is read.
    let mut holders = Vec::new();
    for client in 0..3 {
        holders.push(held_upload(&app, &big, &format!("192.0.2.{client}"), 2 * MIB, "").await);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.budget_in_use().await < (6 * MIB) as f64 {
        assert!(Instant::now() < deadline, "the holders never held the budget");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for path in ["/api/backups/latest".to_owned(), format!("/api/backups/{large_id}")] {
        let refused = app.authed(&big, Method::GET, &path, b"").send().await.unwrap();
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert!(refused.headers().contains_key("retry-after"));
    }
    let served = app.authed(&small, Method::GET, "/api/backups/latest", b"").send().await.unwrap();
    assert_eq!(served.status(), StatusCode::OK, "a small document still fits");
    drop(holders);
    let deadline = Instant::now() + Duration::from_secs(20);
    let restored = loop {
        let response = app.authed(&big, Method::GET, "/api/backups/latest", b"").send().await.unwrap();
        if response.status() == StatusCode::OK {
            break response.bytes().await.unwrap();
        }
        assert!(Instant::now() < deadline, "the budget was never given back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(restored.as_ref(), large.as_slice(), "byte for byte once there is room");
}

#[tokio::test]
async fn concurrent_large_downloads_stay_within_the_machines_memory() {
    let db = TestDb::migrated().await;
    // The binary's own defaults: 10 MiB documents, a 96 MiB budget.
    let server = Server::start(&db.url, &[]).await;
    let client = crate::common::http_client();
    let call = |method: Method, path: &str, body: &[u8]| {
        signed_request(&client, &server.address, TEST_SECRET, now(), method, path, body)
            .header("content-type", "application/json")
    };
    let registered: Value = call(Method::POST, "/api/users", b"").send().await.unwrap().json().await.unwrap();
    let token = registered["token"].as_str().unwrap().to_owned();
    let limits = call(Method::GET, "/api/users/me", b"").bearer_auth(&token).send().await.unwrap();
    let limits: Value = limits.json().await.unwrap();
    assert_eq!(
        limits["limits"],
        serde_json::json!({"max_backup_bytes": 10 * MIB, "max_backups_kept": 30}),
        "the binary's defaults"
    );
    let document = document_of(10 * MIB);
    let stored = call(Method::POST, "/api/backup", &document).bearer_auth(&token).send().await.unwrap();
    assert_eq!(stored.status(), StatusCode::CREATED);

    let mut downloads = tokio::task::JoinSet::new();
    for _ in 0..24 {
        let request = call(Method::GET, "/api/backups/latest", b"").bearer_auth(&token);
        downloads.spawn(async move {
            let response = request.send().await.unwrap();
            (response.status(), response.bytes().await.unwrap().len())
        });
    }
    let answers = downloads.join_all().await;
    assert!(
        answers.iter().all(|(status, len)| (*status == StatusCode::OK && *len == 10 * MIB)
            || *status == StatusCode::SERVICE_UNAVAILABLE)
    );
    assert!(answers.iter().any(|(status, _)| *status == StatusCode::OK));
    let peak = peak_rss(server.child.id().unwrap());
    assert!(peak < 150 * 1000 * 1000, "peak RSS {} MiB under 24 concurrent 10 MiB downloads", peak / MIB as u64);
    println!("peak RSS under 24 concurrent 10 MiB downloads: {:.1} MiB", peak as f64 / MIB as f64);
    server.signal("TERM").await;
    assert_eq!(server.exit_code().await, 0);
}

#[tokio::test]
async fn a_forged_cursor_is_a_bad_request() {
    use base64::Engine;
    let app = TestApp::spawn().await;
    let user = app.register().await;
    let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!("-219936096000000000.{}", uuid::Uuid::nil().simple()));
    let response = app.authed(&user, Method::GET, &format!("/api/backups?cursor={forged}"), b"").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(response).await, "invalid_request");
}

#[tokio::test]
async fn an_internal_errors_log_line_carries_the_request_id_the_client_saw() {
    let db = TestDb::migrated().await;
    let mut server = Server::start(&db.url, &[]).await;
    let client = crate::common::http_client();
    let registered = signed_request(&client, &server.address, TEST_SECRET, now(), Method::POST, "/api/users", b"");
    let registered: Value = registered.send().await.unwrap().json().await.unwrap();
    let token = registered["token"].as_str().unwrap();
    let document = br#"{"workouts": [1, 2, 3]}"#;
    let uploaded = signed_request(&client, &server.address, TEST_SECRET, now(), Method::POST, "/api/backup", document)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(uploaded.status(), StatusCode::CREATED);
    // A damaged chunk: the server refuses to answer bytes that are not what was uploaded.
    let pool = db.pool().await;
    sqlx::query("UPDATE chunks SET data = '{}'").execute(&pool).await.unwrap();
    let response =
        signed_request(&client, &server.address, TEST_SECRET, now(), Method::GET, "/api/backups/latest", b"")
            .bearer_auth(token)
            .header("x-request-id", "support-ticket-4711")
            .send()
            .await
            .unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(response.headers()["x-request-id"], "support-ticket-4711");
    let logged = next_log(&mut server.logs, "internal error").await;
    assert_eq!(logged["span"]["request_id"], "support-ticket-4711", "{logged}");
    server.signal("TERM").await;
}

/// A download keeps its room in the memory budget until its body is sent, not only until its
/// handler returns: a client that asks for a large document and reads nothing holds it.
#[tokio::test]
async fn a_download_holds_its_room_until_its_body_is_sent() {
    let app = TestApp::spawn().await;
    let user = app.register().await;
    let document = document_of(8 * MIB);
    app.upload_ok(&user, &document).await;
    assert_eq!(app.budget_in_use().await, 0.0);

    // A receive buffer of a few KiB: the server's send waits once its own buffer is full.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(app.address.trim_start_matches("http://").parse().unwrap()).await.unwrap();
    let timestamp = now();
    let path = "/api/backups/latest";
    let signature = dailyreps_backup_server::signature::sign(TEST_SECRET.as_bytes(), timestamp, "GET", path, b"");
    let request = format!(
        "GET {path} HTTP/1.1\r\nhost: test\r\nauthorization: Bearer {}\r\nx-dailyreps-timestamp: {timestamp}\r\n\
         x-dailyreps-signature: {signature}\r\n\r\n",
        user.token
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let read = stream.read(&mut buffer).await.unwrap();
        assert!(read > 0, "the server closed before answering");
        head.extend_from_slice(&buffer[..read]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&head));
    let in_use = app.budget_in_use().await;
    assert!(in_use >= document.len() as f64, "{in_use} bytes held while the 8 MiB body waits to be sent");

    // Read it all: the room is given back.
    let body_start = head.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let mut received = head.len() - body_start;
    while received < document.len() {
        let read = stream.read(&mut buffer).await.unwrap();
        assert!(read > 0);
        received += read;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.budget_in_use().await > 0.0 {
        assert!(Instant::now() < deadline, "the room was never given back");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
