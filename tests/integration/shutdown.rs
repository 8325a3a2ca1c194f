//! SIGTERM and SIGINT: stop accepting, finish what is in flight, exit 0.

use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::common::{
    TestDb,
    binary::{self, Server},
};

/// Waits until the listener is closed (the server logs the signal just before closing it).
async fn wait_until_refused(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting connections 10 s after the signal");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sigterm_finishes_the_request_in_flight_then_exits_0() {
    let db = TestDb::migrated().await;
    let mut server = Server::start(&db.url, &[]).await;
    let pool = db.pool().await;

    // Hold a lock that /readyz's query must wait for: a request is then truly in flight.
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE _sqlx_migrations IN ACCESS EXCLUSIVE MODE").execute(&mut *blocker).await.unwrap();
    let client = crate::common::http_client();
    let in_flight = tokio::spawn(client.get(format!("{}/readyz", server.address)).send());
    crate::common::wait_until_blocked_on_lock(&pool, "").await;

    server.signal("TERM").await;
    binary::next_log(&mut server.logs, "shutting down: no new connections; finishing requests in flight").await;
    wait_until_refused(server.address.trim_start_matches("http://")).await;

    blocker.commit().await.unwrap();
    let response = in_flight.await.unwrap().expect("the in-flight request is answered");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(server.exit_code().await, 0);
}

#[tokio::test]
async fn sigint_stops_an_idle_server_with_exit_0() {
    let db = TestDb::migrated().await;
    let mut server = Server::start(&db.url, &[]).await;
    assert_eq!(crate::common::get(&format!("{}/healthz", server.address)).await.status(), StatusCode::OK);
    server.signal("INT").await;
    binary::next_log(&mut server.logs, "stopped").await;
    assert_eq!(server.exit_code().await, 0);
}
