//! How a command ended: its exit status and, with `--json`, its error's code. The same table for
//! every command (SPEC.md's CLI section), so a script can branch on it.
//!
//! A verdict (a check that warns, a smoke test with a failed step) is a value a command returns
//! after printing its report; an error is what stopped it, and `main` prints it once, on stderr
//! and, with `--json`, as `{"ok": false, "error": {"code", "message"}}` on stdout.

use serde::Serialize;

use crate::config::ConfigError;
use crate::db::{self, ConnectError};
use crate::remote::RemoteError;

/// The ways a command ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// 0: it did what was asked.
    Success,
    /// 1: it could not do what was asked.
    Failure,
    /// 2: the command line is wrong, or a required setting is missing.
    Usage,
    /// 3: it ran, and a check it makes warns.
    Warned,
    /// 4: the database or the bucket did not answer.
    Unreachable,
    /// 5: the operator said no at a prompt; nothing changed.
    Declined,
    /// 130: Ctrl-C; the message says what was left as it was.
    Interrupted,
}

impl ExitStatus {
    /// The process's exit code.
    pub fn code(self) -> u8 {
        match self {
            Self::Success => 0,
            Self::Failure => 1,
            Self::Usage => 2,
            Self::Warned => 3,
            Self::Unreachable => 4,
            Self::Declined => 5,
            Self::Interrupted => 130,
        }
    }

    /// Its name in `--json`'s `error.code`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Success => "ok",
            Self::Failure => "failed",
            Self::Usage => "usage",
            Self::Warned => "warned",
            Self::Unreachable => "unreachable",
            Self::Declined => "declined",
            Self::Interrupted => "interrupted",
        }
    }

    /// How a command that stopped with `error` ends: the first cause that says, else a failure.
    pub fn of(error: &anyhow::Error) -> Self {
        error.chain().find_map(Self::of_cause).unwrap_or(Self::Failure)
    }

    fn of_cause(cause: &(dyn std::error::Error + 'static)) -> Option<Self> {
        if cause.is::<Interrupted>() {
            Some(Self::Interrupted)
        } else if cause.is::<Declined>() {
            Some(Self::Declined)
        } else if cause.is::<UsageError>() || cause.is::<ConfigError>() {
            Some(Self::Usage)
        } else if let Some(error) = cause.downcast_ref::<RemoteError>() {
            (error.is_setting().then_some(Self::Usage)).or(error.is_unreachable().then_some(Self::Unreachable))
        } else if let Some(error) = cause.downcast_ref::<ConnectError>() {
            error.is_unreachable().then_some(Self::Unreachable)
        } else if let Some(error) = cause.downcast_ref::<db::Error>() {
            // A connection lost, or none to be had, after the command had connected.
            error.is_unavailable().then_some(Self::Unreachable)
        } else {
            None
        }
    }
}

/// What `--json` prints when a command fails: `{"ok": false, "error": {"code", "message"}}`.
#[derive(Debug, Serialize)]
pub struct FailureJson<'a> {
    ok: bool,
    error: ErrorJson<'a>,
}

/// An error as scripts read it: the exit status's name, and the message printed on stderr.
#[derive(Debug, Serialize)]
pub struct ErrorJson<'a> {
    /// [`ExitStatus::name`].
    pub code: &'static str,
    /// What went wrong, for people.
    pub message: &'a str,
}

impl<'a> FailureJson<'a> {
    /// The document for a command that ended with `status`, saying `message`.
    pub fn new(status: ExitStatus, message: &'a str) -> Self {
        Self { ok: false, error: ErrorJson { code: status.name(), message } }
    }
}

/// Ctrl-C stopped a command, which left things as the message says; the process exits 130.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Interrupted(pub String);

/// The operator answered no; nothing changed, as the message says. The process exits 5.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Declined(pub String);

/// The command line asks for something that cannot be done as asked; the process exits 2, as
/// for clap's own usage errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_cause_that_says_decides() {
        let declined = anyhow::Error::new(Declined("nothing deleted".into())).context("prune");
        assert_eq!(ExitStatus::of(&declined), ExitStatus::Declined);
        let missing = anyhow::Error::new(ConfigError::MissingDatabaseUrl);
        assert_eq!(ExitStatus::of(&missing).code(), 2);
        let lost = anyhow::Error::new(db::Error::from(sqlx::Error::PoolTimedOut)).context("could not list users");
        assert_eq!(ExitStatus::of(&lost).code(), 4);
        assert_eq!(ExitStatus::of(&anyhow::anyhow!("no user 42")), ExitStatus::Failure);
    }

    #[test]
    fn the_failure_document_has_the_keys_scripts_read() {
        let json = serde_json::to_value(FailureJson::new(ExitStatus::Unreachable, "no answer")).unwrap();
        assert_eq!(json, serde_json::json!({"ok": false, "error": {"code": "unreachable", "message": "no answer"}}));
    }
}
