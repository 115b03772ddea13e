//! `wsgate`: a thin shell over the server library — parse the command line, set up logging,
//! run.

use clap::Parser;
use tracing_subscriber::EnvFilter;
use wsgate_server::{cli, log_format, log_writer};

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let filter = EnvFilter::try_from_env("WSGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match std::env::var("WSGATE_LOG_FORMAT").as_deref() {
        Err(_) | Ok("" | "text") => false,
        Ok("json") => true,
        Ok(other) => {
            eprintln!("error: WSGATE_LOG_FORMAT: `{other}` is neither `text` nor `json`");
            return std::process::ExitCode::FAILURE;
        }
    };
    // Log lines are written to stderr by a thread of their own, in batches: the event loop
    // never blocks on stderr nor wakes a thread per line. The guard writes the rest at exit.
    let (writer, _flush_on_exit) = match log_writer::LogWriter::start(std::io::stderr()) {
        Ok(started) => started,
        Err(e) => {
            eprintln!("error: cannot start the log writer thread: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_timer(log_format::Timestamp)
        .with_ansi(false);
    if json {
        // One JSON object per line: timestamp, level, target, message and the same fields
        // as the text lines, at the top level (for log shippers).
        logs.json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init();
    } else {
        // The default line format, written cheaper (`log_format`).
        logs.fmt_fields(log_format::Fields).init();
    }
    wsgate::install_crypto();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // The command runs as a task, not on this thread: the accept loop then shares a worker
    // with the connections it spawns (no cross-thread wake-up per accepted socket).
    let done = runtime.block_on(async { tokio::spawn(cli::run(cli)).await });
    match done {
        Ok(Ok(())) => std::process::ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
