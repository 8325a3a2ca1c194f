//! Load client for the benchmarks in bench/: N concurrent clients, each taking turns over
//! accounts of its own, signing every request as the app does, for a fixed time. Uploads vary
//! every document so dedupe never short-circuits; downloads fetch the latest backup.
//!
//!     cargo build --release --example load
//!     target/release/examples/load --url http://127.0.0.1:8080 --secret "$APP_SIGNING_SECRET" \
//!         --clients 8 --accounts 1 --seconds 20 --size 65536 --mode upload
//!
//! With `--histories DIR` (folders of one user's documents, oldest first, as bench/histories.py
//! writes them), each client takes its share of the users instead: registers an account for
//! each and uploads its first `--mature` documents before the clock starts; then uploads the
//! next ones in turn (upload), or fetches each account's latest (download).
//!
//! Prints one JSON object: requests/s, p50/p99/max latency in ms, and counts by status.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use dailyreps_backup_server::client::{ApiClient, Call};
use reqwest::Method;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use tokio::sync::Barrier;
use tokio::task::JoinSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// `POST /api/backup` of a fresh document each time.
    Upload,
    /// `GET /api/backups/latest` (one upload first).
    Download,
}

#[derive(Debug, Parser)]
struct Args {
    /// The server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The signing secret.
    #[arg(long, env = "APP_SIGNING_SECRET", hide_env_values = true)]
    secret: String,
    /// Concurrent clients, each with its own connection.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Accounts each client registers and takes turns over. One makes every client a single
    /// user uploading hundreds of times a second; the app's real users upload a few times a
    /// day, so many accounts each a few uploads past their retention limit is the real shape.
    #[arg(long, default_value_t = 1)]
    accounts: usize,
    /// How long to run.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Document size in bytes.
    #[arg(long, default_value_t = 65536)]
    size: usize,
    /// What each client does.
    #[arg(long, value_enum, default_value = "upload")]
    mode: Mode,
    /// Users' histories (DIR/<user>/<nn>.json) to upload instead of generated documents.
    #[arg(long)]
    histories: Option<PathBuf>,
    /// With --histories: documents each account uploads before the clock starts.
    #[arg(long, default_value_t = 30)]
    mature: usize,
}

/// One answered request.
struct Sample {
    status: u16,
    latency: Duration,
}

/// A workout log of about `size` bytes whose first field is `n`, so each one differs.
struct Documents {
    tail: String,
}

impl Documents {
    fn new(size: usize) -> Self {
        let mut tail = String::from(r#""sets":["#);
        let mut i = 0;
        while tail.len() + 80 < size {
            tail.push_str(&format!(
                r#"{{"exercise":"bench-press","set":{},"reps":{},"kg":{}.5}},"#,
                i % 5,
                5 + i % 8,
                40 + i % 60
            ));
            i += 1;
        }
        tail.push_str(r#"{"exercise":"plank","seconds":60}]}"#);
        Self { tail }
    }

    fn make(&self, client: usize, n: u64) -> Vec<u8> {
        format!(r#"{{"client":{client},"n":{n:>12},{}"#, self.tail).into_bytes()
    }
}

/// Each user's documents, oldest first.
fn read_histories(folder: &std::path::Path) -> anyhow::Result<Vec<Vec<PathBuf>>> {
    let mut users: Vec<PathBuf> = std::fs::read_dir(folder)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    users.sort();
    users
        .iter()
        .map(|user| {
            let mut documents: Vec<PathBuf> =
                std::fs::read_dir(user)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
            documents.sort();
            Ok(documents)
        })
        .collect()
}

/// A client's accounts made from histories: each token with the documents still to upload.
async fn history_accounts(
    api: &ApiClient,
    users: Vec<Vec<PathBuf>>,
    mature: usize,
) -> anyhow::Result<Vec<(String, std::vec::IntoIter<PathBuf>)>> {
    let mut accounts = Vec::with_capacity(users.len());
    for documents in users {
        let token = register(api).await?;
        let mut documents = documents.into_iter();
        for path in documents.by_ref().take(mature) {
            api.send(Method::POST, upload_file(&path, &token)?).await?.error_for_status()?;
        }
        accounts.push((token, documents));
    }
    Ok(accounts)
}

fn upload_file<'a>(path: &std::path::Path, token: &'a str) -> anyhow::Result<Call<'a>> {
    let body = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Call { path_and_query: "/api/backup", body, token: Some(token), headers: json_headers() })
}

/// What a request was, and how long it took: its status (0 when it failed to arrive).
async fn timed(api: &ApiClient, method: Method, call: Call<'_>) -> Sample {
    let started = Instant::now();
    let status = match api.send(method, call).await {
        Ok(response) => {
            let status = response.status().as_u16();
            response.bytes().await.map(|_| status).unwrap_or(0)
        }
        Err(_) => 0,
    };
    Sample { status, latency: started.elapsed() }
}

