//! The committed man pages (`man/`) are what clap_mangen makes of the command line now, one
//! page per command as `generate_to` would write them, with EXAMPLES, ENVIRONMENT and EXIT
//! STATUS sections of our own. `man/update.sh` rewrites them.

use dailyreps_backup_server::cli::{Cli, EXIT_STATUS, examples};

/// Text for roff: backslashes, hyphens and a leading control character escaped.
fn roff(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with(['.', '\'']) { format!("\\&{escaped}") } else { escaped }
}

/// The sections clap_mangen has no source for: the command's examples, the variables its
/// options read, and the exit statuses.
fn our_sections(command: &clap::Command, path: &str) -> String {
    let mut text = String::new();
    let examples = examples(path);
    if !examples.is_empty() {
        text.push_str(".SH EXAMPLES\n");
        for (what, line) in examples {
            text.push_str(&format!(
                ".PP\n{}:\n.RS 4\n.nf\n{}\n.fi\n.RE\n",
                roff(what),
                roff(&format!("dailyreps-backup-server {line}"))
            ));
        }
    }
    // Every variable read, with its option.
    let variables: Vec<(String, String)> = command
        .get_arguments()
        .filter_map(|arg| {
            let name = arg.get_env()?.to_string_lossy().into_owned();
            let meaning = match (arg.is_hide_set(), arg.get_help()) {
                (true, Some(help)) => roff(&help.to_string()).replace('`', ""),
                _ => format!("As \\fB{}\\fR.", roff(&format!("--{}", arg.get_long().unwrap_or_default()))),
            };
            Some((name, meaning))
        })
        .collect();
    if !variables.is_empty() {
        text.push_str(".SH ENVIRONMENT\n");
        for (name, meaning) in variables {
            text.push_str(&format!(".TP\n\\fB{}\\fR\n{meaning}\n", roff(&name)));
        }
    }
    text.push_str(".SH \"EXIT STATUS\"\n");
    for line in EXIT_STATUS.lines().skip(1) {
        match line.trim_start().split_once(char::is_whitespace) {
            Some((code, meaning)) if code.chars().all(|c| c.is_ascii_digit()) => {
                text.push_str(&format!(".TP\n\\fB{code}\\fR\n{}\n", roff(meaning.trim())));
            }
            _ => text.push_str(&format!(".PP\n{}\n", roff(line))),
        }
    }
    text
}

/// Every page: file name and roff text.
fn pages() -> Vec<(String, Vec<u8>)> {
    fn collect(command: clap::Command, path: &str, pages: &mut Vec<(String, Vec<u8>)>) {
        for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()).cloned() {
            let path = if path.is_empty() { sub.get_name().to_owned() } else { format!("{path} {}", sub.get_name()) };
            collect(sub, &path, pages);
        }
        let man = clap_mangen::Man::new(command.clone());
        let mut text = Vec::new();
        man.render_title(&mut text).unwrap();
        man.render_name_section(&mut text).unwrap();
        man.render_synopsis_section(&mut text).unwrap();
        man.render_description_section(&mut text).unwrap();
        if command.get_arguments().any(|arg| !arg.is_hide_set()) {
            man.render_options_section(&mut text).unwrap();
        }
        if command.has_subcommands() {
            man.render_subcommands_section(&mut text).unwrap();
        }
        text.extend_from_slice(our_sections(&command, path).as_bytes());
        man.render_version_section(&mut text).unwrap();
        pages.push((man.get_filename(), text));
    }
    // The release without the commit, or every commit would make the pages stale.
    let mut command = Cli::definition().version(env!("CARGO_PKG_VERSION")).disable_help_subcommand(true);
    command.build();
    let mut pages = Vec::new();
    collect(command, "", &mut pages);
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

#[test]
fn each_page_has_examples_its_environment_and_the_exit_statuses() {
    let pages = pages();
    let page = |name: &str| {
        let text = &pages.iter().find(|(file, _)| file == name).unwrap().1;
        String::from_utf8(text.clone()).unwrap()
    };
    let prune = page("dailyreps-backup-server-prune.1");
    assert!(prune.contains(".SH EXAMPLES") && prune.contains("prune \\-\\-older\\-than 90d"), "{prune}");
    assert!(prune.contains(".SH ENVIRONMENT") && prune.contains("\\fBDATABASE_URL\\fR"), "{prune}");
    assert!(prune.contains(".SH \"EXIT STATUS\"") && prune.contains("\\fB130\\fR"), "{prune}");
    assert!(!prune.contains(".SH EXTRA"), "the exit statuses are their own section: {prune}");
    let serve = page("dailyreps-backup-server-serve.1");
    assert!(serve.contains("\\fBMEMORY_BUDGET_MB\\fR") && serve.contains("\\fBAPP_SIGNING_SECRET\\fR"), "{serve}");
}
