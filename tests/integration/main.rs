//! Integration tests: real PostgreSQL, the real server over HTTP, the real binary.

#[path = "../common/mod.rs"]
mod common;

mod config_errors;
mod dev;
mod health;
mod metrics;
mod migrate;
mod readiness;
mod shutdown;
