//! A private PostgreSQL cluster on this machine, for `serve --dev` and the test harness.
//!
//! It uses the machine's own `initdb` and `pg_ctl`, listens on a loopback port (the one it had
//! last time when still free, so a `DATABASE_URL` exported for a kept cluster keeps working)
//! with `trust` authentication until [`LocalCluster::require_passwords`] (which `serve --dev`
//! calls: another user of a shared machine must not get in), and is stopped by a watchdog when this process ends, however it
//! ends: the watchdog is a shell that waits for EOF on a pipe whose only writer is this
//! process, so even a SIGKILL stops the cluster. PostgreSQL refuses to run as root, so when
//! we are root the cluster is owned by and run as the unprivileged `postgres` (or `nobody`)
//! user.

use std::fs;
use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

/// Why a local cluster could not be had.
#[derive(Debug, thiserror::Error)]
pub enum LocalPgError {
    /// `initdb`/`pg_ctl` are not installed where we look.
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl) were not found on PATH or in {searched}.\n\
         Install them, or set DATABASE_URL to use an existing server:\n  \
         Debian/Ubuntu: sudo apt-get install postgresql\n  \
         macOS:         brew install postgresql@16"
    )]
    BinariesNotFound {
        /// The folders that were searched besides PATH.
        searched: String,
    },
    /// Something on the file system or a PostgreSQL tool failed.
    #[error("{0}")]
    Failed(String),
}

fn failed(message: impl Into<String>) -> LocalPgError {
    LocalPgError::Failed(message.into())
}

/// Where `initdb` and `pg_ctl` live.
#[derive(Debug, Clone)]
pub struct PgBinaries {
    dir: PathBuf,
}

impl PgBinaries {
    /// Finds the binaries on `PATH`, then in the usual install locations.
    pub fn find() -> Result<Self, LocalPgError> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let path_dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
        Self::find_in(&path_dirs, &install_locations())
    }

    /// Finds the binaries in `path_dirs`, then in `install_dirs`.
    pub fn find_in(path_dirs: &[PathBuf], install_dirs: &[PathBuf]) -> Result<Self, LocalPgError> {
        path_dirs
            .iter()
            .chain(install_dirs)
            .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
            .map(|dir| Self { dir: dir.clone() })
            .ok_or_else(|| LocalPgError::BinariesNotFound {
                searched: install_dirs.iter().map(|dir| dir.display().to_string()).collect::<Vec<_>>().join(", "),
            })
    }

    fn tool(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// Debian's, Homebrew's, the PGDG RPMs' and Postgres.app's folders, newest version first.
fn install_locations() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for (parent, prefix, suffix) in [
        ("/usr/lib/postgresql", "", "bin"),
        ("/opt/homebrew/opt", "postgresql@", "bin"),
        ("/usr/local/opt", "postgresql@", "bin"),
        ("/usr", "pgsql-", "bin"),
    ] {
        dirs.extend(versioned_dirs(Path::new(parent), prefix).into_iter().map(|dir| dir.join(suffix)));
    }
    dirs.extend(
        [
            "/opt/homebrew/bin",
            "/usr/local/bin",
            "/usr/local/pgsql/bin",
            "/Applications/Postgres.app/Contents/Versions/latest/bin",
        ]
        .map(PathBuf::from),
    );
    dirs
}

/// Entries of `parent` named `<prefix><major version>`, highest version first.
fn versioned_dirs(parent: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(parent) else { return Vec::new() };
    let mut found: Vec<(u32, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version = name.strip_prefix(prefix)?.split('.').next()?.parse().ok()?;
            Some((version, entry.path()))
        })
        .collect();
    found.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
    found.into_iter().map(|(_, path)| path).collect()
}

/// How the cluster is set up.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The data folder; created and initialised when it holds no cluster yet.
    pub data_dir: PathBuf,
    /// `false` trades crash safety for speed (no fsync): for throwaway test clusters.
    pub durable: bool,
    /// Delete the data folder when the cluster stops: for throwaway test clusters.
    pub remove_on_stop: bool,
}

