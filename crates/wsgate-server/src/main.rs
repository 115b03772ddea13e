//! `wsgate`: a thin shell over the server library — parse the command line, set up logging,
//! run.

use clap::Parser;
use tracing_subscriber::EnvFilter;
use wsgate_server::cli;

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
    // Log lines are handed to a writer thread: the event loop never blocks on stderr, and
    // under load many lines share one write. The guard flushes what is left at exit.
    let (writer, _flush_on_exit) = tracing_appender::non_blocking(
        std::io::BufWriter::with_capacity(64 * 1024, std::io::stderr()),
    );
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
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
        logs.init();
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
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
