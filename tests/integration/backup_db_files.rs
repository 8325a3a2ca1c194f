//! What `backup-db` and `restore-db` do to files and databases around them: where `--output`
//! writes, what `--keep` rotates, stale partial files, `--force`, and Ctrl-C.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use super::backup_db::{app_url, backup, fingerprint, populated_app, restore};
use crate::common::{binary, scratch_dir, wait_until_blocked_on_lock};

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[tokio::test]
async fn keep_rotates_only_timestamped_dumps_by_their_time_and_never_the_new_one() {
    let (app, _) = populated_app().await;
    let dir = scratch_dir("dumps");
    std::fs::create_dir_all(dir.join("dailyreps-20991231T000000.000Z.sql.zst")).unwrap();
    let keep = ["dailyreps-before-upgrade.sql.zst", "dailyreps-2099.sql.zst", "notes.txt"];
    for name in keep.iter().chain(&["dailyreps-20240101T000000.000Z.sql.zst", "dailyreps-20250101T000000.000Z.sql.zst"])
    {
        std::fs::write(dir.join(name), "old").unwrap();
    }
    // A killed run's leftovers: one from two days ago is swept, one from now may be a live run's.
    let stale = dir.join(".dailyreps-20240101T000000.000Z.sql.zst.partial");
    let young = dir.join(".dailyreps-20260101T000000.000Z.sql.zst.partial");
    for partial in [&stale, &young] {
        std::fs::write(partial, "half").unwrap();
    }
    let two_days_ago = SystemTime::now() - Duration::from_secs(2 * 86_400);
    std::fs::File::options().write(true).open(&stale).unwrap().set_modified(two_days_ago).unwrap();

    let summary = backup(&app_url(&app), &dir, &["--keep", "1"]).await;
    let written = summary["path"].as_str().unwrap();
    assert!(Path::new(written).is_file(), "the new dump is kept: {written}");
    let new_name = Path::new(written).file_name().unwrap().to_string_lossy().into_owned();
    let mut expected: Vec<String> = keep.iter().map(|n| (*n).to_owned()).collect();
    expected.extend([
        young.file_name().unwrap().to_string_lossy().into_owned(),
        "dailyreps-20991231T000000.000Z.sql.zst".to_owned(),
        new_name,
    ]);
    expected.sort();
    assert_eq!(names(&dir), expected);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn output_without_a_dump_extension_is_a_folder_and_files_are_never_overwritten_unasked() {
    let (app, _) = populated_app().await;
    let url = app_url(&app);
    let root = scratch_dir("dumps");
    let folder = root.join("backups");
    let folder_arg = folder.to_str().unwrap();
    for _ in 0..2 {
        let run = binary::run(&["backup-db", "--output", folder_arg, "--keep", "1"], &[("DATABASE_URL", &url)]).await;
        assert_eq!(run.code, 0, "{}", run.stderr);
    }
    let dumps = names(&folder);
    assert_eq!(dumps.len(), 1, "a folder, rotated: {dumps:?}");
    assert!(dumps[0].starts_with("dailyreps-2") && dumps[0].ends_with(".sql.zst"));

    let file = root.join("before-upgrade.sql.zst");
    let file_arg = file.to_str().unwrap();
    let first = binary::run(&["backup-db", "--output", file_arg], &[("DATABASE_URL", &url)]).await;
    assert_eq!(first.code, 0, "{}", first.stderr);
    let again = binary::run(&["backup-db", "--output", file_arg], &[("DATABASE_URL", &url)]).await;
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("already exists") && again.stderr.contains("--force"), "{}", again.stderr);
    let forced = binary::run(&["backup-db", "--output", file_arg, "--force"], &[("DATABASE_URL", &url)]).await;
    assert_eq!(forced.code, 0, "{}", forced.stderr);
    let keep_a_file = binary::run(&["backup-db", "--output", file_arg, "--keep", "2"], &[("DATABASE_URL", &url)]).await;
    assert_eq!(keep_a_file.code, 2, "a usage error: {}", keep_a_file.stderr);
    assert!(keep_a_file.stderr.contains("--keep rotates"), "{}", keep_a_file.stderr);
    std::fs::remove_dir_all(root).unwrap();
}

