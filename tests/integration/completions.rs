//! The committed completion scripts are what the binary prints now.

use crate::common::binary;

const SCRIPTS: &[(&str, &str)] = &[
    ("bash", "dailyreps-backup-server.bash"),
    ("zsh", "_dailyreps-backup-server"),
    ("fish", "dailyreps-backup-server.fish"),
    ("elvish", "dailyreps-backup-server.elv"),
    ("powershell", "_dailyreps-backup-server.ps1"),
];

#[tokio::test]
async fn committed_completion_scripts_are_current() {
    for (shell, file) in SCRIPTS {
        let outcome = binary::run(&["completions", shell], &[]).await;
        assert_eq!(outcome.code, 0, "{}", outcome.stderr);
        assert!(outcome.stdout.contains("migrate") && outcome.stdout.contains("serve"), "{shell}");
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("completions").join(file);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == outcome.stdout,
            "{} is stale: run completions/update.sh and commit the result",
            path.display()
        );
    }
}

#[tokio::test]
async fn an_unknown_shell_is_a_usage_error() {
    let outcome = binary::run(&["completions", "tcsh"], &[]).await;
    assert_eq!(outcome.code, 2, "{}", outcome.stderr);
}

/// The committed script's directory.
fn completions_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("completions")
}

/// What bash offers for `line` (the words typed so far, the last one being completed), with
/// the committed script loaded as bash-completion would load it.
fn bash_offers(line: &str) -> Vec<String> {
    let script = completions_dir().join("dailyreps-backup-server.bash");
    let program = r#"source "$1"
read -r -a COMP_WORDS <<<"$2"
[[ "$2" == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
COMP_LINE="$2"; COMP_POINT=${#COMP_LINE}
_dailyreps__backup__server dailyreps-backup-server "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}""#;
    shell_offers("bash", &["-c", program, "bash", script.to_str().unwrap(), line])
}

/// What fish offers for `line`, with the committed script sourced.
fn fish_offers(line: &str) -> Vec<String> {
    let script = completions_dir().join("dailyreps-backup-server.fish");
    let program = format!("source {}; complete -C {}", fish_quote(script.to_str().unwrap()), fish_quote(line));
    shell_offers("fish", &["--no-config", "-c", &program])
        .into_iter()
        .map(|offer| offer.split('\t').next().unwrap_or_default().to_owned())
        .collect()
}

/// What zsh offers for `line`: an interactive zsh on a pseudo-terminal, with the committed
/// script on its fpath, types the line and a Tab (`zsh_complete.zsh`).
fn zsh_offers(line: &str) -> Vec<String> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integration/zsh_complete.zsh");
    let dir = completions_dir();
    // `timeout`: a zsh that never finishes the completion fails the test instead of hanging it.
    let args = ["60", "zsh", "-f", script.to_str().unwrap(), dir.to_str().unwrap(), line];
    let output = shell_offers("timeout", &args).join("\n");
    output
        .split("<<")
        .skip(1)
        .filter_map(|rest| rest.split_once(">>").map(|(offer, _)| offer.to_owned()))
        .filter(|offer| offer != "END" && !offer.contains('"'))
        .collect()
}

fn fish_quote(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn shell_offers(shell: &str, args: &[&str]) -> Vec<String> {
    let output = std::process::Command::new(shell)
        .args(args)
        .env("HOME", std::env::temp_dir())
        .output()
        .unwrap_or_else(|error| panic!("{shell} is needed for this test (apt-get install {shell}): {error}"));
    assert!(output.status.success(), "{shell}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().lines().map(str::to_owned).collect()
}

/// Lines to complete and an offer each must include: options after one and two subcommand
/// names (where clap-rs/clap#6421 broke bash), a value, and a subcommand.
const EXPECTED: &[(&str, &str)] = &[
    ("dailyreps-backup-server pru", "prune"),
    ("dailyreps-backup-server prune --", "--dry-run"),
    ("dailyreps-backup-server backup-db --", "--keep-daily"),
    ("dailyreps-backup-server inspect users --", "--sort"),
    ("dailyreps-backup-server inspect users --sort ", "last-backup"),
    ("dailyreps-backup-server migrate status --", "--json"),
];

#[test]
fn bash_completes_options_after_subcommands() {
    for (line, offer) in EXPECTED {
        let offers = bash_offers(line);
        assert!(offers.iter().any(|o| o == offer), "bash, {line:?}: {offers:?} lacks {offer}");
    }
    let offers = bash_offers("dailyreps-backup-server prune --");
    assert!(!offers.iter().any(|o| o == "--sort"), "prune offers inspect's options: {offers:?}");
}

#[test]
fn zsh_completes_options_after_subcommands() {
    for (line, offer) in EXPECTED {
        let offers = zsh_offers(line);
        assert!(offers.iter().any(|o| o == offer), "zsh, {line:?}: {offers:?} lacks {offer}");
    }
}

#[test]
fn fish_completes_options_after_subcommands() {
    for (line, offer) in EXPECTED {
        let offers = fish_offers(line);
        assert!(offers.iter().any(|o| o == offer), "fish, {line:?}: {offers:?} lacks {offer}");
    }
}
