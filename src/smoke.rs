//! The smoke test's journey: every step a user of the app goes through, against a real
//! deployment, timed and reported. It knows no database and no terminal.

use std::io::Write;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderValue, IF_NONE_MATCH};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde_json::Value;

use crate::client::{ApiClient, Call, ClientError};
use crate::config::HumanDuration;
use crate::encoding::{hex, sha256};

/// How one step went.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// What the step checks.
    pub name: &'static str,
    /// Whether it passed.
    pub ok: bool,
    /// The HTTP status it got, if it got one.
    pub status: Option<u16>,
    /// How long it took.
    pub ms: u64,
    /// Why it failed.
    pub error: Option<String>,
}

/// A step's failure: the status seen (if any) and what was wrong.
#[derive(Debug)]
struct Failure {
    status: Option<u16>,
    message: String,
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Self {
        Self { status: None, message: error.to_string() }
    }
}

type StepResult<T> = Result<(u16, T), Failure>;

/// An answer, read whole.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    async fn read(response: reqwest::Response) -> Result<Self, Failure> {
        let (status, headers) = (response.status(), response.headers().clone());
        let body = response
            .bytes()
            .await
            .map_err(|e| Failure { status: Some(status.as_u16()), message: format!("reading the answer: {e}") })?;
        Ok(Self { status, headers, body })
    }

    /// The answer if its status is `expected`; else a failure quoting the error body.
    fn expect(self, expected: StatusCode) -> Result<Self, Failure> {
        if self.status == expected {
            return Ok(self);
        }
        let detail = serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|body| {
                Some(format!("{}: {}", body["error"]["code"].as_str()?, body["error"]["message"].as_str()?))
            })
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).chars().take(200).collect());
        Err(Failure {
            status: Some(self.status.as_u16()),
            message: format!("expected {expected}, got {}: {detail}", self.status),
        })
    }

    fn json(&self) -> Result<Value, Failure> {
        serde_json::from_slice(&self.body).map_err(|e| self.fail(format!("the answer is not JSON: {e}")))
    }

    fn fail(&self, message: impl Into<String>) -> Failure {
        Failure { status: Some(self.status.as_u16()), message: message.into() }
    }

    fn ok<T>(&self, value: T) -> StepResult<T> {
        Ok((self.status.as_u16(), value))
    }
}

/// The journey against one deployment.
pub struct Journey {
    session: Session,
    log: StepLog,
    wait: Duration,
    account_deleted: bool,
}

/// Who the journey talks to, and as whom.
struct Session {
    client: ApiClient,
    wrong_client: ApiClient,
    token: Option<String>,
}

impl Session {
    /// A request without body or extra headers that must answer `expected`.
    async fn expect(&self, method: Method, path: &str, expected: StatusCode) -> Result<Answer, Failure> {
        self.call(method, path, Vec::new(), HeaderMap::new()).await?.expect(expected)
    }

    async fn call(&self, method: Method, path: &str, body: Vec<u8>, headers: HeaderMap) -> Result<Answer, Failure> {
        let call = Call { path_and_query: path, body, token: self.token.as_deref(), headers };
        Answer::read(self.client.send(method, call).await?).await
    }
}

/// The steps taken so far.
#[derive(Default)]
struct StepLog(Vec<StepReport>);

impl StepLog {
    async fn step<T>(&mut self, name: &'static str, run: impl Future<Output = StepResult<T>>) -> Option<T> {
        let started = Instant::now();
        let result = run.await;
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (report, value) = match result {
            Ok((status, value)) => (StepReport { name, ok: true, status: Some(status), ms, error: None }, Some(value)),
            Err(failure) => {
                (StepReport { name, ok: false, status: failure.status, ms, error: Some(failure.message) }, None)
            }
        };
        self.0.push(report);
        value
    }
}

/// A test document that no other run uploads (dedupe would short-circuit a repeated one).
fn document() -> Vec<u8> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    format!(r#"{{"smoke_test": true, "at": {now}, "workouts": [{{"name": "squat", "sets": [5, 5, 5]}}], "note": "ünïcødé ✓"}}"#)
        .into_bytes()
}