#[tokio::test]
async fn ctrl_c_in_backup_db_removes_the_partial_file_and_says_so() {
    let (app, _) = populated_app().await;
    let dir = scratch_dir("dumps");
    let mut blocker = app.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE users IN ACCESS EXCLUSIVE MODE").execute(&mut *blocker).await.unwrap();
    let child = binary::command()
        .args(["backup-db", "--output"])
        .arg(format!("{}/", dir.display()))
        .env("DATABASE_URL", app_url(&app))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until_blocked_on_lock(&app.pool, "COPY public.users").await;
    interrupt(&child);
    let output = child.wait_with_output().await.unwrap();
    blocker.rollback().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted") && stderr.contains("no dump was written"), "{stderr}");
    assert_eq!(names(&dir), Vec::<String>::new(), "no partial file left");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn restore_force_names_what_it_replaces_and_ctrl_c_leaves_it_as_it_was() {
    let (app, _) = populated_app().await;
    let dir = scratch_dir("dumps");
    let path = backup(&app_url(&app), &dir, &[]).await["path"].as_str().unwrap().to_owned();
    let (other, _) = populated_app().await;
    let target_url = app_url(&other);
    let before = fingerprint(&other.pool).await;

    let refused = restore(&target_url, &path, &[]).await;
    assert_eq!(refused.code, 1);
    let endpoint = target_url.rsplit_once('@').unwrap().1;
    assert!(
        refused.stderr.contains(endpoint) && refused.stderr.contains("4 users, 12 backups"),
        "names the target and what it holds: {}",
        refused.stderr
    );

    // Replacing waits for a lock held on the target (reads pass it); Ctrl-C then rolls back.
    let mut blocker = other.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE users IN SHARE MODE").execute(&mut *blocker).await.unwrap();
    let child = binary::command()
        .args(["restore-db", &path, "--force", "--yes"])
        .env("DATABASE_URL", &target_url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until_blocked_on_lock(&other.pool, "DROP SCHEMA").await;
    interrupt(&child);
    let output = child.wait_with_output().await.unwrap();
    blocker.rollback().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted") && stderr.contains("as it was"), "{stderr}");
    assert_eq!(fingerprint(&other.pool).await, before, "the target is as it was");

    // Off a terminal nobody can be asked: --force alone is a usage error, naming --yes.
    let unasked = restore(&target_url, &path, &["--force"]).await;
    assert_eq!(unasked.code, 2, "{}", unasked.stderr);
    assert!(
        unasked.stderr.contains("add --yes") && unasked.stderr.contains("4 users, 12 backups"),
        "{}",
        unasked.stderr
    );
    assert_eq!(fingerprint(&other.pool).await, before, "the target is as it was");

    let forced = restore(&target_url, &path, &["--force", "--yes"]).await;
    assert_eq!(forced.code, 0, "{}", forced.stderr);
    assert!(forced.stderr.contains("replaced") && forced.stderr.contains("4 users, 12 backups"), "{}", forced.stderr);
    assert_eq!(fingerprint(&other.pool).await, fingerprint(&app.pool).await);
    std::fs::remove_dir_all(dir).unwrap();
}

fn interrupt(child: &tokio::process::Child) {
    let pid = child.id().expect("running").to_string();
    let status = std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn calendar_retention_is_refused_for_a_folder_and_nothing_is_written() {
    let dir = scratch_dir("dumps");
    let args = ["backup-db", "--output", dir.to_str().unwrap(), "--keep-daily", "1", "--keep-min", "1"];
    let refused = binary::run(&args, &[("DATABASE_URL", "postgres://127.0.0.1:1/none")]).await;
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(refused.stderr.contains("--keep N"), "it says what a folder has instead: {}", refused.stderr);
    assert!(!dir.exists() || names(&dir).is_empty());
}

/// A file size limit (as `ulimit -f` sets one; a full disk fails the same way): the error
/// names the file and the operating system's reason, and no dump is left behind.
#[tokio::test]
async fn a_dump_that_cannot_be_written_names_the_file_and_the_reason() {
    let (app, _) = populated_app().await;
    crate::offsite::add_incompressible_backups(&app.pool, 4).await;
    let dir = scratch_dir("dumps");
    let script = format!(
        "trap '' XFSZ; ulimit -f 64; exec '{}' backup-db --output '{}'",
        env!("CARGO_BIN_EXE_dailyreps-backup-server"),
        dir.display()
    );
    let output = tokio::process::Command::new("bash")
        .args(["-c", &script])
        .env("DATABASE_URL", app_url(&app))
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("could not write {}", dir.display())), "names the file: {stderr}");
    assert!(stderr.contains(".partial") && stderr.contains("File too large"), "and the reason: {stderr}");
    assert_eq!(names(&dir), Vec::<String>::new(), "no dump, whole or partial, is left");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_dump_and_the_folder_made_for_it_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let (app, _) = populated_app().await;
    let root = scratch_dir("private-dumps");
    let dir = root.join("made/by/backup-db");
    let summary = backup(&app_url(&app), &dir, &[]).await;
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(Path::new(summary["path"].as_str().unwrap())), 0o600, "{summary}");
    for made in [root.join("made"), root.join("made/by"), dir.clone()] {
        assert_eq!(mode(&made), 0o700, "{}", made.display());
    }
    std::fs::remove_dir_all(root).unwrap();
}
