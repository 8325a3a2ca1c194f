//! `serve --dev`: its own PostgreSQL, kept between runs, stopped with the server.

use std::path::Path;
use std::process::Stdio;

use reqwest::StatusCode;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::common::{binary, scratch_dir};

struct DevRun {
    stdout: String,
    stderr: String,
    code: i32,
}

/// Runs `serve --dev` in `dir`, checks /readyz, then stops it with SIGINT.
async fn run_dev_server(dir: &Path) -> DevRun {
    let mut child = binary::command()
        .args(["serve", "--dev", "--bind", "127.0.0.1:0", "--metrics-bind", "127.0.0.1:0", "--log-format", "json"])
        .arg("--dev-data-dir")
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut banner = String::new();
    let api = loop {
        let line = stdout.next_line().await.unwrap().expect("the banner names the API address");
        banner.push_str(&line);
        banner.push('\n');
        if let Some(address) = line.trim().strip_prefix("API:") {
            break address.trim().to_owned();
        }
    };
    while let Some(line) = stdout.next_line().await.unwrap() {
        banner.push_str(&line);
        banner.push('\n');
        if line.starts_with("Press Ctrl-C") {
            break;
        }
    }
    let ready = crate::common::get(&format!("{api}/readyz")).await;
    assert_eq!(ready.status(), StatusCode::OK, "{banner}");

    let pid = child.id().unwrap().to_string();
    assert!(tokio::process::Command::new("kill").args(["-INT", &pid]).status().await.unwrap().success());
    let output = child.wait_with_output().await.unwrap();
    DevRun { stdout: banner, stderr: String::from_utf8(output.stderr).unwrap(), code: output.status.code().unwrap() }
}

fn exported_secret(banner: &str) -> String {
    let line = banner.lines().find(|line| line.contains("export APP_SIGNING_SECRET=")).expect("the secret is printed");
    line.split('\'').nth(1).unwrap().to_owned()
}

#[tokio::test]
async fn dev_mode_runs_its_own_database_and_keeps_it_between_runs() {
    let dir = scratch_dir("dev");
    let first = run_dev_server(&dir).await;
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert!(first.stderr.contains("created and started PostgreSQL"), "{}", first.stderr);
    assert!(first.stderr.contains("stopped the development PostgreSQL"), "{}", first.stderr);
    let secret = exported_secret(&first.stdout);
    assert!(secret.len() >= 32, "{secret}");
    assert!(dir.join("postgres/PG_VERSION").exists());
    assert!(!dir.join("postgres/postmaster.pid").exists(), "PostgreSQL is still running");

    let second = run_dev_server(&dir).await;
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert!(second.stderr.contains("started PostgreSQL") && !second.stderr.contains("created"), "{}", second.stderr);
    assert_eq!(exported_secret(&second.stdout), secret, "the secret is kept between runs");
    assert!(!dir.join("postgres/postmaster.pid").exists(), "PostgreSQL is still running");
    std::fs::remove_dir_all(&dir).unwrap();
}
