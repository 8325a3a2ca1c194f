//! `serve --dev`: its own PostgreSQL, kept between runs, stopped with the server.

use std::path::Path;
use std::process::Stdio;

use reqwest::StatusCode;
use sqlx::Connection;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::common::{binary, scratch_dir};

struct DevRun {
    stdout: String,
    stderr: String,
    code: i32,
}

/// A running `serve --dev` and the banner it printed.
struct DevServer {
    child: tokio::process::Child,
    banner: String,
    api: String,
}

fn dev_command(dir: &Path) -> tokio::process::Command {
    dev_command_on(dir, "127.0.0.1:0", "127.0.0.1:0")
}

/// `serve --dev` with these `--bind` and `--metrics-bind`.
fn dev_command_on(dir: &Path, bind: &str, metrics_bind: &str) -> tokio::process::Command {
    dev_command_of(binary::command(), dir, bind, metrics_bind)
}

/// `command` (the binary, or a copy of it) as `serve --dev` with these `--bind` and `--metrics-bind`.
fn dev_command_of(
    mut command: tokio::process::Command,
    dir: &Path,
    bind: &str,
    metrics_bind: &str,
) -> tokio::process::Command {
    command
        .args(["serve", "--dev", "--bind", bind, "--metrics-bind", metrics_bind, "--log-format", "json"])
        .arg("--dev-data-dir")
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Starts `serve --dev` in `dir` and reads its banner.
async fn start_dev_server(dir: &Path) -> DevServer {
    start_dev_command(dev_command(dir)).await
}

/// Starts `command` (a `serve --dev`) and reads its banner.
async fn start_dev_command(mut command: tokio::process::Command) -> DevServer {
    let mut child = command.spawn().unwrap();
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
    DevServer { child, banner, api }
}

impl DevServer {
    /// Stops it with SIGINT, as Ctrl-C would.
    async fn stop(self) -> DevRun {
        let pid = self.child.id().unwrap().to_string();
        assert!(tokio::process::Command::new("kill").args(["-INT", &pid]).status().await.unwrap().success());
        let output = self.child.wait_with_output().await.unwrap();
        DevRun {
            stdout: self.banner,
            stderr: String::from_utf8(output.stderr).unwrap(),
            code: output.status.code().unwrap(),
        }
    }
}

/// Runs `serve --dev` in `dir`, checks /readyz, then stops it with SIGINT.
async fn run_dev_server(dir: &Path) -> DevRun {
    let server = start_dev_server(dir).await;
    let ready = crate::common::get(&format!("{}/readyz", server.api)).await;
    assert_eq!(ready.status(), StatusCode::OK, "{}", server.banner);
    server.stop().await
}

/// What `NAME` holds once a shell has run the banner's `export` lines, pasted as they are.
fn exported(banner: &str, name: &str) -> String {
    let exports: Vec<&str> = banner.lines().map(str::trim).filter(|line| line.starts_with("export ")).collect();
    assert!(exports.iter().any(|line| line.starts_with(&format!("export {name}="))), "{name} is exported: {banner}");
    let script = format!("set -e\n{}\nprintf %s \"${name}\"", exports.join("\n"));
    let shell = std::process::Command::new("sh").args(["-c", &script]).output().unwrap();
    assert!(shell.status.success(), "{script}: {}", String::from_utf8_lossy(&shell.stderr));
    String::from_utf8(shell.stdout).unwrap()
}

fn exported_secret(banner: &str) -> String {
    exported(banner, "APP_SIGNING_SECRET")
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
    assert!(!first.stdout.contains(&secret) && !first.stderr.contains(&secret), "the secret is never printed");
    assert!(dir.join("postgres/PG_VERSION").exists());
    assert!(!dir.join("postgres/postmaster.pid").exists(), "PostgreSQL is still running");

    let database_url = exported(&first.stdout, "DATABASE_URL");
    assert!(database_url.starts_with("postgres://postgres@127.0.0.1:"), "{database_url}");

    // The cluster asks for its password, which the banner never shows: a file PGPASSFILE names,
    // kept beside the signing secret and readable by this user only.
    let pgpass = exported(&first.stdout, "PGPASSFILE");
    assert_eq!(Path::new(&pgpass), std::path::absolute(dir.join("pgpass")).unwrap());
    let kept = std::fs::read_to_string(&pgpass).unwrap();
    let password = kept.trim().rsplit(':').next().unwrap();
    assert!(password.len() >= 32 && !first.stdout.contains(password) && !first.stderr.contains(password));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&pgpass).unwrap().permissions().mode() & 0o777, 0o600);

    let second = start_dev_server(&dir).await;
    let without = sqlx::PgConnection::connect(&database_url).await.map(drop);
    let refused = without.expect_err("a connection without the password is refused").to_string();
    assert!(refused.contains("password authentication failed"), "{refused}");
    let with = sqlx::PgConnection::connect(&database_url.replacen("postgres@", &format!("postgres:{password}@"), 1));
    with.await.expect("the kept password is the cluster's");
    let second = second.stop().await;
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert_eq!(exported(&second.stdout, "DATABASE_URL"), database_url, "the database keeps its port between runs");
    assert!(second.stderr.contains("started PostgreSQL") && !second.stderr.contains("created"), "{}", second.stderr);
    assert_eq!(exported_secret(&second.stdout), secret, "the secret is kept between runs");
    assert!(!dir.join("postgres/postmaster.pid").exists(), "PostgreSQL is still running");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The uid and gid of the user PostgreSQL runs as when we are root; `None` when we are not.
