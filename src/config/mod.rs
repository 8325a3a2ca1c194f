//! Validated settings: the API's (built from `serve`'s arguments), the database URL and the
//! signing secrets, from the values the CLI parses (`crate::units`).
//!
//! Values that hold secrets redact themselves in `Debug` and `Display`. clap receives them as
//! [`SecretString`] (clap's own parse errors would echo the value) and they are validated
//! here, with errors that name the setting but never repeat its value.

mod server;

use std::fmt;
use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;

pub use self::server::{ApiSettings, ConnectionLimits};
pub use crate::units::{ByteSize, HumanDuration, SecretString};

const MIB: usize = 1024 * 1024;

/// The shortest signing secret the server accepts, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// A setting that is missing or malformed. Each message names the setting and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No database URL anywhere.
    #[error(
        "DATABASE_URL is not set: pass --database-url or set DATABASE_URL \
         (for local development, `serve --dev` starts a private PostgreSQL)"
    )]
    MissingDatabaseUrl,
    /// The database URL does not parse.
    #[error("DATABASE_URL is invalid: {0}")]
    InvalidDatabaseUrl(String),
    /// No signing secret.
    #[error(
        "APP_SIGNING_SECRET is not set: pass --signing-secret or set APP_SIGNING_SECRET to a \
         secret of at least {MIN_SECRET_BYTES} bytes (e.g. `openssl rand -base64 48`)"
    )]
    MissingSigningSecret,
    /// A signing secret is too short.
    #[error("APP_SIGNING_SECRET is invalid: {0}")]
    InvalidSigningSecret(String),
    /// An allowed origin is not an origin.
    #[error("ALLOWED_ORIGINS is invalid: {0}")]
    InvalidAllowedOrigins(String),
    /// A timeout of zero would refuse every request.
    #[error("--{flag} ({variable}) must be longer than 0s")]
    ZeroTimeout {
        /// The flag, e.g. `body-timeout`.
        flag: &'static str,
        /// Its environment variable, e.g. `BODY_TIMEOUT_SECONDS`.
        variable: &'static str,
    },
    /// The memory budget cannot hold the largest request.
    #[error(
        "MEMORY_BUDGET_MB ({budget_mb} MiB) cannot hold one upload of MAX_BACKUP_BYTES ({max_backup_bytes} \
         bytes) in every encoding (a gzip body, the document decoded and the database driver's two copies): \
         it needs at least {minimum_mb} MiB; raise MEMORY_BUDGET_MB or lower MAX_BACKUP_BYTES"
    )]
    BudgetTooSmall {
        /// The budget asked for.
        budget_mb: u64,
        /// The largest document.
        max_backup_bytes: u64,
        /// The smallest budget that holds one such upload.
        minimum_mb: u64,
    },
}

/// Origins allowed to call the API cross-origin: exact `scheme://host[:port]` strings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedOrigins(Vec<String>);

impl AllowedOrigins {
    /// Parses `ALLOWED_ORIGINS`: comma-separated; empty means none.
    pub fn parse(raw: &str) -> Result<Self, ConfigError> {
        let origins: Vec<String> = raw.split(',').map(str::trim).filter(|o| !o.is_empty()).map(str::to_owned).collect();
        for origin in &origins {
            let rest = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
            let host_ok = rest.is_some_and(|host| !host.is_empty() && !host.contains(['/', '?', '#', ' ', '*']));
            if !host_ok {
                return Err(ConfigError::InvalidAllowedOrigins(format!(
                    "`{origin}` is not an origin like https://app.example.com (scheme and host, no path)"
                )));
            }
        }
        Ok(Self(origins))
    }

    /// Each allowed origin, as given.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

/// The API's limits, validated together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest decoded document.
    pub max_backup_bytes: usize,
    /// Backups kept per user.
    pub max_backups_kept: u32,
    /// Bytes that bodies and documents in flight may hold together.
    pub memory_budget_bytes: usize,
    /// Registrations per minute per client IP; 0 is unlimited.
    pub register_per_minute: u32,
    /// Requests per minute per user; 0 is unlimited.
    pub user_per_minute: u32,
    /// Requests per minute per client IP; 0 is unlimited.
    pub ip_per_minute: u32,
    /// How long a client may take to send a body.
    pub body_timeout: std::time::Duration,
    /// How long the server may take over a request once its body is in.
    pub request_timeout: std::time::Duration,
}

