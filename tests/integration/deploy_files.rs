//! fly.toml, checked against the binary it deploys.

use clap::CommandFactory;
use dailyreps_backup_server::cli::Cli;
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
    let grace: i64 = serve_default("shutdown-grace-seconds").parse().unwrap();
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
