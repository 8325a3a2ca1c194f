//! fly.toml, checked against the binary it deploys.

use clap::CommandFactory;
use dailyreps_backup_server::cli::Cli;
use dailyreps_backup_server::config::HumanDuration;
use reqwest::StatusCode;

use crate::common::{TestApp, binary};

fn fly_toml() -> toml::Table {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fly.toml");
    std::fs::read_to_string(path).unwrap().parse().unwrap()
}

/// The default of `serve --<flag>`.
fn serve_default(flag: &str) -> String {
    let cli = Cli::command();
    let serve = cli.find_subcommand("serve").unwrap();
    let arg = serve.get_arguments().find(|arg| arg.get_long() == Some(flag)).unwrap();
    arg.get_default_values()[0].to_str().unwrap().to_owned()
}

fn port_of(addr: &str) -> i64 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn ports_match_the_servers_defaults() {
    let fly = fly_toml();
    assert_eq!(fly["app"].as_str(), Some("dailyreps-backup-server"));
    assert_eq!(fly["primary_region"].as_str(), Some("iad"));
    assert_eq!(fly["http_service"]["internal_port"].as_integer(), Some(port_of(&serve_default("bind"))));
    assert_eq!(fly["metrics"]["port"].as_integer(), Some(port_of(&serve_default("metrics-bind"))));
    assert_eq!(
        fly["env"]["PORT"].as_str().map(|p| p.parse::<i64>().unwrap()),
        fly["http_service"]["internal_port"].as_integer()
    );
    assert_eq!(fly["http_service"]["force_https"].as_bool(), Some(true));
    let vm = &fly["vm"].as_array().unwrap()[0];
    assert_eq!((vm["size"].as_str(), vm["memory"].as_str()), (Some("shared-cpu-1x"), Some("256mb")));
}

#[test]
fn the_kill_signal_is_handled_within_the_kill_timeout() {
    let fly = fly_toml();
    assert!(matches!(fly["kill_signal"].as_str(), Some("SIGINT" | "SIGTERM")), "the server handles SIGINT and SIGTERM");
    let grace = serve_default("shutdown-grace").parse::<HumanDuration>().unwrap().0.as_secs() as i64;
    let kill_timeout = fly["kill_timeout"].as_integer().unwrap();
    assert!(grace < kill_timeout, "the grace period ({grace} s) must end before Fly kills ({kill_timeout} s)");
}

#[tokio::test]
async fn the_release_command_is_a_real_subcommand() {
    let fly = fly_toml();
    let command = fly["deploy"]["release_command"].as_str().unwrap();
    let mut words = command.split_whitespace();
    assert_eq!(words.next(), Some("dailyreps-backup-server"));
    let args: Vec<&str> = words.collect();
    assert!(!args.is_empty());
    let help: Vec<&str> = args.iter().copied().chain(["--help"]).collect();
    let outcome = binary::run(&help, &[]).await;
    assert_eq!(outcome.code, 0, "`{command} --help`: {}", outcome.stderr);
    assert!(outcome.stdout.contains("DATABASE_URL"), "the release command reads DATABASE_URL");
}

#[tokio::test]
async fn the_health_check_path_and_metrics_path_answer() {
    let fly = fly_toml();
    let app = TestApp::spawn().await;
    for check in fly["http_service"]["checks"].as_array().unwrap() {
        let path = check["path"].as_str().unwrap();
        assert_eq!(app.get(path).await.status(), StatusCode::OK, "{path}");
        assert!(check["grace_period"].as_str().is_some(), "a grace period for start-up");
    }
    let metrics_path = fly["metrics"]["path"].as_str().unwrap();
    let response = app.client.get(format!("{}{metrics_path}", app.metrics_address)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.text().await.unwrap().contains("dailyreps_http_requests"));
}

#[test]
fn the_dockerfile_runs_the_server_as_a_non_root_user() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile");
    let dockerfile = std::fs::read_to_string(path).unwrap();
    assert!(dockerfile.contains(r#"CMD ["dailyreps-backup-server", "serve"]"#));
    assert!(dockerfile.contains("cargo build --release --locked"));
    let user = dockerfile.lines().rfind(|line| line.starts_with("USER ")).expect("a USER line");
    assert!(!user.contains("root") && user != "USER 0", "{user}");
    assert!(dockerfile.contains("EXPOSE 8080 9091"));
}

#[test]
fn the_readme_configuration_table_says_serves_own_defaults_and_variables() {
    let readme = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let cli = Cli::command();
    let serve = cli.find_subcommand("serve").unwrap();
    let mut checked = 0;
    for line in readme.lines().filter(|line| line.starts_with("| `--")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (flag, env, default) = (cells[1].trim_matches('`'), cells[2].trim_matches('`'), cells[3]);
        let Some(arg) = serve.get_arguments().find(|arg| arg.get_long() == flag.strip_prefix("--")) else {
            continue; // Another command's flag, or a global one.
        };
        // A timeout's variable sits on its hidden seconds twin.
        let twin = format!("{}-seconds", arg.get_id());
        let variable = arg.get_env().or_else(|| {
            serve
                .get_arguments()
                .find(|other| other.get_id().as_str().replace('_', "-") == twin.replace('_', "-"))?
                .get_env()
        });
        assert_eq!(variable.and_then(|v| v.to_str()), Some(env), "README's variable for {flag}");
        if let Some(default) = default.strip_prefix('`').and_then(|d| d.strip_suffix('`')) {
            let actual = arg.get_default_values().first().and_then(|v| v.to_str()).unwrap_or_default().to_owned();
            assert_eq!(default, actual, "README's default for {flag}");
        }
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} rows of serve's flags were found");
}

#[tokio::test]
async fn version_names_the_commit_it_was_built_from() {
    let outcome = binary::run(&["--version"], &[]).await;
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    let head = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8(output.stdout).unwrap().trim().to_owned());
    // From a checkout, the commit is HEAD's (build.rs reruns when HEAD moves); elsewhere the
    // build says it does not know.
    let commit = match (std::env::var("DAILYREPS_COMMIT"), head) {
        (Ok(given), _) if !given.trim().is_empty() => given.trim().chars().take(12).collect(),
        (_, Some(head)) => head[..12].to_owned(),
        _ => "unknown".to_owned(),
    };
    let expected = format!("dailyreps-backup-server {} (commit {commit})\n", env!("CARGO_PKG_VERSION"));
    assert_eq!(outcome.stdout, expected);
}
