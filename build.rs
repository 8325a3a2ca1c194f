//! Build-time facts for the binary.
//!
//! `sqlx::migrate!()` embeds `migrations/` at compile time, but cargo only rebuilds for files
//! it was told about: without the first line, a migration added to the folder is missing from
//! the binary until something else changes.
//!
//! `--version` names the commit built: `DAILYREPS_COMMIT` when set (the image build, which has
//! no `.git`, gets it as a build argument), else what git says `HEAD` is, else `unknown`.
use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-env-changed=DAILYREPS_COMMIT");
    for watched in [".git/HEAD", ".git/refs", ".git/packed-refs"] {
        if Path::new(watched).exists() {
            println!("cargo:rerun-if-changed={watched}");
        }
    }
    let commit = std::env::var("DAILYREPS_COMMIT")
        .ok()
        .filter(|commit| !commit.trim().is_empty())
        .or_else(git_head)
        .unwrap_or_else(|| "unknown".to_owned());
    let short: String = commit.trim().chars().take(12).collect();
    println!("cargo:rustc-env=DAILYREPS_BUILD_COMMIT={short}");
}

fn git_head() -> Option<String> {
    let output = Command::new("git").args(["rev-parse", "HEAD"]).output().ok()?;
    let commit = String::from_utf8(output.stdout).ok()?;
    (output.status.success() && !commit.trim().is_empty()).then(|| commit.trim().to_owned())
}