/// A running local cluster. Dropping it (or this process ending) stops it.
#[derive(Debug)]
pub struct LocalCluster {
    port: u16,
    data_dir: PathBuf,
    binaries: PgBinaries,
    run_as: Option<RunAs>,
    watchdog: Option<(Child, ChildStdin)>,
    /// Whether `initdb` ran in this start (a new, empty cluster).
    pub created: bool,
    /// The port the cluster had last time, when something else holds it now.
    pub moved_from: Option<u16>,
}

/// The user PostgreSQL runs as when we are root.
#[derive(Debug, Clone, Copy)]
struct RunAs {
    uid: u32,
    gid: u32,
}

/// The superuser name of clusters made here.
pub const SUPERUSER: &str = "postgres";

impl LocalCluster {
    /// Creates the cluster if needed, starts it on a loopback port (its last one when free) and
    /// arms the watchdog. A cluster some other process is running is an error naming its pid.
    pub fn start(binaries: &PgBinaries, options: &ClusterOptions) -> Result<Self, LocalPgError> {
        let run_as = unprivileged_user_if_root()?;
        let data_dir = prepare_data_dir(&options.data_dir, run_as)?;
        let created = !data_dir.join("PG_VERSION").exists();
        if created {
            init_cluster(binaries, &data_dir, options.durable, run_as)?;
        } else if let Some(pid) = running_pid(binaries, &data_dir, run_as) {
            return Err(failed(format!(
                "the PostgreSQL in {} is already running (pid {pid}), most likely for another \
                 `serve --dev` using this folder: stop that one first, or give this one its own --dev-data-dir",
                data_dir.display()
            )));
        }
        let remembered = remembered_port(&data_dir);
        let port = start_server(binaries, &data_dir, remembered, run_as)?;
        remember_port(&data_dir, port);
        let moved_from = remembered.filter(|&previous| previous != port);
        let mut cluster =
            Self { port, data_dir, binaries: binaries.clone(), run_as, watchdog: None, created, moved_from };
        cluster.watchdog = Some(cluster.arm_watchdog(options.remove_on_stop)?);
        Ok(cluster)
    }

    /// The loopback port the cluster listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data folder.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A connection URL for `database` as the superuser, without a password (one the cluster
    /// asks for comes from elsewhere: `PGPASSFILE`).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    /// Stops the cluster now (fast shutdown: open sessions are ended) and disarms the watchdog.
    pub fn stop(mut self) -> Result<(), LocalPgError> {
        let stopped = self.stop_server();
        self.disarm_watchdog();
        stopped
    }

    /// Stops the server but keeps the cluster armed, to be started again on the same port:
    /// what a database outage looks like to its clients.
    pub fn stop_server(&self) -> Result<(), LocalPgError> {
        let mut pg_ctl = self.command("pg_ctl");
        pg_ctl.args(["stop", "-w", "-m", "fast", "-D"]).arg(&self.data_dir);
        run_tool(pg_ctl, "pg_ctl stop")
    }

    /// From now on every connection needs a password (SCRAM), as on a machine other people use:
    /// `trust` lines in `pg_hba.conf` become `scram-sha-256`, and the server reloads. Set the
    /// superuser's password first, or nobody gets in.
    pub fn require_passwords(&self) -> Result<(), LocalPgError> {
        let hba = self.data_dir.join("pg_hba.conf");
        let cannot = |e: std::io::Error| failed(format!("could not require passwords in {}: {e}", hba.display()));
        let text = fs::read_to_string(&hba).map_err(cannot)?;
        let rewritten: String = text
            .lines()
            .map(|line| match line.split_whitespace().last() {
                Some("trust") if !line.trim_start().starts_with('#') => {
                    format!("{}scram-sha-256\n", line.trim_end().strip_suffix("trust").unwrap_or(line))
                }
                _ => format!("{line}\n"),
            })
            .collect();
        if rewritten == text {
            return Ok(());
        }
        fs::write(&hba, rewritten).map_err(cannot)?;
        let mut pg_ctl = self.command("pg_ctl");
        pg_ctl.arg("reload").arg("-D").arg(&self.data_dir);
        run_tool(pg_ctl, "pg_ctl reload")
    }

