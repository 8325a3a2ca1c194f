#!/usr/bin/env bash
# Builds the release before this tree, the one that serves on this tree's schema while a deploy
# runs `migrate` and replaces machines, and prints the path of its binary.
#
# Which release: PREVIOUS_RELEASE (a commit) when set: the deploy workflow sets it to the
# commit Fly runs now, read from the image's git-<sha> label, which is exactly the binary that
# will serve on the new schema. Without it (a clone with no Fly account, as this workplace's
# CI), the parent of the newest commit that added or changed a migration: the release that
# migration must be additive for.
#
# A dev-profile build: the drill checks behaviour, not speed, and it shares the test build's
# compiled dependencies when CARGO_TARGET_DIR points at it (.ci/run does). Without it, a
# target folder of its own under target/previous-release, so a build started from inside
# `cargo test` does not wait for the lock of the one running it. Built once per commit.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "${PREVIOUS_RELEASE:-}" ]; then
    wanted=$PREVIOUS_RELEASE
else
    newest=$(git log -1 --format=%H -- 'migrations/*.sql')
    [ -n "$newest" ] || { echo "no commit has touched migrations/: is this a git clone with its history?" >&2; exit 1; }
    wanted="$newest^"
fi
commit=$(git rev-parse --verify --quiet "$wanted^{commit}") \
    || { echo "previous release $wanted is not a commit of this clone (a shallow clone? fetch its history)" >&2; exit 1; }

root="$PWD/target/previous-release"
binary="$root/$commit/dailyreps-backup-server"
if [ ! -x "$binary" ]; then
    echo "building the previous release, $commit" >&2
    source="$root/src-$commit"
    rm -rf "$source"
    mkdir -p "$source"
    git archive "$commit" | tar -x -C "$source"
    target="${CARGO_TARGET_DIR:-$root/target}"
    (cd "$source" && DAILYREPS_COMMIT=$commit CARGO_TARGET_DIR="$target" \
        cargo build --quiet --locked --bin dailyreps-backup-server)
    mkdir -p "$(dirname "$binary")"
    # Copied under a temporary name and renamed, so an interrupted build leaves no binary.
    cp "$target/debug/dailyreps-backup-server" "$binary.partial"
    mv "$binary.partial" "$binary"
    rm -rf "$source"
fi
echo "$binary"
