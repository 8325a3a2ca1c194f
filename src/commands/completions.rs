//! `completions SHELL`: the completion script, generated from the clap definition.

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;
use crate::output;

/// Prints the completion script for `shell`.
pub fn run(shell: Shell) -> anyhow::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "dailyreps-backup-server", &mut script);
    output::write_stdout_bytes(&script).context("could not write the script")
}
