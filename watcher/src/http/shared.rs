//! What every handler of the HTTP edge shares: the repository it reads, the token it asks
//! for, and the follower's broadcast the streams subscribe to. Holds no request state.

use std::sync::Arc;

use super::hub::Hub;
use super::source::Source;

#[derive(Clone)]
pub struct Shared {
    pub source: Arc<Source>,
    /// SHA-256 of the bearer token, when one is required.
    pub token: Option<Arc<[u8; 32]>>,
    pub hub: Hub,
    /// The metrics and health the probes serve: the daemon's, or `serve`'s own.
    pub telemetry: Arc<crate::telemetry::Telemetry>,
    /// No daemon scans for this server (`stella serve`): the probes read the branch themselves.
    pub rescan: bool,
}
