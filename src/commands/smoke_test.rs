//! `smoke-test`: the user journey against a deployment, as CI runs it after every deploy.

use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use crate::cli::SmokeTestArgs;
use crate::client::ApiClient;
use crate::commands::{ExitStatus, UsageError};
use crate::config::SigningSecrets;
use crate::output::{self, Cell, Printer, Rows};
use crate::smoke::{Journey, StepReport};

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Serialize)]
struct Report<'a> {
    ok: bool,
    url: &'a str,
    steps: &'a [StepReport],
}

/// Runs the smoke test; fails (exit 1) if any step failed.
pub async fn run(args: SmokeTestArgs, printer: Printer) -> anyhow::Result<ExitStatus> {
    let url = args.url.or(args.dailyreps_url).ok_or_else(|| {
        UsageError("no deployment to test: pass --url, or set SMOKE_TEST_URL or DAILYREPS_URL".to_owned())
    })?;
    let secrets = SigningSecrets::from_setting(args.signing_secret.as_ref())?;
    let client = ApiClient::new(&url, secrets.signing(), REQUEST_TIMEOUT)?;
    // Signs like the app but with a secret the server cannot have.
    let wrong = ApiClient::new(&url, b"smoke-test: certainly not the deployment's secret", REQUEST_TIMEOUT)?;
    let mut journey = Journey::new(client, wrong, args.wait.0);

    let interrupted = tokio::select! {
        () = journey.run() => false,
        _ = tokio::signal::ctrl_c() => true,
    };
    journey.clean_up().await;

    let ok = journey.ok() && !interrupted;
    let report = Report { ok, url: &url, steps: journey.steps() };
    if args.json {
        output::print_json(&report).context("could not write the report")?;
    } else {
        printer.rows(&rows(journey.steps())).context("could not write the report")?;
    }
    if interrupted {
        output::failure("interrupted; cleaned up what this run had made");
        return Ok(ExitStatus::Interrupted);
    }
    if let Some(failed) = journey.steps().iter().find(|step| !step.ok) {
        let status = failed.status.map_or_else(|| "no answer".to_owned(), |s| s.to_string());
        output::failure(&format!(
            "step `{}` failed ({status}): {}",
            failed.name,
            failed.error.as_deref().unwrap_or("unknown")
        ));
        return Ok(ExitStatus::Failure);
    }
    printer.status(&format!("smoke test passed: {} steps against {url}", journey.steps().len()));
    Ok(ExitStatus::Success)
}

fn rows(steps: &[StepReport]) -> Rows {
    let mut rows = Rows::plain(&["Step", "OK", "Status", "Time (ms)", "Error"]);
    for step in steps {
        rows.push(vec![
            step.name.into(),
            Cell::verdict(step.ok, "yes", "NO"),
            step.status.map(|s| s.to_string()).unwrap_or_default().into(),
            step.ms.to_string().into(),
            step.error.clone().unwrap_or_default().into(),
        ]);
    }
    rows
}
