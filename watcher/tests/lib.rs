//! End-to-end tests of the `stella` binary: one binary, one module per story, told with
//! `support`.

#[path = "../../engine/tests/golden_file.rs"]
mod golden_file;
mod support;

mod approvals;
mod audit;
mod bundles;
mod chaos;
mod daemon;
mod evidence;
mod golden;
mod housekeeping;
mod http;
mod invalid_runs;
mod layout;
mod ledger_branch;
mod notify;
mod output;
mod pack_cli;
mod policies;
mod remote;
mod requested;
mod resume;
mod run_local;
mod runs_index;
mod sandbox;
mod schedules;
mod secret_sources;
mod sync;
mod tampering;
mod transports;
mod workspace;
mod worktree;
