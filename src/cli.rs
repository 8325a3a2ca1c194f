//! Command-line types: what the operator can type. No I/O happens here.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::units::{BindAddr, ByteSize, EnvDuration, HumanDuration, SecretString};

/// What `--version` says: the release and the commit it was built from (build.rs).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("DAILYREPS_BUILD_COMMIT"), ")");

/// The DailyReps backup server and its operator's toolkit.
#[derive(Debug, Parser)]
#[command(name = "dailyreps-backup-server", version = VERSION, about, propagate_version = true)]
pub struct Cli {
    /// Log format: `pretty` for people, `json` for log collectors (default: pretty on a terminal).
    #[arg(long, value_name = "FORMAT", env = "LOG_FORMAT", global = true, value_enum, help_heading = "Global options")]
    pub log_format: Option<LogFormat>,

    /// No status lines or progress bars on stderr, for scripts: data (stdout), warnings and
    /// errors still appear, and the exit status says how it went.
    #[arg(long, short = 'q', global = true, help_heading = "Global options")]
    pub quiet: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The exit statuses, the same for every command (SPEC.md's CLI section), shown under every
/// command's help and in its man page.
pub const EXIT_STATUS: &str = "\
Exit status:
  0    success
  1    failure: the command could not do what was asked
  2    usage error, or a required setting missing
  3    the command ran and a check it makes warns
  4    the database or the bucket could not be reached
  5    declined at a confirmation prompt (nothing changed)
  130  interrupted (Ctrl-C); nothing was left half-done
With --json, a failure is one JSON document on stdout too: {\"ok\": false, \"error\": {\"code\", \"message\"}}.";

/// Each command's examples, by its path under the binary (`inspect users`), as `--help` and
/// the man pages show them.
pub fn examples(path: &str) -> &'static [(&'static str, &'static str)] {
    match path {
        "" => &[
            ("The API on a private local PostgreSQL", "serve --dev"),
            ("Is everything on the operator's side in order?", "doctor --bucket s3://dailyreps-backups/db"),
            ("Every command's own help", "help prune"),
        ],
        "serve" => &[
            ("On a private local PostgreSQL, with a generated signing secret", "serve --dev"),
            ("Against a database, on another port", "serve --bind 127.0.0.1:3000"),
            ("Delete what --dev keeps (the cluster, its password, the secret)", "serve --dev --remove-dev-data"),
        ],
        "migrate" => &[
            ("Apply what is pending (safe to run twice, and from two machines)", "migrate"),
            ("Fail a script when the database is behind this binary", "migrate status --check"),
        ],
        "migrate status" => &[
            ("Applied and pending", "migrate status"),
            ("For a script", "migrate status --json | jq '.pending | length'"),
        ],
        "backup-db" => &[
            ("A dump into ./backups/, keeping the newest seven", "backup-db --output backups/ --keep 7"),
            (
                "Encrypted to a bucket, with a dead-man's switch",
                "backup-db --to s3://dailyreps-backups/db --ping https://hc-ping.com/UUID",
            ),
        ],
        "restore-db" => &[
            (
                "The newest backup in a bucket into a new database",
                "restore-db s3://dailyreps-backups/db/latest --identity backup-key.txt --create",
            ),
            (
                "A file into a database that holds data (asks first)",
                "restore-db backups/dailyreps-20261207T030000.000Z.sql.zst --force",
            ),
        ],
        "verify-backup" => &[
            ("A file", "verify-backup backups/dailyreps-20261207T030000.000Z.sql.zst"),
            (
                "The newest in a bucket, decrypted and read through",
                "verify-backup s3://dailyreps-backups/db/latest --identity backup-key.txt",
            ),
        ],
        "list-backups" => &[
            ("What is there, and what retention keeps", "list-backups s3://dailyreps-backups/db"),
            (
                "The newest one's key, for a script",
                "list-backups s3://dailyreps-backups/db --json | jq -r '.backups[0].key'",
            ),
        ],
        "backup-status" => &[
            (
                "From a scheduled job: exit 3 when the newest is stale or small",
                "backup-status s3://dailyreps-backups/db --max-age 26h",
            ),
            ("The newest one's age, for a script", "backup-status s3://dailyreps-backups/db --json | jq .age_seconds"),
        ],
        "inspect" => &[
            ("Totals, sizes, largest users, backups per day", "inspect stats"),
            ("The heaviest accounts", "inspect users --sort size --limit 20"),
            ("Is the database healthy; when is the volume full?", "inspect health --volume-size 1GB"),
        ],
        "inspect users" => &[("The next page", "inspect users --cursor 50"), ("For a script", "inspect users --json")],
        "inspect user" => &[
            ("One account and its backups", "inspect user 0b6f9a8e-7f0a-4d5e-9f55-2a3c2b1d4e5f"),
            ("For a script", "inspect user 0b6f9a8e-7f0a-4d5e-9f55-2a3c2b1d4e5f --json"),
        ],
        "inspect backups" => &[
            ("The newest ten", "inspect backups --limit 10"),
            (
                "One account's backups of the last week",
                "inspect backups --user 0b6f9a8e-7f0a-4d5e-9f55-2a3c2b1d4e5f --since 7d",
            ),
        ],
        "inspect stats" => &[
            ("Totals, table sizes, largest users, backups per day", "inspect stats"),
            ("For a script", "inspect stats --json"),
        ],
        "inspect health" => &[
            ("Every hour, pinging a monitor", "inspect health --volume-size 1GB --ping https://hc-ping.com/UUID"),
            ("Sessions idle in a transaction for a minute warn", "inspect health --long-transaction 1m"),
        ],
        "doctor" => &[
            (
                "From the laptop, with the read-only key and the age key",
                "doctor --bucket s3://dailyreps-backups/db --identity backup-key.txt",
            ),
            ("For a script", "doctor --json | jq '.checks[] | select(.ok | not)'"),
        ],
        "prune" => &[
            ("See what would go", "prune --older-than 90d --keep-last 5 --dry-run"),
            ("Accounts silent for a year, with their data, from a script", "prune --inactive-users 365d --yes"),
            ("Everything of one account", "prune --user 0b6f9a8e-7f0a-4d5e-9f55-2a3c2b1d4e5f"),
        ],
        "scrub" => &[("Every chunk and backup re-hashed", "scrub"), ("For a script", "scrub --json")],
        "reserve" => &[
            ("Keep 64 MiB in reserve (once, after setting up)", "reserve"),
            ("The volume is full: give it back, so uploads and prune work", "reserve --release"),
        ],
        "request" => &[
            ("Register an account", "request POST /api/users"),
            ("Upload a backup", "request POST /api/backup --data @backup.json"),
            ("The newest backup, with the status and headers", "request GET /api/backups/latest --include"),
        ],
        "smoke-test" => &[
            ("After a deploy", "smoke-test --url https://dailyreps-backup-server.fly.dev --wait 90s"),
            ("For CI", "smoke-test --url https://dailyreps-backup-server.fly.dev --json"),
        ],
        "completions" => &[
            ("bash", "completions bash > ~/.local/share/bash-completion/completions/dailyreps-backup-server"),
            ("zsh", "completions zsh > ~/.zfunc/_dailyreps-backup-server"),
        ],
        _ => &[],
    }
}

impl Cli {
    /// The command line as clap sees it, with examples and the exit statuses under every
    /// command's help.
    pub fn definition() -> clap::Command {
        fn decorate(command: clap::Command, path: &str) -> clap::Command {
            let examples: String = examples(path)
                .iter()
                .map(|(what, line)| format!("  # {what}\n  $ dailyreps-backup-server {line}\n"))
                .collect();
            let after = if examples.is_empty() {
                EXIT_STATUS.to_owned()
            } else {
                format!("Examples:\n{examples}\n{EXIT_STATUS}")
            };
            command.after_help(after).mut_subcommands(|sub| {
                let path =
                    if path.is_empty() { sub.get_name().to_owned() } else { format!("{path} {}", sub.get_name()) };
                decorate(sub, &path)
            })
        }
        decorate(Self::command(), "")
    }

    /// Parses the process's arguments against [`Self::definition`]; exits 2 on a usage error
    /// (0 for --help and --version), as clap does.
    pub fn parse_args() -> Self {
        let definition = Self::definition();
        let matches = definition.clone().get_matches();
        refuse_bare_seconds(&definition, &matches).unwrap_or_else(|error| error.exit());
        Self::from_arg_matches(&matches).unwrap_or_else(|error| error.exit())
    }

    /// Whether the command was asked for JSON: then even its failure is one JSON document.
    pub fn json(&self) -> bool {
        match &self.command {
            Command::BackupDb(args) => args.json,
            Command::RestoreDb(args) => args.json,
            Command::VerifyBackup(args) => args.json,
            Command::ListBackups(args) => args.json,
            Command::BackupStatus(args) => args.json,
            Command::Inspect(args) => args.json,
            Command::Doctor(args) => args.json,
            Command::Prune(args) => args.json,
            Command::Scrub(args) => args.json,
            Command::Reserve(args) => args.json,
            Command::SmokeTest(args) => args.json,
            Command::Migrate(MigrateArgs { action: Some(MigrateAction::Status { json, .. }), .. }) => *json,
            Command::Migrate(_) | Command::Serve(_) | Command::Request(_) | Command::Completions { .. } => false,
        }
    }
}

/// A duration on the command line has a unit: an [`EnvDuration`] given as bare seconds is
/// fine only from its environment variable, whose name says seconds.
fn refuse_bare_seconds(command: &clap::Command, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        if let Ok(Some(value)) = matches.try_get_one::<EnvDuration>(id)
            && value.bare_seconds
            && matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine)
        {
            let seconds = value.duration.as_secs();
            let message = format!(
                "invalid value '{seconds}' for '--{}': `{seconds}` has no unit: write {seconds}s, {seconds}m or {seconds}ms\n",
                arg.get_long().unwrap_or(id)
            );
            return Err(command.clone().error(clap::error::ErrorKind::ValueValidation, message));
        }
    }
    match matches.subcommand() {
        Some((name, sub)) => command.find_subcommand(name).map_or(Ok(()), |command| refuse_bare_seconds(command, sub)),
        None => Ok(()),
    }
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API.
    Serve(ServeArgs),
    /// Apply the embedded database migrations, or show their state.
    Migrate(MigrateArgs),
    /// Dump the database to a file: one consistent snapshot, streamed and compressed.
    ///
    /// The file is a zstd-compressed SQL script with a manifest; `verify-backup` checks it and
    /// `restore-db` loads it. Without this tool: set -o pipefail; zstd -dc FILE | psql -v
    /// ON_ERROR_STOP=1 -d "$DATABASE_URL" (the file commits only on its last statement).
    BackupDb(BackupDbArgs),
    /// Load a dump into an empty database, all or nothing, then apply newer migrations.
    ///
    /// Runs no SQL from the file: the schema comes from this binary's migrations at the dump's
    /// schema version, rows only through COPY into the known tables, sequences from parsed
    /// values; a damaged or hostile file can only fail the restore. (The psql one-liner runs
    /// what the file holds: only feed psql a dump you made.)
    RestoreDb(RestoreDbArgs),
    /// Check a dump's integrity and manifest, without a database.
    VerifyBackup(VerifyBackupArgs),
    /// List the complete backups in a bucket, newest first.
    ListBackups(ListBackupsArgs),
    /// Exit 3 when the newest backup in a bucket is too old or much smaller than those before it.
    BackupStatus(BackupStatusArgs),
    /// Read-only views of users, backups and the database, for operators.
    Inspect(InspectArgs),
    /// Check the operator's side: the database reachable, its schema current, the bucket
    /// listable, the identity file opening the newest backup, the signing secret, the newest
    /// backup's age. One line each, with its fix; exits 3 when any warns.
    Doctor(DoctorArgs),
    /// Delete backups (and inactive accounts) by policy, in small batches.
    ///
    /// Backup policies combine: a backup is deleted only if every given policy selects it
    /// (e.g. `--older-than 90d --keep-last 5` deletes backups older than 90 days beyond each
    /// user's newest five). `--inactive-users` deletes whole accounts with their data.
    /// `--user` narrows everything to one account; alone, it deletes all of its backups.
    /// Shows the plan first; asks on a terminal; elsewhere needs --yes.
    Prune(PruneArgs),
    /// Re-read every stored chunk and backup, and name the damaged ones.
    ///
    /// Every chunk is re-hashed against its name and every backup reassembled and re-hashed
    /// against its SHA-256, inside PostgreSQL, in short batches. Says for each damaged one its
    /// user and whether it can heal (a damaged chunk heals when the app uploads its bytes again).
    /// Read-only. Exits 3 when anything is damaged.
    Scrub(ScrubArgs),
    /// Keep space in reserve on the database's volume, or release it when the volume is full.
    ///
    /// On a full volume deleting frees nothing until VACUUM runs, and VACUUM itself needs room:
    /// `reserve --release` gives the reserve back at once, so uploads resume and `prune` can
    /// vacuum. Run `reserve` once after setting up the database, and again after a release.
    Reserve(ReserveArgs),
    /// Send one signed request to the API and print the answer, like `gh api`.
    ///
    /// Example: `request POST /api/backup --data @doc.json` (with APP_SIGNING_SECRET and
    /// DAILYREPS_TOKEN set). The body goes to stdout; with --include, the status and headers go
    /// to stderr. Exits 1 when the answer is not 2xx or 3xx.
    Request(RequestArgs),
    /// Walk the whole user journey against a deployed server and report each step.
    ///
    /// Registers a throwaway account, uploads, retries, lists, restores, checks refusals, and
    /// deletes everything it made, even when a step fails or it is interrupted. Exits 1 if
    /// any step fails.
    SmokeTest(SmokeTestArgs),
    /// Print a shell completion script (e.g. `completions bash > ~/.local/share/bash-completion/completions/dailyreps-backup-server`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// Settings of `backup-db`.
#[derive(Debug, Args)]
pub struct BackupDbArgs {
    /// Where the database is.
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// A folder for UTC-timestamped dumps (created if missing), or a file ending in .sql.zst.
    /// A path that does not exist and does not end in .sql.zst is a folder.
    #[arg(long, value_name = "PATH", short = 'o', default_value = "backups/")]
    pub output: PathBuf,

