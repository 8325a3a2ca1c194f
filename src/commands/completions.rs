//! `completions SHELL`: the completion script, generated from the clap definition.

use anyhow::Context;
use clap_complete::Shell;

use crate::cli::Cli;
use crate::output;

const BIN_NAME: &str = "dailyreps-backup-server";

/// Prints the completion script for `shell`.
pub fn run(shell: Shell) -> anyhow::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::definition(), BIN_NAME, &mut script);
    if shell == Shell::Bash {
        let text = String::from_utf8(script).context("the generated script is not UTF-8")?;
        script = mend_bash_state_names(&text).into_bytes();
    }
    output::write_stdout_bytes(&script).context("could not write the script")
}

/// clap_complete (4.6.12 and before, clap-rs/clap#6421) spells a subcommand's state two ways
/// in the bash script when the binary's name has a hyphen: the loop that walks the words
/// records `dailyreps__backup__server__subcmd__prune`, the arms that offer its options match
/// `dailyreps__subcmd__backup__subcmd__server__subcmd__prune`, so nothing after a subcommand
/// completes. The arms are respelled as the loop spells them (tests/integration/completions.rs
/// runs the completion itself, so a fixed clap_complete shows here as a no-op).
fn mend_bash_state_names(script: &str) -> String {
    let recorded = BIN_NAME.replace('-', "__");
    let matched = BIN_NAME.replace('-', "__subcmd__");
    script.replace(&matched, &recorded)
}
