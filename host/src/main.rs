//! The `spindle` binary: parses the command line and hands over to the library.

use clap::Parser;
use spindle::cli::Cli;

fn main() -> std::process::ExitCode {
    keep_backtraces_for_panics_only();
    let cli = Cli::parse();
    let telemetry = match spindle::telemetry::init(cli.log_format) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("Error: {error:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let outcome = cli.run();
    // Sends the spans still queued before the process ends.
    drop(telemetry);
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}` keeps the whole context chain on one line.
            eprintln!("Error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// With `RUST_BACKTRACE=1`, every error value captures a backtrace, and
/// wasmtime makes one each time a store is dropped: a profile of the NATS
/// trigger (a store per message) spent 3% of its time unwinding. Errors are
/// reported through their context chain, so library backtraces are turned
/// off unless `RUST_LIB_BACKTRACE` asks for them; panics keep theirs.
fn keep_backtraces_for_panics_only() {
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: called first thing in `main`, before any other thread
        // exists that could read the environment concurrently.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
}
