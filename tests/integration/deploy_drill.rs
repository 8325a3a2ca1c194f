//! The deploy drill: a deploy on Fly, rehearsed with the previous release's real binary.
//!
//! Fly runs `migrate` (the release command) while the previous release serves, then replaces
//! machines one at a time, so the previous release serves on this tree's schema for the whole
//! deploy (README: Changing the schema). The drill plays that on one database:
//!
//! 1. the previous release migrates it and serves under a steady load of signed clients
//!    (registrations, uploads, downloads, lists, deletes);
//! 2. this tree's `migrate` runs beside it, and the previous release's own `smoke-test` runs
//!    against it;
//! 3. this release starts beside it and, once `/readyz` says so (Fly's health check), takes
//!    its share of the requests;
//! 4. the previous release gets SIGINT (fly.toml's kill_signal) with requests in flight. A
//!    request refused at connect goes to the other machine, as Fly's proxy retries it;
//! 5. the next deploy's hand-over: a second machine of this release starts, and the first one
//!    gets SIGINT under the same load.
//!
//! The gate: no response >= 500, the smoke test passes, every upload acknowledged before,
//! during and after the window reads back byte for byte from this release, and no request
//! sent to this release goes unanswered when it stops (behind Fly's proxy that would be a
//! PU02 error, a 502). A request the previous release leaves unanswered as it stops is
//! counted, not failed: its shutdown is its own, tested by its own drill, and releases before
//! the drain in src/http/connections.rs closed idle connections at the signal. The previous release is built by `.ci/previous-release.sh`
//! (`PREVIOUS_RELEASE_BIN` names one already built, as `.ci/run` does).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::common::binary::{self, Server};
use crate::common::{TEST_SECRET, TestDb, http_client, now, signed_request};

/// Signed clients, each one request at a time, as the app's users are.
const CLIENTS: usize = 8;
/// Answers before the window opens, answered by the previous release alone.
const BEFORE: usize = 300;
/// Answers the previous release gives on the new schema before this release starts.
const ON_THE_NEW_SCHEMA: usize = 200;
/// Answers this release gives while both serve, before the previous release is stopped.
const SIDE_BY_SIDE: usize = 100;
/// Answers after the previous release has exited, and again after this release's first machine has.
const AFTER: usize = 200;
/// Uploads an account makes before its client registers a new one: new accounts come in during
/// the window too, and no account reaches the retention limit.
const UPLOADS_PER_ACCOUNT: usize = 20;

/// Settings both releases know: no rate limits or retention in the way of the count.
const SERVER_ENV: &[(&str, &str)] = &[
    ("RATE_LIMIT_REGISTER_PER_MINUTE", "0"),
    ("RATE_LIMIT_USER_PER_MINUTE", "0"),
    ("RATE_LIMIT_IP_PER_MINUTE", "0"),
    ("MAX_BACKUPS_KEPT", "100000"),
];

/// The previous release's binary, built once per test run.
fn previous_release() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        if let Ok(path) = std::env::var("PREVIOUS_RELEASE_BIN") {
            return PathBuf::from(path);
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/previous-release.sh");
        let output = std::process::Command::new("bash")
            .arg(&script)
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("bash runs .ci/previous-release.sh");
        assert!(output.status.success(), "{} could not build the previous release", script.display());
        PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Before,
    During,
    After,
}

impl Phase {
    const ALL: [Phase; 3] = [Phase::Before, Phase::During, Phase::After];

    fn name(self) -> &'static str {
        match self {
            Phase::Before => "before",
            Phase::During => "during",
            Phase::After => "after",
        }
    }
}

/// The machines Fly's proxy spreads requests over, in turn.
struct Fleet {
    machines: Mutex<Vec<(usize, String)>>,
    turn: AtomicUsize,
    /// Answers per machine, by the index it was added under: 0 the previous release, 1 and 2
    /// this one.
    answered_by: [AtomicUsize; 3],
    answered: AtomicUsize,
    phase: AtomicU8,
    progress: Notify,
}

