//! The committed man pages (`man/`) are what clap_mangen makes of the command line now, one
//! page per command as `generate_to` would write them. `man/update.sh` rewrites them.

use dailyreps_backup_server::cli::Cli;

/// Every page: file name and roff text.
fn pages() -> Vec<(String, Vec<u8>)> {
    fn collect(command: clap::Command, pages: &mut Vec<(String, Vec<u8>)>) {
        for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()).cloned() {
            collect(sub, pages);
        }
        let man = clap_mangen::Man::new(command);
        let mut text = Vec::new();
        man.render(&mut text).unwrap();
        pages.push((man.get_filename(), text));
    }
    // The release without the commit, or every commit would make the pages stale.
    let mut command = Cli::definition().version(env!("CARGO_PKG_VERSION")).disable_help_subcommand(true);
    command.build();
    let mut pages = Vec::new();
    collect(command, &mut pages);
    pages
}

#[test]
fn committed_man_pages_are_current() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    let pages = pages();
    if std::env::var_os("DAILYREPS_UPDATE_MAN").is_some() {
        for (name, text) in &pages {
            std::fs::write(dir.join(name), text).unwrap();
        }
    }
    for (name, text) in &pages {
        let committed = std::fs::read(dir.join(name)).unwrap_or_default();
        assert!(committed == *text, "man/{name} is stale: run man/update.sh and commit the result");
    }
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".1"))
        .collect();
    files.sort();
    let mut expected: Vec<String> = pages.into_iter().map(|(name, _)| name).collect();
    expected.sort();
    assert_eq!(files, expected, "man/ holds a page for each command and nothing else");
    assert!(expected.contains(&"dailyreps-backup-server-prune.1".to_owned()));
}
