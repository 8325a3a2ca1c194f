#!/usr/bin/env bash
# Dead code, as the compiler sees it. Every module of the library is `pub` so that the
# integration tests reach what they test, which hides unused items from rustc's dead_code lint.
# Here the library is checked as only the binary uses it: every module but the four main.rs
# names becomes `pub(crate)`, so an item nothing calls is a warning, and a warning fails.
# (An item that only a test reads says so with `#[allow(dead_code)]` and a comment.)
set -euo pipefail
cd "$(dirname "$0")/.."
copy=$(mktemp -d)
trap 'rm -rf "$copy"' EXIT
git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$copy"
sed -i -E '/^pub mod (cli|commands|output|telemetry);/! s/^pub mod /pub(crate) mod /' "$copy/src/lib.rs"
# The same target folder, so dependencies are not checked again; and the commit build.rs
# would find here (the copy has no .git), since the build script's output is shared with it.
commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
(cd "$copy" && CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$OLDPWD/target}" DAILYREPS_COMMIT="${DAILYREPS_COMMIT:-$commit}" \
    cargo check --quiet --locked --lib --message-format short 2>&1) | tee "$copy/warnings"
if grep -q "warning" "$copy/warnings"; then
    echo "dead code: remove it, or say with #[allow(dead_code)] which test reads it" >&2
    exit 1
fi
