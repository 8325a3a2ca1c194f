//! Typed settings parsed at the edge: addresses, the database URL and the signing secrets.
//!
//! Values that hold secrets redact themselves in `Debug` and `Display`. clap receives them as
//! [`SecretString`] (clap's own parse errors would echo the value) and they are validated
//! here, with errors that name the setting but never repeat its value.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;

const MIB: usize = 1024 * 1024;

/// The shortest signing secret the server accepts, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// An address to listen on: `HOST:PORT` (a name such as `localhost` is resolved, its first
/// address taken), or a bare port meaning every IPv4 interface (so Fly's conventional
/// `PORT=8080` works as is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindAddr(pub SocketAddr);

impl FromStr for BindAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(port) = s.parse::<u16>() {
            return Ok(Self(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))));
        }
        let bad = || format!("`{s}` is neither a port nor HOST:PORT (e.g. 8080, 0.0.0.0:8080 or localhost:8080)");
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(Self(addr));
        }
        // A name needs a port, or `to_socket_addrs` would fail anyway.
        if !s.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok()) {
            return Err(bad());
        }
        let resolved = std::net::ToSocketAddrs::to_socket_addrs(s).map_err(|e| format!("{}: {e}", bad()))?;
        // IPv4 first where a name has both, as `localhost` usually does: what people expect
        // `curl http://localhost:8080` to reach.
        let mut addrs: Vec<SocketAddr> = resolved.collect();
        addrs.sort_by_key(|addr| !addr.is_ipv4());
        addrs.first().copied().map(Self).ok_or_else(bad)
    }
}

/// A duration as people write it, always with its unit: `500ms`, `60s`, `5m`, `2h`, `90d`.
/// A bare number is refused (`--inactive-users 365` meaning seconds would select everyone),
/// and so is anything over a century, so that no date arithmetic can overflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub std::time::Duration);

/// The longest duration accepted: 100 years.
const MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(36_500 * 86_400);

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let bad = || format!("`{s}` is not a duration like 500ms, 60s, 5m, 2h or 90d");
        let number: u64 = number.parse().map_err(|_| bad())?;
        let seconds = |factor: u64| number.checked_mul(factor).map(std::time::Duration::from_secs);
        let duration = match unit {
            "" => return Err(format!("`{s}` has no unit: write {s}d (days), {s}h, {s}m, {s}s or {s}ms")),
            "ms" => Some(std::time::Duration::from_millis(number)),
            "s" => seconds(1),
            "m" => seconds(60),
            "h" => seconds(3600),
            "d" => seconds(86_400),
            _ => return Err(bad()),
        };
        match duration {
            Some(duration) if duration <= MAX_DURATION => Ok(Self(duration)),
            _ => Err(format!("`{s}` is longer than 100 years (36500d)")),
        }
    }
}

impl HumanDuration {
    /// The moment this long before `now`; `None` if that is not a representable time.
    pub fn before(self, now: time::OffsetDateTime) -> Option<time::OffsetDateTime> {
        now.checked_sub(time::Duration::try_from(self.0).ok()?)
    }
}

impl fmt::Display for HumanDuration {
    /// In the largest unit that divides it: `90 days`, `12 hours`, `500 ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0.as_millis();
        let plural = |n: u128, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
        let text = match millis {
            m if m % 86_400_000 == 0 => plural(m / 86_400_000, "day"),
            m if m % 3_600_000 == 0 => plural(m / 3_600_000, "hour"),
            m if m % 60_000 == 0 => plural(m / 60_000, "minute"),
            m if m % 1000 == 0 => plural(m / 1000, "second"),
            m => format!("{m} ms"),
        };
        f.write_str(&text)
    }
}

