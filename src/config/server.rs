//! The API's settings, built from `serve`'s arguments and validated: what the binary runs
//! with, and what the tests start from (`ServeArgs::try_parse_from(["serve"])`), so defaults
//! live once, in the CLI's definition.

use std::time::Duration;

use super::{AllowedOrigins, ConfigError, Limits, SigningSecrets};
use crate::cli::ServeArgs;
use crate::units::EnvDuration;

/// The API's settings, validated.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// The secrets app requests are signed with.
    pub signing_secrets: SigningSecrets,
    /// Sizes, retention, budget and rates.
    pub limits: Limits,
    /// Origins allowed cross-origin access.
    pub allowed_origins: AllowedOrigins,
    /// Header timeout and connection cap of the API listener.
    pub connections: ConnectionLimits,
}

/// The transport limits of the API listener.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// How long a client may take to send a request's headers, or stay idle between requests.
    pub header_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
}

impl TryFrom<&ServeArgs> for ApiSettings {
    type Error = ConfigError;

    fn try_from(args: &ServeArgs) -> Result<Self, ConfigError> {
        let bytes = |value: u64| usize::try_from(value).unwrap_or(usize::MAX);
        let limits = Limits {
            max_backup_bytes: bytes(args.max_backup_bytes),
            max_backups_kept: args.max_backups_kept,
            memory_budget_bytes: bytes(args.memory_budget_mb.saturating_mul(1024 * 1024)),
            register_per_minute: args.rate_limit_register_per_minute,
            user_per_minute: args.rate_limit_user_per_minute,
            ip_per_minute: args.rate_limit_ip_per_minute,
            body_timeout: timeout("body-timeout", "BODY_TIMEOUT_SECONDS", args.body_timeout)?,
            request_timeout: timeout("request-timeout", "REQUEST_TIMEOUT_SECONDS", args.request_timeout)?,
        };
        Ok(Self {
            signing_secrets: SigningSecrets::from_setting(args.signing_secret.as_ref())?,
            limits: limits.validate()?,
            allowed_origins: AllowedOrigins::parse(&args.allowed_origins)?,
            connections: ConnectionLimits {
                header_timeout: timeout("header-timeout", "HEADER_TIMEOUT_SECONDS", args.header_timeout)?,
                max_connections: args.max_connections as usize,
            },
        })
    }
}

/// A timeout setting, which must not be zero (it would refuse every request).
fn timeout(flag: &'static str, variable: &'static str, given: EnvDuration) -> Result<Duration, ConfigError> {
    if given.duration.is_zero() {
        return Err(ConfigError::ZeroTimeout { flag, variable });
    }
    Ok(given.duration)
}