impl Limits {
    /// Checks that the budget holds one upload of the largest document in every encoding
    /// (else such uploads would be refused with 503 forever, and clients retry forever).
    pub fn validate(self) -> Result<Self, ConfigError> {
        let needed = crate::memory::max_upload_holding(self.max_backup_bytes);
        if self.memory_budget_bytes < needed {
            return Err(ConfigError::BudgetTooSmall {
                budget_mb: (self.memory_budget_bytes / MIB) as u64,
                max_backup_bytes: self.max_backup_bytes as u64,
                minimum_mb: needed.div_ceil(MIB) as u64,
            });
        }
        Ok(self)
    }
}

/// A PostgreSQL URL that never shows its password.
#[derive(Clone)]
pub struct DatabaseUrl {
    options: PgConnectOptions,
}

impl DatabaseUrl {
    /// Connection options for sqlx.
    pub fn connect_options(&self) -> PgConnectOptions {
        self.options.clone()
    }

    /// `host:port`, for messages that must say what was tried.
    pub fn endpoint(&self) -> String {
        format!("{}:{}", self.options.get_host(), self.options.get_port())
    }

    /// The database's name (never empty: [`Self::parse`] refuses a URL without one).
    pub fn database(&self) -> &str {
        self.options.get_database().unwrap_or_default()
    }

    /// The same server's `postgres` database, where a database is created.
    pub fn maintenance(&self) -> Self {
        Self { options: self.options.clone().database("postgres") }
    }

    /// Whether the host is this machine (where a `fly proxy` would listen).
    pub fn is_local(&self) -> bool {
        let host = self.options.get_host();
        host == "localhost"
            || host.starts_with('/')
            || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

impl DatabaseUrl {
    /// Validates `DATABASE_URL`; `None` means it was not given.
    pub fn from_setting(raw: Option<&SecretString>) -> Result<Self, ConfigError> {
        let raw = raw.ok_or(ConfigError::MissingDatabaseUrl)?.expose();
        Self::parse(raw).map_err(ConfigError::InvalidDatabaseUrl)
    }

    /// Parses a URL; the error never contains the URL itself.
    pub fn parse(url: &str) -> Result<Self, String> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err("it must start with postgres:// (e.g. postgres://user:password@host:5432/db)".into());
        }
        // sqlx's parse errors describe the fault without echoing the URL, so they are safe to show.
        let options = PgConnectOptions::from_str(url).map_err(|e| format!("not a PostgreSQL URL ({e})"))?;
        // Without one PostgreSQL takes the user's name for it: a database nobody meant.
        if options.get_database().is_none_or(str::is_empty) {
            return Err("it names no database: add its name after the host, \
                        e.g. postgres://user:password@host:5432/dailyreps_backup_server"
                .into());
        }
        Ok(Self { options })
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let database = self.options.get_database().unwrap_or("");
        write!(f, "postgres://{}@{}/{database}", self.options.get_username(), self.endpoint())
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

/// The app-signing secrets: several, comma-separated, so one can be rotated without downtime.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecrets(Vec<Vec<u8>>);

impl SigningSecrets {
    /// The secrets, each as raw bytes.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.0.iter().map(Vec::as_slice)
    }

    /// The secret to sign with: the first (the newest, by convention, during a rotation).
    pub fn signing(&self) -> &[u8] {
        &self.0[0]
    }
}

impl SigningSecrets {
    /// Validates `APP_SIGNING_SECRET`; `None` means it was not given.
    pub fn from_setting(raw: Option<&SecretString>) -> Result<Self, ConfigError> {
        let raw = raw.ok_or(ConfigError::MissingSigningSecret)?.expose();
        Self::parse(raw).map_err(ConfigError::InvalidSigningSecret)
    }