    /// Starts the server again after [`Self::stop_server`], on the same port.
    pub fn start_server(&self) -> Result<(), LocalPgError> {
        pg_ctl_start(&self.binaries, &self.data_dir, self.port, self.run_as)
    }

    fn command(&self, tool: &str) -> Command {
        tool_command(&self.binaries, tool, self.run_as)
    }

    fn arm_watchdog(&self, remove_on_stop: bool) -> Result<(Child, ChildStdin), LocalPgError> {
        // `read` succeeds only if we write a line (a clean stop); at EOF it fails and the shell
        // stops the cluster. Its own process group keeps a terminal's Ctrl-C away from it.
        let script = r#"read -r _ && exit 0
"$1" stop -D "$2" -m fast >/dev/null 2>&1
[ "$3" = remove ] && rm -rf "$2"
exit 0"#;
        let mut command = Command::new("sh");
        command
            .args(["-c", script, "watchdog"])
            .arg(self.binaries.tool("pg_ctl"))
            .arg(&self.data_dir)
            .arg(if remove_on_stop { "remove" } else { "keep" })
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .current_dir("/")
            .process_group(0);
        if let Some(user) = self.run_as {
            command.uid(user.uid).gid(user.gid);
        }
        let mut child = command.spawn().map_err(|e| failed(format!("could not start the cluster's watchdog: {e}")))?;
        let stdin = child.stdin.take().expect("stdin is piped");
        Ok((child, stdin))
    }

    fn disarm_watchdog(&mut self) {
        if let Some((mut child, mut stdin)) = self.watchdog.take() {
            // Failing to write means the watchdog is already gone: nothing left to disarm.
            let _ = stdin.write_all(b"stopped\n");
            drop(stdin);
            let _ = child.wait();
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        // Closing the pipe lets the watchdog stop the cluster.
        if let Some((mut child, stdin)) = self.watchdog.take() {
            drop(stdin);
            let _ = child.wait();
        }
    }
}

fn tool_command(binaries: &PgBinaries, tool: &str, run_as: Option<RunAs>) -> Command {
    let mut command = Command::new(binaries.tool(tool));
    // The server must not share our process group: a Ctrl-C at the terminal would make it
    // shut down at once, under requests still being served.
    command.current_dir("/").process_group(0).env_remove("PGDATA");
    if let Some(user) = run_as {
        command.uid(user.uid).gid(user.gid);
    }
    command
}

fn unprivileged_user_if_root() -> Result<Option<RunAs>, LocalPgError> {
    if !running_as_root() {
        return Ok(None);
    }
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    ["postgres", "nobody"]
        .iter()
        .find_map(|name| passwd_entry(&passwd, name))
        .map(Some)
        .ok_or_else(|| failed("PostgreSQL refuses to run as root and neither a `postgres` nor a `nobody` user exists"))
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // Our own /proc entry is owned by our effective uid: no libc call needed.
    fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

fn passwd_entry(passwd: &str, name: &str) -> Option<RunAs> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let _password = fields.next()?;
        Some(RunAs { uid: fields.next()?.parse().ok()?, gid: fields.next()?.parse().ok()? })
    })
}

fn prepare_data_dir(dir: &Path, run_as: Option<RunAs>) -> Result<PathBuf, LocalPgError> {
    fs::create_dir_all(dir).map_err(|e| failed(format!("could not create {}: {e}", dir.display())))?;
    let dir = dir.canonicalize().map_err(|e| failed(format!("could not resolve {}: {e}", dir.display())))?;
    if let Some(user) = run_as {
        std::os::unix::fs::chown(&dir, Some(user.uid), Some(user.gid))
            .map_err(|e| failed(format!("could not hand {} to the PostgreSQL user: {e}", dir.display())))?;
        if let Some(blocked) = untraversable_ancestor(&dir) {
            return Err(failed(format!(
                "PostgreSQL runs as an unprivileged user, who cannot enter {}; choose a data folder elsewhere",
                blocked.display()
            )));
        }
    }
    Ok(dir)
}

