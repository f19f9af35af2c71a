//! `ajepa`: the audio-jepa command line.

mod cli;

use clap::Parser;

/// Counts heap allocations so that `ajepa bench` can report allocations per hop.
#[global_allocator]
static ALLOC: cli::alloc_count::CountingAlloc = cli::alloc_count::CountingAlloc;

fn main() -> std::process::ExitCode {
    // Rust ignores SIGPIPE, so a write to a closed pipe (`ajepa listen | head -3`) becomes an
    // error or a `println!` panic. A command-line tool should end quietly there, as `cat` does:
    // the reader has all it wanted. Nothing is half-written by it (outputs are written atomically).
    #[cfg(unix)]
    // SAFETY: called first in main, before any thread exists; SIG_DFL is a valid disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let args = cli::Cli::parse();
    // symphonia logs every junk byte it skips as a warning; the decode error we report says what
    // matters (RUST_LOG=warn shows them). Colour codes only on a terminal: in a log file they are
    // noise (issue 15); NO_COLOR (no-color.org) turns them off too.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(args.log_filter()));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .init();
    match cli::run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // Elsewhere than Unix a closed stdout is an error; still not the user's problem.
        Err(e) if is_broken_pipe(&e) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
