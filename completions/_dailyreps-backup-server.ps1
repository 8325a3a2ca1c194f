
using namespace System.Management.Automation
using namespace System.Management.Automation.Language

Register-ArgumentCompleter -Native -CommandName 'dailyreps-backup-server' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)

    $commandElements = $commandAst.CommandElements
    $command = @(
        'dailyreps-backup-server'
        for ($i = 1; $i -lt $commandElements.Count; $i++) {
            $element = $commandElements[$i]
            if ($element -isnot [StringConstantExpressionAst] -or
                $element.StringConstantType -ne [StringConstantType]::BareWord -or
                $element.Value.StartsWith('-') -or
                $element.Value -eq $wordToComplete) {
                break
        }
        $element.Value
    }) -join ';'

    $completions = @(switch ($command) {
        'dailyreps-backup-server' {
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('serve', 'serve', [CompletionResultType]::ParameterValue, 'Run the HTTP API')
            [CompletionResult]::new('migrate', 'migrate', [CompletionResultType]::ParameterValue, 'Apply the embedded database migrations, or show their state')
            [CompletionResult]::new('backup-db', 'backup-db', [CompletionResultType]::ParameterValue, 'Dump the database to a file: one consistent snapshot, streamed and compressed')
            [CompletionResult]::new('restore-db', 'restore-db', [CompletionResultType]::ParameterValue, 'Load a dump into an empty database, all or nothing, then apply newer migrations')
            [CompletionResult]::new('verify-backup', 'verify-backup', [CompletionResultType]::ParameterValue, 'Check a dump''s integrity and manifest, without a database')
            [CompletionResult]::new('list-backups', 'list-backups', [CompletionResultType]::ParameterValue, 'List the complete backups in a bucket, newest first')
            [CompletionResult]::new('backup-status', 'backup-status', [CompletionResultType]::ParameterValue, 'Exit 3 when the newest backup in a bucket is too old or much smaller than those before it')
            [CompletionResult]::new('inspect', 'inspect', [CompletionResultType]::ParameterValue, 'Read-only views of users, backups and the database, for operators')
            [CompletionResult]::new('doctor', 'doctor', [CompletionResultType]::ParameterValue, 'Check the operator''s side: the database reachable, its schema current, the bucket listable, the identity file opening the newest backup, the signing secret, the newest backup''s age. One line each, with its fix; exits 3 when any warns')
            [CompletionResult]::new('prune', 'prune', [CompletionResultType]::ParameterValue, 'Delete backups (and inactive accounts) by policy, in small batches')
            [CompletionResult]::new('scrub', 'scrub', [CompletionResultType]::ParameterValue, 'Re-read every stored chunk and backup, and name the damaged ones')
            [CompletionResult]::new('reserve', 'reserve', [CompletionResultType]::ParameterValue, 'Keep space in reserve on the database''s volume, or release it when the volume is full')
            [CompletionResult]::new('request', 'request', [CompletionResultType]::ParameterValue, 'Send one signed request to the API and print the answer, like `gh api`')
            [CompletionResult]::new('smoke-test', 'smoke-test', [CompletionResultType]::ParameterValue, 'Walk the whole user journey against a deployed server and report each step')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print a shell completion script (e.g. `completions bash > ~/.local/share/bash-completion/completions/dailyreps-backup-server`)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'dailyreps-backup-server;serve' {
            [CompletionResult]::new('--database-url', '--database-url', [CompletionResultType]::ParameterName, 'PostgreSQL connection URL, e.g. postgres://user:password@host:5432/db')
            [CompletionResult]::new('--bind', '--bind', [CompletionResultType]::ParameterName, 'Address to listen on for the API: `HOST:PORT`, or just a port (all interfaces)')
            [CompletionResult]::new('--metrics-bind', '--metrics-bind', [CompletionResultType]::ParameterName, 'Address of the Prometheus metrics listener (`[::]` so Fly''s private IPv6 network reaches it)')
            [CompletionResult]::new('--signing-secret', '--signing-secret', [CompletionResultType]::ParameterName, 'Secrets the app signs requests with, comma-separated (any one is accepted, for rotation). Each must be at least 32 bytes')
            [CompletionResult]::new('--allowed-origins', '--allowed-origins', [CompletionResultType]::ParameterName, 'Origins allowed to call the API from a browser, comma-separated exact origins (e.g. https://dailyreps.app). Empty: no cross-origin access')
            [CompletionResult]::new('--max-backup-bytes', '--max-backup-bytes', [CompletionResultType]::ParameterName, 'Largest backup document accepted, in bytes, after gzip decoding (at most 16 MiB, the largest a database dump reads back)')
            [CompletionResult]::new('--max-backups-kept', '--max-backups-kept', [CompletionResultType]::ParameterName, 'Backups kept per user; older ones are deleted when a new one arrives')
            [CompletionResult]::new('--memory-budget-mb', '--memory-budget-mb', [CompletionResultType]::ParameterName, 'Memory that request bodies and documents in flight may hold together, in MiB; beyond it requests are answered 503 with Retry-After. Must hold one upload of the largest size in every encoding: a gzip body, the decoded document and the database driver''s two copies (a little over four times MAX_BACKUP_BYTES)')
            [CompletionResult]::new('--rate-limit-register-per-minute', '--rate-limit-register-per-minute', [CompletionResultType]::ParameterName, 'Account registrations per minute from one client IP (0: no limit)')
            [CompletionResult]::new('--rate-limit-user-per-minute', '--rate-limit-user-per-minute', [CompletionResultType]::ParameterName, 'API requests per minute from one user (0: no limit)')
            [CompletionResult]::new('--rate-limit-ip-per-minute', '--rate-limit-ip-per-minute', [CompletionResultType]::ParameterName, 'API requests per minute from one client IP (0: no limit)')
            [CompletionResult]::new('--body-timeout', '--body-timeout', [CompletionResultType]::ParameterName, 'How long a client may take to send a request body, e.g. 60s (then 408; a slow client cannot hold the memory budget). The variable takes seconds')
            [CompletionResult]::new('--request-timeout', '--request-timeout', [CompletionResultType]::ParameterName, 'How long the server may take over a request once its body is in, e.g. 30s (then 503 with Retry-After). The variable takes seconds')
            [CompletionResult]::new('--header-timeout', '--header-timeout', [CompletionResultType]::ParameterName, 'How long a client may take to send a request''s headers, and may stay idle between requests on a kept-alive connection, e.g. 15s (then the connection is closed). The variable takes seconds')
            [CompletionResult]::new('--max-connections', '--max-connections', [CompletionResultType]::ParameterName, 'Most client connections open at once; beyond it new ones wait to be accepted')
            [CompletionResult]::new('--pool-size', '--pool-size', [CompletionResultType]::ParameterName, 'Most database connections the server holds open')
            [CompletionResult]::new('--shutdown-grace', '--shutdown-grace', [CompletionResultType]::ParameterName, 'How long in-flight requests may take after SIGINT or SIGTERM before the process exits anyway, e.g. 25s (below fly.toml''s kill_timeout). The variable takes seconds')
            [CompletionResult]::new('--dev-data-dir', '--dev-data-dir', [CompletionResultType]::ParameterName, 'Folder for `--dev`''s PostgreSQL cluster, its password and the signing secret, kept between runs')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)')
            [CompletionResult]::new('--dev', '--dev', [CompletionResultType]::ParameterName, 'Development mode: without DATABASE_URL, start a private local PostgreSQL; apply migrations; generate a signing secret when none is set; listen on 127.0.0.1 where the address is 0.0.0.0 or [::] (the defaults), and on a free metrics port when 9091 is taken')
            [CompletionResult]::new('--remove-dev-data', '--remove-dev-data', [CompletionResultType]::ParameterName, 'Delete what `--dev` keeps for --dev-data-dir (the cluster, wherever it lives, /var/tmp included; its password; the signing secret) and exit, instead of serving. It is named first; on a terminal you are asked')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'With --remove-dev-data off a terminal (a script): delete without asking')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'dailyreps-backup-server;migrate' {
            [CompletionResult]::new('--database-url', '--database-url', [CompletionResultType]::ParameterName, 'PostgreSQL connection URL, e.g. postgres://user:password@host:5432/db')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('status', 'status', [CompletionResultType]::ParameterValue, 'List applied and pending migrations')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'dailyreps-backup-server;migrate;status' {
            [CompletionResult]::new('--database-url', '--database-url', [CompletionResultType]::ParameterName, 'PostgreSQL connection URL, e.g. postgres://user:password@host:5432/db')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print JSON instead of a table')
            [CompletionResult]::new('--check', '--check', [CompletionResultType]::ParameterName, 'Exit 3 when migrations are pending (for a script that must not start a binary the database is behind)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'dailyreps-backup-server;migrate;help' {
            [CompletionResult]::new('status', 'status', [CompletionResultType]::ParameterValue, 'List applied and pending migrations')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'dailyreps-backup-server;migrate;help;status' {
            break
        }
        'dailyreps-backup-server;migrate;help;help' {
            break
        }
        'dailyreps-backup-server;backup-db' {
            [CompletionResult]::new('--database-url', '--database-url', [CompletionResultType]::ParameterName, 'PostgreSQL connection URL, e.g. postgres://user:password@host:5432/db')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'A folder for UTC-timestamped dumps (created if missing), or a file ending in .sql.zst. A path that does not exist and does not end in .sql.zst is a folder')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'A folder for UTC-timestamped dumps (created if missing), or a file ending in .sql.zst. A path that does not exist and does not end in .sql.zst is a folder')
            [CompletionResult]::new('--keep', '--keep', [CompletionResultType]::ParameterName, 'After a successful dump, keep only the newest N of this tool''s timestamped dumps in the output folder (by the time in their names; other files are never touched)')
            [CompletionResult]::new('--to', '--to', [CompletionResultType]::ParameterName, 'Stream the dump up to an S3-compatible bucket instead (Tigris, S3, R2, B2), with the standard AWS_* settings (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL_S3, AWS_REGION), e.g. s3://dailyreps-backups/db')
            [CompletionResult]::new('--encrypt-to', '--encrypt-to', [CompletionResultType]::ParameterName, 'age public keys (age1…, comma-separated) to encrypt an upload to; the machine taking backups needs no private key')
            [CompletionResult]::new('--keep-daily', '--keep-daily', [CompletionResultType]::ParameterName, 'Keep the newest backup of each of the last N days that have one [default: 7]')
            [CompletionResult]::new('--keep-weekly', '--keep-weekly', [CompletionResultType]::ParameterName, 'Keep the newest of each of the last N weeks that have one [default: 4]')
            [CompletionResult]::new('--keep-monthly', '--keep-monthly', [CompletionResultType]::ParameterName, 'Keep the newest of each of the last N months that have one [default: 6]')
            [CompletionResult]::new('--keep-min', '--keep-min', [CompletionResultType]::ParameterName, 'Keep the newest N, whatever their dates [default: 3]')
            [CompletionResult]::new('--ping', '--ping', [CompletionResultType]::ParameterName, 'A dead-man''s switch to ping (healthchecks.io''s convention): URL/start before, URL on success, URL/fail with the error on failure. A failing ping never fails the backup')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)')
            [CompletionResult]::new('--force', '--force', [CompletionResultType]::ParameterName, 'Overwrite the file --output names if it exists')
            [CompletionResult]::new('--no-encryption', '--no-encryption', [CompletionResultType]::ParameterName, 'Upload without encryption (refused otherwise)')
            [CompletionResult]::new('--no-reread', '--no-reread', [CompletionResultType]::ParameterName, 'Do not read the uploaded object back to check its SHA-256 (its size is still checked)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print JSON instead of a table')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'dailyreps-backup-server;restore-db' {
            [CompletionResult]::new('--database-url', '--database-url', [CompletionResultType]::ParameterName, 'PostgreSQL connection URL, e.g. postgres://user:password@host:5432/db')
            [CompletionResult]::new('--identity', '--identity', [CompletionResultType]::ParameterName, 'The age identity file that decrypts an encrypted backup (as age-keygen writes it)')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)')
            [CompletionResult]::new('--create', '--create', [CompletionResultType]::ParameterName, 'Create the database DATABASE_URL names when the server lacks it (on a new cluster), as `pg_restore --create` does; an existing one is used as it is')
            [CompletionResult]::new('--force', '--force', [CompletionResultType]::ParameterName, 'Replace whatever the target database holds (everything in its public schema), in the same transaction; it is named first, and on a terminal you are asked')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'With --force off a terminal (a script, CI): replace without asking, as the answer')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print JSON instead of a table')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'dailyreps-backup-server;verify-backup' {
            [CompletionResult]::new('--identity', '--identity', [CompletionResultType]::ParameterName, 'The age identity file that decrypts an encrypted backup. Without it an encrypted backup''s stored bytes are checked against its manifest, not the dump inside')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print JSON instead of a table')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'dailyreps-backup-server;list-backups' {
            [CompletionResult]::new('--keep-daily', '--keep-daily', [CompletionResultType]::ParameterName, 'Keep the newest backup of each of the last N days that have one [default: 7]')
            [CompletionResult]::new('--keep-weekly', '--keep-weekly', [CompletionResultType]::ParameterName, 'Keep the newest of each of the last N weeks that have one [default: 4]')
            [CompletionResult]::new('--keep-monthly', '--keep-monthly', [CompletionResultType]::ParameterName, 'Keep the newest of each of the last N months that have one [default: 6]')
            [CompletionResult]::new('--keep-min', '--keep-min', [CompletionResultType]::ParameterName, 'Keep the newest N, whatever their dates [default: 3]')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print JSON instead of a table')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'dailyreps-backup-server;backup-status' {
            [CompletionResult]::new('--max-age', '--max-age', [CompletionResultType]::ParameterName, 'The oldest the newest backup may be, e.g. 26h for a daily schedule')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print JSON instead of a line')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'dailyreps-backup-server;inspect' {
            [CompletionResult]::new('--database-url', '--database-url', [CompletionResultType]::ParameterName, 'PostgreSQL connection URL, e.g. postgres://user:password@host:5432/db')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print JSON instead of a table')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('users', 'users', [CompletionResultType]::ParameterValue, 'Users with their backup count, bytes and last backup')
            [CompletionResult]::new('user', 'user', [CompletionResultType]::ParameterValue, 'One account and its backups')
            [CompletionResult]::new('backups', 'backups', [CompletionResultType]::ParameterValue, 'Backups, newest first')
            [CompletionResult]::new('stats', 'stats', [CompletionResultType]::ParameterValue, 'Totals, database and table sizes, largest users, backups per day')
            [CompletionResult]::new('health', 'health', [CompletionResultType]::ParameterValue, 'Whether the database is healthy and when its volume will be full; exits 3 when a check warns, so a cron or CI job can alert (and pings a monitor with --ping)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'dailyreps-backup-server;inspect;users' {
            [CompletionResult]::new('--sort', '--sort', [CompletionResultType]::ParameterName, 'Order')
            [CompletionResult]::new('--limit', '--limit', [CompletionResultType]::ParameterName, 'Rows to show (1–1000)')
            [CompletionResult]::new('--offset', '--offset', [CompletionResultType]::ParameterName, 'Rows to skip')
            [CompletionResult]::new('--cursor', '--cursor', [CompletionResultType]::ParameterName, '`next_cursor` of the previous page')
            [CompletionResult]::new('--database-url', '--database-url', [CompletionResultType]::ParameterName, 'PostgreSQL connection URL, e.g. postgres://user:password@host:5432/db')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print JSON instead of a table')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'dailyreps-backup-server;inspect;user' {
            [CompletionResult]::new('--database-url', '--database-url', [CompletionResultType]::ParameterName, 'PostgreSQL connection URL, e.g. postgres://user:password@host:5432/db')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print JSON instead of a table')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'dailyreps-backup-server;inspect;backups' {
            [CompletionResult]::new('--user', '--user', [CompletionResultType]::ParameterName, 'Only this account''s')
            [CompletionResult]::new('--since', '--since', [CompletionResultType]::ParameterName, 'Only those stored in this last period, e.g. 7d')
            [CompletionResult]::new('--limit', '--limit', [CompletionResultType]::ParameterName, 'Rows to show (1–1000)')
            [CompletionResult]::new('--cursor', '--cursor', [CompletionResultType]::ParameterName, '`next_cursor` of the previous page')
            [CompletionResult]::new('--database-url', '--database-url', [CompletionResultType]::ParameterName, 'PostgreSQL connection URL, e.g. postgres://user:password@host:5432/db')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print JSON instead of a table')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'dailyreps-backup-server;inspect;stats' {
            [CompletionResult]::new('--database-url', '--database-url', [CompletionResultType]::ParameterName, 'PostgreSQL connection URL, e.g. postgres://user:password@host:5432/db')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print JSON instead of a table')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'dailyreps-backup-server;inspect;health' {
            [CompletionResult]::new('--volume-size', '--volume-size', [CompletionResultType]::ParameterName, 'The volume PostgreSQL''s data lives on, e.g. 1GB (Fly''s sizes are GB: 10^9 bytes)')
            [CompletionResult]::new('--long-transaction', '--long-transaction', [CompletionResultType]::ParameterName, 'A transaction open, or a statement running, longer than this warns')
            [CompletionResult]::new('--ping', '--ping', [CompletionResultType]::ParameterName, 'A monitor to ping (healthchecks.io''s convention): URL when every check is ok, URL/fail with the warnings (or the error) otherwise. Scheduled beside the backup, it is the database''s alarm. A failing ping never changes the exit code')
            [CompletionResult]::new('--database-url', '--database-url', [CompletionResultType]::ParameterName, 'PostgreSQL connection URL, e.g. postgres://user:password@host:5432/db')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print JSON instead of a table')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'dailyreps-backup-server;inspect;help' {
            [CompletionResult]::new('users', 'users', [CompletionResultType]::ParameterValue, 'Users with their backup count, bytes and last backup')
            [CompletionResult]::new('user', 'user', [CompletionResultType]::ParameterValue, 'One account and its backups')
            [CompletionResult]::new('backups', 'backups', [CompletionResultType]::ParameterValue, 'Backups, newest first')
            [CompletionResult]::new('stats', 'stats', [CompletionResultType]::ParameterValue, 'Totals, database and table sizes, largest users, backups per day')
            [CompletionResult]::new('health', 'health', [CompletionResultType]::ParameterValue, 'Whether the database is healthy and when its volume will be full; exits 3 when a check warns, so a cron or CI job can alert (and pings a monitor with --ping)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'dailyreps-backup-server;inspect;help;users' {
            break
        }
        'dailyreps-backup-server;inspect;help;user' {
            break
        }
        'dailyreps-backup-server;inspect;help;backups' {
            break
        }
        'dailyreps-backup-server;inspect;help;stats' {
            break
        }
        'dailyreps-backup-server;inspect;help;health' {
            break
        }
        'dailyreps-backup-server;inspect;help;help' {
            break
        }
        'dailyreps-backup-server;doctor' {
            [CompletionResult]::new('--database-url', '--database-url', [CompletionResultType]::ParameterName, 'PostgreSQL connection URL, e.g. postgres://user:password@host:5432/db')
            [CompletionResult]::new('--bucket', '--bucket', [CompletionResultType]::ParameterName, 'The backups'' bucket, e.g. s3://dailyreps-backups/db, with the AWS_* settings of `backup-db --to`')
            [CompletionResult]::new('--identity', '--identity', [CompletionResultType]::ParameterName, 'The age identity file a restore would use')
            [CompletionResult]::new('--signing-secret', '--signing-secret', [CompletionResultType]::ParameterName, 'The app signing secret(s), comma-separated')
            [CompletionResult]::new('--max-age', '--max-age', [CompletionResultType]::ParameterName, 'The oldest the newest backup may be')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print JSON instead of a table')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'dailyreps-backup-server;prune' {
            [CompletionResult]::new('--database-url', '--database-url', [CompletionResultType]::ParameterName, 'PostgreSQL connection URL, e.g. postgres://user:password@host:5432/db')
            [CompletionResult]::new('--older-than', '--older-than', [CompletionResultType]::ParameterName, 'Backups older than this, e.g. 90d')
            [CompletionResult]::new('--keep-last', '--keep-last', [CompletionResultType]::ParameterName, 'Keep each user''s newest N backups')
            [CompletionResult]::new('--inactive-users', '--inactive-users', [CompletionResultType]::ParameterName, 'Accounts with no backup in this long (and older than it), deleted with their data, e.g. 365d')
            [CompletionResult]::new('--user', '--user', [CompletionResultType]::ParameterName, 'Only this account')
            [CompletionResult]::new('--batch-size', '--batch-size', [CompletionResultType]::ParameterName, 'Rows per batch (each batch is its own short statement)')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)')
            [CompletionResult]::new('--dry-run', '--dry-run', [CompletionResultType]::ParameterName, 'Show what would be deleted, and stop')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Do not ask (required when not on a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Do not ask (required when not on a terminal)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print JSON instead of a table')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'dailyreps-backup-server;scrub' {
            [CompletionResult]::new('--database-url', '--database-url', [CompletionResultType]::ParameterName, 'PostgreSQL connection URL, e.g. postgres://user:password@host:5432/db')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print JSON instead of a table')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'dailyreps-backup-server;reserve' {
            [CompletionResult]::new('--database-url', '--database-url', [CompletionResultType]::ParameterName, 'PostgreSQL connection URL, e.g. postgres://user:password@host:5432/db')
            [CompletionResult]::new('--size', '--size', [CompletionResultType]::ParameterName, 'How much to keep in reserve, e.g. 64MiB (about 6% of a 1 GB volume)')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)')
            [CompletionResult]::new('--release', '--release', [CompletionResultType]::ParameterName, 'Give the reserve back to the volume (when it is full)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print JSON')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'dailyreps-backup-server;request' {
            [CompletionResult]::new('-d', '-d', [CompletionResultType]::ParameterName, 'Body: text, `@FILE`, or `@-` for stdin. Sent as application/json unless -H says otherwise')
            [CompletionResult]::new('--data', '--data', [CompletionResultType]::ParameterName, 'Body: text, `@FILE`, or `@-` for stdin. Sent as application/json unless -H says otherwise')
            [CompletionResult]::new('-H', '-H ', [CompletionResultType]::ParameterName, 'Extra header, `Name: value`; repeatable')
            [CompletionResult]::new('--header', '--header', [CompletionResultType]::ParameterName, 'Extra header, `Name: value`; repeatable')
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'The server')
            [CompletionResult]::new('--token', '--token', [CompletionResultType]::ParameterName, 'Bearer token of the account (from POST /api/users)')
            [CompletionResult]::new('--signing-secret', '--signing-secret', [CompletionResultType]::ParameterName, 'The app signing secret to sign with (the first, if several)')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'How long to wait for the answer, e.g. 60s')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)')
            [CompletionResult]::new('--gzip', '--gzip', [CompletionResultType]::ParameterName, 'Gzip the body (sent with Content-Encoding: gzip)')
            [CompletionResult]::new('-i', '-i', [CompletionResultType]::ParameterName, 'Print the status line and headers to stderr')
            [CompletionResult]::new('--include', '--include', [CompletionResultType]::ParameterName, 'Print the status line and headers to stderr')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'dailyreps-backup-server;smoke-test' {
            [CompletionResult]::new('--url', '--url', [CompletionResultType]::ParameterName, 'The deployment, e.g. https://dailyreps-backup-server.fly.dev (or DAILYREPS_URL, as `request` reads it)')
            [CompletionResult]::new('--dailyreps-url', '--dailyreps-url', [CompletionResultType]::ParameterName, '`--url` from the variable `request` reads too')
            [CompletionResult]::new('--signing-secret', '--signing-secret', [CompletionResultType]::ParameterName, 'The app signing secret (the first, if several)')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'How long to wait for the deployment to answer /healthz (machines that start on demand)')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print JSON instead of a table')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'dailyreps-backup-server;completions' {
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'No status lines or progress bars on stderr, for scripts: data (stdout), warnings and errors still appear, and the exit status says how it went')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'dailyreps-backup-server;help' {
            [CompletionResult]::new('serve', 'serve', [CompletionResultType]::ParameterValue, 'Run the HTTP API')
            [CompletionResult]::new('migrate', 'migrate', [CompletionResultType]::ParameterValue, 'Apply the embedded database migrations, or show their state')
            [CompletionResult]::new('backup-db', 'backup-db', [CompletionResultType]::ParameterValue, 'Dump the database to a file: one consistent snapshot, streamed and compressed')
            [CompletionResult]::new('restore-db', 'restore-db', [CompletionResultType]::ParameterValue, 'Load a dump into an empty database, all or nothing, then apply newer migrations')
            [CompletionResult]::new('verify-backup', 'verify-backup', [CompletionResultType]::ParameterValue, 'Check a dump''s integrity and manifest, without a database')
            [CompletionResult]::new('list-backups', 'list-backups', [CompletionResultType]::ParameterValue, 'List the complete backups in a bucket, newest first')
            [CompletionResult]::new('backup-status', 'backup-status', [CompletionResultType]::ParameterValue, 'Exit 3 when the newest backup in a bucket is too old or much smaller than those before it')
            [CompletionResult]::new('inspect', 'inspect', [CompletionResultType]::ParameterValue, 'Read-only views of users, backups and the database, for operators')
            [CompletionResult]::new('doctor', 'doctor', [CompletionResultType]::ParameterValue, 'Check the operator''s side: the database reachable, its schema current, the bucket listable, the identity file opening the newest backup, the signing secret, the newest backup''s age. One line each, with its fix; exits 3 when any warns')
            [CompletionResult]::new('prune', 'prune', [CompletionResultType]::ParameterValue, 'Delete backups (and inactive accounts) by policy, in small batches')
            [CompletionResult]::new('scrub', 'scrub', [CompletionResultType]::ParameterValue, 'Re-read every stored chunk and backup, and name the damaged ones')
            [CompletionResult]::new('reserve', 'reserve', [CompletionResultType]::ParameterValue, 'Keep space in reserve on the database''s volume, or release it when the volume is full')
            [CompletionResult]::new('request', 'request', [CompletionResultType]::ParameterValue, 'Send one signed request to the API and print the answer, like `gh api`')
            [CompletionResult]::new('smoke-test', 'smoke-test', [CompletionResultType]::ParameterValue, 'Walk the whole user journey against a deployed server and report each step')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print a shell completion script (e.g. `completions bash > ~/.local/share/bash-completion/completions/dailyreps-backup-server`)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'dailyreps-backup-server;help;serve' {
            break
        }
        'dailyreps-backup-server;help;migrate' {
            [CompletionResult]::new('status', 'status', [CompletionResultType]::ParameterValue, 'List applied and pending migrations')
            break
        }
        'dailyreps-backup-server;help;migrate;status' {
            break
        }
        'dailyreps-backup-server;help;backup-db' {
            break
        }
        'dailyreps-backup-server;help;restore-db' {
            break
        }
        'dailyreps-backup-server;help;verify-backup' {
            break
        }
        'dailyreps-backup-server;help;list-backups' {
            break
        }
        'dailyreps-backup-server;help;backup-status' {
            break
        }
        'dailyreps-backup-server;help;inspect' {
            [CompletionResult]::new('users', 'users', [CompletionResultType]::ParameterValue, 'Users with their backup count, bytes and last backup')
            [CompletionResult]::new('user', 'user', [CompletionResultType]::ParameterValue, 'One account and its backups')
            [CompletionResult]::new('backups', 'backups', [CompletionResultType]::ParameterValue, 'Backups, newest first')
            [CompletionResult]::new('stats', 'stats', [CompletionResultType]::ParameterValue, 'Totals, database and table sizes, largest users, backups per day')
            [CompletionResult]::new('health', 'health', [CompletionResultType]::ParameterValue, 'Whether the database is healthy and when its volume will be full; exits 3 when a check warns, so a cron or CI job can alert (and pings a monitor with --ping)')
            break
        }
        'dailyreps-backup-server;help;inspect;users' {
            break
        }
        'dailyreps-backup-server;help;inspect;user' {
            break
        }
        'dailyreps-backup-server;help;inspect;backups' {
            break
        }
        'dailyreps-backup-server;help;inspect;stats' {
            break
        }
        'dailyreps-backup-server;help;inspect;health' {
            break
        }
        'dailyreps-backup-server;help;doctor' {
            break
        }
        'dailyreps-backup-server;help;prune' {
            break
        }
        'dailyreps-backup-server;help;scrub' {
            break
        }
        'dailyreps-backup-server;help;reserve' {
            break
        }
        'dailyreps-backup-server;help;request' {
            break
        }
        'dailyreps-backup-server;help;smoke-test' {
            break
        }
        'dailyreps-backup-server;help;completions' {
            break
        }
        'dailyreps-backup-server;help;help' {
            break
        }
    })

    $completions.Where{ $_.CompletionText -like "$wordToComplete*" } |
        Sort-Object -Property ListItemText
}
