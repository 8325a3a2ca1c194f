//! The dead-man's switch of scheduled jobs (`backup-db`, `inspect health`), in healthchecks.io's
//! convention: `URL/start` when a run begins, `URL` when it succeeds, `URL/fail` (with the
//! error) when it fails. The monitor raises the alarm on a failure, or when the success stops
//! coming. A ping that fails is logged and never fails the job.

use std::time::Duration;

/// How long one ping may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The most of an error sent with `/fail`.
const MAX_ERROR_BYTES: usize = 10_000;

/// Where to ping.
pub struct Ping {
    url: String,
    http: reqwest::Client,
}

impl Ping {
    /// A ping to `url` (e.g. `https://hc-ping.com/<uuid>`).
    pub fn new(url: &str) -> Option<Self> {
        crate::client::use_ring_for_tls();
        let http = reqwest::Client::builder().timeout(TIMEOUT).build().ok()?;
        Some(Self { url: url.trim_end_matches('/').to_owned(), http })
    }

    /// The run began.
    pub async fn start(&self) {
        self.send("/start", String::new()).await;
    }

    /// The run succeeded; `summary` goes along for the monitor's log.
    pub async fn success(&self, summary: String) {
        self.send("", summary).await;
    }

    /// The run failed with `error`.
    pub async fn fail(&self, error: &str) {
        let mut body = error.to_owned();
        body.truncate(body.floor_char_boundary(MAX_ERROR_BYTES));
        self.send("/fail", body).await;
    }

    async fn send(&self, suffix: &str, body: String) {
        let url = format!("{}{suffix}", self.url);
        match self.http.post(&url).body(body).send().await.and_then(reqwest::Response::error_for_status) {
            Ok(_) => {}
            // The URL itself may carry a secret (the check's id): say where, not what.
            Err(error) => {
                tracing::warn!(error = %error.without_url(), "the ping{suffix} failed; carrying on")
            }
        }
    }
}