impl Journey {
    /// A journey signing with `secret` (and, for the refusal step, with a wrong one).
    pub fn new(client: ApiClient, wrong_client: ApiClient, wait: Duration) -> Self {
        let session = Session { client, wrong_client, token: None };
        Self { session, log: StepLog::default(), wait, account_deleted: false }
    }

    /// The steps so far.
    pub fn steps(&self) -> &[StepReport] {
        &self.log.0
    }

    /// Walks the journey; stops at the first failed step. Call [`Self::clean_up`] afterwards.
    pub async fn run(&mut self) {
        self.walk().await;
    }

    async fn walk(&mut self) -> Option<()> {
        let log = &mut self.log;
        let session = &self.session;
        log.step("health", wait_for_health(&session.client, self.wait)).await?;
        log.step("readiness", async {
            let answer = session.expect(Method::GET, "/readyz", StatusCode::OK).await?;
            answer.ok(())
        })
        .await?;
        let token = log
            .step("register", async {
                let answer = session.expect(Method::POST, "/api/users", StatusCode::CREATED).await?;
                let token = answer.json()?["token"]
                    .as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| answer.fail("no token in the answer"))?;
                answer.ok(token)
            })
            .await?;
        self.session.token = Some(token);
        let (log, session) = (&mut self.log, &self.session);
        let max_bytes = log
            .step("account", async {
                let answer = session.expect(Method::GET, "/api/users/me", StatusCode::OK).await?;
                let max = answer.json()?["limits"]["max_backup_bytes"]
                    .as_u64()
                    .ok_or_else(|| answer.fail("no limits in the answer"))?;
                answer.ok(max)
            })
            .await?;

        let doc = document();
        let digest = hex(&sha256(&doc));
        let mut upload_headers = json_headers();
        upload_headers.insert("idempotency-key", HeaderValue::from_static("smoke-test-upload"));
        let backup_id = log
            .step("upload", async {
                let answer = session
                    .call(Method::POST, "/api/backup", doc.clone(), upload_headers.clone())
                    .await?
                    .expect(StatusCode::CREATED)?;
                let body = answer.json()?;
                if body["sha256"] != digest.as_str() {
                    return Err(answer.fail(format!("stored sha256 {} is not the document's {digest}", body["sha256"])));
                }
                let id = body["backup_id"].as_str().map(str::to_owned).ok_or_else(|| answer.fail("no backup_id"))?;
                answer.ok(id)
            })
            .await?;
        log.step("idempotent retry", async {
            let answer = session
                .call(Method::POST, "/api/backup", doc.clone(), upload_headers.clone())
                .await?
                .expect(StatusCode::CREATED)?;
            if answer.headers.get("idempotent-replayed").is_none_or(|v| v != "true") {
                return Err(answer.fail("no Idempotent-Replayed: true"));
            }
            if answer.json()?["backup_id"] != backup_id.as_str() {
                return Err(answer.fail("the retry answered another backup_id"));
            }
            answer.ok(())
        })
        .await?;
        log.step("list", async {
            let answer = session.expect(Method::GET, "/api/backups?limit=10", StatusCode::OK).await?;
            let listed = answer.json()?["backups"]
                .as_array()
                .is_some_and(|list| list.iter().any(|b| b["backup_id"] == backup_id.as_str()));
            if !listed {
                return Err(answer.fail("the new backup is not listed"));
            }
            answer.ok(())
        })
        .await?;
        let etag = log
            .step("restore", async {
                let answer = session.expect(Method::GET, "/api/backups/latest", StatusCode::OK).await?;
                if hex(&sha256(&answer.body)) != digest {
                    return Err(answer.fail("the restored document's sha256 differs from the upload's"));
                }
                let etag = answer.headers.get("etag").cloned().ok_or_else(|| answer.fail("no ETag"))?;
                answer.ok(etag)
            })
            .await?;
        log.step("not modified", async {
            let mut headers = HeaderMap::new();
            headers.insert(IF_NONE_MATCH, etag.clone());
            let answer = session
                .call(Method::GET, "/api/backups/latest", Vec::new(), headers)
                .await?
                .expect(StatusCode::NOT_MODIFIED)?;
            answer.ok(())
        })
        .await?;
        log.step("bad signature refused", async {
            let call = Call { path_and_query: "/api/users", ..Call::default() };
            let answer = Answer::read(session.wrong_client.send(Method::POST, call).await?)
                .await?
                .expect(StatusCode::UNAUTHORIZED)?;
            if answer.json()?["error"]["code"] != "bad_signature" {
                return Err(answer.fail("refused, but not as bad_signature"));
            }
            answer.ok(())
        })
        .await?;
        log.step("oversized refused", async {
            let mut headers = json_headers();
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            let body = gzip_of_size(max_bytes + 1)
                .map_err(|e| Failure { status: None, message: format!("building the body: {e}") })?;
            let answer = session
                .call(Method::POST, "/api/backup", body, headers)
                .await?
                .expect(StatusCode::PAYLOAD_TOO_LARGE)?;
            answer.ok(())
        })
        .await?;
        log.step("delete backup", async {
            let path = format!("/api/backups/{backup_id}");
            let answer = session.expect(Method::DELETE, &path, StatusCode::NO_CONTENT).await?;
            answer.ok(())
        })
        .await?;
        log.step("delete account", async {
            let answer = session.expect(Method::DELETE, "/api/users/me", StatusCode::NO_CONTENT).await?;
            answer.ok(())
        })
        .await?;
        self.account_deleted = true;
        self.log
            .step("token refused", async {
                let answer = self.session.expect(Method::GET, "/api/users/me", StatusCode::UNAUTHORIZED).await?;
                answer.ok(())
            })
            .await
    }

    /// Deletes the account this run made, if a failure or an interruption left it behind.
    pub async fn clean_up(&mut self) {
        if self.session.token.is_none() || self.account_deleted {
            return;
        }
        let session = &self.session;
        let deleted = self
            .log
            .step("clean up", async {
                let answer = session.expect(Method::DELETE, "/api/users/me", StatusCode::NO_CONTENT).await?;
                answer.ok(())
            })
            .await;
        self.account_deleted = deleted.is_some();
    }

    /// Whether every step passed and nothing was left behind.
    pub fn ok(&self) -> bool {
        let steps = self.steps();
        !steps.is_empty() && steps.iter().all(|step| step.ok) && steps.iter().all(|step| step.name != "clean up")
    }
}

