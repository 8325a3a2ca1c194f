//! One module per group of routes; each owns its paths.

pub mod health;
