//! Compiling a pack's JSON Schema files (draft 2020-12): what `inputs` validates against and
//! what the manifest check proves compiles. Reads only the pack's files in memory; never
//! fetches a remote or local `$ref`.

use serde_json::Value as Json;

use crate::pack::{PackFiles, normalise};

/// Why a schema file named by a pack cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("schema path `{0}` leaves the pack directory")]
    LeavesPack(String),
    #[error("schema file `{0}` not found in the pack")]
    NotFound(String),
    #[error("schema file `{0}` is not valid JSON: {1}")]
    NotJson(String, serde_json::Error),
    #[error("schema file `{0}` is not a valid JSON Schema: {1}")]
    NotSchema(String, String),
}

/// Compiles a JSON Schema file of the pack as draft 2020-12.
pub fn compile(files: &PackFiles, path: &str) -> Result<jsonschema::Validator, Error> {
    let Some(norm) = normalise(path) else {
        return Err(Error::LeavesPack(path.to_string()));
    };
    let Some(bytes) = files.get(&norm) else {
        return Err(Error::NotFound(path.to_string()));
    };
    let schema: Json = serde_json::from_slice(bytes).map_err(|e| Error::NotJson(path.to_string(), e))?;
    jsonschema::draft202012::new(&schema).map_err(|e| Error::NotSchema(path.to_string(), e.to_string()))
}
