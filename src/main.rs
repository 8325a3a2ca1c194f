use std::process::ExitCode;

use dailyreps_backup_server::cli::{Cli, Command, LogFormat};
use dailyreps_backup_server::commands::exit::{ExitStatus, FailureJson};
use dailyreps_backup_server::{commands, output, telemetry};

fn main() -> ExitCode {
    // clap exits with 2 on usage errors and 0 for --help and --version.
    let cli = Cli::parse_args();
    let default_filter = match cli.command {
        Command::Serve(_) => "info,sqlx=warn",
        _ => "warn",
    };
    telemetry::init(cli.log_format.map(|format| format == LogFormat::Json), default_filter);
    let json = cli.json();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(commands::run(cli));
    // A blocking task still waiting on a database that Ctrl-C walked away from must not keep
    // the process alive.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    let status = match result {
        Ok(status) => status,
        Err(error) => {
            let status = ExitStatus::of(&error);
            let message = commands::describe_error(&error);
            eprintln!("error: {message}");
            if json {
                // Scripts read stdout: the failure is a document too, never nothing.
                let _ = output::print_json(&FailureJson::new(status, &message));
            }
            status
        }
    };
    ExitCode::from(status.code())
}

/// The allocator: jemalloc, which keeps memory freed by one upload for the next and gives what
/// stays unused back to the system within about 100 ms. glibc's either returned every large
/// block on free (the fixed mmap threshold: about 450 page faults, each zero-filling a page, for
/// every 1 MiB upload) or, with its threshold left to adjust, kept the peak of the largest
/// uploads for good (187 MiB resident after 64 concurrent 10 MiB uploads had ended). Figures in
/// bench/README.md, "The allocator".
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read once at its first allocation (the C `malloc_conf`, a `const char *`,
/// named with the crate's symbol prefix): a background thread returns dirty pages that stayed
/// unused for 100 ms, at once rather than lazily (muzzy pages would still count as resident).
/// A second kept `backup-db` at 39-47 MiB resident, past its 32 MB, where 100 ms keeps it at
/// 25-26 with the server's upload rate unchanged; 0 slowed the dump by a fifth (bench/README.md,
/// "The allocator's decay").
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &u8 = &b"background_thread:true,dirty_decay_ms:100,muzzy_decay_ms:0\0"[0];