    /// After a successful dump, keep only the newest N of this tool's timestamped dumps in the
    /// output folder (by the time in their names; other files are never touched).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep: Option<u32>,

    /// Overwrite the file --output names if it exists.
    #[arg(long)]
    pub force: bool,

    /// Stream the dump up to an S3-compatible bucket instead (Tigris, S3, R2, B2), with the
    /// standard AWS_* settings (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL_S3,
    /// AWS_REGION), e.g. s3://dailyreps-backups/db.
    #[arg(long, value_name = "s3://BUCKET/PREFIX", conflicts_with_all = ["output", "force"])]
    pub to: Option<crate::remote::BucketUrl>,

    /// age public keys (age1…, comma-separated) to encrypt an upload to; the machine taking
    /// backups needs no private key.
    #[arg(long, env = "BACKUP_AGE_RECIPIENTS", value_name = "RECIPIENTS", requires = "to")]
    pub encrypt_to: Option<String>,

    /// Upload without encryption (refused otherwise).
    #[arg(long, requires = "to", conflicts_with = "encrypt_to")]
    pub no_encryption: bool,

    /// Do not read the uploaded object back to check its SHA-256 (its size is still checked).
    #[arg(long, requires = "to")]
    pub no_reread: bool,

    /// What to keep in the bucket after an upload.
    #[command(flatten)]
    pub retention: RetentionArgs,

