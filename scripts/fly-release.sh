#!/usr/bin/env bash
# Which image and which Machines a deploy touches, decided from flyctl's JSON, so the deploy
# workflow (.github/workflows/deploy.yml) and the README's steps select the same way, and the
# tests can prove the selection on recorded `flyctl machine list --json` outputs.
#
#   fly-release.sh app                      the app's name, from fly.toml (its one home)
#   fly-release.sh image COMMIT             the image a deploy of COMMIT pushes (--image-label git-COMMIT)
#   fly-release.sh serving-image < MACHINES the image the app's serving Machines run
#   fly-release.sh serving-commit < MACHINES the commit of that image; nothing when no Machine
#                                           serves yet or its image has no git- label
#   fly-release.sh backup-machines < MACHINES ids of the scheduled database-backup Machines
#   fly-release.sh check IMAGE < MACHINES   fails, naming each one, unless every Machine
#                                           (serving and backup) runs IMAGE
#
# MACHINES is `flyctl machine list --json`: Machines with `config.image`,
# `config.metadata.fly_process_group` ("app" for the serving ones, "fly_app_release_command"
# for the release command's) and `config.metadata.role` ("database-backup", README: Automatic
# database backups). Destroyed Machines and the release command's are not the app's.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"

die() {
    echo "fly-release.sh: $*" >&2
    exit 1
}

app() {
    local name
    name=$(sed -n 's/^app *= *"\([^"]*\)".*/\1/p' "$here/fly.toml")
    [ -n "$name" ] || die "no app = \"…\" line in $here/fly.toml"
    echo "$name"
}

# The app's Machines, as one JSON array, from stdin.
live_machines() {
    jq -e 'if type == "array" then . else error("not a JSON array of Machines") end
        | [.[] | select(.state != "destroyed" and .state != "destroying")
               | select((.config.metadata.fly_process_group // "") != "fly_app_release_command")]' \
        || die "stdin is not \`flyctl machine list --json\` output"
}

serving_images() {
    live_machines | jq -r '.[] | select(.config.metadata.role != "database-backup") | .config.image' | sort -u
}

serving_image() {
    local images
    images=$(serving_images)
    [ -n "$images" ] || die "no Machine serves the app yet"
    [ "$(wc -l <<<"$images")" -eq 1 ] \
        || die "the serving Machines run different images (a deploy stopped half-way? finish or roll it back first): $(tr '\n' ' ' <<<"$images")"
    echo "$images"
}

case "${1:-}" in
    app) app ;;
    image)
        [ -n "${2:-}" ] || die "usage: fly-release.sh image COMMIT"
        echo "registry.fly.io/$(app):git-$2"
        ;;
    serving-image) serving_image ;;
    serving-commit)
        images=$(serving_images)
        [ -n "$images" ] || exit 0
        [ "$(wc -l <<<"$images")" -eq 1 ] || die "the serving Machines run different images: $(tr '\n' ' ' <<<"$images")"
        case "$images" in
            *:git-*) echo "${images##*:git-}" ;;
            *) echo "fly-release.sh: the serving image $images has no git- label (deployed before labels were used)" >&2 ;;
        esac
        ;;
    backup-machines) live_machines | jq -r '.[] | select(.config.metadata.role == "database-backup") | .id' ;;
    check)
        [ -n "${2:-}" ] || die "usage: fly-release.sh check IMAGE"
        stale=$(live_machines | jq -r --arg image "$2" '.[] | select(.config.image != $image)
            | "\(.id) (\(.config.metadata.role // .config.metadata.fly_process_group // "no role")) runs \(.config.image)"')
        [ -z "$stale" ] || die "Machines not on $2:"$'\n'"$stale"
        echo "every Machine runs $2"
        ;;
    *) die "usage: fly-release.sh app | image COMMIT | serving-image | serving-commit | backup-machines | check IMAGE (MACHINES on stdin)" ;;
esac
