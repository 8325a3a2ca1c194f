#!/usr/bin/env bash
# Builds the release before this tree, the one that serves on this tree's schema while a deploy
# runs `migrate` and replaces machines, and prints the path of its binary.
#
# Which release: PREVIOUS_RELEASE (a commit) when set: the deploy workflow sets it to the
# commit Fly runs now, read from the image's git-<sha> label, which is exactly the binary that
# will serve on the new schema. Without it (a clone with no Fly account, as this workplace's
# CI), the newest commit whose migrations are all byte for byte this tree's and which lacks at
# least one of this tree's or has other SQL functions (src/db/sql): the newest release this
# tree's migrate can follow (sqlx refuses a database whose applied migration differs) whose
# schema it changes. A commit carrying another
# text of a migration never served a database this tree migrates, so it is passed over.
#
# A dev-profile build: the drill checks behaviour, not speed, and it shares the test build's
# compiled dependencies when CARGO_TARGET_DIR points at it (.ci/run does). Without it, a
# target folder of its own under target/previous-release, so a build started from inside
# `cargo test` does not wait for the lock of the one running it. Built once per commit.
set -euo pipefail
cd "$(dirname "$0")/.."

# `BLOB PATH` of each .sql file of a commit under a folder, sorted.
sql_of() {
    git ls-tree -r "$1" -- "$2" | awk '$4 ~ /\.sql$/ { print $3, $4 }' | sort
}

if [ -n "${PREVIOUS_RELEASE:-}" ]; then
    wanted=$PREVIOUS_RELEASE
else
    # The schema is the migrations and the SQL functions migrate installs (src/db/sql).
    ours=$(sql_of HEAD migrations)
    our_functions=$(sql_of HEAD src/db/sql)
    wanted=
    # The parents of the commits that changed the schema, newest first: where the sets differ.
    for changed in $(git rev-list --first-parent HEAD -- migrations src/db/sql); do
        theirs=$(sql_of "$changed^" migrations 2>/dev/null) || continue
        their_functions=$(sql_of "$changed^" src/db/sql)
        # Every one of their migrations is one of ours, and ours has more, or other functions.
        if [ -z "$(comm -23 <(echo "$theirs") <(echo "$ours"))" ] \
            && { [ "$theirs" != "$ours" ] || [ "$their_functions" != "$our_functions" ]; }; then
            wanted="$changed^"
            break
        fi
    done
    [ -n "$wanted" ] || { echo "no earlier commit has a prefix of this tree's migrations: is this a git clone with its history?" >&2; exit 1; }
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
