# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_dailyreps_backup_server_global_optspecs
    string join \n log-format= q/quiet h/help V/version
end

function __fish_dailyreps_backup_server_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_dailyreps_backup_server_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_dailyreps_backup_server_using_subcommand
    set -l cmd (__fish_dailyreps_backup_server_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_needs_command" -l log-format -d 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)' -r -f -a "pretty\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_needs_command" -s q -l quiet -d 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_needs_command" -s V -l version -d 'Print version'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_needs_command" -f -a "serve" -d 'Run the HTTP API'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_needs_command" -f -a "migrate" -d 'Apply the embedded database migrations, or show their state'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_needs_command" -f -a "backup-db" -d 'Dump the database to a file: one consistent snapshot, streamed and compressed'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_needs_command" -f -a "restore-db" -d 'Load a dump into an empty database, all or nothing, then apply newer migrations'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_needs_command" -f -a "verify-backup" -d 'Check a dump\'s integrity and manifest, without a database'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_needs_command" -f -a "list-backups" -d 'List the complete backups in a bucket, newest first'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_needs_command" -f -a "backup-status" -d 'Exit 3 when the newest backup in a bucket is too old or much smaller than those before it'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_needs_command" -f -a "inspect" -d 'Read-only views of users, backups and the database, for operators'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_needs_command" -f -a "doctor" -d 'Check the operator\'s side: the database reachable, its schema current, the bucket listable, the identity file opening the newest backup, the signing secret, the newest backup\'s age. One line each, with its fix; exits 3 when any warns'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_needs_command" -f -a "prune" -d 'Delete backups (and inactive accounts) by policy, in small batches'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_needs_command" -f -a "scrub" -d 'Re-read every stored chunk and backup, and name the damaged ones'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_needs_command" -f -a "reserve" -d 'Keep space in reserve on the database\'s volume, or release it when the volume is full'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_needs_command" -f -a "request" -d 'Send one signed request to the API and print the answer, like `gh api`'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_needs_command" -f -a "smoke-test" -d 'Walk the whole user journey against a deployed server and report each step'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_needs_command" -f -a "completions" -d 'Print a shell completion script (e.g. `completions bash > ~/.local/share/bash-completion/completions/dailyreps-backup-server`)'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand serve" -l database-url -d 'PostgreSQL connection URL, e.g. postgres://user:password@host:5432/db' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand serve" -l bind -d 'Address to listen on for the API: `HOST:PORT`, or just a port (all interfaces)' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand serve" -l metrics-bind -d 'Address of the Prometheus metrics listener (`[::]` so Fly\'s private IPv6 network reaches it)' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand serve" -l signing-secret -d 'Secrets the app signs requests with, comma-separated (any one is accepted, for rotation). Each must be at least 32 bytes' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand serve" -l allowed-origins -d 'Origins allowed to call the API from a browser, comma-separated exact origins (e.g. https://dailyreps.app). Empty: no cross-origin access' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand serve" -l max-backup-bytes -d 'Largest backup document accepted, in bytes, after gzip decoding (at most 16 MiB, the largest a database dump reads back)' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand serve" -l max-backups-kept -d 'Backups kept per user; older ones are deleted when a new one arrives' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand serve" -l memory-budget-mb -d 'Memory that request bodies and documents in flight may hold together, in MiB; beyond it requests are answered 503 with Retry-After. Must hold one upload of the largest size in every encoding: a gzip body, the decoded document and the database driver\'s two copies (a little over four times MAX_BACKUP_BYTES)' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand serve" -l rate-limit-register-per-minute -d 'Account registrations per minute from one client IP (0: no limit)' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand serve" -l rate-limit-user-per-minute -d 'API requests per minute from one user (0: no limit)' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand serve" -l rate-limit-ip-per-minute -d 'API requests per minute from one client IP (0: no limit)' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand serve" -l body-timeout -d 'How long a client may take to send a request body, e.g. 60s (then 408; a slow client cannot hold the memory budget). The variable takes seconds' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand serve" -l request-timeout -d 'How long the server may take over a request once its body is in, e.g. 30s (then 503 with Retry-After). The variable takes seconds' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand serve" -l header-timeout -d 'How long a client may take to send a request\'s headers, and may stay idle between requests on a kept-alive connection, e.g. 15s (then the connection is closed). The variable takes seconds' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand serve" -l max-connections -d 'Most client connections open at once; beyond it new ones wait to be accepted' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand serve" -l pool-size -d 'Most database connections the server holds open' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand serve" -l shutdown-grace -d 'How long in-flight requests may take after SIGINT or SIGTERM before the process exits anyway, e.g. 25s (below fly.toml\'s kill_timeout). The variable takes seconds' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand serve" -l dev-data-dir -d 'Folder for `--dev`\'s PostgreSQL cluster, its password and the signing secret, kept between runs' -r -F
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand serve" -l log-format -d 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)' -r -f -a "pretty\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand serve" -l dev -d 'Development mode: without DATABASE_URL, start a private local PostgreSQL; apply migrations; generate a signing secret when none is set; listen on 127.0.0.1 where the address is 0.0.0.0 or [::] (the defaults), and on a free metrics port when 9091 is taken'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand serve" -l remove-dev-data -d 'Delete what `--dev` keeps for --dev-data-dir (the cluster, wherever it lives, /var/tmp included; its password; the signing secret) and exit, instead of serving. It is named first; on a terminal you are asked'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand serve" -l yes -d 'With --remove-dev-data off a terminal (a script): delete without asking'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand serve" -s q -l quiet -d 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand serve" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand serve" -s V -l version -d 'Print version'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand migrate; and not __fish_seen_subcommand_from status help" -l database-url -d 'PostgreSQL connection URL, e.g. postgres://user:password@host:5432/db' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand migrate; and not __fish_seen_subcommand_from status help" -l log-format -d 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)' -r -f -a "pretty\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand migrate; and not __fish_seen_subcommand_from status help" -s q -l quiet -d 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand migrate; and not __fish_seen_subcommand_from status help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand migrate; and not __fish_seen_subcommand_from status help" -s V -l version -d 'Print version'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand migrate; and not __fish_seen_subcommand_from status help" -f -a "status" -d 'List applied and pending migrations'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand migrate; and not __fish_seen_subcommand_from status help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand migrate; and __fish_seen_subcommand_from status" -l database-url -d 'PostgreSQL connection URL, e.g. postgres://user:password@host:5432/db' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand migrate; and __fish_seen_subcommand_from status" -l log-format -d 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)' -r -f -a "pretty\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand migrate; and __fish_seen_subcommand_from status" -l json -d 'Print JSON instead of a table'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand migrate; and __fish_seen_subcommand_from status" -l check -d 'Exit 3 when migrations are pending (for a script that must not start a binary the database is behind)'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand migrate; and __fish_seen_subcommand_from status" -s q -l quiet -d 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand migrate; and __fish_seen_subcommand_from status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand migrate; and __fish_seen_subcommand_from status" -s V -l version -d 'Print version'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand migrate; and __fish_seen_subcommand_from help" -f -a "status" -d 'List applied and pending migrations'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand migrate; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand backup-db" -l database-url -d 'PostgreSQL connection URL, e.g. postgres://user:password@host:5432/db' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand backup-db" -s o -l output -d 'A folder for UTC-timestamped dumps (created if missing), or a file ending in .sql.zst. A path that does not exist and does not end in .sql.zst is a folder' -r -F
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand backup-db" -l keep -d 'After a successful dump, keep only the newest N of this tool\'s timestamped dumps in the output folder (by the time in their names; other files are never touched)' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand backup-db" -l to -d 'Stream the dump up to an S3-compatible bucket instead (Tigris, S3, R2, B2), with the standard AWS_* settings (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL_S3, AWS_REGION), e.g. s3://dailyreps-backups/db' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand backup-db" -l encrypt-to -d 'age public keys (age1…, comma-separated) to encrypt an upload to; the machine taking backups needs no private key' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand backup-db" -l keep-daily -d 'Keep the newest backup of each of the last N days that have one [default: 7]' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand backup-db" -l keep-weekly -d 'Keep the newest of each of the last N weeks that have one [default: 4]' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand backup-db" -l keep-monthly -d 'Keep the newest of each of the last N months that have one [default: 6]' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand backup-db" -l keep-min -d 'Keep the newest N, whatever their dates [default: 3]' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand backup-db" -l ping -d 'A dead-man\'s switch to ping (healthchecks.io\'s convention): URL/start before, URL on success, URL/fail with the error on failure. A failing ping never fails the backup' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand backup-db" -l log-format -d 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)' -r -f -a "pretty\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand backup-db" -l force -d 'Overwrite the file --output names if it exists'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand backup-db" -l no-encryption -d 'Upload without encryption (refused otherwise)'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand backup-db" -l no-reread -d 'Do not read the uploaded object back to check its SHA-256 (its size is still checked)'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand backup-db" -l json -d 'Print JSON instead of a table'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand backup-db" -s q -l quiet -d 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand backup-db" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand backup-db" -s V -l version -d 'Print version'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand restore-db" -l database-url -d 'PostgreSQL connection URL, e.g. postgres://user:password@host:5432/db' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand restore-db" -l identity -d 'The age identity file that decrypts an encrypted backup (as age-keygen writes it)' -r -F
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand restore-db" -l log-format -d 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)' -r -f -a "pretty\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand restore-db" -l create -d 'Create the database DATABASE_URL names when the server lacks it (on a new cluster), as `pg_restore --create` does; an existing one is used as it is'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand restore-db" -l force -d 'Replace whatever the target database holds (everything in its public schema), in the same transaction; it is named first, and on a terminal you are asked'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand restore-db" -l yes -d 'With --force off a terminal (a script, CI): replace without asking, as the answer'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand restore-db" -l json -d 'Print JSON instead of a table'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand restore-db" -s q -l quiet -d 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand restore-db" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand restore-db" -s V -l version -d 'Print version'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand verify-backup" -l identity -d 'The age identity file that decrypts an encrypted backup. Without it an encrypted backup\'s stored bytes are checked against its manifest, not the dump inside' -r -F
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand verify-backup" -l log-format -d 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)' -r -f -a "pretty\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand verify-backup" -l json -d 'Print JSON instead of a table'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand verify-backup" -s q -l quiet -d 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand verify-backup" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand verify-backup" -s V -l version -d 'Print version'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand list-backups" -l keep-daily -d 'Keep the newest backup of each of the last N days that have one [default: 7]' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand list-backups" -l keep-weekly -d 'Keep the newest of each of the last N weeks that have one [default: 4]' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand list-backups" -l keep-monthly -d 'Keep the newest of each of the last N months that have one [default: 6]' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand list-backups" -l keep-min -d 'Keep the newest N, whatever their dates [default: 3]' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand list-backups" -l log-format -d 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)' -r -f -a "pretty\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand list-backups" -l json -d 'Print JSON instead of a table'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand list-backups" -s q -l quiet -d 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand list-backups" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand list-backups" -s V -l version -d 'Print version'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand backup-status" -l max-age -d 'The oldest the newest backup may be, e.g. 26h for a daily schedule' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand backup-status" -l log-format -d 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)' -r -f -a "pretty\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand backup-status" -l json -d 'Print JSON instead of a line'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand backup-status" -s q -l quiet -d 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand backup-status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand backup-status" -s V -l version -d 'Print version'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and not __fish_seen_subcommand_from users user backups stats health help" -l database-url -d 'PostgreSQL connection URL, e.g. postgres://user:password@host:5432/db' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and not __fish_seen_subcommand_from users user backups stats health help" -l log-format -d 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)' -r -f -a "pretty\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and not __fish_seen_subcommand_from users user backups stats health help" -l json -d 'Print JSON instead of a table'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and not __fish_seen_subcommand_from users user backups stats health help" -s q -l quiet -d 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and not __fish_seen_subcommand_from users user backups stats health help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and not __fish_seen_subcommand_from users user backups stats health help" -s V -l version -d 'Print version'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and not __fish_seen_subcommand_from users user backups stats health help" -f -a "users" -d 'Users with their backup count, bytes and last backup'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and not __fish_seen_subcommand_from users user backups stats health help" -f -a "user" -d 'One account and its backups'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and not __fish_seen_subcommand_from users user backups stats health help" -f -a "backups" -d 'Backups, newest first'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and not __fish_seen_subcommand_from users user backups stats health help" -f -a "stats" -d 'Totals, database and table sizes, largest users, backups per day'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and not __fish_seen_subcommand_from users user backups stats health help" -f -a "health" -d 'Whether the database is healthy and when its volume will be full; exits 3 when a check warns, so a cron or CI job can alert (and pings a monitor with --ping)'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and not __fish_seen_subcommand_from users user backups stats health help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and __fish_seen_subcommand_from users" -l sort -d 'Order' -r -f -a "created\t'Newest accounts first'
last-backup\t'Most recent backup first'
size\t'Most bytes first'
count\t'Most backups first'"
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and __fish_seen_subcommand_from users" -l limit -d 'Rows to show (1–1000)' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and __fish_seen_subcommand_from users" -l offset -d 'Rows to skip' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and __fish_seen_subcommand_from users" -l cursor -d '`next_cursor` of the previous page' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and __fish_seen_subcommand_from users" -l database-url -d 'PostgreSQL connection URL, e.g. postgres://user:password@host:5432/db' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and __fish_seen_subcommand_from users" -l log-format -d 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)' -r -f -a "pretty\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and __fish_seen_subcommand_from users" -l json -d 'Print JSON instead of a table'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and __fish_seen_subcommand_from users" -s q -l quiet -d 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and __fish_seen_subcommand_from users" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and __fish_seen_subcommand_from users" -s V -l version -d 'Print version'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and __fish_seen_subcommand_from user" -l database-url -d 'PostgreSQL connection URL, e.g. postgres://user:password@host:5432/db' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and __fish_seen_subcommand_from user" -l log-format -d 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)' -r -f -a "pretty\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and __fish_seen_subcommand_from user" -l json -d 'Print JSON instead of a table'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and __fish_seen_subcommand_from user" -s q -l quiet -d 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and __fish_seen_subcommand_from user" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and __fish_seen_subcommand_from user" -s V -l version -d 'Print version'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and __fish_seen_subcommand_from backups" -l user -d 'Only this account\'s' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and __fish_seen_subcommand_from backups" -l since -d 'Only those stored in this last period, e.g. 7d' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and __fish_seen_subcommand_from backups" -l limit -d 'Rows to show (1–1000)' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and __fish_seen_subcommand_from backups" -l cursor -d '`next_cursor` of the previous page' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and __fish_seen_subcommand_from backups" -l database-url -d 'PostgreSQL connection URL, e.g. postgres://user:password@host:5432/db' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and __fish_seen_subcommand_from backups" -l log-format -d 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)' -r -f -a "pretty\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and __fish_seen_subcommand_from backups" -l json -d 'Print JSON instead of a table'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and __fish_seen_subcommand_from backups" -s q -l quiet -d 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and __fish_seen_subcommand_from backups" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and __fish_seen_subcommand_from backups" -s V -l version -d 'Print version'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and __fish_seen_subcommand_from stats" -l database-url -d 'PostgreSQL connection URL, e.g. postgres://user:password@host:5432/db' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and __fish_seen_subcommand_from stats" -l log-format -d 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)' -r -f -a "pretty\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and __fish_seen_subcommand_from stats" -l json -d 'Print JSON instead of a table'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and __fish_seen_subcommand_from stats" -s q -l quiet -d 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and __fish_seen_subcommand_from stats" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and __fish_seen_subcommand_from stats" -s V -l version -d 'Print version'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and __fish_seen_subcommand_from health" -l volume-size -d 'The volume PostgreSQL\'s data lives on, e.g. 1GB (Fly\'s sizes are GB: 10^9 bytes)' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and __fish_seen_subcommand_from health" -l long-transaction -d 'A transaction open, or a statement running, longer than this warns' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and __fish_seen_subcommand_from health" -l ping -d 'A monitor to ping (healthchecks.io\'s convention): URL when every check is ok, URL/fail with the warnings (or the error) otherwise. Scheduled beside the backup, it is the database\'s alarm. A failing ping never changes the exit code' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and __fish_seen_subcommand_from health" -l database-url -d 'PostgreSQL connection URL, e.g. postgres://user:password@host:5432/db' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and __fish_seen_subcommand_from health" -l log-format -d 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)' -r -f -a "pretty\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and __fish_seen_subcommand_from health" -l json -d 'Print JSON instead of a table'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and __fish_seen_subcommand_from health" -s q -l quiet -d 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and __fish_seen_subcommand_from health" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and __fish_seen_subcommand_from health" -s V -l version -d 'Print version'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and __fish_seen_subcommand_from help" -f -a "users" -d 'Users with their backup count, bytes and last backup'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and __fish_seen_subcommand_from help" -f -a "user" -d 'One account and its backups'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and __fish_seen_subcommand_from help" -f -a "backups" -d 'Backups, newest first'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and __fish_seen_subcommand_from help" -f -a "stats" -d 'Totals, database and table sizes, largest users, backups per day'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and __fish_seen_subcommand_from help" -f -a "health" -d 'Whether the database is healthy and when its volume will be full; exits 3 when a check warns, so a cron or CI job can alert (and pings a monitor with --ping)'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand inspect; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand doctor" -l database-url -d 'PostgreSQL connection URL, e.g. postgres://user:password@host:5432/db' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand doctor" -l bucket -d 'The backups\' bucket, e.g. s3://dailyreps-backups/db, with the AWS_* settings of `backup-db --to`' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand doctor" -l identity -d 'The age identity file a restore would use' -r -F
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand doctor" -l signing-secret -d 'The app signing secret(s), comma-separated' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand doctor" -l max-age -d 'The oldest the newest backup may be' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand doctor" -l log-format -d 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)' -r -f -a "pretty\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand doctor" -l json -d 'Print JSON instead of a table'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand doctor" -s q -l quiet -d 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand doctor" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand doctor" -s V -l version -d 'Print version'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand prune" -l database-url -d 'PostgreSQL connection URL, e.g. postgres://user:password@host:5432/db' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand prune" -l older-than -d 'Backups older than this, e.g. 90d' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand prune" -l keep-last -d 'Keep each user\'s newest N backups' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand prune" -l inactive-users -d 'Accounts with no backup in this long (and older than it), deleted with their data, e.g. 365d' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand prune" -l user -d 'Only this account' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand prune" -l batch-size -d 'Rows per batch (each batch is its own short statement)' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand prune" -l log-format -d 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)' -r -f -a "pretty\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand prune" -l dry-run -d 'Show what would be deleted, and stop'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand prune" -s y -l yes -d 'Do not ask (required when not on a terminal)'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand prune" -l json -d 'Print JSON instead of a table'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand prune" -s q -l quiet -d 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand prune" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand prune" -s V -l version -d 'Print version'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand scrub" -l database-url -d 'PostgreSQL connection URL, e.g. postgres://user:password@host:5432/db' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand scrub" -l log-format -d 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)' -r -f -a "pretty\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand scrub" -l json -d 'Print JSON instead of a table'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand scrub" -s q -l quiet -d 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand scrub" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand scrub" -s V -l version -d 'Print version'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand reserve" -l database-url -d 'PostgreSQL connection URL, e.g. postgres://user:password@host:5432/db' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand reserve" -l size -d 'How much to keep in reserve, e.g. 64MiB (about 6% of a 1 GB volume)' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand reserve" -l log-format -d 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)' -r -f -a "pretty\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand reserve" -l release -d 'Give the reserve back to the volume (when it is full)'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand reserve" -l json -d 'Print JSON'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand reserve" -s q -l quiet -d 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand reserve" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand reserve" -s V -l version -d 'Print version'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand request" -s d -l data -d 'Body: text, `@FILE`, or `@-` for stdin. Sent as application/json unless -H says otherwise' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand request" -s H -l header -d 'Extra header, `Name: value`; repeatable' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand request" -l url -d 'The server' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand request" -l token -d 'Bearer token of the account (from POST /api/users)' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand request" -l signing-secret -d 'The app signing secret to sign with (the first, if several)' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand request" -l timeout -d 'How long to wait for the answer, e.g. 60s' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand request" -l log-format -d 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)' -r -f -a "pretty\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand request" -l gzip -d 'Gzip the body (sent with Content-Encoding: gzip)'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand request" -s i -l include -d 'Print the status line and headers to stderr'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand request" -s q -l quiet -d 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand request" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand request" -s V -l version -d 'Print version'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand smoke-test" -l url -d 'The deployment, e.g. https://dailyreps-backup-server.fly.dev (or DAILYREPS_URL, as `request` reads it)' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand smoke-test" -l dailyreps-url -d '`--url` from the variable `request` reads too' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand smoke-test" -l signing-secret -d 'The app signing secret (the first, if several)' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand smoke-test" -l wait -d 'How long to wait for the deployment to answer /healthz (machines that start on demand)' -r
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand smoke-test" -l log-format -d 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)' -r -f -a "pretty\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand smoke-test" -l json -d 'Print JSON instead of a table'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand smoke-test" -s q -l quiet -d 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand smoke-test" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand smoke-test" -s V -l version -d 'Print version'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand completions" -l log-format -d 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)' -r -f -a "pretty\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand completions" -s q -l quiet -d 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand completions" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand completions" -s V -l version -d 'Print version'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand help; and not __fish_seen_subcommand_from serve migrate backup-db restore-db verify-backup list-backups backup-status inspect doctor prune scrub reserve request smoke-test completions help" -f -a "serve" -d 'Run the HTTP API'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand help; and not __fish_seen_subcommand_from serve migrate backup-db restore-db verify-backup list-backups backup-status inspect doctor prune scrub reserve request smoke-test completions help" -f -a "migrate" -d 'Apply the embedded database migrations, or show their state'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand help; and not __fish_seen_subcommand_from serve migrate backup-db restore-db verify-backup list-backups backup-status inspect doctor prune scrub reserve request smoke-test completions help" -f -a "backup-db" -d 'Dump the database to a file: one consistent snapshot, streamed and compressed'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand help; and not __fish_seen_subcommand_from serve migrate backup-db restore-db verify-backup list-backups backup-status inspect doctor prune scrub reserve request smoke-test completions help" -f -a "restore-db" -d 'Load a dump into an empty database, all or nothing, then apply newer migrations'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand help; and not __fish_seen_subcommand_from serve migrate backup-db restore-db verify-backup list-backups backup-status inspect doctor prune scrub reserve request smoke-test completions help" -f -a "verify-backup" -d 'Check a dump\'s integrity and manifest, without a database'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand help; and not __fish_seen_subcommand_from serve migrate backup-db restore-db verify-backup list-backups backup-status inspect doctor prune scrub reserve request smoke-test completions help" -f -a "list-backups" -d 'List the complete backups in a bucket, newest first'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand help; and not __fish_seen_subcommand_from serve migrate backup-db restore-db verify-backup list-backups backup-status inspect doctor prune scrub reserve request smoke-test completions help" -f -a "backup-status" -d 'Exit 3 when the newest backup in a bucket is too old or much smaller than those before it'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand help; and not __fish_seen_subcommand_from serve migrate backup-db restore-db verify-backup list-backups backup-status inspect doctor prune scrub reserve request smoke-test completions help" -f -a "inspect" -d 'Read-only views of users, backups and the database, for operators'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand help; and not __fish_seen_subcommand_from serve migrate backup-db restore-db verify-backup list-backups backup-status inspect doctor prune scrub reserve request smoke-test completions help" -f -a "doctor" -d 'Check the operator\'s side: the database reachable, its schema current, the bucket listable, the identity file opening the newest backup, the signing secret, the newest backup\'s age. One line each, with its fix; exits 3 when any warns'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand help; and not __fish_seen_subcommand_from serve migrate backup-db restore-db verify-backup list-backups backup-status inspect doctor prune scrub reserve request smoke-test completions help" -f -a "prune" -d 'Delete backups (and inactive accounts) by policy, in small batches'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand help; and not __fish_seen_subcommand_from serve migrate backup-db restore-db verify-backup list-backups backup-status inspect doctor prune scrub reserve request smoke-test completions help" -f -a "scrub" -d 'Re-read every stored chunk and backup, and name the damaged ones'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand help; and not __fish_seen_subcommand_from serve migrate backup-db restore-db verify-backup list-backups backup-status inspect doctor prune scrub reserve request smoke-test completions help" -f -a "reserve" -d 'Keep space in reserve on the database\'s volume, or release it when the volume is full'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand help; and not __fish_seen_subcommand_from serve migrate backup-db restore-db verify-backup list-backups backup-status inspect doctor prune scrub reserve request smoke-test completions help" -f -a "request" -d 'Send one signed request to the API and print the answer, like `gh api`'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand help; and not __fish_seen_subcommand_from serve migrate backup-db restore-db verify-backup list-backups backup-status inspect doctor prune scrub reserve request smoke-test completions help" -f -a "smoke-test" -d 'Walk the whole user journey against a deployed server and report each step'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand help; and not __fish_seen_subcommand_from serve migrate backup-db restore-db verify-backup list-backups backup-status inspect doctor prune scrub reserve request smoke-test completions help" -f -a "completions" -d 'Print a shell completion script (e.g. `completions bash > ~/.local/share/bash-completion/completions/dailyreps-backup-server`)'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand help; and not __fish_seen_subcommand_from serve migrate backup-db restore-db verify-backup list-backups backup-status inspect doctor prune scrub reserve request smoke-test completions help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand help; and __fish_seen_subcommand_from migrate" -f -a "status" -d 'List applied and pending migrations'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand help; and __fish_seen_subcommand_from inspect" -f -a "users" -d 'Users with their backup count, bytes and last backup'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand help; and __fish_seen_subcommand_from inspect" -f -a "user" -d 'One account and its backups'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand help; and __fish_seen_subcommand_from inspect" -f -a "backups" -d 'Backups, newest first'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand help; and __fish_seen_subcommand_from inspect" -f -a "stats" -d 'Totals, database and table sizes, largest users, backups per day'
complete -c dailyreps-backup-server -n "__fish_dailyreps_backup_server_using_subcommand help; and __fish_seen_subcommand_from inspect" -f -a "health" -d 'Whether the database is healthy and when its volume will be full; exits 3 when a check warns, so a cron or CI job can alert (and pings a monitor with --ping)'