    /// A dead-man's switch to ping (healthchecks.io's convention): URL/start before, URL on
    /// success, URL/fail with the error on failure. A failing ping never fails the backup.
    #[arg(long, env = "BACKUP_PING_URL", value_name = "URL", hide_env_values = true)]
    pub ping: Option<String>,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Settings of `restore-db`.
#[derive(Debug, Args)]
pub struct RestoreDbArgs {
    /// Where the database is.
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// The dump: a file, or s3://BUCKET/PREFIX/latest or s3://BUCKET/PREFIX/<backup's name>.
    pub source: crate::remote::DumpSource,

    /// The age identity file that decrypts an encrypted backup (as age-keygen writes it).
    #[arg(long, env = "BACKUP_AGE_IDENTITY_FILE", value_name = "FILE")]
    pub identity: Option<PathBuf>,

    /// Create the database DATABASE_URL names when the server lacks it (on a new cluster), as
    /// `pg_restore --create` does; an existing one is used as it is.
    #[arg(long)]
    pub create: bool,

    /// Replace whatever the target database holds (everything in its public schema), in the
    /// same transaction; it is named first, and on a terminal you are asked.
    #[arg(long)]
    pub force: bool,

    /// With --force off a terminal (a script, CI): replace without asking, as the answer.
    #[arg(long, requires = "force")]
    pub yes: bool,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Settings of `verify-backup`.
#[derive(Debug, Args)]
pub struct VerifyBackupArgs {
    /// The dump: a file, or s3://BUCKET/PREFIX/latest or s3://BUCKET/PREFIX/<backup's name>.
    pub source: crate::remote::DumpSource,

