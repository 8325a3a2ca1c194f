//! Memory: a gzip bomb costs the server no more than the document limit, and the allocator
//! gives unused memory back soon enough for `backup-db` to stay under its 32 MB.

use std::io::Write;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::common::{TEST_SECRET, TestDb, binary::Server, now, peak_rss, signed_request};

/// `decoded_mib` MiB of zeros inside a JSON string, gzipped: about a thousandth of the size.
fn gzip_bomb(decoded_mib: usize) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(b"{\"pad\": \"").unwrap();
    let zeros = vec![b'0'; 1024 * 1024];
    for _ in 0..decoded_mib {
        encoder.write_all(&zeros).unwrap();
    }
    encoder.write_all(b"\"}").unwrap();
    encoder.finish().unwrap()
}

#[tokio::test]
async fn a_gzip_bomb_is_refused_with_413_without_the_server_growing() {
    let db = TestDb::migrated().await;
    let server = Server::start(&db.url, &["--max-backup-bytes", "2097152"]).await;
    let pid = server.child.id().unwrap();
    let client = crate::common::http_client();
    let call = |method: Method, path: &str, body: &[u8], token: Option<&str>| {
        let request = signed_request(&client, &server.address, TEST_SECRET, now(), method, path, body);
        let request = request.header("content-type", "application/json");
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    };
    let registered: Value = call(Method::POST, "/api/users", b"", None).send().await.unwrap().json().await.unwrap();
    let token = registered["token"].as_str().unwrap().to_owned();
    // Warm up the allocator and the connection pool with an ordinary upload.
    let ordinary = call(Method::POST, "/api/backup", br#"{"warm": "up"}"#, Some(&token)).send().await.unwrap();
    assert_eq!(ordinary.status(), StatusCode::CREATED);
    let before = peak_rss(pid);

    let bomb = gzip_bomb(256);
    assert!(bomb.len() < 2 * 1024 * 1024, "the bomb itself passes the raw size check: {} bytes", bomb.len());
    let response =
        call(Method::POST, "/api/backup", &bomb, Some(&token)).header("content-encoding", "gzip").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large");

    let growth = peak_rss(pid).saturating_sub(before);
    // 256 MiB decoded would be 256 MiB; the cap is 2 MiB, plus the compressed body.
    assert!(growth < 8 * 1024 * 1024, "peak memory grew by {} KiB", growth / 1024);
    server.signal("TERM").await;
    assert_eq!(server.exit_code().await, 0);
}

/// jemalloc's settings as the binary runs them (its own statistics, printed at exit on request;
/// the binary's compiled settings stay, the environment only adds the printing). A decay of a
/// second kept `backup-db` at 39-47 MiB resident on a large dump, past its 32 MB; 100 ms keeps it
/// at 25-26 (bench/README.md, "The allocator's decay"). A dump large enough to show that takes
/// minutes, so this checks the setting that does it.
#[test]
fn the_allocator_returns_unused_pages_within_100_ms_from_a_background_thread() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dailyreps-backup-server"))
        .arg("--version")
        .env("_RJEM_MALLOC_CONF", "stats_print:true")
        .output()
        .unwrap();
    assert!(output.status.success());
    let stats = String::from_utf8_lossy(&output.stderr);
    for setting in ["opt.background_thread: true", "opt.dirty_decay_ms: 100 ", "opt.muzzy_decay_ms: 0 "] {
        assert!(stats.contains(setting), "jemalloc runs without {setting:?}:\n{stats}");
    }
}
