//! Test harness: one throwaway PostgreSQL per test binary (or `TEST_DATABASE_URL`), a fresh
//! database per test, the real server on a free port, and the real binary for CLI tests.
#![allow(dead_code)] // Each test binary uses a different part of the harness.

pub mod binary;
pub mod s3;

use std::net::SocketAddr;
use std::sync::Once;
use std::time::Duration;

use dailyreps_backup_server::cli::ServeArgs;
use dailyreps_backup_server::config::ApiSettings;
use dailyreps_backup_server::config::DatabaseUrl;
use dailyreps_backup_server::db::{self, admin, migrations};
use dailyreps_backup_server::http::{self, state::AppState};
use dailyreps_backup_server::local_postgres::{ClusterOptions, LocalCluster, PgBinaries};
use dailyreps_backup_server::signature;
use reqwest::Method;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::OnceCell;

/// Every /api path of the SPEC, with a made-up backup id.
pub const API_PATHS: &[&str] = &[
    "/api/users",
    "/api/users/me",
    "/api/backup",
    "/api/backups",
    "/api/backups/latest",
    "/api/backups/5f0c3c4e-0000-4000-8000-000000000000",
];

/// A signing secret for tests (never a real one).
pub const TEST_SECRET: &str = "test-signing-secret-0123456789abcdef";

/// The PostgreSQL server the tests share, and a migrated template database.
struct TestServer {
    /// Set when we started the cluster ourselves; kept alive for the whole run.
    _cluster: Option<LocalCluster>,
    admin_url: String,
    template: String,
}

static SERVER: OnceCell<TestServer> = OnceCell::const_new();

async fn server() -> &'static TestServer {
    SERVER
        .get_or_init(|| async {
            init_logs();
            let (cluster, admin_url) = match std::env::var("TEST_DATABASE_URL") {
                Ok(url) => (None, url),
                Err(_) => {
                    let cluster = start_cluster().await;
                    let url = cluster.url("postgres");
                    (Some(cluster), url)
                }
            };
            let template = unique_name("drb_template");
            let admin = connect(&admin_url).await;
            admin::create_database(&mut admin.acquire().await.unwrap(), &template, None).await.unwrap();
            admin.close().await;
            let template_pool = connect(&with_database(&admin_url, &template)).await;
            migrations::apply(&template_pool).await.expect("migrations apply to the template");
            create_test_chunks(&template_pool).await;
            // CREATE DATABASE ... TEMPLATE needs the template to have no open sessions.
            template_pool.close().await;
            TestServer { _cluster: cluster, admin_url, template }
        })
        .await
}

/// Starts a throwaway cluster with the code `serve --dev` uses: of the PostgreSQL whose bin
/// folder `TEST_PG_BIN` names (CI runs the dump tests on 16 so), else the machine's own.
pub async fn start_cluster() -> LocalCluster {
    let binaries = match std::env::var_os("TEST_PG_BIN") {
        Some(dir) => PgBinaries::find_in(&[dir.into()], &[]).expect("initdb and pg_ctl in TEST_PG_BIN"),
        None => PgBinaries::find().expect("PostgreSQL server binaries (see .ci/run)"),
    };
    start_cluster_of(binaries).await
}

/// Starts a throwaway cluster of these binaries.
pub async fn start_cluster_of(binaries: PgBinaries) -> LocalCluster {
    tokio::task::spawn_blocking(move || {
        let options = ClusterOptions { data_dir: scratch_dir("pg"), durable: false, remove_on_stop: true };
        LocalCluster::start(&binaries, &options).expect("a local PostgreSQL cluster starts")
    })
    .await
    .unwrap()
}

/// A throwaway cluster of PostgreSQL `version`, a registry build laid out by
/// `.ci/postgres-build.sh` (which fetches it the first time; it needs npm).
pub async fn start_cluster_of_version(version: &str) -> LocalCluster {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/postgres-build.sh");
    let built = tokio::process::Command::new("bash").arg(script).arg(version).output().await.unwrap();
    assert!(built.status.success(), "PostgreSQL {version}: {}", String::from_utf8_lossy(&built.stderr));
    let bin = String::from_utf8(built.stdout).unwrap().trim().to_owned();
    start_cluster_of(PgBinaries::find_in(&[bin.into()], &[]).unwrap()).await
}

