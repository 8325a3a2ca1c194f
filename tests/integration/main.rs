//! Integration tests: real PostgreSQL, the real server over HTTP, the real binary.

#[path = "../common/mod.rs"]
mod common;

mod abusive_clients;
mod api_admission;
mod api_backups;
mod api_cors;
mod api_errors;
mod api_memory;
mod api_openapi;
mod api_signature;
mod api_users;
mod backup_db;
mod backup_db_files;
mod backup_watch;
mod completions;
mod config_errors;
mod crash;
mod damage;
mod database_health;
mod dedup;
mod deploy_drill;
mod deploy_files;
mod dev;
mod doctor;
mod exit_codes;
mod full_volume;
mod inspect;
mod man_pages;
mod metrics;
mod migrate;
mod module_picture;
mod offsite;
mod offsite_untrusted;
mod postgres_majors;
mod probes;
mod prune;
mod readiness;
mod request_helper;
mod restore_untrusted;
mod runbook;
mod secrets;
mod shutdown;
mod smoke_test;
mod sql_functions;
