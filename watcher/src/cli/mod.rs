//! Command-line grammar (clap) and dispatch to the command modules. Each command prints its
//! own report and returns how it ended; `main` alone prints failures and decides exit codes.

mod approve;
mod audit;
mod bundle;
mod doctor;
mod evidence;
mod hook;
mod init;
mod init_ledger;
mod ledger;
mod notify;
mod pack;
mod provenance;
mod request;
mod resume;
mod run;
mod runs;
mod schedules;
mod serve;
mod sync;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::failure::{Failure, Outcome};

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
    /// Scaffold .stella/, packs/, runs/ and approvals/ and make a runner key (idempotent)
    Init {
        /// The repository directory (created and `git init`ed if needed)
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// The runner's private key (default: .git/stella/runner_ed25519, or STELLA_RUNNER_KEY)
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        /// Commit the runner's results to this branch only (ledger.branch), reading requests from `branch`
        #[arg(long, value_name = "NAME")]
        ledger_branch: Option<String>,
    },
    /// Check and plan task packs
    #[command(subcommand)]
    Pack(PackCommand),
    /// Request runs
    #[command(subcommand)]
    Run(RunCommand),
    /// Read runs from the ledger
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Check the ledger
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Show the schedules of .stella/schedules.yaml
    #[command(subcommand)]
    Schedules(SchedulesCommand),
    /// Watch a repository and execute the run requests committed to its branch
    Daemon(DaemonArgs),
    /// Serve the read-only runs API and streams of a clone, without a runner (executes nothing)
    Serve {
        /// The repository (any clone)
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        #[command(flatten)]
        http: HttpArgs,
        /// Follow the branch and the journals with file notifications (streams within
        /// milliseconds); without it streams look every 2 s
        #[arg(long)]
        watch: bool,
    },
    /// Check evidence offline
    #[command(subcommand)]
    Evidence(EvidenceCommand),
    /// Carry the repository across an air gap as git bundles
    #[command(subcommand)]
    Sync(SyncCommand),
    /// Check that this machine and repository are ready (tools, config, signers, runner key)
    Doctor {
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        /// Run one check (its id, e.g. check.runner.key; `--json` lists them) or one group: tools, sandbox, repository
        #[arg(long, value_name = "ID")]
        check: Option<String>,
        /// Print the results as JSON
        #[arg(long)]
        json: bool,
    },
    /// Notification targets (`notify:` in .stella/config.yaml)
    #[command(subcommand)]
    Notify(NotifyCommand),
    /// Sign an approval (or --reject) of a run's gate, bound to its plan hash
    Approve {
        /// The run id
        run: String,
        /// The gate: the approval id (e.g. security-review) or its gate step id
        #[arg(long)]
        gate: String,
        /// Your OpenSSH private key (unencrypted; otherwise sign with ssh-keygen, see docs/approvals.md)
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// Your principal in .stella/allowed_signers (default: the one listed for the key)
        #[arg(long)]
        principal: Option<String>,
        /// Reject instead of approve (one valid reject fails the run)
        #[arg(long)]
        reject: bool,
        #[arg(long)]
        comment: Option<String>,
        #[arg(long, default_value = ".")]
        repo: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum SchedulesCommand {
    /// Each schedule, whether it is enabled, its next slots and its last run
    List {
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum RunCommand {
    /// Plan a pack and write runs/<id>/request.yaml with the plan hash pinned
    Request {
        /// The pack directory (packs/<name> of this repository)
        pack: PathBuf,
        #[arg(long, value_name = "FILE")]
        inputs: Option<PathBuf>,
        /// The run id (default: <date>-<pack>-<random>)
        #[arg(long)]
        id: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum RunsCommand {
    /// Every run: id, pack, state, started, duration, waiting gate
    List {
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        #[arg(long)]
        json: bool,
        /// Only the N newest runs, newest first (by start time, a run not started yet first)
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        limit: Option<u32>,
    },
    /// One run: state, steps with status and attempts, gates, artifacts
    Show {
        run: String,
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// A run's log lines; -f follows the journal while the run goes on
    Logs {
        run: String,
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        #[arg(short, long)]
        follow: bool,
    },
    /// Pack a finished run's ledger, request, pack, approvals and signers into a deterministic
    /// archive (RUN -o FILE.tar.gz); or, with --since/--until --ndjson, every event of every run
    /// in a time window, one JSON object a line, then a manifest line (an audit)
    #[command(group(clap::ArgGroup::new("what").required(true).args(["run", "ndjson"])))]
    Export {
        #[arg(conflicts_with_all = ["since", "until", "ndjson"], requires = "output")]
        run: Option<String>,
        /// FILE.tar.gz for a run's archive; with --ndjson, a file instead of stdout
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Events at or after T (RFC 3339, e.g. 2026-12-01T00:00:00Z, or a date 2026-12-01)
        #[arg(long, value_name = "T", requires_all = ["until", "ndjson"])]
        since: Option<String>,
        /// Events before T (RFC 3339 or a date)
        #[arg(long, value_name = "T", requires_all = ["since", "ndjson"])]
        until: Option<String>,
        /// Write the window's events as NDJSON (the only format of an audit export)
        #[arg(long, requires_all = ["since", "until"])]
        ndjson: bool,
        #[arg(long, default_value = ".")]
        repo: PathBuf,
    },
    /// Write a new request for RUN's pack and inputs with `retryOf: RUN` (commit it to run)
    Retry {
        run: String,
        /// The new run id (default: <date>-<pack>-<random>)
        #[arg(long)]
        id: Option<String>,
        #[arg(long, default_value = ".")]
        repo: PathBuf,
    },
    /// Write a request that resumes a failed or cancelled RUN (`resumeOf: RUN`): its succeeded
    /// steps are reused, the rest run
    Resume {
        run: String,
        /// The new run id (default: <date>-<pack>-<random>)
        #[arg(long)]
        id: Option<String>,
        #[arg(long, default_value = ".")]
        repo: PathBuf,
    },
    /// Write runs/<id>/cancel.yaml (commit it to cancel the run)
    Cancel {
        run: String,
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum SyncCommand {
    /// Write a bundle of the branch and refs/notes/stella with what the other side lacks
    Export {
        #[arg(short, long, value_name = "FILE.bundle")]
        output: PathBuf,
        /// Include only commits after REV (default: after the last export to --to)
        #[arg(long, value_name = "REV")]
        since: Option<String>,
        /// Name of the other side, to remember what it already has
        #[arg(long, default_value = "default")]
        to: String,
        #[arg(long, default_value = ".")]
        repo: PathBuf,
    },
    /// Apply a bundle: verified, fast-forward only, ledger proven; on any error nothing changes
    Import {
        bundle: PathBuf,
        #[arg(long, default_value = ".")]
        repo: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum EvidenceCommand {
    /// Verify an exported run (FILE.tar.gz) or a run of this repository: signature, digests,
    /// plan hash, approvals
    Verify {
        /// FILE.tar.gz from `stella runs export`, or a run id
        target: String,
        /// Trust these signers instead of the archive's own .stella/allowed_signers
        #[arg(long, value_name = "FILE")]
        allowed_signers: Option<PathBuf>,
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum NotifyCommand {
    /// Send one signed test delivery to target ID (config at the branch tip); prints the HTTP status
    Test {
        /// The target id
        id: String,
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        /// Runner secrets (the signing key, a URL secret); otherwise STELLA_SECRET_<NAME>
        #[arg(long, value_name = "FILE")]
        secrets: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum LedgerCommand {
    /// Prove the ledger append-only over the branch's whole history
    Verify {
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        #[arg(long)]
        json: bool,
        /// Verify only the commits after the runner's signed checkpoint (.git/stella/checkpoint)
        #[arg(long)]
        since_checkpoint: bool,
    },
    /// Restore runner files a person's commit changed or deleted, as one signed runner commit
    Heal {
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        /// The runner key (default: STELLA_RUNNER_KEY, else .git/stella/runner_ed25519)
        #[arg(long)]
        key: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
struct DaemonArgs {
    /// The repository to watch
    #[arg(long, default_value = ".")]
    repo: PathBuf,
    /// Process everything that can progress, wait for it, and exit
    #[arg(long)]
    once: bool,
    /// Secrets as a YAML mapping (outside the repository); otherwise STELLA_SECRET_<NAME>
    #[arg(long, value_name = "FILE")]
    secrets: Option<PathBuf>,
    /// The runner's private key (default: .git/stella/runner_ed25519, or STELLA_RUNNER_KEY)
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// The safety poll interval (file events trigger scans at once)
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    poll: std::time::Duration,
    /// Time a stopped step gets between SIGTERM and SIGKILL
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    kill_grace: std::time::Duration,
    /// Work with this git remote: fetch, claim runs (so each runs once across runners), push results
    #[arg(long, value_name = "NAME")]
    remote: Option<String>,
    /// How long a runner's claim on a run holds without renewal
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    lease: std::time::Duration,
    /// Where run workspaces go (default: $XDG_STATE_HOME/stella/work/<repository key>)
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Keep the workspace of a failed run (others are removed after the run's final commit)
    #[arg(long)]
    keep_work: bool,
    /// Inject faults from this runner-local YAML file (kills, pauses, network drops, approval delays)
    #[arg(long, value_name = "FILE")]
    chaos: Option<PathBuf>,
    /// Also serve the read-only runs API and streams on ADDR (e.g. 127.0.0.1:7878)
    #[arg(long, value_name = "ADDR")]
    http: Option<String>,
    #[command(flatten)]
    http_access: HttpAccess,
}

/// Who may read what the HTTP edge serves.
#[derive(Debug, Args)]
struct HttpAccess {
    /// Require `Authorization: Bearer <token>` (the file's content) on every route but /healthz
    #[arg(long, value_name = "FILE")]
    http_token_file: Option<PathBuf>,
    /// Serve a non-loopback address without a token
    #[arg(long)]
    http_insecure: bool,
}

#[derive(Debug, Args)]
struct HttpArgs {
    /// The address to serve on (loopback unless a token or --http-insecure is given)
    #[arg(long, value_name = "ADDR")]
    http: String,
    #[command(flatten)]
    access: HttpAccess,
}

impl HttpAccess {
    fn settings(self, addr: String) -> crate::http::Settings {
        crate::http::Settings {
            addr,
            token_file: self.http_token_file,
            insecure: self.http_insecure,
        }
    }
}

#[derive(Debug, Subcommand)]
enum PackCommand {
    /// Check a pack and report every problem with file, line, column and field
    Validate(bundle::ValidateArgs),
    /// Make a signed, deterministic pack bundle (`*.stellapack`) to share a pack
    Bundle(bundle::BundleArgs),
    /// Verify a pack bundle and unpack it into packs/<name>/ with its provenance (commits nothing)
    Import(bundle::ImportArgs),
    /// Bundle a pack from another repository
    #[command(subcommand)]
    Mirror(bundle::MirrorCommand),
    /// Plan a pack with inputs: the plan hash, the approvals and secrets it needs, its steps
    Plan(PlanArgs),
    /// Run a pack on this machine, without git (approval gates wait unless --approve-local)
    Run(RunArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The pack directory (or its name under packs/)
    pack: PathBuf,
    /// Inputs as a YAML or JSON mapping of names to values
    #[arg(long, value_name = "FILE")]
    inputs: Option<PathBuf>,
    /// Secrets as a YAML mapping of names to values (keep it outside any repository);
    /// otherwise they are read from STELLA_SECRET_<NAME>
    #[arg(long, value_name = "FILE")]
    secrets: Option<PathBuf>,
    /// Append every event as NDJSON to FILE
    #[arg(long, value_name = "FILE")]
    events: Option<PathBuf>,
    /// Continue the interrupted run recorded in --events FILE
    #[arg(long, requires = "events")]
    resume: bool,
    /// Run directory (workspace, artifacts); default: a new directory under the system temp dir
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Pass approval gates without approvals (development only; recorded in the events)
    #[arg(long)]
    approve_local: bool,
    /// Most steps running at once (default: the number of cores)
    #[arg(long, value_name = "N", default_value_t = 0)]
    max_steps: usize,
    /// Time a stopped step gets between SIGTERM and SIGKILL
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    kill_grace: std::time::Duration,
    /// How steps are kept from this process: required (namespaces), strict (also Landlock), off
    #[arg(long, value_name = "MODE", default_value = "required", value_parser = parse_sandbox)]
    sandbox: stella_engine::config::SandboxPolicy,
}

fn parse_sandbox(s: &str) -> Result<stella_engine::config::SandboxPolicy, String> {
    use stella_engine::config::SandboxPolicy;
    match s {
        "required" => Ok(SandboxPolicy::Required),
        "off" => Ok(SandboxPolicy::Off),
        "strict" => Ok(SandboxPolicy::Strict {
            read: Vec::new(),
            write: Vec::new(),
        }),
        _ => Err("expected required, strict or off".into()),
    }
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    stella_engine::duration::parse_ms(s).map(std::time::Duration::from_millis)
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

impl Cli {
    /// Whether the command asked for JSON output (failures are then also printed as JSON).
    pub fn wants_json(&self) -> bool {
        match &self.command {
            Command::Pack(PackCommand::Validate(a)) => a.json,
            Command::Pack(PackCommand::Plan(a)) => a.json,
            Command::Pack(PackCommand::Run(_)) => false,
            Command::Runs(RunsCommand::List { json, .. } | RunsCommand::Show { json, .. }) => *json,
            Command::Ledger(LedgerCommand::Verify { json, .. }) => *json,
            Command::Evidence(EvidenceCommand::Verify { json, .. }) => *json,
            Command::Doctor { json, .. } => *json,
            Command::Schedules(SchedulesCommand::List { json, .. }) => *json,
            _ => false,
        }
    }
}

/// Runs a parsed command; the `Ok` value is the exit code.
pub fn run(cli: Cli) -> Result<Outcome, Failure> {
    match cli.command {
        Command::Init {
            dir,
            key,
            ledger_branch,
        } => init::init(&dir, key.as_deref(), ledger_branch.as_deref()),
        Command::Doctor { repo, key, check, json } => doctor::doctor(&repo, key.as_deref(), check.as_deref(), json),
        Command::Sync(SyncCommand::Export {
            output,
            since,
            to,
            repo,
        }) => sync::export(&repo, &output, since.as_deref(), &to),
        Command::Sync(SyncCommand::Import { bundle, repo }) => sync::import(&repo, &bundle),
        Command::Approve {
            run,
            gate,
            key,
            principal,
            reject,
            comment,
            repo,
        } => approve::approve(approve::Args {
            repo: &repo,
            run: &run,
            gate: &gate,
            key: &key,
            principal: principal.as_deref(),
            reject,
            comment: comment.as_deref(),
        }),
        Command::Run(RunCommand::Request { pack, inputs, id }) => {
            request::request(&pack, inputs.as_deref(), id.as_deref())
        }
        Command::Runs(RunsCommand::List { repo, json, limit }) => runs::list(&repo, json, limit),
        Command::Runs(RunsCommand::Show { run, repo, json }) => runs::show(&repo, &run, json),
        Command::Runs(RunsCommand::Logs { run, repo, follow }) => runs::logs(&repo, &run, follow),
        Command::Runs(RunsCommand::Export {
            run: Some(run),
            output: Some(output),
            repo,
            ..
        }) => evidence::export(&repo, &run, &output),
        Command::Runs(RunsCommand::Export {
            output,
            since,
            until,
            repo,
            ..
        }) => audit::export(&repo, since.as_deref(), until.as_deref(), output.as_deref()),
        Command::Runs(RunsCommand::Retry { run, id, repo }) => {
            resume::request(&repo, &run, id.as_deref(), resume::Of::Retry)
        }
        Command::Runs(RunsCommand::Resume { run, id, repo }) => {
            resume::request(&repo, &run, id.as_deref(), resume::Of::Resume)
        }
        Command::Evidence(EvidenceCommand::Verify {
            target,
            allowed_signers,
            repo,
            json,
        }) => evidence::verify(&target, allowed_signers.as_deref(), &repo, json),
        Command::Runs(RunsCommand::Cancel { run, repo, reason }) => runs::cancel(&repo, &run, reason.as_deref()),
        Command::Ledger(LedgerCommand::Verify {
            repo,
            json,
            since_checkpoint,
        }) => ledger::verify(&repo, json, since_checkpoint),
        Command::Notify(NotifyCommand::Test { id, repo, secrets }) => notify::test(&repo, &id, secrets.as_deref()),
        Command::Ledger(LedgerCommand::Heal { repo, key }) => ledger::heal(&repo, key.as_deref()),
        Command::Schedules(SchedulesCommand::List { repo, json }) => schedules::list(&repo, json),
        Command::Daemon(a) => crate::daemon::run(crate::daemon::Args {
            repo: a.repo,
            once: a.once,
            secrets: a.secrets,
            key: a.key,
            poll: a.poll,
            kill_grace: a.kill_grace,
            remote: a.remote,
            lease: a.lease,
            work_dir: a.work_dir,
            keep_work: a.keep_work,
            chaos: a.chaos,
            http: a.http.map(|addr| a.http_access.settings(addr)),
        }),
        Command::Serve { repo, http, watch } => serve::serve(&repo, http.access.settings(http.http), watch),
        Command::Pack(PackCommand::Validate(a)) => bundle::validate_command(a),
        Command::Pack(PackCommand::Bundle(a)) => bundle::bundle(&a),
        Command::Pack(PackCommand::Import(a)) => bundle::import(&a),
        Command::Pack(PackCommand::Mirror(bundle::MirrorCommand::Pull(a))) => bundle::mirror_pull(&a),
        Command::Pack(PackCommand::Plan(a)) => pack::plan(&a.pack, a.inputs.as_deref(), a.json),
        Command::Pack(PackCommand::Run(a)) => run::run(run::RunArgs {
            pack: &a.pack,
            inputs: a.inputs.as_deref(),
            secrets: a.secrets.as_deref(),
            events: a.events.as_deref(),
            dir: a.dir.as_deref(),
            resume: a.resume,
            approve_local: a.approve_local,
            max_steps: a.max_steps,
            kill_grace: a.kill_grace,
            sandbox: a.sandbox,
        }),
    }
}