/// A new empty database in `cluster`; its URL.
pub async fn database_in(cluster: &LocalCluster) -> String {
    let admin = connect(&cluster.url("postgres")).await;
    let name = unique_name("drb_major");
    admin::create_database(&mut admin.acquire().await.unwrap(), &name, None).await.unwrap();
    admin.close().await;
    cluster.url(&name)
}

/// A new folder under the system's temp folder (reachable by the PostgreSQL user).
pub fn scratch_dir(label: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(unique_name(&format!("drb-test-{label}")))
}

fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// `url` with its database name replaced.
pub fn with_database(url: &str, database: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
    let (rest, query) = rest.split_once('?').map_or((rest, String::new()), |(r, q)| (r, format!("?{q}")));
    let authority = rest.split_once('/').map_or(rest, |(authority, _)| authority);
    format!("{scheme}://{authority}/{database}{query}")
}

/// A pool on `url`.
pub async fn connect(url: &str) -> PgPool {
    let url = DatabaseUrl::parse(url).unwrap();
    db::connect(&url, db::PoolSettings { max_connections: 5, acquire_timeout: Duration::from_secs(10) }).await.unwrap()
}

fn init_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            dailyreps_backup_server::telemetry::init(None, "debug,sqlx=info");
        }
    });
}

/// Creates `test_chunks(user_id, document) -> bigint[]`, which stores a document as one chunk
/// of the user's and returns the `chunk_ids` that name it: tests that write backups rows in
/// SQL name their documents with it. Every migrated test database has it.
pub async fn create_test_chunks(pool: &PgPool) {
    sqlx::raw_sql(
        "CREATE FUNCTION test_chunks(p_user_id uuid, p_document text) RETURNS bigint[] LANGUAGE plpgsql AS $$
         DECLARE v_sha256 bytea := sha256(convert_to(p_document, 'UTF8'));
         BEGIN
             IF p_document = '' THEN RETURN '{}'; END IF;
             INSERT INTO chunks (user_id, sha256, data) VALUES (p_user_id, v_sha256, p_document)
                 ON CONFLICT (user_id, sha256) DO NOTHING;
             RETURN ARRAY(SELECT id FROM chunks WHERE user_id = p_user_id AND sha256 = v_sha256);
         END $$",
    )
    .execute(pool)
    .await
    .expect("test_chunks is created");
}

/// A backup's document as stored: its chunks joined in order.
pub async fn stored_document(pool: &PgPool, backup_id: uuid::Uuid) -> String {
    sqlx::query_scalar(
        "SELECT coalesce(string_agg(c.data, '' ORDER BY part.n), '') FROM backups b \
         CROSS JOIN unnest(b.chunk_ids) WITH ORDINALITY AS part(id, n) JOIN chunks c ON c.id = part.id \
         WHERE b.id = $1",
    )
    .bind(backup_id)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// A database of this test's own.
pub struct TestDb {
    /// Its URL.
    pub url: String,
}

impl TestDb {
    /// A fresh database with every migration applied.
    pub async fn migrated() -> Self {
        Self::create(true).await
    }

    /// A fresh database with nothing in it.
    pub async fn empty() -> Self {
        Self::create(false).await
    }

    async fn create(migrated: bool) -> Self {
        let server = server().await;
        let name = unique_name("drb_test");
        let admin = connect(&server.admin_url).await;
        let template = migrated.then_some(server.template.as_str());
        admin::create_database(&mut admin.acquire().await.unwrap(), &name, template).await.unwrap();
        admin.close().await;
        Self { url: with_database(&server.admin_url, &name) }
    }

    /// A pool on this database.
    pub async fn pool(&self) -> PgPool {
        connect(&self.url).await
    }
}

/// Settings for a test server: `serve`'s own defaults, without rate limits.
pub fn test_settings() -> ApiSettings {
    use clap::Parser;
    let args = ServeArgs::try_parse_from([
        "serve",
        "--signing-secret",
        TEST_SECRET,
        "--rate-limit-register-per-minute=0",
        "--rate-limit-user-per-minute=0",
        "--rate-limit-ip-per-minute=0",
    ])
    .unwrap();
    ApiSettings::try_from(&args).unwrap()
}

/// The real server, running in this test's runtime on free ports.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub address: String,
    /// `http://127.0.0.1:PORT` of the metrics listener.
    pub metrics_address: String,
    /// A pool on the app's database.
    pub pool: PgPool,
    /// An HTTP client.
    pub client: reqwest::Client,
}