    /// The age identity file that decrypts an encrypted backup. Without it an encrypted
    /// backup's stored bytes are checked against its manifest, not the dump inside.
    #[arg(long, env = "BACKUP_AGE_IDENTITY_FILE", value_name = "FILE")]
    pub identity: Option<PathBuf>,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Retention in a bucket, applied after each good upload (restic's calendar: UTC days, ISO
/// weeks, months). Never the newest backup, never one younger than 24 h, and nothing at all
/// while the newest is older than 48 h (backups have stopped: keep everything).
#[derive(Debug, Clone, Copy, Args)]
pub struct RetentionArgs {
    /// Keep the newest backup of each of the last N days that have one [default: 7].
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// Keep the newest of each of the last N weeks that have one [default: 4].
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest of each of the last N months that have one [default: 6].
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// Keep the newest N, whatever their dates [default: 3].
    #[arg(long, value_name = "N")]
    pub keep_min: Option<u32>,
}

impl RetentionArgs {
    /// As a policy, with the defaults for what was not given.
    pub fn policy(&self) -> crate::remote::retention::CalendarRetention {
        crate::remote::retention::CalendarRetention {
            daily: self.keep_daily.unwrap_or(7),
            weekly: self.keep_weekly.unwrap_or(4),
            monthly: self.keep_monthly.unwrap_or(6),
            min: self.keep_min.unwrap_or(3),
        }
    }

    /// Whether any of them was given (a folder has no calendar retention, and says so).
    pub fn given(&self) -> bool {
        self.keep_daily.is_some()
            || self.keep_weekly.is_some()
            || self.keep_monthly.is_some()
            || self.keep_min.is_some()
    }
}

/// Settings of `doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Where the database is.
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// The backups' bucket, e.g. s3://dailyreps-backups/db, with the AWS_* settings of
    /// `backup-db --to`.
    #[arg(long, env = "BACKUP_BUCKET_URL", value_name = "s3://BUCKET/PREFIX")]
    pub bucket: Option<crate::remote::BucketUrl>,

    /// The age identity file a restore would use.
    #[arg(long, env = "BACKUP_AGE_IDENTITY_FILE", value_name = "FILE")]
    pub identity: Option<PathBuf>,

    /// The app signing secret(s), comma-separated.
    #[arg(long, value_name = "SECRETS", env = "APP_SIGNING_SECRET", hide_env_values = true)]
    pub signing_secret: Option<SecretString>,

    /// The oldest the newest backup may be.
    #[arg(long, value_name = "DURATION", default_value = "26h")]
    pub max_age: HumanDuration,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Settings of `list-backups`.
#[derive(Debug, Args)]
pub struct ListBackupsArgs {
    /// Where: s3://BUCKET/PREFIX.
    pub url: crate::remote::BucketUrl,

    /// The retention to show the verdicts of (what keeps each backup, or that it would go).
    #[command(flatten)]
    pub retention: RetentionArgs,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Settings of `backup-status`.
#[derive(Debug, Args)]
pub struct BackupStatusArgs {
    /// Where: s3://BUCKET/PREFIX.
    pub url: crate::remote::BucketUrl,

    /// The oldest the newest backup may be, e.g. 26h for a daily schedule.
    #[arg(long, value_name = "DURATION", default_value = "26h")]
    pub max_age: HumanDuration,

    /// Print JSON instead of a line.
    #[arg(long)]
    pub json: bool,
}

/// `inspect` and its views.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Where the database is.
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,

    /// Which view.
    #[command(subcommand)]
    pub view: InspectView,
}

/// What `inspect` shows.
#[derive(Debug, Subcommand)]
pub enum InspectView {
    /// Users with their backup count, bytes and last backup.
    Users {
        /// Order.
        #[arg(long, value_enum, default_value = "created")]
        sort: UserSort,
        /// Rows to show (1–1000).
        #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=1000))]
        limit: i64,
        /// Rows to skip.
        #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..), conflicts_with = "cursor")]
        offset: i64,
        /// `next_cursor` of the previous page.
        #[arg(long, value_name = "CURSOR")]
        cursor: Option<String>,
    },
    /// One account and its backups.
    User {
        /// The account id.
        id: uuid::Uuid,
    },
    /// Backups, newest first.
    Backups {
        /// Only this account's.
        #[arg(long, value_name = "USER_ID")]
        user: Option<uuid::Uuid>,
        /// Only those stored in this last period, e.g. 7d.
        #[arg(long, value_name = "DURATION")]
        since: Option<HumanDuration>,
        /// Rows to show (1–1000).
        #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=1000))]
        limit: i64,
        /// `next_cursor` of the previous page.
        #[arg(long, value_name = "CURSOR")]
        cursor: Option<String>,
    },
    /// Totals, database and table sizes, largest users, backups per day.
    Stats,
    /// Whether the database is healthy and when its volume will be full; exits 3 when a check
    /// warns, so a cron or CI job can alert (and pings a monitor with --ping).
    ///
    /// Size and growth (from the daily samples `serve` records), the largest tables' dead rows
    /// and last vacuum, long or idle-in-transaction sessions (never their query text),
    /// connections against max_connections, replication slots and the WAL they retain, the WAL
    /// directory (where the role may see it), the server's major version against the oldest
    /// still supported, the space in reserve, the newest database backup (older than 26 h
    /// warns) and WAL archiving (failing warns). Two database round trips at most.
    Health {
        /// The volume PostgreSQL's data lives on, e.g. 1GB (Fly's sizes are GB: 10^9 bytes).
        #[arg(long, value_name = "SIZE", env = "DATABASE_VOLUME_SIZE")]
        volume_size: Option<ByteSize>,
        /// A transaction open, or a statement running, longer than this warns.
        #[arg(long, value_name = "DURATION", default_value = "5m")]
        long_transaction: HumanDuration,
        /// A monitor to ping (healthchecks.io's convention): URL when every check is ok,
        /// URL/fail with the warnings (or the error) otherwise. Scheduled beside the backup, it
        /// is the database's alarm. A failing ping never changes the exit code.
        #[arg(long, env = "HEALTH_PING_URL", value_name = "URL", hide_env_values = true)]
        ping: Option<String>,
    },
}

/// Orders of `inspect users`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UserSort {
    /// Newest accounts first.
    Created,
    /// Most recent backup first.
    LastBackup,
    /// Most bytes first.
    Size,
    /// Most backups first.
    Count,
}

/// Settings of `prune`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("policy").required(true).multiple(true)
    .args(["older_than", "keep_last", "inactive_users", "user"])))]
pub struct PruneArgs {
    /// Where the database is.
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Backups older than this, e.g. 90d.
    #[arg(long, value_name = "DURATION")]
    pub older_than: Option<HumanDuration>,

