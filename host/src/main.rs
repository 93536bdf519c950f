//! The `spindle` binary: parses the command line and hands over to the library.

use clap::Parser;
use spindle::cli::Cli;

fn main() -> std::process::ExitCode {
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
