//! `sqlx::migrate!()` embeds `migrations/` at compile time, but cargo only rebuilds for files
//! it was told about: without this, a migration added to the folder is missing from the binary
//! until something else changes.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
