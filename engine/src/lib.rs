//! Stella's engine: everything that decides what a run is, with no async runtime and no
//! file watching. This crate parses packs, checks them, resolves inputs and builds the
//! hashed plan; later modules execute plans and keep the git ledger.

pub mod approvals;
pub mod bundle;
pub mod canonical;
pub mod chaos;
pub mod code;
pub mod config;
pub mod diag;
pub mod duration;
pub mod event;
pub mod evidence;
pub mod exec;
pub mod expr;
pub mod git_cli;
pub mod yaml;

pub use code::Code;
pub use diag::{Diagnostic, Diagnostics, Pos};
pub mod allowed_signers;
pub mod inputs;
pub mod journal;
pub mod keys;
pub mod layout;
pub mod ledger;
pub mod manifest;
pub mod notify;
pub mod pack;
pub mod plan;
pub mod redact;
pub mod rego;
pub mod remote;
pub mod request;
pub mod run_id;
pub mod runs;
pub mod schedule;
pub mod schema;
pub mod secrets;
pub mod sshsig;
pub mod state;
pub mod sync;
