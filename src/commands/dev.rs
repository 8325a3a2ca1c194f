//! `serve --dev`: a private PostgreSQL and a signing secret, kept in a local folder.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::commands::{Declined, UsageError};
use crate::config::{DatabaseUrl, SigningSecrets};
use crate::db;
use crate::local_postgres::{self, ClusterOptions, LocalCluster, PgBinaries, SUPERUSER};
use crate::output::{self, Printer};

/// The database `serve --dev` creates in its cluster.
pub const DEV_DATABASE: &str = "dailyreps";

/// The signing secret of `--dev`: read from the data folder, or made and saved there.
pub struct DevSecret {
    /// Its text, to serve with (never printed: the banner's export line reads it from `path`).
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
            let text = URL_SAFE_NO_PAD.encode(random_bytes::<32>()?);
            write_private(&path, &text)
                .with_context(|| format!("could not save the signing secret in {}", path.display()))?;
            text
        }
    };
    Ok(DevSecret { text, path })
}

/// `N` random bytes, for a secret kept in the data folder.
fn random_bytes<const N: usize>() -> anyhow::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness available: {e}"))?;
    Ok(bytes)
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
    let temporary = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temporary)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    fs::rename(&temporary, path)
}

/// The development cluster, running, with its `dailyreps` database.
pub struct DevDatabase {
    /// The cluster; dropping it stops it.
    pub cluster: LocalCluster,
    /// The database's URL, with the password (which its `Display` never shows).
    pub url: DatabaseUrl,
    /// The pgpass file holding the password (for `PGPASSFILE`), beside the signing secret.
    pub pgpass: PathBuf,
}

/// Starts (creating on first use) the cluster under `dir/postgres` and its `dailyreps` database.
/// Its superuser has a password, kept in `dir/pgpass`, and the cluster asks every connection for
/// it: on a shared machine, another user cannot reach the data through the loopback port.
pub async fn start_database(dir: &Path, printer: Printer) -> anyhow::Result<DevDatabase> {
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
    let (password, pgpass) = load_or_create_password(dir)?;
    let url_of = |database: &str| {
        let url = format!("postgres://{SUPERUSER}:{password}@127.0.0.1:{}/{database}", cluster.port());
        DatabaseUrl::parse(&url).map_err(anyhow::Error::msg)
    };
    let settings = db::PoolSettings { max_connections: 1, acquire_timeout: Duration::from_secs(10) };
    // By the password: a cluster made before passwords still trusts, and takes it as well.
    let admin = db::connect(&url_of("postgres")?, settings).await.map_err(|error| {
        anyhow::Error::new(error).context(format!(
            "the development PostgreSQL in {} does not take the password kept in {}; to start afresh, remove \
             it with `serve --dev --remove-dev-data` (its data goes with it)",
            cluster.data_dir().display(),
            pgpass.display()
        ))
    })?;
    let mut conn = admin.acquire().await?;
    db::admin::set_password(&mut conn, SUPERUSER, &password).await.context("could not set the password")?;
    cluster.require_passwords()?;
    if !db::admin::database_exists(&mut conn, DEV_DATABASE).await? {
        db::admin::create_database(&mut conn, DEV_DATABASE, None).await?;
    }
    drop(conn);
    admin.close().await;
    Ok(DevDatabase { url: url_of(DEV_DATABASE)?, cluster, pgpass })
}

/// `serve --dev --remove-dev-data`: deletes the cluster kept for `dir` (under `/var/tmp` when
/// that is where it had to live), its password and the signing secret; named first, asked on
/// a terminal, `--yes` elsewhere. A cluster that is running is left alone.
pub fn remove_data(dir: &Path, yes: bool, printer: Printer) -> anyhow::Result<()> {
    let cluster = local_postgres::reachable_data_dir(&dir.join("postgres"));
    if cluster.join("postmaster.pid").exists() {
        return Err(anyhow::anyhow!(
            "the development PostgreSQL in {} is running: stop the `serve --dev` using it first",
            cluster.display()
        ));
    }
    let present: Vec<PathBuf> =
        [cluster, dir.join("pgpass"), dir.join("signing-secret")].into_iter().filter(|p| p.exists()).collect();
    if present.is_empty() {
        printer.status(&format!("nothing to remove: no development data for {}", dir.display()));
        return Ok(());
    }
    let named: Vec<String> = present.iter().map(|path| path.display().to_string()).collect();
    printer.status(&format!("this deletes the development database and its secrets: {}", named.join(", ")));
    if !yes {
        if !output::interactive() {
            return Err(UsageError("not on a terminal: add --yes to delete them".into()).into());
        }
        if !output::confirm("Delete them?").context("could not read the answer")? {
            return Err(Declined("nothing deleted".into()).into());
        }
    }
    for path in &present {
        if path.is_dir() { fs::remove_dir_all(path) } else { fs::remove_file(path) }
            .with_context(|| format!("could not delete {}", path.display()))?;
    }
    // The folder itself, when nothing else is in it.
    let _ = fs::remove_dir(dir);
    printer.status(&format!("deleted {}", named.join(", ")));
    Ok(())
}

/// The superuser's password, from the pgpass file in `dir` (`127.0.0.1:*:*:postgres:PASSWORD`,
/// as psql and sqlx read it with `PGPASSFILE`), or made and saved there (mode 0600).
fn load_or_create_password(dir: &Path) -> anyhow::Result<(String, PathBuf)> {
    let path = std::path::absolute(dir.join("pgpass")).context("the data folder has no absolute path")?;
    let prefix = format!("127.0.0.1:*:*:{SUPERUSER}:");
    let kept = fs::read_to_string(&path).ok().and_then(|text| {
        let password = text.lines().find_map(|line| line.strip_prefix(&prefix))?.to_owned();
        password.bytes().all(|b| b.is_ascii_hexdigit()).then_some(password).filter(|p| p.len() >= 32)
    });
    if let Some(password) = kept {
        return Ok((password, path));
    }
    let password = crate::encoding::hex(&random_bytes::<24>()?);
    write_private(&path, &format!("{prefix}{password}\n"))
        .with_context(|| format!("could not save the database password in {}", path.display()))?;
    Ok((password, path))
}
