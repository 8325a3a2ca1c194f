//! One module per group of routes; each owns its paths.

pub mod backups;
pub mod health;
pub mod openapi;
pub mod users;
