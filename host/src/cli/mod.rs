//! The `spindle` command line: one file per subcommand.
//!
//! Flags follow `spin`'s names where Spin has the same command, so that a Spin
//! user's muscle memory works here.

mod build;
mod deploy;
mod up;

pub use build::BuildCommand;
pub use deploy::DeployCommand;
pub use up::UpCommand;

use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

/// Runs Spin apps of WebAssembly components.
#[derive(Parser, Debug)]
#[command(name = "spindle", version, about)]
pub struct Cli {
    /// Host log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "SPINDLE_LOG_FORMAT")]
    pub log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the app described by a Spin manifest.
    Up(UpCommand),
    /// Run each component's build command.
    Build(BuildCommand),
    /// Replace one component of a running host.
    Deploy(DeployCommand),
}

/// How the host writes its own log lines.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl Cli {
    /// Runs the chosen subcommand to completion.
    pub fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Up(up) => up.run(),
            Command::Build(build) => build.run(),
            Command::Deploy(deploy) => deploy.run(),
        }
    }
}

/// Sends the host's logs to stderr; `RUST_LOG` overrides the default `info`.
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,wasmtime_wasi_http=warn,cranelift=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
