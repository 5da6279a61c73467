//! Command-line grammar (clap) and dispatch to the command modules. Owns the mapping from
//! engine errors to the single printed report and exit code.

mod pack;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use stella_engine::{Code, Diagnostics};

#[derive(Debug, Parser)]
#[command(
    name = "stella",
    version,
    about = "A git-native workflow engine: packs, signed approvals, verifiable runs"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check and plan task packs
    #[command(subcommand)]
    Pack(PackCommand),
}

#[derive(Debug, Subcommand)]
enum PackCommand {
    /// Check a pack and report every problem with file, line, column and field
    Validate {
        /// The pack directory (or its name under packs/)
        pack: PathBuf,
        /// Print the result as JSON
        #[arg(long)]
        json: bool,
    },
    /// Plan a pack with inputs: the plan hash, the approvals and secrets it needs, its steps
    Plan(PlanArgs),
}

#[derive(Debug, Args)]
struct PlanArgs {
    /// The pack directory (or its name under packs/)
    pack: PathBuf,
    /// Inputs as a YAML or JSON mapping of names to values
    #[arg(long, value_name = "FILE")]
    inputs: Option<PathBuf>,
    /// Print the summary and the full plan as JSON
    #[arg(long)]
    json: bool,
}

/// Why a command stopped: located problems in user files, or one error.
#[derive(Debug)]
pub enum Failure {
    Diags(Diagnostics),
    One { code: Code, message: String },
}

impl Failure {
    pub fn one(code: Code, message: impl Into<String>) -> Failure {
        Failure::One {
            code,
            message: message.into(),
        }
    }

    pub fn exit_code(&self) -> u8 {
        let code = match self {
            Failure::Diags(d) => d.code(),
            Failure::One { code, .. } => *code,
        };
        u8::try_from(code.exit_code()).unwrap_or(1)
    }
}

impl From<Diagnostics> for Failure {
    fn from(d: Diagnostics) -> Self {
        Failure::Diags(d)
    }
}

/// Runs a parsed command; the `Ok` value is the exit code.
pub fn run(cli: Cli) -> Result<u8, Failure> {
    match cli.command {
        Command::Pack(PackCommand::Validate { pack, json }) => pack::validate(&pack, json),
        Command::Pack(PackCommand::Plan(a)) => pack::plan(&a.pack, a.inputs.as_deref(), a.json),
    }
}
