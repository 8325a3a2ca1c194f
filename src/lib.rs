//! dailyreps-backup-server: the backup API of the DailyReps app and its operator's toolkit.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backups;
pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod crypt;
pub mod cursor;
pub mod database_health;
pub mod db;
pub mod document;
pub mod dump;
pub mod encoding;
pub mod http;
pub mod jobs;
pub mod local_postgres;
pub mod memory;
pub mod output;
pub mod ping;
pub mod remote;
pub mod signature;
pub mod smoke;
pub mod telemetry;
pub mod token;
pub mod units;