/// The first ancestor of `dir` that other users may not enter.
fn untraversable_ancestor(dir: &Path) -> Option<&Path> {
    dir.ancestors()
        .skip(1)
        .find(|ancestor| fs::metadata(ancestor).map_or(true, |m| m.permissions().mode() & 0o001 == 0))
}

/// `preferred`, or, when we are root and the PostgreSQL user cannot reach it (a checkout
/// under `/root`, a `mktemp -d` folder), a folder under `/var/tmp` named after it, so the same
/// checkout keeps finding the same cluster.
pub fn reachable_data_dir(preferred: &Path) -> PathBuf {
    let absolute = std::path::absolute(preferred).unwrap_or_else(|_| preferred.to_path_buf());
    if !running_as_root() || untraversable_ancestor(&absolute).is_none() {
        return preferred.to_path_buf();
    }
    // FNV-1a: a stable name for the path, with no dependency for one loop.
    let hash = absolute
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3));
    PathBuf::from(format!("/var/tmp/dailyreps-postgres-{hash:016x}"))
}

fn init_cluster(binaries: &PgBinaries, dir: &Path, durable: bool, run_as: Option<RunAs>) -> Result<(), LocalPgError> {
    let mut initdb = tool_command(binaries, "initdb", run_as);
    initdb
        .args([
            "--username",
            SUPERUSER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--no-locale",
            "--no-instructions",
            "-D",
        ])
        .arg(dir);
    if !durable {
        initdb.arg("--no-sync");
    }
    run_tool(initdb, "initdb")?;
    let mut settings = String::from(
        "\n# Added by dailyreps-backup-server: loopback TCP only.\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n",
    );
    if !durable {
        settings.push_str("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 300\n");
    }
    fs::OpenOptions::new()
        .append(true)
        .open(dir.join("postgresql.conf"))
        .and_then(|mut conf| conf.write_all(settings.as_bytes()))
        .map_err(|e| failed(format!("could not configure the cluster in {}: {e}", dir.display())))
}

/// The pid of the postmaster running on `dir`, as `pg_ctl status` reports it.
fn running_pid(binaries: &PgBinaries, dir: &Path, run_as: Option<RunAs>) -> Option<u32> {
    let mut pg_ctl = tool_command(binaries, "pg_ctl", run_as);
    let output = pg_ctl.arg("status").arg("-D").arg(dir).stdin(Stdio::null()).output().ok()?;
    if !output.status.success() {
        return None;
    }
    // "pg_ctl: server is running (PID: 1234)"
    let text = String::from_utf8_lossy(&output.stdout);
    let after = text.split("PID:").nth(1)?;
    after.trim_start().split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// Where the cluster's last port is kept: beside PostgreSQL's files, which ignore it.
fn port_file(dir: &Path) -> PathBuf {
    dir.join("dailyreps.port")
}

fn remembered_port(dir: &Path) -> Option<u16> {
    fs::read_to_string(port_file(dir)).ok()?.trim().parse().ok().filter(|&port| port != 0)
}

fn remember_port(dir: &Path, port: u16) {
    // Losing it only costs a new port next time.
    let _ = fs::write(port_file(dir), format!("{port}\n"));
}

/// Starts the server on `preferred` if given, else (or when that is taken) on a free port;
/// retries when another process takes a free port first.
fn start_server(
    binaries: &PgBinaries,
    dir: &Path,
    preferred: Option<u16>,
    run_as: Option<RunAs>,
) -> Result<u16, LocalPgError> {
    let log = dir.join("server.log");
    let mut last_error = String::new();
    let mut preferred = preferred;
    for _ in 0..4 {
        let port = match preferred.take() {
            Some(port) => port,
            None => free_port()?,
        };
        match pg_ctl_start(binaries, dir, port, run_as) {
            Ok(()) => return Ok(port),
            Err(e) => last_error = format!("{e}\n{}", tail(&log, 8)),
        }
        if !fs::read_to_string(&log).unwrap_or_default().contains("could not bind") {
            break;
        }
    }
    Err(failed(last_error))
}

fn pg_ctl_start(binaries: &PgBinaries, dir: &Path, port: u16, run_as: Option<RunAs>) -> Result<(), LocalPgError> {
    let mut pg_ctl = tool_command(binaries, "pg_ctl", run_as);
    pg_ctl.args(["start", "-w", "-t", "60", "-D"]).arg(dir).arg("-l").arg(dir.join("server.log"));
    pg_ctl.args(["-o", &format!("-p {port}")]);
    run_tool(pg_ctl, "pg_ctl start")
}

fn free_port() -> Result<u16, LocalPgError> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| failed(format!("could not find a free port: {e}")))
}