    /// Keep each user's newest N backups.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(0..))]
    pub keep_last: Option<i64>,

    /// Accounts with no backup in this long (and older than it), deleted with their data, e.g. 365d.
    #[arg(long, value_name = "DURATION")]
    pub inactive_users: Option<HumanDuration>,

    /// Only this account.
    #[arg(long, value_name = "USER_ID")]
    pub user: Option<uuid::Uuid>,

    /// Show what would be deleted, and stop.
    #[arg(long)]
    pub dry_run: bool,

    /// Do not ask (required when not on a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,

    /// Rows per batch (each batch is its own short statement).
    #[arg(long, value_name = "N", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch_size: u32,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Settings of `scrub`.
#[derive(Debug, Args)]
pub struct ScrubArgs {
    /// Where the database is.
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Settings of `reserve`.
#[derive(Debug, Args)]
pub struct ReserveArgs {
    /// Where the database is.
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// How much to keep in reserve, e.g. 64MiB (about 6% of a 1 GB volume).
    #[arg(long, value_name = "SIZE", default_value = "64MiB")]
    pub size: ByteSize,

    /// Give the reserve back to the volume (when it is full).
    #[arg(long, conflicts_with = "size")]
    pub release: bool,

    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Settings of `smoke-test`.
#[derive(Debug, Args)]
pub struct SmokeTestArgs {
    /// The deployment, e.g. https://dailyreps-backup-server.fly.dev (or DAILYREPS_URL, as
    /// `request` reads it).
    #[arg(long, value_name = "URL", env = "SMOKE_TEST_URL")]
    pub url: Option<String>,