fn json_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers
}

/// A gzip body that decodes to a JSON object of `size` bytes: over the limit, small on the wire.
fn gzip_of_size(size: u64) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(b"{\"pad\": \"")?;
    let filler = vec![b' '; 64 * 1024];
    let mut left = size.saturating_sub(11);
    while left > 0 {
        let n = left.min(filler.len() as u64) as usize;
        encoder.write_all(&filler[..n])?;
        left -= n as u64;
    }
    encoder.write_all(b"\"}")?;
    encoder.finish()
}

/// Polls `/healthz` with backoff until it answers 200 or `wait` has passed.
async fn wait_for_health(client: &ApiClient, wait: Duration) -> StepResult<()> {
    let started = Instant::now();
    let deadline = started + wait;
    let mut pause = Duration::from_millis(250);
    let mut tries = 0;
    loop {
        tries += 1;
        // No try outlives the wait (a request alone may take 30 s); a last try still gets a moment.
        let room = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
        let call = Call { path_and_query: "/healthz", ..Call::default() };
        let last = match tokio::time::timeout(room, client.send(Method::GET, call)).await {
            Ok(Ok(response)) => {
                let answer = Answer::read(response).await?;
                match answer.expect(StatusCode::OK) {
                    Ok(answer) if answer.json()?["status"] == "ok" => return answer.ok(()),
                    Ok(answer) => answer.fail("the answer does not say ok"),
                    Err(failure) => failure,
                }
            }
            Ok(Err(error)) => error.into(),
            Err(_) => Failure { status: None, message: "no answer in time".to_owned() },
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let waited = started.elapsed().as_secs_f64();
            return Err(Failure {
                status: last.status,
                message: format!(
                    "no healthy answer in {waited:.1} s ({tries} tries, --wait {}): {}",
                    HumanDuration(wait),
                    last.message
                ),
            });
        }
        tokio::time::sleep(pause.min(left)).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}
