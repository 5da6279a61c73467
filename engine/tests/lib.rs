//! Engine integration tests: every example pack, invalid packs, hostile inputs, plan hash
//! properties, golden plans and what the fuzz targets found. One binary, one module per story.

mod golden_file;
mod support;
mod tidy;

mod examples;
mod fuzz_regressions;
mod hash_properties;
mod invalid_inputs;
mod invalid_packs;
mod key_defence;
mod ledger_branch;
mod ledger_index;
mod ssh_interop;
