//! One module per group of routes; each owns its paths.

pub mod backups;
pub mod openapi;
pub mod probes;
pub mod users;