/// An account made through the API.
#[derive(Debug, Clone)]
pub struct TestUser {
    /// Its id.
    pub id: uuid::Uuid,
    /// Its bearer token.
    pub token: String,
}

impl TestApp {
    /// Starts the server against a fresh migrated database.
    pub async fn spawn() -> Self {
        Self::spawn_with(test_settings()).await
    }

    /// Starts the server with `settings` against a fresh migrated database.
    pub async fn spawn_with(settings: ApiSettings) -> Self {
        Self::spawn_on_with(&TestDb::migrated().await.url, settings).await
    }

    /// Starts the server against the database at `url`.
    pub async fn spawn_on(url: &str) -> Self {
        Self::spawn_on_with(url, test_settings()).await
    }

    /// Starts the server with `settings` against the database at `url`.
    pub async fn spawn_on_with(url: &str, settings: ApiSettings) -> Self {
        init_logs();
        let pool = connect(url).await;
        let state = AppState::new(pool.clone(), settings);
        let api = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (address, metrics_address) = (base_url(api.local_addr().unwrap()), base_url(metrics.local_addr().unwrap()));
        tokio::spawn(http::serve(api, metrics, state, std::future::pending()));
        Self { address, metrics_address, pool, client: http_client() }
    }

    /// `GET path` on the API, unsigned.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(format!("{}{path}", self.address)).send().await.unwrap()
    }

    /// A request signed now with the test secret; add a token and headers, then send.
    pub fn signed(&self, method: Method, path: &str, body: &[u8]) -> reqwest::RequestBuilder {
        self.signed_with(TEST_SECRET, now(), method, path, body)
    }

    /// A request signed with `secret` at `timestamp`.
    pub fn signed_with(
        &self,
        secret: &str,
        timestamp: i64,
        method: Method,
        path: &str,
        body: &[u8],
    ) -> reqwest::RequestBuilder {
        signed_request(&self.client, &self.address, secret, timestamp, method, path, body)
    }

    /// A signed request with the user's token.
    pub fn authed(&self, user: &TestUser, method: Method, path: &str, body: &[u8]) -> reqwest::RequestBuilder {
        self.signed(method, path, body).bearer_auth(&user.token)
    }

    /// Registers an account.
    pub async fn register(&self) -> TestUser {
        let response = self.signed(Method::POST, "/api/users", b"").send().await.unwrap();
        assert_eq!(response.status(), 201, "register");
        let body: serde_json::Value = response.json().await.unwrap();
        TestUser {
            id: body["user_id"].as_str().unwrap().parse().unwrap(),
            token: body["token"].as_str().unwrap().to_owned(),
        }
    }

    /// Uploads `document` as the user's backup.
    pub async fn upload(&self, user: &TestUser, document: &[u8]) -> reqwest::Response {
        self.upload_with(user, document, &[("content-type", "application/json")]).await
    }

    /// Uploads `document` with exactly these headers (besides signature and token).
    pub async fn upload_with(&self, user: &TestUser, document: &[u8], headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request = self.authed(user, Method::POST, "/api/backup", document);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }

    /// An upload of `document` as JSON with an `Idempotency-Key`, ready to send.
    pub fn upload_keyed(&self, user: &TestUser, document: &[u8], key: &str) -> reqwest::RequestBuilder {
        self.authed(user, Method::POST, "/api/backup", document)
            .header("content-type", "application/json")
            .header("idempotency-key", key)
    }

    /// How many backups the user has in the database.
    pub async fn backup_count(&self, user_id: uuid::Uuid) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM backups WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Bytes of the memory budget held now, as `/metrics` exports it.
    pub async fn budget_in_use(&self) -> f64 {
        let text =
            self.client.get(format!("{}/metrics", self.metrics_address)).send().await.unwrap().text().await.unwrap();
        text.lines()
            .find(|line| line.starts_with("dailyreps_memory_budget_in_use_bytes "))
            .and_then(|line| line.rsplit(' ').next()?.parse().ok())
            .expect("the budget gauge is exported")
    }

    /// Uploads and returns the new backup's id, asserting 201.
    pub async fn upload_ok(&self, user: &TestUser, document: &[u8]) -> uuid::Uuid {
        let response = self.upload(user, document).await;
        assert_eq!(response.status(), 201, "upload");
        let body: serde_json::Value = response.json().await.unwrap();
        body["backup_id"].as_str().unwrap().parse().unwrap()
    }
}

