//! `serve`: the HTTP API, until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::cli::ServeArgs;
use crate::commands::dev;
use crate::config::{ApiSettings, DatabaseUrl};
use crate::db::{self, migrations};
use crate::http::{self, state::AppState};
use crate::output;
use crate::output::Printer;

/// Runs the server.
pub async fn run(mut args: ServeArgs, printer: Printer) -> anyhow::Result<()> {
    if args.remove_dev_data {
        return dev::remove_data(&args.dev_data_dir, args.yes, printer);
    }
    let dev_secret = match (&args.signing_secret, args.dev) {
        (None, true) => Some(dev::load_or_create_secret(&args.dev_data_dir)?),
        _ => None,
    };
    if let Some(secret) = &dev_secret {
        args.signing_secret = secret.text.parse().ok();
    }
    let settings = ApiSettings::try_from(&args)?;
    // Before the development PostgreSQL starts: a port in use fails at once, with nothing to undo.
    let listeners = Listeners::bind(&args, printer).await?;
    let (dev_database, url) = match (&args.database.database_url, args.dev) {
        (None, true) => {
            let database = dev::start_database(&args.dev_data_dir, printer).await?;
            let url = database.url.clone();
            (Some(database), url)
        }
        (raw, _) => (None, DatabaseUrl::from_setting(raw.as_ref())?),
    };

    let result = serve(&args, listeners, &url, settings, dev_secret.as_ref(), dev_database.as_ref()).await;
    if let Some(dev::DevDatabase { cluster, .. }) = dev_database {
        match cluster.stop() {
            Ok(()) => printer.status("stopped the development PostgreSQL"),
            Err(e) => tracing::warn!(error = %e, "could not stop the development PostgreSQL"),
        }
    }
    result
}

/// The API's and the metrics' listening sockets.
struct Listeners {
    api: TcpListener,
    metrics: TcpListener,
}

impl Listeners {
    /// Binds both. In `--dev`, an unspecified address (the defaults' 0.0.0.0 and [::]) becomes
    /// 127.0.0.1, so a laptop's server is not the whole network's, and a metrics port in use
    /// gives way to a free one, said on the terminal.
    async fn bind(args: &ServeArgs, printer: Printer) -> anyhow::Result<Self> {
        let local = |addr: SocketAddr| {
            if args.dev && addr.ip().is_unspecified() {
                SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, addr.port()))
            } else {
                addr
            }
        };
        let api = bind(local(args.bind.0), "PORT / --bind").await?;
        let wanted = local(args.metrics_bind);
        let metrics = match TcpListener::bind(wanted).await {
            Err(error) if args.dev && error.kind() == std::io::ErrorKind::AddrInUse => {
                let metrics = bind(SocketAddr::new(wanted.ip(), 0), "METRICS_BIND / --metrics-bind").await?;
                printer.status(&format!(
                    "port {} is in use: metrics on {} instead",
                    wanted.port(),
                    metrics.local_addr()?
                ));
                metrics
            }
            bound => {
                bound.with_context(|| format!("could not listen on {wanted} (set by METRICS_BIND / --metrics-bind)"))?
            }
        };
        Ok(Self { api, metrics })
    }
}

async fn serve(
    args: &ServeArgs,
    listeners: Listeners,
    url: &DatabaseUrl,
    settings: ApiSettings,
    dev_secret: Option<&dev::DevSecret>,
    dev_database: Option<&dev::DevDatabase>,
) -> anyhow::Result<()> {
    let pool_settings = db::PoolSettings { max_connections: args.pool_size, acquire_timeout: Duration::from_secs(5) };
    let pool = db::connect(url, pool_settings).await?;
    if args.dev {
        migrations::apply(&pool).await.context("could not apply the migrations")?;
    }
    let Listeners { api, metrics } = listeners;
    let (api_addr, metrics_addr) = (api.local_addr()?, metrics.local_addr()?);
    tracing::info!(%api_addr, %metrics_addr, database = %url, version = env!("CARGO_PKG_VERSION"), commit = env!("DAILYREPS_BUILD_COMMIT"), "listening");
    if args.dev {
        print_dev_banner(api_addr, metrics_addr, url, dev_secret, dev_database)?;
    }

    let (signalled, on_signal) = watch::channel(false);
    tokio::spawn(async move {
        if let Err(e) = shutdown_signal().await {
            tracing::error!(error = %e, "cannot listen for shutdown signals");
        }
        let _ = signalled.send(true);
    });
    let state = AppState::new(pool.clone(), settings);
    let server = http::serve(api, metrics, state, wait_for(on_signal.clone()));
    let grace = args.shutdown_grace.duration;
    tokio::select! {
        result = server => result.context("the server failed")?,
        () = async { wait_for(on_signal).await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_seconds = grace.as_secs(), "requests still in flight after the grace period; exiting anyway");
        }
    }
    pool.close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn bind(addr: SocketAddr, setting: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("could not listen on {addr} (set by {setting})"))
}

/// Resolves on SIGINT (Fly's default kill signal, and Ctrl-C) or SIGTERM.
async fn shutdown_signal() -> std::io::Result<()> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let name = tokio::select! {
        _ = interrupt.recv() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    };
    tracing::info!(signal = name, "shutting down: no new connections; finishing requests in flight");
    Ok(())
}

async fn wait_for(mut signalled: watch::Receiver<bool>) {
    // An error means the sender is gone, which only happens after it sent `true`.
    let _ = signalled.wait_for(|signalled| *signalled).await;
}

fn print_dev_banner(
    api: SocketAddr,
    metrics: SocketAddr,
    url: &DatabaseUrl,
    dev_secret: Option<&dev::DevSecret>,
    dev_database: Option<&dev::DevDatabase>,
) -> anyhow::Result<()> {
    let local = |addr: SocketAddr| {
        if addr.ip().is_unspecified() { format!("127.0.0.1:{}", addr.port()) } else { addr.to_string() }
    };
    let api_url = format!("http://{}", local(api));
    let mut text = format!(
        "\nDailyReps backup server, development mode\n  API:      {api_url}\n  Metrics:  http://{metrics}/metrics\n  Database: {url}\n",
        metrics = local(metrics),
    );
    if let Some(database) = dev_database {
        text.push_str(&format!("            (data kept in {})\n", database.cluster.data_dir().display()));
    }
    // What `request`, `inspect` and the rest read, ready to paste into another shell. The
    // database URL only for the private cluster, whose password is in a file PGPASSFILE names
    // (a given URL may hold one). No secret is printed, not even the dev one: the shell reads
    // it from its file, so a shared screen or a pasted terminal log gives nothing away.
    text.push_str(&format!("  In another shell:\n    export DAILYREPS_URL={api_url}\n"));
    if let Some(database) = dev_database {
        text.push_str(&format!("    export DATABASE_URL={}\n", database.cluster.url(dev::DEV_DATABASE)));
        text.push_str(&format!("    export PGPASSFILE={}\n", output::shell_word(&database.pgpass)));
    }
    if let Some(secret) = dev_secret {
        text.push_str(&format!("    export APP_SIGNING_SECRET=\"$(cat {})\"\n", output::shell_word(&secret.path)));
    }
    text.push_str(&format!(
        "  Try it:\n    curl -i {api_url}/readyz\n    cargo run -q --release -- request POST /api/users\nPress Ctrl-C to stop.\n\n"
    ));
    output::write_stdout(&text).context("could not write to stdout")
}
