//! Running the real binary: the CLI as an operator (or Fly) runs it.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, Command};

/// Settings that must not leak in from the developer's environment.
const SCRUBBED: &[&str] = &[
    "DATABASE_URL",
    "APP_SIGNING_SECRET",
    "PORT",
    "METRICS_BIND",
    "LOG_FORMAT",
    "RUST_LOG",
    "DEV_DATA_DIR",
    "DAILYREPS_URL",
    "DAILYREPS_TOKEN",
    "SMOKE_TEST_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
    "BACKUP_AGE_RECIPIENTS",
    "BACKUP_AGE_IDENTITY_FILE",
];

/// The environment that makes stdout's tables those a terminal shows (drawn, with headers and
/// footers, sizes and ages for people), without colour: what a person at a terminal reads.
pub const AS_ON_A_TERMINAL: [(&str, &str); 2] = [("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")];

/// The binary with a clean environment.
pub fn command() -> Command {
    command_of(Path::new(env!("CARGO_BIN_EXE_dailyreps-backup-server")))
}

/// Another build of the binary (e.g. the previous release) with a clean environment.
pub fn command_of(program: &Path) -> Command {
    let mut command = clean(Command::new(program));
    command.stdin(Stdio::null()).kill_on_drop(true);
    command
}

/// `command` without the settings that must not leak in from the developer's environment.
pub fn clean(mut command: Command) -> Command {
    for name in SCRUBBED {
        command.env_remove(name);
    }
    command
}

/// What a finished run left.
#[derive(Debug)]
pub struct Outcome {
    /// Exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs the binary with `args` (and `env`) to completion.
pub async fn run(args: &[&str], env: &[(&str, &str)]) -> Outcome {
    let output = command().args(args).envs(env.iter().copied()).output().await.expect("the binary runs");
    Outcome {
        code: output.status.code().expect("exited, not killed"),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// Runs the binary with `args` on a pseudo-terminal (util-linux `script`), typing `input`: a
/// person at the prompt. stdout and stderr both come back in `stdout`, as a terminal shows them.
pub async fn run_on_terminal(args: &[&str], env: &[(&str, &str)], input: &str) -> Outcome {
    use tokio::io::AsyncWriteExt;
    let quote = |word: &str| dailyreps_backup_server::output::shell_word(Path::new(word));
    let program = env!("CARGO_BIN_EXE_dailyreps-backup-server");
    let line: Vec<String> = std::iter::once(program).chain(args.iter().copied()).map(quote).collect();
    let mut child = clean(Command::new("script"))
        .args(["--quiet", "--return", "--command", &line.join(" "), "/dev/null"])
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("util-linux `script` runs");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    Outcome {
        code: output.status.code().expect("exited, not killed"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A `serve` process whose JSON log lines we read as they come.
pub struct Server {
    /// The process.
    pub child: Child,
    /// Its stderr, line by line.
    pub logs: Lines<BufReader<ChildStderr>>,
    /// `http://ADDR` of the API, from the "listening" log line.
    pub address: String,
}

impl Server {
    /// Starts `serve` with JSON logs on free loopback ports, and waits for it to listen.
    pub async fn start(database_url: &str, extra_args: &[&str]) -> Self {
        Self::start_with_env(database_url, extra_args, &[]).await
    }

    /// As [`Self::start`], with extra environment variables.
    pub async fn start_with_env(database_url: &str, extra_args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_program(command(), database_url, extra_args, env).await
    }

    /// As [`Self::start_with_env`], for `program` (from [`command`] or [`command_of`]).
    pub async fn start_program(
        mut program: Command,
        database_url: &str,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut child = program
            .args(["serve", "--bind", "127.0.0.1:0", "--metrics-bind", "127.0.0.1:0"])
            .args(extra_args)
            .env("DATABASE_URL", database_url)
            .env("APP_SIGNING_SECRET", super::TEST_SECRET)
            .env("LOG_FORMAT", "json")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let mut logs = BufReader::new(child.stderr.take().unwrap()).lines();
        let listening = next_log(&mut logs, "listening").await;
        let address = format!("http://{}", listening["api_addr"].as_str().unwrap());
        Self { child, logs, address }
    }

    /// Sends `signal` (e.g. "TERM") to the process.
    pub async fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("still running").to_string();
        let status = Command::new("kill").args([&format!("-{signal}"), &pid]).status().await.unwrap();
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// Waits for the process to exit and returns its code.
    pub async fn exit_code(mut self) -> i32 {
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await.expect("exits").unwrap();
        status.code().expect("exited, not killed")
    }
}

/// Reads log lines until one whose message is `message`; panics if the stream ends first.
pub async fn next_log(logs: &mut Lines<BufReader<ChildStderr>>, message: &str) -> serde_json::Value {
    let deadline = Duration::from_secs(60);
    tokio::time::timeout(deadline, async {
        while let Some(line) = logs.next_line().await.unwrap() {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
            if event["message"] == message {
                return event;
            }
        }
        panic!("the server exited before logging {message:?}");
    })
    .await
    .unwrap_or_else(|_| panic!("no {message:?} log line within {deadline:?}"))
}
