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

/// `scripts/fly-release.sh ARGS` with a recorded `flyctl machine list --json` on stdin:
/// (exit code, stdout, stderr).
fn fly_release(args: &[&str], machines: &str) -> (i32, String, String) {
    use std::io::Write;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut child = std::process::Command::new("bash")
        .arg(root.join("scripts/fly-release.sh"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let input = std::fs::read(root.join("tests/fixtures/flyctl").join(machines)).unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let output = child.wait_with_output().unwrap();
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
    (output.status.code().unwrap(), text(output.stdout), text(output.stderr))
}

const NEW: &str = "3f1c2a9e5b7d4c6a8e0f1b2c3d4e5f6a7b8c9d0e";
const OLD: &str = "9bcfc61aa0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5";

#[test]
fn the_deploy_names_its_image_by_the_commit_with_the_app_name_from_fly_toml() {
    let (code, image, _) = fly_release(&["image", NEW], "all-updated.json");
    assert_eq!(code, 0);
    assert_eq!(image.trim(), format!("registry.fly.io/{}:git-{NEW}", fly_toml()["app"].as_str().unwrap()));
    // The workflow takes the name from fly.toml, never a copy of its own.
    let workflow =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.github/workflows/deploy.yml")).unwrap();
    let app = fly_toml()["app"].as_str().unwrap().to_owned();
    for copy in [format!("-a {app}"), format!("--app {app}"), format!("{app}.fly.dev")] {
        assert!(!workflow.contains(&copy), "the workflow repeats the app's name: {copy}");
    }
    assert!(workflow.contains("--image-label \"git-${GITHUB_SHA}\""), "the deploy labels the image by the commit");
    assert!(workflow.contains("--release-command-timeout 10m"), "migrate gets more than flyctl's 5 minutes");
}

#[test]
fn after_a_deploy_the_backup_machine_is_the_one_to_move_and_the_check_names_it() {
    let (code, ids, _) = fly_release(&["backup-machines"], "after-deploy.json");
    assert_eq!((code, ids.as_str()), (0, "4d891de2f66587\n"));
    let image = format!("registry.fly.io/dailyreps-backup-server:git-{NEW}");
    let (code, _, stderr) = fly_release(&["check", &image], "after-deploy.json");
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&format!(
            "4d891de2f66587 (database-backup) runs registry.fly.io/dailyreps-backup-server:git-{OLD}"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("32874445c04218"), "the destroyed release-command Machine is not the app's: {stderr}");
    let (code, stdout, stderr) = fly_release(&["check", &image], "all-updated.json");
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(&image));
}

#[test]
fn the_release_in_production_is_read_from_the_serving_machines_never_the_backup_one() {
    // The backup Machine is still on the old image: what serves is the new one.
    let (code, commit, _) = fly_release(&["serving-commit"], "after-deploy.json");
    assert_eq!((code, commit.trim()), (0, NEW));
    let (code, image, _) = fly_release(&["serving-image"], "after-deploy.json");
    assert_eq!((code, image.trim()), (0, format!("registry.fly.io/dailyreps-backup-server:git-{NEW}").as_str()));
    // A deploy that stopped half-way: no single release serves, and the script says so.
    let (code, _, stderr) = fly_release(&["serving-commit"], "half-deployed.json");
    assert_eq!(code, 1);
    assert!(stderr.contains("different images"), "{stderr}");
    // Images from before the labels: no commit, said on stderr, and the gate falls back.
    let (code, commit, stderr) = fly_release(&["serving-commit"], "before-labels.json");
    assert_eq!((code, commit.as_str()), (0, ""));
    assert!(stderr.contains("no git- label"), "{stderr}");
}
