//! Engine integration tests: every example pack, invalid packs, hostile inputs, plan hash
//! properties and golden plans. One binary, one module per story.

mod support;

mod examples;
mod hash_properties;
mod invalid_inputs;
mod invalid_packs;
mod key_defence;
mod ssh_interop;
