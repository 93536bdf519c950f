//! The `spindle` command line: one file per subcommand.
//!
//! Flags follow `spin`'s names where Spin has the same command, so that a Spin
//! user's muscle memory works here.

mod build;
mod deploy;
mod new;
mod templates;
mod up;
mod watch;

pub use build::BuildCommand;
pub use deploy::DeployCommand;
pub use new::{AddCommand, NewCommand};
pub use up::UpCommand;
pub use watch::WatchCommand;

use clap::{Parser, Subcommand, ValueEnum};

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
    /// Run the app, rebuilding and redeploying each component whose sources change.
    Watch(WatchCommand),
    /// Run each component's build command.
    Build(BuildCommand),
    /// Replace one component of a running host.
    Deploy(DeployCommand),
    /// Create a new app from a template.
    New(NewCommand),
    /// Add a component from a template to an existing app.
    Add(AddCommand),
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
            Command::Watch(watch) => watch.run(),
            Command::Build(build) => build.run(),
            Command::Deploy(deploy) => deploy.run(),
            Command::New(new) => new.run(),
            Command::Add(add) => add.run(),
        }
    }
}
