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
