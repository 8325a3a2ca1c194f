//! Slow and abusive clients: dribbled headers, idle connections beyond the cap, oversized
//! headers and garbage. Each leaves the server serving everyone else.

use std::time::{Duration, Instant};

use dailyreps_backup_server::config::ApiSettings;
use dailyreps_backup_server::config::ConnectionLimits;
use dailyreps_backup_server::http::connections::MAX_HEADER_BYTES;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::common::{TestApp, test_settings};

async fn spawn_with_connections(connections: ConnectionLimits) -> TestApp {
    TestApp::spawn_with(ApiSettings { connections, ..test_settings() }).await
}

fn socket_address(app: &TestApp) -> String {
    app.address.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection; returns what it sent first.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return received,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
        }
    }
}

/// A plain request that must be answered 200 within `limit`, however busy the abusers keep
/// the server.
async fn assert_served_within(app: &TestApp, limit: Duration) {
    let response = tokio::time::timeout(limit, app.get("/healthz")).await.expect("a normal client was starved");
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn headers_dribbled_a_byte_at_a_time_are_cut_off_and_others_are_served_meanwhile() {
    let header_timeout = Duration::from_secs(1);
    let app = spawn_with_connections(ConnectionLimits { header_timeout, max_connections: 512 }).await;
    let mut dribblers = JoinSet::new();
    for _ in 0..20 {
        let mut stream = TcpStream::connect(socket_address(&app)).await.unwrap();
        dribblers.spawn(async move {
            let started = Instant::now();
            // 2,000 bytes at one per 50 ms would take 100 s; the server must not wait that long.
            let request = format!("GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: {}\r\n\r\n", "a".repeat(2000));
            for byte in request.as_bytes() {
                if stream.write_all(std::slice::from_ref(byte)).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let answer = read_until_closed(&mut stream).await;
            (started.elapsed(), answer)
        });
    }
    for _ in 0..20 {
        assert_served_within(&app, Duration::from_secs(5)).await;
    }
    while let Some(result) = dribblers.join_next().await {
        let (elapsed, answer) = result.unwrap();
        assert!(elapsed < Duration::from_secs(10), "a dribbler held its connection for {elapsed:?}");
        let answer = String::from_utf8_lossy(&answer);
        assert!(!answer.contains(" 200 "), "a dribbled request was answered: {answer}");
    }
}

#[tokio::test]
async fn idle_connections_beyond_the_cap_are_reaped_and_a_new_client_is_served() {
    let limits = ConnectionLimits { header_timeout: Duration::from_secs(1), max_connections: 16 };
    let app = spawn_with_connections(limits).await;
    let mut idle = Vec::new();
    for _ in 0..64 {
        idle.push(TcpStream::connect(socket_address(&app)).await.unwrap());
    }
    // All 64 connect (the kernel's backlog takes them), but only 16 are served at once: the
    // new client gets in only because the idle ones are closed after the header timeout.
    assert_served_within(&app, Duration::from_secs(15)).await;
    let closed_by_server = tokio::time::timeout(Duration::from_secs(15), read_until_closed(&mut idle[0]))
        .await
        .expect("an idle connection was never closed");
    assert!(closed_by_server.is_empty(), "nothing is sent to a client that asked nothing");
}

#[tokio::test]
async fn oversized_headers_get_431_and_the_server_stays_healthy() {
    let app = TestApp::spawn().await;
    let mut stream = TcpStream::connect(socket_address(&app)).await.unwrap();
    let request = format!("GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n", "a".repeat(MAX_HEADER_BYTES));
    stream.write_all(request.as_bytes()).await.unwrap();
    let answer = read_until_closed(&mut stream).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert_served_within(&app, Duration::from_secs(5)).await;
}

/// Deterministic bytes: a failure reproduces.
fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Garbage with some structure, so some of it passes the request line and fails later.
fn garbage_request(seed: u64) -> Vec<u8> {
    let noise = garbage(seed, 16 + (seed as usize * 37) % 600);
    match seed % 4 {
        0 => noise,
        1 => [b"GET /".as_slice(), &noise, b" HTTP/1.1\r\n\r\n"].concat(),
        2 => {
            [b"POST /api/backup HTTP/1.1\r\nhost: x\r\ncontent-length: 12\r\n".as_slice(), &noise, b"\r\n\r\n"].concat()
        }
        _ => [b"POST /api/users HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n".as_slice(), &noise].concat(),
    }
}

#[tokio::test]
async fn thousands_of_garbage_requests_get_4xx_or_a_closed_connection_and_leave_the_server_healthy() {
    let limits = ConnectionLimits { header_timeout: Duration::from_secs(2), max_connections: 512 };
    let app = spawn_with_connections(limits).await;
    let address = socket_address(&app);
    let mut senders = JoinSet::new();
    for worker in 0..16u64 {
        let address = address.clone();
        senders.spawn(async move {
            let mut answered = 0;
            for i in 0..125u64 {
                let seed = worker * 1000 + i;
                let mut stream = TcpStream::connect(&address).await.unwrap();
                let _ = stream.write_all(&garbage_request(seed)).await;
                let _ = stream.shutdown().await;
                let answer = read_until_closed(&mut stream).await;
                if !answer.is_empty() {
                    let status = String::from_utf8_lossy(&answer[..answer.len().min(12)]).into_owned();
                    assert!(status.starts_with("HTTP/1.1 4"), "garbage {seed} got {status:?}");
                    answered += 1;
                }
            }
            answered
        });
    }
    let mut answered = 0;
    while let Some(result) = senders.join_next().await {
        answered += result.unwrap();
    }
    assert!(answered > 1000, "most garbage gets an answer, not a silent close: {answered} of 2000");
    assert_served_within(&app, Duration::from_secs(5)).await;
    let user = app.register().await;
    assert_eq!(app.upload(&user, br#"{"after": "garbage"}"#).await.status(), StatusCode::CREATED);
}