impl Fleet {
    fn new() -> Self {
        Self {
            machines: Mutex::new(Vec::new()),
            turn: AtomicUsize::new(0),
            answered_by: [AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0)],
            answered: AtomicUsize::new(0),
            phase: AtomicU8::new(Phase::Before as u8),
            progress: Notify::new(),
        }
    }

    fn add(&self, index: usize, address: &str) {
        self.machines.lock().unwrap().push((index, address.to_owned()));
    }

    fn remove(&self, index: usize) {
        self.machines.lock().unwrap().retain(|(i, _)| *i != index);
    }

    /// The machine whose turn it is, passing over those in `refused`.
    fn pick(&self, refused: &[usize]) -> Option<(usize, String)> {
        let machines = self.machines.lock().unwrap();
        let open: Vec<_> = machines.iter().filter(|(index, _)| !refused.contains(index)).collect();
        (!open.is_empty()).then(|| open[self.turn.fetch_add(1, Ordering::Relaxed) % open.len()].clone())
    }

    fn phase(&self) -> Phase {
        Phase::ALL[usize::from(self.phase.load(Ordering::SeqCst))]
    }

    fn enter(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::SeqCst);
    }

    fn record_answer(&self, machine: usize) {
        self.answered_by[machine].fetch_add(1, Ordering::SeqCst);
        self.answered.fetch_add(1, Ordering::SeqCst);
        self.progress.notify_waiters();
    }

    /// Waits until `count` more answers than `from` have come (from all machines, or one).
    async fn wait_for(&self, counter: &AtomicUsize, count: usize) {
        let target = counter.load(Ordering::SeqCst) + count;
        let waiting = async {
            loop {
                let notified = self.progress.notified();
                if counter.load(Ordering::SeqCst) >= target {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(120), waiting)
            .await
            .unwrap_or_else(|_| panic!("the load made no progress for 120 s"));
    }
}

impl Fleet {
    /// One machine's turn in a rolling deploy: a machine of this release starts beside machine
    /// `from` and, once ready, takes its share; then `from` gets SIGINT with requests in flight.
    /// Returns the new machine (index `to`); a bad exit or logged errors go to the lists.
    async fn replace(
        &self,
        from: usize,
        old: Machine,
        to: usize,
        database_url: &str,
        failures: &mut Vec<String>,
        logged_errors: &mut Vec<String>,
    ) -> Machine {
        let new = Machine::start(binary::command(), database_url).await;
        new.wait_until_ready().await;
        self.add(to, &new.address);
        self.wait_for(&self.answered_by[to], SIDE_BY_SIDE).await;
        let (code, errors) = old.stop().await;
        self.remove(from);
        if code != 0 {
            failures.push(format!("machine {from} exited {code} on SIGINT"));
        }
        logged_errors.extend(errors);
        new
    }
}

/// One answered request.
struct Sample {
    phase: Phase,
    status: u16,
    latency: Duration,
}

/// An upload the server acknowledged, to read back afterwards.
struct Acknowledged {
    id: Uuid,
    token: String,
    document: Vec<u8>,
    phase: Phase,
}

/// What the clients saw.
#[derive(Default)]
struct Tally {
    samples: Vec<Sample>,
    acknowledged: Vec<Acknowledged>,
    deleted: HashSet<Uuid>,
    /// Requests that got no answer: the machine they went to, and why.
    unanswered: Vec<(usize, String)>,
    /// Requests refused at connect and sent to the other machine.
    rerouted: usize,
    /// Answers >= 500, with their bodies.
    server_errors: Vec<String>,
}

/// A workout log of about 4-40 KiB, different for every client and count.
fn workout_log(client: usize, n: usize) -> Vec<u8> {
    let sets = 40 + (client * 31 + n * 17) % 400;
    let mut log = format!(r#"{{"client":{client},"n":{n},"sets":["#);
    for i in 0..sets {
        let separator = if i == 0 { "" } else { "," };
        log.push_str(&format!(
            r#"{separator}{{"exercise":"squat","set":{},"reps":{},"kg":{}.5}}"#,
            i % 5,
            5 + i % 8,
            40 + (i + n) % 60
        ));
    }
    log.push_str("]}");
    log.into_bytes()
}

/// One client: registers, then uploads, downloads, lists and deletes in turn until told to stop.
async fn client(number: usize, fleet: Arc<Fleet>, mut stop: watch::Receiver<bool>) -> Tally {
    let http = http_client();
    let mut tally = Tally::default();
    let mut token: Option<String> = None;
    let mut uploads_on_account = 0;
    let mut mine: Vec<Uuid> = Vec::new();
    for step in 0.. {
        if *stop.borrow_and_update() {
            break;
        }
        let (method, path, body) = match (&token, step % 6) {
            (None, _) => (Method::POST, "/api/users".to_owned(), Vec::new()),
            (Some(_), 0 | 1 | 4) => (Method::POST, "/api/backup".to_owned(), workout_log(number, step)),
            (Some(_), 2) => (Method::GET, "/api/backups/latest".to_owned(), Vec::new()),
            (Some(_), 3) => (Method::GET, "/api/backups?limit=5".to_owned(), Vec::new()),
            (Some(_), _) => match mine.first() {
                Some(id) => (Method::DELETE, format!("/api/backups/{id}"), Vec::new()),
                None => (Method::GET, "/api/users/me".to_owned(), Vec::new()),
            },
        };
        let phase = fleet.phase();
        let started = Instant::now();
        let Some((machine, response)) = send(&http, &fleet, &mut tally, &method, &path, token.as_deref(), &body).await
        else {
            continue;
        };
        let status = response.status();
        let answer = response.bytes().await;
        tally.samples.push(Sample { phase, status: status.as_u16(), latency: started.elapsed() });
        fleet.record_answer(machine);
        let Ok(answer) = answer else {
            tally.unanswered.push((machine, format!("{method} {path}: the body of a {status} was cut off")));
            continue;
        };
        if status.is_server_error() {
            tally.server_errors.push(format!("{method} {path} → {status}: {}", String::from_utf8_lossy(&answer)));
            continue;
        }
        let json = || serde_json::from_slice::<serde_json::Value>(&answer).unwrap();
        match (method.as_str(), status) {
            ("POST", StatusCode::CREATED) if path == "/api/users" => {
                token = Some(json()["token"].as_str().unwrap().to_owned());
                uploads_on_account = 0;
                mine.clear();
            }
            ("POST", StatusCode::CREATED | StatusCode::OK) => {
                let id: Uuid = json()["backup_id"].as_str().unwrap().parse().unwrap();
                tally.acknowledged.push(Acknowledged { id, token: token.clone().unwrap(), document: body, phase });
                mine.push(id);
                uploads_on_account += 1;
                if uploads_on_account == UPLOADS_PER_ACCOUNT {
                    token = None;
                }
            }
            ("DELETE", StatusCode::NO_CONTENT) => {
                tally.deleted.insert(mine.remove(0));
            }
            _ => {}
        }
    }
    tally
}

/// Sends one signed request to the machine whose turn it is; a machine that refuses the
/// connection (stopped, its listener closed) is skipped, as Fly's proxy does.
async fn send(
    http: &reqwest::Client,
    fleet: &Fleet,
    tally: &mut Tally,
    method: &Method,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> Option<(usize, reqwest::Response)> {
    let mut refused = Vec::new();
    while let Some((machine, address)) = fleet.pick(&refused) {
        let mut request = signed_request(http, &address, TEST_SECRET, now(), method.clone(), path, body)
            .header("content-type", "application/json");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        match request.send().await {
            Ok(response) => return Some((machine, response)),
            Err(error) if error.is_connect() => {
                tally.rerouted += 1;
                refused.push(machine);
            }
            Err(error) => {
                tally.unanswered.push((machine, format!("{method} {path} to {address}: {error:?}")));
                return None;
            }
        }
    }
    tally.unanswered.push((usize::MAX, format!("{method} {path}: every machine refused the connection")));
    None
}

/// A server process whose log is read as it comes (so it never blocks on a full pipe), its
/// error lines kept.
struct Machine {
    child: tokio::process::Child,
    address: String,
    errors: tokio::task::JoinHandle<Vec<String>>,
}

impl Machine {
    async fn start(program: tokio::process::Command, database_url: &str) -> Self {
        let Server { child, mut logs, address } = Server::start_program(program, database_url, &[], SERVER_ENV).await;
        let errors = tokio::spawn(async move {
            let mut errors = Vec::new();
            while let Ok(Some(line)) = logs.next_line().await {
                if line.contains(r#""level":"ERROR""#) {
                    errors.push(line);
                }
            }
            errors
        });
        Self { child, address, errors }
    }

    /// Sends SIGINT and waits for the exit; returns the exit code and the error log lines.
    async fn stop(mut self) -> (i32, Vec<String>) {
        let pid = self.child.id().expect("still running").to_string();
        let status = tokio::process::Command::new("kill").args(["-INT", &pid]).status().await.unwrap();
        assert!(status.success());
        let exit = tokio::time::timeout(Duration::from_secs(40), self.child.wait()).await.expect("exits").unwrap();
        (exit.code().expect("exited, not killed"), self.errors.await.unwrap())
    }

    /// Waits until `/readyz` answers 200, as Fly's health check waits before the machine takes traffic.
    async fn wait_until_ready(&self) {
        let http = http_client();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = http.get(format!("{}/readyz", self.address)).send().await.unwrap();
            if ready.status() == StatusCode::OK {
                return;
            }
            let why = ready.text().await.unwrap();
            assert!(Instant::now() < deadline, "this release never became ready beside the previous one: {why}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The drill's figures and the gate's verdict.
#[derive(Debug)]
struct Report {
    figures: serde_json::Value,
    failures: Vec<String>,
}

/// How far the drill goes after this tree's `migrate`.
enum Deploy {
    /// The whole deploy: this release starts and the previous one is stopped; then the next
    /// deploy's hand-over from this release to itself.
    Rolling,
    /// A scratch migration runs after `migrate` (SQL), and the previous release keeps serving
    /// alone: what the gate must refuse.
    WithScratchMigration(&'static str),
}

async fn drill(deploy: Deploy) -> Report {
    let previous = previous_release();
    let db = TestDb::empty().await;
    let env = [("DATABASE_URL", db.url.as_str())];
    let mut failures = Vec::new();

    let migrated = binary::command_of(previous).arg("migrate").envs(env).output().await.unwrap();
    assert!(migrated.status.success(), "the previous release's migrate: {}", String::from_utf8_lossy(&migrated.stderr));
    let old = Machine::start(binary::command_of(previous), &db.url).await;

    let fleet = Arc::new(Fleet::new());
    fleet.add(0, &old.address);
    let (stop, stopped) = watch::channel(false);
    let mut clients = JoinSet::new();
    for number in 0..CLIENTS {
        clients.spawn(client(number, fleet.clone(), stopped.clone()));
    }
    fleet.wait_for(&fleet.answered, BEFORE).await;

    fleet.enter(Phase::During);
    let window = Instant::now();
    let migrate = binary::run(&["migrate"], &env).await;
    let migrate_seconds = window.elapsed().as_secs_f64();
    if migrate.code != 0 {
        failures.push(format!("this release's migrate exited {}: {}", migrate.code, migrate.stderr));
        stop.send(true).unwrap();
        clients.join_all().await;
        return Report { figures: serde_json::Value::Null, failures };
    }
    if let Deploy::WithScratchMigration(sql) = deploy {
        let pool = db.pool().await;
        sqlx::raw_sql(sql).execute(&pool).await.expect("the scratch migration applies");
        pool.close().await;
    }
    let smoke = binary::command_of(previous)
        .args(["smoke-test", "--json"])
        .env("SMOKE_TEST_URL", &old.address)
        .env("APP_SIGNING_SECRET", TEST_SECRET)
        .output()
        .await
        .unwrap();
    if !smoke.status.success() {
        failures.push(format!(
            "the previous release's smoke-test failed on the new schema: {}{}",
            String::from_utf8_lossy(&smoke.stdout),
            String::from_utf8_lossy(&smoke.stderr)
        ));
    }
    fleet.wait_for(&fleet.answered, ON_THE_NEW_SCHEMA).await;

    let mut logged_errors = Vec::new();
    let mut window_seconds = None;
    let last = match deploy {
        Deploy::Rolling => {
            let new = fleet.replace(0, old, 1, &db.url, &mut failures, &mut logged_errors).await;
            window_seconds = Some(window.elapsed().as_secs_f64());
            fleet.enter(Phase::After);
            fleet.wait_for(&fleet.answered, AFTER).await;
            let next = fleet.replace(1, new, 2, &db.url, &mut failures, &mut logged_errors).await;
            fleet.wait_for(&fleet.answered, AFTER).await;
            next
        }
        Deploy::WithScratchMigration(_) => old,
    };
    stop.send(true).unwrap();
    let mut tally = Tally::default();
    for done in clients.join_all().await {
        tally.samples.extend(done.samples);
        tally.acknowledged.extend(done.acknowledged);
        tally.deleted.extend(done.deleted);
        tally.unanswered.extend(done.unanswered);
        tally.server_errors.extend(done.server_errors);
        tally.rerouted += done.rerouted;
    }

    let lost = read_back(&last.address, &tally).await;
    let (_, errors) = last.stop().await;
    logged_errors.extend(errors);

    let mut by_status = BTreeMap::<u16, usize>::new();
    for sample in &tally.samples {
        *by_status.entry(sample.status).or_default() += 1;
    }
    let p99 = |phase: Phase| {
        let mut latencies: Vec<Duration> =
            tally.samples.iter().filter(|s| s.phase == phase).map(|s| s.latency).collect();
        latencies.sort();
        latencies.get((latencies.len() * 99).div_ceil(100).saturating_sub(1)).map(|d| d.as_secs_f64() * 1000.0)
    };
    let acknowledged = |phase: Phase| tally.acknowledged.iter().filter(|a| a.phase == phase).count();
    if !tally.server_errors.is_empty() {
        failures.push(format!("{} responses >= 500, e.g. {}", tally.server_errors.len(), tally.server_errors[0]));
    }
    let (by_previous, by_this): (Vec<_>, Vec<_>) = tally.unanswered.iter().partition(|(machine, _)| *machine == 0);
    if let Some((_, example)) = by_this.first() {
        failures.push(format!("{} requests got no answer from this release, e.g. {example}", by_this.len()));
    }
    if !lost.is_empty() {
        failures.push(format!("{} acknowledged uploads do not read back, e.g. {}", lost.len(), lost[0]));
    }
    if !logged_errors.is_empty() {
        failures.push(format!("the servers logged {} errors, e.g. {}", logged_errors.len(), logged_errors[0]));
    }
    let figures = serde_json::json!({
        "previous_release": previous.parent().and_then(Path::file_name).map(|n| n.to_string_lossy().into_owned()),
        "requests": tally.samples.len() + tally.unanswered.len(),
        "by_status": by_status,
        "responses_5xx": tally.server_errors.len(),
        "unanswered": { "previous_release": by_previous.len(), "this_release": by_this.len() },
        "rerouted_at_connect": tally.rerouted,
        "uploads_acknowledged": Phase::ALL.map(|phase| (phase.name(), acknowledged(phase))).into_iter().collect::<BTreeMap<_, _>>(),
        "uploads_deleted": tally.deleted.len(),
        "lost": lost.len(),
        "migrate_seconds": migrate_seconds,
        "window_seconds": window_seconds,
        "p99_ms": Phase::ALL.map(|phase| (phase.name(), p99(phase))).into_iter().collect::<BTreeMap<_, _>>(),
    });
    eprintln!("deploy drill: {figures}");
    Report { figures, failures }
}

/// Every acknowledged upload not deleted since, fetched by id: the ones that do not come back
/// byte for byte.
async fn read_back(address: &str, tally: &Tally) -> Vec<String> {
    let http = http_client();
    let mut lost = Vec::new();
    for upload in tally.acknowledged.iter().filter(|upload| !tally.deleted.contains(&upload.id)) {
        let path = format!("/api/backups/{}", upload.id);
        let response = signed_request(&http, address, TEST_SECRET, now(), Method::GET, &path, b"")
            .bearer_auth(&upload.token)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = response.bytes().await.unwrap();
        if status != StatusCode::OK || body != upload.document {
            lost.push(format!("{} ({:?}): {status}", upload.id, upload.phase));
        }
    }
    lost
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_previous_release_serves_through_a_deploy_of_this_one_and_loses_nothing() {
    let report = drill(Deploy::Rolling).await;
    assert!(report.failures.is_empty(), "the deploy gate fails: {:#?}", report.failures);
    // The drill did what it says: uploads were acknowledged in every phase, by both releases.
    for phase in Phase::ALL {
        assert!(report.figures["uploads_acknowledged"][phase.name()].as_u64().unwrap() > 0, "{phase:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_gate_fails_on_a_migration_that_renames_a_column_the_previous_release_reads() {
    // As a scratch copy of migrations/ would carry it: the kind of change the rule forbids.
    let report = drill(Deploy::WithScratchMigration("ALTER TABLE backups RENAME COLUMN created_at TO taken_at;")).await;
    let failures = report.failures.join("\n");
    assert!(failures.contains("responses >= 500"), "{failures}");
    assert!(failures.contains("smoke-test failed"), "{failures}");
}
