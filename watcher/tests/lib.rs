//! End-to-end tests of the `stella` binary: one binary, one module per story.

mod remote;
mod repo_support;
mod support;
mod sync;

mod approvals;
mod chaos;
mod daemon;
mod evidence;
mod invalid_runs;
mod output;
mod pack_cli;
mod run_local;
mod sandbox;
mod worktree;
