use std::process::ExitCode;

use dailyreps_backup_server::cli::{Cli, Command, LogFormat};
use dailyreps_backup_server::commands::exit::{ExitStatus, FailureJson};
use dailyreps_backup_server::{commands, output, telemetry};

fn main() -> ExitCode {
    return_large_blocks_to_the_os();
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

/// Fixes glibc's mmap threshold at its default, 128 KiB, so large documents never stay with
/// the process after they are freed. Elsewhere (musl, macOS) a no-op.
///
/// glibc serves blocks of 128 KiB and more with mmap and returns them on free, but each time
/// such a block is freed it raises that threshold (up to 32 MiB): after the first 10 MiB
/// upload, documents come from the heap instead, and freed heap stays with the process. 64
/// concurrent 10 MiB uploads left 187 MiB resident after they ended (peak 249 MiB); with the
/// threshold fixed, 15 MiB (peak 101 MiB). Setting it explicitly turns the adjustment off.
fn return_large_blocks_to_the_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const MMAP_THRESHOLD_BYTES: libc::c_int = 128 * 1024;
        // SAFETY: mallopt only changes allocator settings, and runs before any other thread.
        let applied = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) };
        debug_assert_eq!(applied, 1, "glibc accepts this threshold");
    }
}
