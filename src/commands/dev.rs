//! `serve --dev`: a private PostgreSQL and a signing secret, kept in a local folder.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::config::{DatabaseUrl, SigningSecrets};
use crate::db;
use crate::local_postgres::{self, ClusterOptions, LocalCluster, PgBinaries};
use crate::output::Printer;

/// The database `serve --dev` creates in its cluster.
pub const DEV_DATABASE: &str = "dailyreps";

/// The signing secret of `--dev`: read from the data folder, or made and saved there.
pub struct DevSecret {
    /// Its text, to print for the developer (and to serve with).
    pub text: String,
    /// Where it is kept.
    pub path: PathBuf,
}

/// Loads the secret kept in `dir`, or generates one and keeps it (mode 0600).
pub fn load_or_create_secret(dir: &Path) -> anyhow::Result<DevSecret> {
    let path = dir.join("signing-secret");
    let existing = fs::read_to_string(&path).ok().map(|text| text.trim().to_owned());
    let text = match existing.filter(|text| SigningSecrets::parse(text).is_ok()) {
        Some(text) => text,
        None => {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness available: {e}"))?;
            let text = URL_SAFE_NO_PAD.encode(bytes);
            write_private(&path, &text)
                .with_context(|| format!("could not save the signing secret in {}", path.display()))?;
            text
        }
    };
    Ok(DevSecret { text, path })
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
    let temporary = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temporary)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    fs::rename(&temporary, path)
}

/// Starts (creating on first use) the cluster under `dir/postgres` and its `dailyreps` database.
pub async fn start_database(dir: &Path, printer: Printer) -> anyhow::Result<(LocalCluster, DatabaseUrl)> {
    let binaries = PgBinaries::find()?;
    let data_dir = local_postgres::reachable_data_dir(&dir.join("postgres"));
    if data_dir != dir.join("postgres") {
        printer.status(&format!(
            "note: PostgreSQL refuses to run as root and its user cannot reach {}; its data lives in {} instead",
            dir.display(),
            data_dir.display()
        ));
    }
    let options = ClusterOptions { data_dir, durable: true, remove_on_stop: false };
    let cluster = tokio::task::spawn_blocking(move || LocalCluster::start(&binaries, &options))
        .await
        .context("the cluster start was interrupted")??;
    if let Some(previous) = cluster.moved_from {
        printer.status(&format!(
            "note: port {previous}, the development PostgreSQL's last one, is taken; it listens on {} now \
             (export DATABASE_URL again)",
            cluster.port()
        ));
    }
    printer.status(&format!(
        "{} PostgreSQL in {} on port {}",
        if cluster.created { "created and started" } else { "started" },
        cluster.data_dir().display(),
        cluster.port()
    ));
    let admin_url = DatabaseUrl::parse(&cluster.url("postgres")).map_err(anyhow::Error::msg)?;
    let settings = db::PoolSettings { max_connections: 1, acquire_timeout: Duration::from_secs(10) };
    let admin = db::connect(&admin_url, settings).await?;
    let mut conn = admin.acquire().await?;
    if !db::admin::database_exists(&mut conn, DEV_DATABASE).await? {
        db::admin::create_database(&mut conn, DEV_DATABASE, None).await?;
    }
    drop(conn);
    admin.close().await;
    let url = DatabaseUrl::parse(&cluster.url(DEV_DATABASE)).map_err(anyhow::Error::msg)?;
    Ok((cluster, url))
}
