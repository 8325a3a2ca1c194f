#!/usr/bin/env bash
# Regenerates the committed completion scripts from the binary's clap definition.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet
bin=target/debug/dailyreps-backup-server
"$bin" completions bash >completions/dailyreps-backup-server.bash
"$bin" completions zsh >completions/_dailyreps-backup-server
"$bin" completions fish >completions/dailyreps-backup-server.fish
"$bin" completions elvish >completions/dailyreps-backup-server.elv
"$bin" completions powershell >completions/_dailyreps-backup-server.ps1