/// A request to `base` + `path`, signed with `secret` at `timestamp`.
pub fn signed_request(
    client: &reqwest::Client,
    base: &str,
    secret: &str,
    timestamp: i64,
    method: Method,
    path: &str,
    body: &[u8],
) -> reqwest::RequestBuilder {
    let signature = signature::sign(secret.as_bytes(), timestamp, method.as_str(), path, body);
    client
        .request(method, format!("{base}{path}"))
        .header(signature::TIMESTAMP_HEADER, timestamp.to_string())
        .header(signature::SIGNATURE_HEADER, signature)
        .body(body.to_vec())
}

/// An HTTP client for tests. It does not decompress: tests look at what goes over the wire.
pub fn http_client() -> reqwest::Client {
    // reqwest is built without a default TLS crypto provider (see src/client.rs).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// `GET url`.
pub async fn get(url: &str) -> reqwest::Response {
    http_client().get(url).send().await.unwrap()
}

/// Waits until a statement of ours (application_name dailyreps-backup-server) whose text starts
/// with `statement_prefix` is waiting for a lock: a request or command is then truly in flight.
pub async fn wait_until_blocked_on_lock(pool: &PgPool, statement_prefix: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE application_name = 'dailyreps-backup-server' AND wait_event_type = 'Lock' AND starts_with(query, $1)",
        )
        .bind(statement_prefix)
        .fetch_one(pool)
        .await
        .unwrap();
        if waiting > 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no statement starting {statement_prefix:?} ever waited for the lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A JSON object of exactly `len` bytes.
pub fn document_of(len: usize) -> Vec<u8> {
    let mut document = br#"{"pad":""#.to_vec();
    document.resize(len - 2, b'x');
    document.extend_from_slice(br#""}"#);
    document
}

/// Peak resident memory of a process, in bytes.
pub fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|line| line.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// The current unix time.
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The JSON error code of a response.
pub async fn error_code(response: reqwest::Response) -> String {
    let body: serde_json::Value = response.json().await.unwrap();
    body["error"]["code"].as_str().unwrap_or_default().to_owned()
}

/// `http://ADDR`.
pub fn base_url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// Checks the `.sql` files of `dir` against its `LANDED.sha256` (sha256sum's format): each file
/// pinned there is unchanged (else `changed`, the way out), and every `.sql` file is pinned.
pub fn check_landed(dir: &std::path::Path, changed: &str) {
    use dailyreps_backup_server::encoding::{hex, sha256};
    let pinned = std::fs::read_to_string(dir.join("LANDED.sha256")).unwrap();
    let mut listed = Vec::new();
    for line in pinned.lines() {
        let (hash, name) = line.split_once("  ").unwrap_or_else(|| panic!("not sha256sum's format: {line}"));
        let text = std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}, pinned, is gone: {e}"));
        assert_eq!(hex(&sha256(&text)), hash, "{name} changed after it landed: {changed}");
        listed.push(name.to_owned());
    }
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".sql"))
        .collect();
    files.sort();
    listed.sort();
    assert_eq!(files, listed, "pin every .sql file in {}/LANDED.sha256 (sha256sum *.sql)", dir.display());
}