/// A size as people write it, always with its unit: `1GB`, `500MB`, `3GiB` (GB and MB are
/// powers of ten, as Fly sizes volumes; GiB and MiB powers of two). A bare number is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
        let (number, unit) = (&s[..split], s[split..].trim());
        let bad = || format!("`{s}` is not a size like 1GB, 500MB or 3GiB");
        let number: f64 = number.parse().map_err(|_| bad())?;
        let factor: u64 = match unit.to_ascii_lowercase().as_str() {
            "" => return Err(format!("`{s}` has no unit: write {s}GB, {s}MB or {s}GiB")),
            "b" => 1,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            "tib" => 1 << 40,
            _ => return Err(bad()),
        };
        let bytes = number * factor as f64;
        // At most a petabyte: no volume is larger, and the arithmetic stays exact.
        if !(bytes.is_finite() && (1.0..=1e15).contains(&bytes)) {
            return Err(format!("`{s}` is not a size between 1 B and 1,000 TB"));
        }
        Ok(Self(bytes.round() as u64))
    }
}

/// A setting that may hold a secret, as typed: never shown.
#[derive(Clone)]
pub struct SecretString(String);

impl SecretString {
    /// The value itself, for parsing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for SecretString {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(redacted)")
    }
}

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
    #[error("--{flag} must be longer than 0s")]
    ZeroTimeout {
        /// The flag, e.g. `body-timeout`.
        flag: &'static str,
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

    /// Whether no origin is allowed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
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
    fn bind_addr_takes_a_bare_port_or_an_address() {
        assert_eq!("8080".parse::<BindAddr>().unwrap().0, "0.0.0.0:8080".parse().unwrap());
        assert_eq!("127.0.0.1:9".parse::<BindAddr>().unwrap().0, "127.0.0.1:9".parse().unwrap());
        assert!("localhost".parse::<BindAddr>().unwrap_err().contains("neither a port"));
        let local = "localhost:8080".parse::<BindAddr>().unwrap().0;
        assert!(local.ip().is_loopback() && local.port() == 8080, "{local}");
    }

    #[test]
    fn sizes_need_a_unit_and_read_gb_as_fly_does() {
        let parse = |s: &str| s.parse::<ByteSize>().map(|b| b.0);
        assert_eq!(parse("1GB"), Ok(1_000_000_000));
        assert_eq!(parse("1 gb"), Ok(1_000_000_000));
        assert_eq!(parse("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse("500MB"), Ok(500_000_000));
        assert!(parse("1").unwrap_err().contains("has no unit: write 1GB"));
        for bad in ["", "GB", "1.2.3GB", "1XB", "-1GB", "0GB", "2000TB"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_read_as_people_write_them() {
        let parse = |s: &str| s.parse::<HumanDuration>().map(|d| d.0);
        assert_eq!(parse("500ms"), Ok(std::time::Duration::from_millis(500)));
        assert_eq!(parse("60s"), Ok(std::time::Duration::from_secs(60)));
        assert_eq!(parse("5m"), Ok(std::time::Duration::from_secs(300)));
        assert_eq!(parse("2h"), Ok(std::time::Duration::from_secs(7200)));
        assert_eq!(parse("90d"), Ok(std::time::Duration::from_secs(90 * 86_400)));
        for bad in ["", "s", "1.5s", "10 years", "-1s", "99999999999999999999d", "36501d"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse("365").unwrap_err().contains("has no unit: write 365d"), "a bare number is refused");
        assert!(parse("99999999d").unwrap_err().contains("longer than 100 years"));
        let century: HumanDuration = "36500d".parse().unwrap();
        assert!(century.before(time::OffsetDateTime::now_utc()).is_some());
        assert!(century.before(time::PrimitiveDateTime::MIN.assume_utc()).is_none(), "checked, not wrapped");
        assert_eq!("90d".parse::<HumanDuration>().unwrap().to_string(), "90 days");
        assert_eq!("1h".parse::<HumanDuration>().unwrap().to_string(), "1 hour");
        assert_eq!("1500ms".parse::<HumanDuration>().unwrap().to_string(), "1500 ms");
    }

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
        assert!(AllowedOrigins::parse("").unwrap().is_empty());
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
