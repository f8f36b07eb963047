use std::process::ExitCode;
use std::time::Duration;

use clap::Parser as _;

#[global_allocator]
static HEAP: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    listings::allocator::bound_glibc_arenas();
    // Only the working directory's .env, not one found in a parent directory.
    if let Err(e) = dotenvy::from_path(".env")
        && !e.not_found()
    {
        eprintln!("error: cannot read .env: {e}");
        return ExitCode::FAILURE;
    }
    listings::cli::unset_empty_settings();
    let cli = listings::cli::Cli::parse();
    listings::logging::init(cli.global.log_format);
    // One worker: a single-threaded scheduler, which is fairer to many connections
    // (no hand-off between threads, no LIFO slot) and cheaper per request.
    let mut runtime = match cli.global.workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(workers) => {
            let mut runtime = tokio::runtime::Builder::new_multi_thread();
            runtime.worker_threads(usize::from(workers));
            runtime
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(listings::cli::run(cli));
    // Tasks still running (connections past the shutdown timeout, a blocking SQLite
    // call) must not keep the process from exiting.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