fn unprivileged_user() -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata("/proc/self").unwrap().uid() != 0 {
        return None;
    }
    let id = |flag: &str| {
        let output = std::process::Command::new("id").args([flag, "postgres"]).output().unwrap();
        assert!(output.status.success(), "CI installs PostgreSQL, and with it a `postgres` user");
        String::from_utf8(output.stdout).unwrap().trim().parse().unwrap()
    };
    Some((id("-u"), id("-g")))
}

/// The quick start as most developers run it: not as root, so PostgreSQL runs as they do, in
/// the data folder itself. Every other test here runs as root in CI, where the cluster is
/// handed to the `postgres` user and kept elsewhere; this one becomes that user first.
#[tokio::test]
async fn dev_mode_runs_for_a_user_who_is_not_root() {
    use std::os::unix::fs::MetadataExt;
    let dir = scratch_dir("dev-user");
    std::fs::create_dir_all(&dir).unwrap();
    let user = unprivileged_user();
    let mut command = binary::command();
    if let Some((uid, gid)) = user {
        // The build may sit where only root can enter (CI's clone is in a `mktemp -d` folder).
        let copy = dir.join("dailyreps-backup-server");
        std::fs::copy(env!("CARGO_BIN_EXE_dailyreps-backup-server"), &copy).unwrap();
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
        command = binary::command_of(&copy);
        command.uid(uid).gid(gid);
    }
    let data = dir.join("dev");
    let server = start_dev_command(dev_command_of(command, &data, "127.0.0.1:0", "127.0.0.1:0")).await;
    let kept = format!("(data kept in {})", data.join("postgres").display());
    assert!(server.banner.contains(&kept), "the cluster lives in the data folder: {}", server.banner);
    let ready = crate::common::get(&format!("{}/readyz", server.api)).await;
    assert_eq!(ready.status(), StatusCode::OK, "{}", server.banner);
    let run = server.stop().await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("stopped the development PostgreSQL"), "{}", run.stderr);
    assert!(!data.join("postgres/postmaster.pid").exists(), "PostgreSQL is still running");
    let me = user.map_or_else(|| std::fs::metadata("/proc/self").unwrap().uid(), |(uid, _)| uid);
    for owned in ["postgres", "pgpass", "signing-secret"] {
        assert_eq!(std::fs::metadata(data.join(owned)).unwrap().uid(), me, "{owned} is the user's own");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn the_banner_exports_what_request_and_inspect_read() {
    // A folder a shell would split or unquote: the exports must survive being pasted.
    let dir = scratch_dir("dev banner's");
    let server = start_dev_server(&dir).await;
    let url = exported(&server.banner, "DAILYREPS_URL");
    assert_eq!(url, server.api, "{}", server.banner);
    let env = [
        ("DAILYREPS_URL", url.as_str()),
        ("APP_SIGNING_SECRET", &exported_secret(&server.banner)),
        ("DATABASE_URL", &exported(&server.banner, "DATABASE_URL")),
        ("PGPASSFILE", &exported(&server.banner, "PGPASSFILE")),
    ];
    assert_eq!(Path::new(env[3].1), std::path::absolute(dir.join("pgpass")).unwrap());
    assert_eq!(env[1].1, std::fs::read_to_string(dir.join("signing-secret")).unwrap().trim());
    // The README's first request, on a port that is not 8080, with nothing but the exports.
    let registered = binary::run(&["request", "POST", "/api/users"], &env).await;
    assert_eq!(registered.code, 0, "{}", registered.stderr);
    let answer: serde_json::Value = serde_json::from_str(&registered.stdout).unwrap();
    let user_id = answer["user_id"].as_str().unwrap().to_owned();
    let mut people = env.to_vec();
    people.extend(binary::AS_ON_A_TERMINAL);
    let inspected = binary::run(&["inspect", "user", &user_id], &people).await;
    assert_eq!(inspected.code, 0, "{}", inspected.stderr);
    assert!(inspected.stdout.contains(&user_id), "{}", inspected.stdout);

    let second = dev_command(&dir).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("already running (pid "), "{stderr}");
    assert_eq!(stderr.matches("already running").count(), 1, "said once: {stderr}");

    let first = server.stop().await;
    assert_eq!(first.code, 0, "the first server is unharmed: {}", first.stderr);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn dev_mode_listens_on_loopback_and_takes_a_free_metrics_port_when_its_own_is_taken() {
    let dir = scratch_dir("dev-ports");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    // The defaults' unspecified addresses, as a laptop's `serve --dev` has them.
    let server = start_dev_command(dev_command_on(&dir, "0.0.0.0:0", &format!("[::]:{port}"))).await;
    assert!(server.api.starts_with("http://127.0.0.1:"), "{}", server.banner);
    let metrics = server.banner.lines().find_map(|l| l.trim().strip_prefix("Metrics:")).unwrap().trim().to_owned();
    assert!(metrics.starts_with("http://127.0.0.1:") && !metrics.contains(&format!(":{port}/")), "{metrics}");
    let scraped = crate::common::get(&metrics).await;
    assert_eq!(scraped.status(), StatusCode::OK);
    let run = server.stop().await;
    assert!(run.stderr.contains(&format!("port {port} is in use: metrics on 127.0.0.1:")), "{}", run.stderr);
    let listening = run.stderr.lines().find(|line| line.contains(r#""message":"listening""#)).unwrap();
    assert!(
        listening.contains(r#""api_addr":"127.0.0.1:"#) && listening.contains(r#""metrics_addr":"127.0.0.1:"#),
        "bound to loopback, not every interface: {listening}"
    );
    drop(taken);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_taken_api_port_fails_before_the_development_postgresql_starts() {
    let dir = scratch_dir("dev-busy");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let bind = taken.local_addr().unwrap().to_string();
    let output = dev_command_on(&dir, &bind, "127.0.0.1:0").output().await.unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_ne!(output.status.code(), Some(0));
    assert!(stderr.contains(&format!("could not listen on {bind}")), "{stderr}");
    assert!(!stderr.contains("PostgreSQL in"), "PostgreSQL was started first: {stderr}");
    drop(taken);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn remove_dev_data_names_what_it_deletes_and_asks_for_yes_off_a_terminal() {
    let dir = scratch_dir("dev-remove");
    let first = run_dev_server(&dir).await;
    assert_eq!(first.code, 0, "{}", first.stderr);
    let data = first.stderr.lines().find_map(|line| line.split(" PostgreSQL in ").nth(1)).unwrap();
    let cluster = std::path::PathBuf::from(data.split(" on port").next().unwrap());
    assert!(cluster.join("PG_VERSION").exists(), "{}", cluster.display());
    let remove = |extra: &'static [&'static str]| {
        let mut args = vec!["serve", "--dev", "--remove-dev-data", "--dev-data-dir", dir.to_str().unwrap()];
        args.extend_from_slice(extra);
        async move { binary::run(&args, &[]).await }
    };
    let refused = remove(&[]).await;
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(refused.stderr.contains(&cluster.display().to_string()) && refused.stderr.contains("--yes"));
    assert!(cluster.join("PG_VERSION").exists(), "nothing deleted without --yes");
    let removed = remove(&["--yes"]).await;
    assert_eq!(removed.code, 0, "{}", removed.stderr);
    assert!(removed.stderr.contains("deleted") && removed.stderr.contains("pgpass"), "{}", removed.stderr);
    assert!(!cluster.exists() && !dir.join("signing-secret").exists() && !dir.join("pgpass").exists());
    let again = remove(&["--yes"]).await;
    assert!(again.code == 0 && again.stderr.contains("nothing to remove"), "{}", again.stderr);
}