    /// `--url` from the variable `request` reads too.
    #[arg(long = "dailyreps-url", value_name = "URL", env = "DAILYREPS_URL", hide = true)]
    pub dailyreps_url: Option<String>,

    /// The app signing secret (the first, if several).
    #[arg(long, value_name = "SECRETS", env = "APP_SIGNING_SECRET", hide_env_values = true)]
    pub signing_secret: Option<SecretString>,

    /// How long to wait for the deployment to answer /healthz (machines that start on demand).
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    pub wait: HumanDuration,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Settings of `request`.
#[derive(Debug, Args)]
pub struct RequestArgs {
    /// HTTP method: GET, POST, DELETE, ...
    pub method: String,

    /// Path and query, e.g. /api/backups?limit=5.
    pub path: String,

    /// Body: text, `@FILE`, or `@-` for stdin. Sent as application/json unless -H says otherwise.
    #[arg(long, value_name = "BODY", short = 'd')]
    pub data: Option<String>,

    /// Gzip the body (sent with Content-Encoding: gzip).
    #[arg(long)]
    pub gzip: bool,

    /// Extra header, `Name: value`; repeatable.
    #[arg(long = "header", value_name = "HEADER", short = 'H')]
    pub headers: Vec<String>,

    /// Print the status line and headers to stderr.
    #[arg(long, short = 'i')]
    pub include: bool,

