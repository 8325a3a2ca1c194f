#!/usr/bin/env bash
# Regenerates the committed man pages from the binary's clap definition (clap_mangen).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -f man/*.1
DAILYREPS_UPDATE_MAN=1 cargo test --quiet --test integration man_pages