/// A client over its share of the histories.
async fn history_client(
    api: ApiClient,
    mode: Mode,
    users: Vec<Vec<PathBuf>>,
    mature: usize,
    start: Arc<Barrier>,
    duration: Duration,
) -> anyhow::Result<Vec<Sample>> {
    let accounts = history_accounts(&api, users, mature).await;
    start.wait().await;
    let mut accounts = accounts?;
    let until = Instant::now() + duration;
    let mut samples = Vec::new();
    'rounds: while Instant::now() < until {
        let mut any = false;
        for (token, documents) in &mut accounts {
            if Instant::now() >= until {
                break 'rounds;
            }
            let call = match mode {
                Mode::Upload => match documents.next() {
                    Some(path) => upload_file(&path, token)?,
                    None => continue,
                },
                Mode::Download => Call { path_and_query: "/api/backups/latest", token: Some(token), ..Call::default() },
            };
            any = true;
            let method = if mode == Mode::Upload { Method::POST } else { Method::GET };
            samples.push(timed(&api, method, call).await);
        }
        if !any {
            break;
        }
    }
    Ok(samples)
}

async fn register(api: &ApiClient) -> anyhow::Result<String> {
    let response = api.send(Method::POST, Call { path_and_query: "/api/users", ..Call::default() }).await?;
    if response.status() != reqwest::StatusCode::CREATED {
        bail!("registering answered {}", response.status());
    }
    let body: serde_json::Value = response.json().await?;
    Ok(body["token"].as_str().context("no token")?.to_owned())
}

fn json_headers() -> HeaderMap {
    HeaderMap::from_iter([(CONTENT_TYPE, HeaderValue::from_static("application/json"))])
}

/// Registers a client's accounts; for downloads, gives each a backup to fetch.
async fn accounts(
    api: &ApiClient,
    mode: Mode,
    id: usize,
    count: usize,
    documents: &Documents,
) -> anyhow::Result<Vec<String>> {
    let mut tokens = Vec::with_capacity(count);
    for _ in 0..count {
        let token = register(api).await?;
        if mode == Mode::Download {
            api.send(Method::POST, upload(documents, id, &token, 0)).await?.error_for_status()?;
        }
        tokens.push(token);
    }
    Ok(tokens)
}

fn upload<'a>(documents: &Documents, id: usize, token: &'a str, n: u64) -> Call<'a> {
    Call { path_and_query: "/api/backup", body: documents.make(id, n), token: Some(token), headers: json_headers() }
}

async fn client(
    api: ApiClient,
    mode: Mode,
    id: usize,
    count: usize,
    documents: Arc<Documents>,
    start: Arc<Barrier>,
    duration: Duration,
) -> anyhow::Result<Vec<Sample>> {
    let tokens = accounts(&api, mode, id, count, &documents).await;
    // The clock starts once every client has its accounts: registering is not the load. A
    // client that failed still meets the others here, so none of them waits forever.
    start.wait().await;
    let tokens = tokens?;
    let until = Instant::now() + duration;
    let mut samples = Vec::new();
    for (n, token) in (1..).zip(tokens.iter().cycle()) {
        if Instant::now() >= until {
            break;
        }
        let (method, call) = match mode {
            Mode::Upload => (Method::POST, upload(&documents, id, token, n)),
            Mode::Download => {
                (Method::GET, Call { path_and_query: "/api/backups/latest", token: Some(token), ..Call::default() })
            }
        };
        samples.push(timed(&api, method, call).await);
    }
    Ok(samples)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let api = ApiClient::new(&args.url, args.secret.as_bytes(), Duration::from_secs(120))?;
    let documents = Arc::new(Documents::new(args.size));
    let duration = Duration::from_secs(args.seconds);
    let start = Arc::new(Barrier::new(args.clients + 1));
    let mut clients = JoinSet::new();
    let histories = match &args.histories {
        Some(folder) => Some(read_histories(folder)?.into_iter().enumerate().collect::<Vec<_>>()),
        None => None,
    };
    for id in 0..args.clients {
        let (api, documents, start) = (api.clone(), documents.clone(), start.clone());
        match &histories {
            Some(all) => {
                let mine = all.iter().filter(|(n, _)| n % args.clients == id).map(|(_, d)| d.clone()).collect();
                clients.spawn(history_client(api, args.mode, mine, args.mature, start, duration));
            }
            None => {
                clients.spawn(client(api, args.mode, id, args.accounts.max(1), documents, start, duration));
            }
        }
    }
    start.wait().await;
    let started = Instant::now();
    let mut samples = Vec::new();
    while let Some(result) = clients.join_next().await {
        samples.extend(result??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ok = samples.iter().filter(|s| (200..300).contains(&s.status)).count();
    let mut latencies: Vec<Duration> =
        samples.iter().filter(|s| (200..300).contains(&s.status)).map(|s| s.latency).collect();
    latencies.sort();
    let mut statuses = BTreeMap::<String, usize>::new();
    for sample in &samples {
        *statuses.entry(sample.status.to_string()).or_default() += 1;
    }
    let report = serde_json::json!({
        "mode": format!("{:?}", args.mode).to_lowercase(),
        "clients": args.clients,
        "accounts_per_client": args.accounts,
        "size": args.size,
        "seconds": elapsed,
        "requests": samples.len(),
        "ok_per_second": ok as f64 / elapsed,
        "p50_ms": percentile(&latencies, 0.50),
        "p99_ms": percentile(&latencies, 0.99),
        "max_ms": latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        "statuses": statuses,
    });
    println!("{report}");
    Ok(())
}