    /// The server.
    #[arg(long, value_name = "URL", env = "DAILYREPS_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,

    /// Bearer token of the account (from POST /api/users).
    #[arg(long, value_name = "TOKEN", env = "DAILYREPS_TOKEN", hide_env_values = true)]
    pub token: Option<SecretString>,

    /// The app signing secret to sign with (the first, if several).
    #[arg(long, value_name = "SECRETS", env = "APP_SIGNING_SECRET", hide_env_values = true)]
    pub signing_secret: Option<SecretString>,

    /// How long to wait for the answer, e.g. 60s.
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    pub timeout: HumanDuration,
}

/// Where the database is.
#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL connection URL, e.g. postgres://user:password@host:5432/db.
    #[arg(long, value_name = "URL", env = "DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<SecretString>,
}

/// Settings of `serve`. Also a parser of its own, so tests start from its defaults.
#[derive(Debug, Parser)]
#[command(name = "serve")]
pub struct ServeArgs {
    /// Where the database is.
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Address to listen on for the API: `HOST:PORT`, or just a port (all interfaces).
    #[arg(help_heading = "Listening", long, value_name = "ADDR", env = "PORT", default_value = "0.0.0.0:8080")]
    pub bind: BindAddr,

    /// Address of the Prometheus metrics listener (`[::]` so Fly's private IPv6 network reaches it).
    #[arg(help_heading = "Listening", long, value_name = "ADDR", env = "METRICS_BIND", default_value = "[::]:9091")]
    pub metrics_bind: SocketAddr,

    /// Secrets the app signs requests with, comma-separated (any one is accepted, for rotation).
    /// Each must be at least 32 bytes.
    #[arg(help_heading = "Requests", long, value_name = "SECRETS", env = "APP_SIGNING_SECRET", hide_env_values = true)]
    pub signing_secret: Option<SecretString>,

    /// Origins allowed to call the API from a browser, comma-separated exact origins
    /// (e.g. https://dailyreps.app). Empty: no cross-origin access.
    #[arg(help_heading = "Requests", long, value_name = "ORIGINS", env = "ALLOWED_ORIGINS", default_value = "")]
    pub allowed_origins: String,

    /// Largest backup document accepted, in bytes, after gzip decoding (at most 16 MiB, the
    /// largest a database dump reads back).
    #[arg(help_heading = "Limits", long, value_name = "BYTES", env = "MAX_BACKUP_BYTES", default_value_t = 10 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(2..=crate::dump::MAX_DOCUMENT_BYTES as u64))]
    pub max_backup_bytes: u64,

    /// Backups kept per user; older ones are deleted when a new one arrives.
    #[arg(help_heading = "Limits", long, value_name = "N", env = "MAX_BACKUPS_KEPT", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_backups_kept: u32,

    /// Memory that request bodies and documents in flight may hold together, in MiB; beyond
    /// it requests are answered 503 with Retry-After. Must hold one upload of the largest size
    /// in every encoding: a gzip body, the decoded document and the database driver's two copies
    /// (a little over four times MAX_BACKUP_BYTES).
    #[arg(help_heading = "Limits", long, value_name = "MIB", env = "MEMORY_BUDGET_MB", default_value_t = 96, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub memory_budget_mb: u64,

    /// Account registrations per minute from one client IP (0: no limit).
    #[arg(
        help_heading = "Limits",
        long,
        value_name = "N",
        env = "RATE_LIMIT_REGISTER_PER_MINUTE",
        default_value_t = 10
    )]
    pub rate_limit_register_per_minute: u32,

    /// API requests per minute from one user (0: no limit).
    #[arg(help_heading = "Limits", long, value_name = "N", env = "RATE_LIMIT_USER_PER_MINUTE", default_value_t = 120)]
    pub rate_limit_user_per_minute: u32,

    /// API requests per minute from one client IP (0: no limit).
    #[arg(help_heading = "Limits", long, value_name = "N", env = "RATE_LIMIT_IP_PER_MINUTE", default_value_t = 600)]
    pub rate_limit_ip_per_minute: u32,

    /// How long a client may take to send a request body, e.g. 60s (then 408; a slow client
    /// cannot hold the memory budget). The variable takes seconds.
    #[arg(
        help_heading = "Timeouts",
        long,
        value_name = "DURATION",
        env = "BODY_TIMEOUT_SECONDS",
        default_value = "60s"
    )]
    pub body_timeout: EnvDuration,

