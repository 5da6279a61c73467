//! The `stella` command line: parses arguments, calls the engine, prints results, and turns
//! every failure into one `error[ERR_…]` report and one exit code. Only this crate prints.

mod cli;
mod daemon;
mod display;
mod failure;
mod http;
mod repo;
mod telemetry;
mod webhooks;

use std::process::ExitCode;

use clap::Parser;

use cli::Cli;
use failure::{Failure, Outcome};
use stella_engine::code::exit;

fn main() -> ExitCode {
    // Output piped into `head` should end the program quietly, as it does other CLI tools.
    // SAFETY: restoring the default disposition of SIGPIPE before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // `stella __stella-rego-eval`: this binary as the bounded evaluator of one Rego policy.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == stella_engine::rego::bounded::CHILD_ARG)
    {
        return ExitCode::from(stella_engine::rego::bounded::serve());
    }
    // Policies are evaluated in a child of this very binary, bounded in time and memory.
    stella_engine::rego::bounded::use_program("/proc/self/exe".into());
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let text = e.render().to_string();
            let text = text.strip_prefix("error: ").unwrap_or(&text);
            eprint!("error[{}]: {text}", stella_engine::Code::Usage);
            return ExitCode::from(stella_engine::Code::Usage.exit_code());
        }
    };
    init_tracing();
    let json = cli.wants_json();
    ExitCode::from(match cli::run(cli) {
        Ok(outcome) => conclude(outcome),
        Err(failure) => {
            report(&failure);
            if json {
                println!("{}", failure.to_json());
            }
            failure.code().exit_code()
        }
    })
}

/// Prints what an outcome adds to the command's own report (its problems) and says which
/// exit code it ends with.
fn conclude(outcome: Outcome) -> u8 {
    match outcome {
        Outcome::Done => exit::OK,
        Outcome::Failed {
            code,
            problems,
            summary,
        } => {
            for p in &problems {
                eprintln!("error[{code}]: {p}");
            }
            if let Some(s) = summary {
                eprintln!("{s}");
            }
            code.exit_code()
        }
        Outcome::ChecksFailed => exit::FAILED,
        Outcome::Waiting => exit::WAITING,
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STELLA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // The HTTP client of notifications logs hosts and headers: a URL can be a secret
    // (`urlSecret`), so its records never pass, whatever STELLA_LOG says.
    let filter = ["ureq=off", "ureq_proto=off", "rustls=off"]
        .into_iter()
        .fold(filter, |f, d| f.add_directive(d.parse().expect("a valid directive")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Prints a failure once, each problem as `error[ERR_…]: where: what (hint)`.
fn report(failure: &Failure) {
    match failure {
        Failure::Diags(diags) => {
            for d in diags.iter() {
                eprintln!("error[{}]: {d}", d.code);
            }
            if diags.len() > 1 {
                eprintln!("{} problems found", diags.len());
            }
        }
        Failure::One { code, message } => eprintln!("error[{code}]: {message}"),
    }
}
