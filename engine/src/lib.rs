//! Stella's engine: everything that decides what a run is, with no async runtime and no
//! file watching. This crate parses packs, checks them, resolves inputs and builds the
//! hashed plan; later modules execute plans and keep the git ledger.

pub mod code;
pub mod diag;
pub mod duration;
pub mod expr;
pub mod yaml;

pub use code::Code;
pub use diag::{Diagnostic, Diagnostics, Pos};
