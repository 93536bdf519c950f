//! The `spindle` binary: parses the command line and hands over to the library.

use clap::Parser;
use spindle::cli::Cli;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    spindle::cli::init_logging(cli.log_format);
    match cli.run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}` keeps the whole context chain on one line.
            eprintln!("Error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