fn run_tool(mut command: Command, name: &str) -> Result<(), LocalPgError> {
    let output = command.stdin(Stdio::null()).output().map_err(|e| failed(format!("could not run {name}: {e}")))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    Err(failed(format!("{name} failed: {}", format!("{stderr}{stdout}").trim())))
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binaries_get_an_install_hint() {
        let empty = std::env::temp_dir().join(format!("no-pg-here-{}", std::process::id()));
        let err = PgBinaries::find_in(std::slice::from_ref(&empty), &[empty.join("bin")]).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("apt-get install postgresql"), "{message}");
        assert!(message.contains("brew install postgresql@16"), "{message}");
        assert!(message.contains(&empty.join("bin").display().to_string()), "{message}");
    }

    #[test]
    fn binaries_are_found_in_the_first_folder_holding_both() {
        let root = std::env::temp_dir().join(format!("pg-bins-{}", std::process::id()));
        let (only_initdb, both) = (root.join("a"), root.join("b"));
        fs::create_dir_all(&only_initdb).unwrap();
        fs::create_dir_all(&both).unwrap();
        fs::write(only_initdb.join("initdb"), "").unwrap();
        fs::write(both.join("initdb"), "").unwrap();
        fs::write(both.join("pg_ctl"), "").unwrap();
        let found = PgBinaries::find_in(&[only_initdb], std::slice::from_ref(&both)).unwrap();
        assert_eq!(found.tool("pg_ctl"), both.join("pg_ctl"));
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn versioned_install_folders_come_newest_first() {
        let root = std::env::temp_dir().join(format!("pg-versions-{}", std::process::id()));
        for name in ["postgresql@9", "postgresql@16", "postgresql@15", "other"] {
            fs::create_dir_all(root.join(name)).unwrap();
        }
        let found = versioned_dirs(&root, "postgresql@");
        assert_eq!(found, [root.join("postgresql@16"), root.join("postgresql@15"), root.join("postgresql@9")]);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn an_unreachable_data_dir_moves_to_a_stable_place_only_for_root() {
        let private = std::env::temp_dir().join(format!("pg-private-{}", std::process::id()));
        fs::create_dir_all(&private).unwrap();
        fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();
        let wanted = private.join("checkout/.dailyreps/postgres");
        let chosen = reachable_data_dir(&wanted);
        if running_as_root() {
            assert!(chosen.starts_with("/var/tmp"), "{}", chosen.display());
            assert_eq!(chosen, reachable_data_dir(&wanted), "the same folder each time");
        } else {
            assert_eq!(chosen, wanted);
        }
        let open = std::env::temp_dir().join("reachable");
        assert_eq!(reachable_data_dir(&open), open);
        fs::remove_dir_all(private).unwrap();
    }

    #[test]
    fn passwd_lookup_reads_uid_and_gid() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\npostgres:x:101:104::/var/lib/postgresql:/bin/bash\n";
        let user = passwd_entry(passwd, "postgres").unwrap();
        assert_eq!((user.uid, user.gid), (101, 104));
        assert!(passwd_entry(passwd, "nobody").is_none());
    }
}