    /// Parses comma-separated secrets; the error never contains a secret.
    pub fn parse(s: &str) -> Result<Self, String> {
        let secrets: Vec<Vec<u8>> =
            s.split(',').map(str::trim).filter(|part| !part.is_empty()).map(|part| part.as_bytes().to_vec()).collect();
        if secrets.is_empty() {
            return Err("no secret given; generate one with `openssl rand -base64 48`".into());
        }
        if let Some(position) = secrets.iter().position(|secret| secret.len() < MIN_SECRET_BYTES) {
            return Err(format!(
                "secret #{} is {} bytes; each must be at least {MIN_SECRET_BYTES} (generate one with `openssl rand -base64 48`)",
                position + 1,
                secrets[position].len()
            ));
        }
        Ok(Self(secrets))
    }
}

impl fmt::Debug for SigningSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningSecrets([{} redacted])", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_never_shows_its_password() {
        let url: DatabaseUrl = DatabaseUrl::parse("postgres://app:hunter2hunter2@db.internal:5433/dailyreps").unwrap();
        assert_eq!(url.to_string(), "postgres://app@db.internal:5433/dailyreps");
        assert!(!format!("{url:?}").contains("hunter2"));
        assert_eq!(url.endpoint(), "db.internal:5433");
        assert!(!url.is_local());
        assert!(DatabaseUrl::parse("postgres://a:b@127.0.0.1:15432/x").unwrap().is_local());
    }

    #[test]
    fn database_url_rejects_other_schemes_and_bad_ports() {
        assert!(DatabaseUrl::parse("mysql://x@y/z").unwrap_err().contains("postgres://"));
        let err = DatabaseUrl::parse("postgres://u:secretpw@host:notaport/db").unwrap_err();
        assert!(err.contains("not a PostgreSQL URL"), "{err}");
        assert!(!err.contains("secretpw"), "{err}");
    }

    #[test]
    fn a_database_url_without_a_database_says_so() {
        for url in ["postgres://u:secretpw@host:5432", "postgres://u:secretpw@host:5432/"] {
            let err = DatabaseUrl::parse(url).unwrap_err();
            assert!(err.contains("names no database"), "{url}: {err}");
            assert!(!err.contains("secretpw"), "{err}");
        }
    }

    #[test]
    fn allowed_origins_are_exact_origins() {
        let origins = AllowedOrigins::parse(" https://a.example.com, http://localhost:3000 ,").unwrap();
        assert_eq!(origins.iter().collect::<Vec<_>>(), ["https://a.example.com", "http://localhost:3000"]);
        assert_eq!(AllowedOrigins::parse("").unwrap().iter().count(), 0);
        for bad in ["a.example.com", "https://a.example.com/", "*", "https://*.example.com", "ftp://x"] {
            let err = AllowedOrigins::parse(bad).unwrap_err().to_string();
            assert!(err.starts_with("ALLOWED_ORIGINS is invalid"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_budget_must_hold_a_gzip_upload_of_the_largest_document() {
        let limits = Limits {
            max_backup_bytes: 10 << 20,
            max_backups_kept: 30,
            memory_budget_bytes: 29 << 20,
            register_per_minute: 0,
            user_per_minute: 0,
            ip_per_minute: 0,
            body_timeout: std::time::Duration::from_secs(60),
            request_timeout: std::time::Duration::from_secs(30),
        };
        let err = limits.validate().unwrap_err().to_string();
        assert!(err.contains("MEMORY_BUDGET_MB (29 MiB)") && err.contains("at least 41 MiB"), "{err}");
        let thirty = Limits { memory_budget_bytes: 30 << 20, ..limits }.validate().unwrap_err().to_string();
        assert!(thirty.contains("at least 41 MiB"), "three copies are not enough for a gzip upload: {thirty}");
        assert!(Limits { memory_budget_bytes: (40 << 20) + (64 << 10), ..limits }.validate().is_ok());
    }

    #[test]
    fn signing_secrets_need_32_bytes_each_and_stay_hidden() {
        let long = "a".repeat(32);
        let two = SigningSecrets::parse(&format!("{long}, {}", "b".repeat(40))).unwrap();
        assert_eq!(two.iter().count(), 2);
        assert!(!format!("{two:?}").contains("aaaa"));
        let err = SigningSecrets::parse(&format!("{long},short")).unwrap_err();
        assert!(err.contains("secret #2 is 5 bytes"), "{err}");
        assert!(SigningSecrets::parse(" , ").is_err());
    }
}