    /// How long the server may take over a request once its body is in, e.g. 30s (then 503
    /// with Retry-After). The variable takes seconds.
    #[arg(
        help_heading = "Timeouts",
        long,
        value_name = "DURATION",
        env = "REQUEST_TIMEOUT_SECONDS",
        default_value = "30s"
    )]
    pub request_timeout: EnvDuration,

    /// How long a client may take to send a request's headers, and may stay idle between
    /// requests on a kept-alive connection, e.g. 15s (then the connection is closed). The
    /// variable takes seconds.
    #[arg(
        help_heading = "Timeouts",
        long,
        value_name = "DURATION",
        env = "HEADER_TIMEOUT_SECONDS",
        default_value = "15s"
    )]
    pub header_timeout: EnvDuration,

    /// Most client connections open at once; beyond it new ones wait to be accepted.
    #[arg(help_heading = "Listening", long, value_name = "N", env = "MAX_CONNECTIONS", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub max_connections: u32,

    /// Most database connections the server holds open.
    #[arg(help_heading = "Database", long, value_name = "N", env = "DATABASE_POOL_SIZE", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub pool_size: u32,

    /// How long in-flight requests may take after SIGINT or SIGTERM before the process exits
    /// anyway, e.g. 25s (below fly.toml's kill_timeout). The variable takes seconds.
    #[arg(
        help_heading = "Timeouts",
        long,
        value_name = "DURATION",
        env = "SHUTDOWN_GRACE_SECONDS",
        default_value = "25s"
    )]
    pub shutdown_grace: EnvDuration,

    /// Development mode: without DATABASE_URL, start a private local PostgreSQL; apply
    /// migrations; generate a signing secret when none is set; listen on 127.0.0.1 where the
    /// address is 0.0.0.0 or [::] (the defaults), and on a free metrics port when 9091 is taken.
    #[arg(help_heading = "Development", long)]
    pub dev: bool,

    /// Folder for `--dev`'s PostgreSQL cluster, its password and the signing secret, kept between runs.
    #[arg(
        help_heading = "Development",
        long,
        value_name = "DIR",
        env = "DEV_DATA_DIR",
        default_value = ".dailyreps",
        requires = "dev"
    )]
    pub dev_data_dir: PathBuf,

    /// Delete what `--dev` keeps for --dev-data-dir (the cluster, wherever it lives, /var/tmp
    /// included; its password; the signing secret) and exit, instead of serving. It is named
    /// first; on a terminal you are asked.
    #[arg(help_heading = "Development", long, requires = "dev")]
    pub remove_dev_data: bool,

    /// With --remove-dev-data off a terminal (a script): delete without asking.
    #[arg(help_heading = "Development", long, requires = "remove_dev_data")]
    pub yes: bool,
}

/// `migrate` and its subcommands.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Where the database is.
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// What to do instead of applying.
    #[command(subcommand)]
    pub action: Option<MigrateAction>,
}

/// What `migrate` does; without one it applies pending migrations.
#[derive(Debug, Subcommand)]
pub enum MigrateAction {
    /// List applied and pending migrations.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Exit 3 when migrations are pending (for a script that must not start a binary the
        /// database is behind).
        #[arg(long)]
        check: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command's path under the binary, and the command.
    fn commands(command: &clap::Command, path: &str, all: &mut Vec<String>) {
        all.push(path.to_owned());
        for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set() && sub.get_name() != "help") {
            let path = if path.is_empty() { sub.get_name().to_owned() } else { format!("{path} {}", sub.get_name()) };
            commands(sub, &path, all);
        }
    }

    #[test]
    fn every_command_has_two_to_four_examples_that_parse() {
        let mut all = Vec::new();
        commands(&Cli::definition(), "", &mut all);
        assert!(all.contains(&"inspect health".to_owned()) && all.len() > 20, "{all:?}");
        for path in all {
            let examples = examples(&path);
            assert!((2..=4).contains(&examples.len()), "`{path}` has {} examples", examples.len());
            for (_, line) in examples {
                // The command line, before any pipe or redirection.
                let line = line.split(" | ").next().unwrap().split(" > ").next().unwrap();
                let words = std::iter::once("dailyreps-backup-server").chain(line.split_whitespace());
                let parsed = Cli::definition().try_get_matches_from(words).map(drop);
                let help = parsed.as_ref().is_err_and(|e| e.kind() == clap::error::ErrorKind::DisplayHelp);
                assert!(parsed.is_ok() || help, "`{line}` does not parse: {}", parsed.unwrap_err());
                if !path.is_empty() && !line.starts_with("help") {
                    assert!(line.starts_with(&path), "`{line}` is an example of `{path}`");
                }
            }
        }
    }
}
