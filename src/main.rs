//! `ajepa`: the audio-jepa command line.

mod cli;

use clap::Parser;

/// Counts heap allocations so that `ajepa bench` can report allocations per hop.
#[global_allocator]
static ALLOC: cli::alloc_count::CountingAlloc = cli::alloc_count::CountingAlloc;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli::run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
