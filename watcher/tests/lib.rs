//! End-to-end tests of the `stella` binary: one binary, one module per story.

mod support;

mod pack_cli;
mod run_local;
