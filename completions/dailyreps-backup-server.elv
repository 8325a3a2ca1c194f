
use builtin;
use str;

set edit:completion:arg-completer[dailyreps-backup-server] = {|@words|
    fn spaces {|n|
        builtin:repeat $n ' ' | str:join ''
    }
    fn cand {|text desc|
        edit:complex-candidate $text &display=$text' '(spaces (- 14 (wcswidth $text)))$desc
    }
    var command = 'dailyreps-backup-server'
    for word $words[1..-1] {
        if (str:has-prefix $word '-') {
            break
        }
        set command = $command';'$word
    }
    var completions = [
        &'dailyreps-backup-server'= {
            cand --log-format 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)'
            cand -q 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
            cand --quiet 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
            cand serve 'Run the HTTP API'
            cand migrate 'Apply the embedded database migrations, or show their state'
            cand backup-db 'Dump the database to a file: one consistent snapshot, streamed and compressed'
            cand restore-db 'Load a dump into an empty database, all or nothing, then apply newer migrations'
            cand verify-backup 'Check a dump''s integrity and manifest, without a database'
            cand list-backups 'List the complete backups in a bucket, newest first'
            cand backup-status 'Exit 3 when the newest backup in a bucket is too old or much smaller than those before it'
            cand inspect 'Read-only views of users, backups and the database, for operators'
            cand doctor 'Check the operator''s side: the database reachable, its schema current, the bucket listable, the identity file opening the newest backup, the signing secret, the newest backup''s age. One line each, with its fix; exits 3 when any warns'
            cand prune 'Delete backups (and inactive accounts) by policy, in small batches'
            cand scrub 'Re-read every stored chunk and backup, and name the damaged ones'
            cand reserve 'Keep space in reserve on the database''s volume, or release it when the volume is full'
            cand request 'Send one signed request to the API and print the answer, like `gh api`'
            cand smoke-test 'Walk the whole user journey against a deployed server and report each step'
            cand completions 'Print a shell completion script (e.g. `completions bash > ~/.local/share/bash-completion/completions/dailyreps-backup-server`)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'dailyreps-backup-server;serve'= {
            cand --database-url 'PostgreSQL connection URL, e.g. postgres://user:password@host:5432/db'
            cand --bind 'Address to listen on for the API: `HOST:PORT`, or just a port (all interfaces)'
            cand --metrics-bind 'Address of the Prometheus metrics listener (`[::]` so Fly''s private IPv6 network reaches it)'
            cand --signing-secret 'Secrets the app signs requests with, comma-separated (any one is accepted, for rotation). Each must be at least 32 bytes'
            cand --allowed-origins 'Origins allowed to call the API from a browser, comma-separated exact origins (e.g. https://dailyreps.app). Empty: no cross-origin access'
            cand --max-backup-bytes 'Largest backup document accepted, in bytes, after gzip decoding (at most 16 MiB, the largest a database dump reads back)'
            cand --max-backups-kept 'Backups kept per user; older ones are deleted when a new one arrives'
            cand --memory-budget-mb 'Memory that request bodies and documents in flight may hold together, in MiB; beyond it requests are answered 503 with Retry-After. Must hold one upload of the largest size in every encoding: a gzip body, the decoded document and the database driver''s two copies (a little over four times MAX_BACKUP_BYTES)'
            cand --rate-limit-register-per-minute 'Account registrations per minute from one client IP (0: no limit)'
            cand --rate-limit-user-per-minute 'API requests per minute from one user (0: no limit)'
            cand --rate-limit-ip-per-minute 'API requests per minute from one client IP (0: no limit)'
            cand --body-timeout 'How long a client may take to send a request body, e.g. 60s (then 408; a slow client cannot hold the memory budget). The variable takes seconds'
            cand --request-timeout 'How long the server may take over a request once its body is in, e.g. 30s (then 503 with Retry-After). The variable takes seconds'
            cand --header-timeout 'How long a client may take to send a request''s headers, and may stay idle between requests on a kept-alive connection, e.g. 15s (then the connection is closed). The variable takes seconds'
            cand --max-connections 'Most client connections open at once; beyond it new ones wait to be accepted'
            cand --pool-size 'Most database connections the server holds open'
            cand --shutdown-grace 'How long in-flight requests may take after SIGINT or SIGTERM before the process exits anyway, e.g. 25s (below fly.toml''s kill_timeout). The variable takes seconds'
            cand --dev-data-dir 'Folder for `--dev`''s PostgreSQL cluster, its password and the signing secret, kept between runs'
            cand --log-format 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)'
            cand --dev 'Development mode: without DATABASE_URL, start a private local PostgreSQL; apply migrations; generate a signing secret when none is set; listen on 127.0.0.1 where the address is 0.0.0.0 or [::] (the defaults), and on a free metrics port when 9091 is taken'
            cand --remove-dev-data 'Delete what `--dev` keeps for --dev-data-dir (the cluster, wherever it lives, /var/tmp included; its password; the signing secret) and exit, instead of serving. It is named first; on a terminal you are asked'
            cand --yes 'With --remove-dev-data off a terminal (a script): delete without asking'
            cand -q 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
            cand --quiet 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'dailyreps-backup-server;migrate'= {
            cand --database-url 'PostgreSQL connection URL, e.g. postgres://user:password@host:5432/db'
            cand --log-format 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)'
            cand -q 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
            cand --quiet 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
            cand status 'List applied and pending migrations'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'dailyreps-backup-server;migrate;status'= {
            cand --database-url 'PostgreSQL connection URL, e.g. postgres://user:password@host:5432/db'
            cand --log-format 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)'
            cand --json 'Print JSON instead of a table'
            cand --check 'Exit 3 when migrations are pending (for a script that must not start a binary the database is behind)'
            cand -q 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
            cand --quiet 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'dailyreps-backup-server;migrate;help'= {
            cand status 'List applied and pending migrations'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'dailyreps-backup-server;migrate;help;status'= {
        }
        &'dailyreps-backup-server;migrate;help;help'= {
        }
        &'dailyreps-backup-server;backup-db'= {
            cand --database-url 'PostgreSQL connection URL, e.g. postgres://user:password@host:5432/db'
            cand -o 'A folder for UTC-timestamped dumps (created if missing), or a file ending in .sql.zst. A path that does not exist and does not end in .sql.zst is a folder'
            cand --output 'A folder for UTC-timestamped dumps (created if missing), or a file ending in .sql.zst. A path that does not exist and does not end in .sql.zst is a folder'
            cand --keep 'After a successful dump, keep only the newest N of this tool''s timestamped dumps in the output folder (by the time in their names; other files are never touched)'
            cand --to 'Stream the dump up to an S3-compatible bucket instead (Tigris, S3, R2, B2), with the standard AWS_* settings (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL_S3, AWS_REGION), e.g. s3://dailyreps-backups/db'
            cand --encrypt-to 'age public keys (age1…, comma-separated) to encrypt an upload to; the machine taking backups needs no private key'
            cand --keep-daily 'Keep the newest backup of each of the last N days that have one [default: 7]'
            cand --keep-weekly 'Keep the newest of each of the last N weeks that have one [default: 4]'
            cand --keep-monthly 'Keep the newest of each of the last N months that have one [default: 6]'
            cand --keep-min 'Keep the newest N, whatever their dates [default: 3]'
            cand --ping 'A dead-man''s switch to ping (healthchecks.io''s convention): URL/start before, URL on success, URL/fail with the error on failure. A failing ping never fails the backup'
            cand --log-format 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)'
            cand --force 'Overwrite the file --output names if it exists'
            cand --no-encryption 'Upload without encryption (refused otherwise)'
            cand --no-reread 'Do not read the uploaded object back to check its SHA-256 (its size is still checked)'
            cand --json 'Print JSON instead of a table'
            cand -q 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
            cand --quiet 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'dailyreps-backup-server;restore-db'= {
            cand --database-url 'PostgreSQL connection URL, e.g. postgres://user:password@host:5432/db'
            cand --identity 'The age identity file that decrypts an encrypted backup (as age-keygen writes it)'
            cand --log-format 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)'
            cand --create 'Create the database DATABASE_URL names when the server lacks it (on a new cluster), as `pg_restore --create` does; an existing one is used as it is'
            cand --force 'Replace whatever the target database holds (everything in its public schema), in the same transaction; it is named first, and on a terminal you are asked'
            cand --yes 'With --force off a terminal (a script, CI): replace without asking, as the answer'
            cand --json 'Print JSON instead of a table'
            cand -q 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
            cand --quiet 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'dailyreps-backup-server;verify-backup'= {
            cand --identity 'The age identity file that decrypts an encrypted backup. Without it an encrypted backup''s stored bytes are checked against its manifest, not the dump inside'
            cand --log-format 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)'
            cand --json 'Print JSON instead of a table'
            cand -q 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
            cand --quiet 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'dailyreps-backup-server;list-backups'= {
            cand --keep-daily 'Keep the newest backup of each of the last N days that have one [default: 7]'
            cand --keep-weekly 'Keep the newest of each of the last N weeks that have one [default: 4]'
            cand --keep-monthly 'Keep the newest of each of the last N months that have one [default: 6]'
            cand --keep-min 'Keep the newest N, whatever their dates [default: 3]'
            cand --log-format 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)'
            cand --json 'Print JSON instead of a table'
            cand -q 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
            cand --quiet 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'dailyreps-backup-server;backup-status'= {
            cand --max-age 'The oldest the newest backup may be, e.g. 26h for a daily schedule'
            cand --log-format 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)'
            cand --json 'Print JSON instead of a line'
            cand -q 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
            cand --quiet 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'dailyreps-backup-server;inspect'= {
            cand --database-url 'PostgreSQL connection URL, e.g. postgres://user:password@host:5432/db'
            cand --log-format 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)'
            cand --json 'Print JSON instead of a table'
            cand -q 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
            cand --quiet 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
            cand users 'Users with their backup count, bytes and last backup'
            cand user 'One account and its backups'
            cand backups 'Backups, newest first'
            cand stats 'Totals, database and table sizes, largest users, backups per day'
            cand health 'Whether the database is healthy and when its volume will be full; exits 3 when a check warns, so a cron or CI job can alert (and pings a monitor with --ping)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'dailyreps-backup-server;inspect;users'= {
            cand --sort 'Order'
            cand --limit 'Rows to show (1–1000)'
            cand --offset 'Rows to skip'
            cand --cursor '`next_cursor` of the previous page'
            cand --database-url 'PostgreSQL connection URL, e.g. postgres://user:password@host:5432/db'
            cand --log-format 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)'
            cand --json 'Print JSON instead of a table'
            cand -q 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
            cand --quiet 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'dailyreps-backup-server;inspect;user'= {
            cand --database-url 'PostgreSQL connection URL, e.g. postgres://user:password@host:5432/db'
            cand --log-format 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)'
            cand --json 'Print JSON instead of a table'
            cand -q 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
            cand --quiet 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'dailyreps-backup-server;inspect;backups'= {
            cand --user 'Only this account''s'
            cand --since 'Only those stored in this last period, e.g. 7d'
            cand --limit 'Rows to show (1–1000)'
            cand --cursor '`next_cursor` of the previous page'
            cand --database-url 'PostgreSQL connection URL, e.g. postgres://user:password@host:5432/db'
            cand --log-format 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)'
            cand --json 'Print JSON instead of a table'
            cand -q 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
            cand --quiet 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'dailyreps-backup-server;inspect;stats'= {
            cand --database-url 'PostgreSQL connection URL, e.g. postgres://user:password@host:5432/db'
            cand --log-format 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)'
            cand --json 'Print JSON instead of a table'
            cand -q 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
            cand --quiet 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'dailyreps-backup-server;inspect;health'= {
            cand --volume-size 'The volume PostgreSQL''s data lives on, e.g. 1GB (Fly''s sizes are GB: 10^9 bytes)'
            cand --long-transaction 'A transaction open, or a statement running, longer than this warns'
            cand --ping 'A monitor to ping (healthchecks.io''s convention): URL when every check is ok, URL/fail with the warnings (or the error) otherwise. Scheduled beside the backup, it is the database''s alarm. A failing ping never changes the exit code'
            cand --database-url 'PostgreSQL connection URL, e.g. postgres://user:password@host:5432/db'
            cand --log-format 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)'
            cand --json 'Print JSON instead of a table'
            cand -q 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
            cand --quiet 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'dailyreps-backup-server;inspect;help'= {
            cand users 'Users with their backup count, bytes and last backup'
            cand user 'One account and its backups'
            cand backups 'Backups, newest first'
            cand stats 'Totals, database and table sizes, largest users, backups per day'
            cand health 'Whether the database is healthy and when its volume will be full; exits 3 when a check warns, so a cron or CI job can alert (and pings a monitor with --ping)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'dailyreps-backup-server;inspect;help;users'= {
        }
        &'dailyreps-backup-server;inspect;help;user'= {
        }
        &'dailyreps-backup-server;inspect;help;backups'= {
        }
        &'dailyreps-backup-server;inspect;help;stats'= {
        }
        &'dailyreps-backup-server;inspect;help;health'= {
        }
        &'dailyreps-backup-server;inspect;help;help'= {
        }
        &'dailyreps-backup-server;doctor'= {
            cand --database-url 'PostgreSQL connection URL, e.g. postgres://user:password@host:5432/db'
            cand --bucket 'The backups'' bucket, e.g. s3://dailyreps-backups/db, with the AWS_* settings of `backup-db --to`'
            cand --identity 'The age identity file a restore would use'
            cand --signing-secret 'The app signing secret(s), comma-separated'
            cand --max-age 'The oldest the newest backup may be'
            cand --log-format 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)'
            cand --json 'Print JSON instead of a table'
            cand -q 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
            cand --quiet 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'dailyreps-backup-server;prune'= {
            cand --database-url 'PostgreSQL connection URL, e.g. postgres://user:password@host:5432/db'
            cand --older-than 'Backups older than this, e.g. 90d'
            cand --keep-last 'Keep each user''s newest N backups'
            cand --inactive-users 'Accounts with no backup in this long (and older than it), deleted with their data, e.g. 365d'
            cand --user 'Only this account'
            cand --batch-size 'Rows per batch (each batch is its own short statement)'
            cand --log-format 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)'
            cand --dry-run 'Show what would be deleted, and stop'
            cand -y 'Do not ask (required when not on a terminal)'
            cand --yes 'Do not ask (required when not on a terminal)'
            cand --json 'Print JSON instead of a table'
            cand -q 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
            cand --quiet 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'dailyreps-backup-server;scrub'= {
            cand --database-url 'PostgreSQL connection URL, e.g. postgres://user:password@host:5432/db'
            cand --log-format 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)'
            cand --json 'Print JSON instead of a table'
            cand -q 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
            cand --quiet 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'dailyreps-backup-server;reserve'= {
            cand --database-url 'PostgreSQL connection URL, e.g. postgres://user:password@host:5432/db'
            cand --size 'How much to keep in reserve, e.g. 64MiB (about 6% of a 1 GB volume)'
            cand --log-format 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)'
            cand --release 'Give the reserve back to the volume (when it is full)'
            cand --json 'Print JSON'
            cand -q 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
            cand --quiet 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'dailyreps-backup-server;request'= {
            cand -d 'Body: text, `@FILE`, or `@-` for stdin. Sent as application/json unless -H says otherwise'
            cand --data 'Body: text, `@FILE`, or `@-` for stdin. Sent as application/json unless -H says otherwise'
            cand -H 'Extra header, `Name: value`; repeatable'
            cand --header 'Extra header, `Name: value`; repeatable'
            cand --url 'The server'
            cand --token 'Bearer token of the account (from POST /api/users)'
            cand --signing-secret 'The app signing secret to sign with (the first, if several)'
            cand --timeout 'How long to wait for the answer, e.g. 60s'
            cand --log-format 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)'
            cand --gzip 'Gzip the body (sent with Content-Encoding: gzip)'
            cand -i 'Print the status line and headers to stderr'
            cand --include 'Print the status line and headers to stderr'
            cand -q 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
            cand --quiet 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'dailyreps-backup-server;smoke-test'= {
            cand --url 'The deployment, e.g. https://dailyreps-backup-server.fly.dev (or DAILYREPS_URL, as `request` reads it)'
            cand --dailyreps-url '`--url` from the variable `request` reads too'
            cand --signing-secret 'The app signing secret (the first, if several)'
            cand --wait 'How long to wait for the deployment to answer /healthz (machines that start on demand)'
            cand --log-format 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)'
            cand --json 'Print JSON instead of a table'
            cand -q 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
            cand --quiet 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'dailyreps-backup-server;completions'= {
            cand --log-format 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)'
            cand -q 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
            cand --quiet 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'dailyreps-backup-server;help'= {
            cand serve 'Run the HTTP API'
            cand migrate 'Apply the embedded database migrations, or show their state'
            cand backup-db 'Dump the database to a file: one consistent snapshot, streamed and compressed'
            cand restore-db 'Load a dump into an empty database, all or nothing, then apply newer migrations'
            cand verify-backup 'Check a dump''s integrity and manifest, without a database'
            cand list-backups 'List the complete backups in a bucket, newest first'
            cand backup-status 'Exit 3 when the newest backup in a bucket is too old or much smaller than those before it'
            cand inspect 'Read-only views of users, backups and the database, for operators'
            cand doctor 'Check the operator''s side: the database reachable, its schema current, the bucket listable, the identity file opening the newest backup, the signing secret, the newest backup''s age. One line each, with its fix; exits 3 when any warns'
            cand prune 'Delete backups (and inactive accounts) by policy, in small batches'
            cand scrub 'Re-read every stored chunk and backup, and name the damaged ones'
            cand reserve 'Keep space in reserve on the database''s volume, or release it when the volume is full'
            cand request 'Send one signed request to the API and print the answer, like `gh api`'
            cand smoke-test 'Walk the whole user journey against a deployed server and report each step'
            cand completions 'Print a shell completion script (e.g. `completions bash > ~/.local/share/bash-completion/completions/dailyreps-backup-server`)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'dailyreps-backup-server;help;serve'= {
        }
        &'dailyreps-backup-server;help;migrate'= {
            cand status 'List applied and pending migrations'
        }
        &'dailyreps-backup-server;help;migrate;status'= {
        }
        &'dailyreps-backup-server;help;backup-db'= {
        }
        &'dailyreps-backup-server;help;restore-db'= {
        }
        &'dailyreps-backup-server;help;verify-backup'= {
        }
        &'dailyreps-backup-server;help;list-backups'= {
        }
        &'dailyreps-backup-server;help;backup-status'= {
        }
        &'dailyreps-backup-server;help;inspect'= {
            cand users 'Users with their backup count, bytes and last backup'
            cand user 'One account and its backups'
            cand backups 'Backups, newest first'
            cand stats 'Totals, database and table sizes, largest users, backups per day'
            cand health 'Whether the database is healthy and when its volume will be full; exits 3 when a check warns, so a cron or CI job can alert (and pings a monitor with --ping)'
        }
        &'dailyreps-backup-server;help;inspect;users'= {
        }
        &'dailyreps-backup-server;help;inspect;user'= {
        }
        &'dailyreps-backup-server;help;inspect;backups'= {
        }
        &'dailyreps-backup-server;help;inspect;stats'= {
        }
        &'dailyreps-backup-server;help;inspect;health'= {
        }
        &'dailyreps-backup-server;help;doctor'= {
        }
        &'dailyreps-backup-server;help;prune'= {
        }
        &'dailyreps-backup-server;help;scrub'= {
        }
        &'dailyreps-backup-server;help;reserve'= {
        }
        &'dailyreps-backup-server;help;request'= {
        }
        &'dailyreps-backup-server;help;smoke-test'= {
        }
        &'dailyreps-backup-server;help;completions'= {
        }
        &'dailyreps-backup-server;help;help'= {
        }
    ]
    $completions[$command]
}
