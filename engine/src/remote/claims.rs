//! Claims (DESIGN section 9): `refs/stella/claims/<run-id>` on the remote names the runner that
//! executes a run. Created with a create-only push (atomic on the server), renewed with a push
//! leased on the claim this runner last wrote (so a runner that was paused past its lease learns
//! that another took the run over, instead of silently taking it back), and taken over only
//! when silent past the lease.

use std::time::{SystemTime, UNIX_EPOCH};

use super::{Error, Remote, git_err};
use crate::keys::SshKey;

/// The outcome of claiming a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This runner holds the claim (new, or already its own); `token` is the claim object it
    /// wrote, the lease for the next renewal.
    Won { token: String },
    /// This runner took over a claim whose runner has been silent past the lease.
    TakenOver { from: String, token: String },
    /// Another runner holds it, renewed `age_secs` ago.
    Lost { holder: String, age_secs: u64 },
}

/// The outcome of renewing a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    /// Still this runner's; the new token.
    Kept { token: String },
    /// Another runner took the run over: this runner must stop and write nothing more for it.
    Lost { holder: String },
}

/// A claim as read from its blob.
struct Held {
    holder: String,
    at: u64,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn parse(text: &str) -> Held {
    Held {
        holder: text
            .lines()
            .find_map(|l| l.strip_prefix("runner "))
            .unwrap_or("?")
            .to_string(),
        at: text
            .lines()
            .find_map(|l| l.strip_prefix("at "))
            .and_then(|t| t.parse().ok())
            .unwrap_or(0),
    }
}

impl Remote {
    fn claim_ref(run: &str) -> String {
        format!("refs/stella/claims/{run}")
    }

    /// The runner named by the claim on `run` as last fetched (`refs/stella/remote-claims/`).
    pub fn claim_holder(&self, run: &str) -> Option<String> {
        self.read_claim(&format!("refs/stella/remote-claims/{run}"))
            .ok()
            .flatten()
            .map(|(_, h)| h.holder)
    }

    fn read_claim(&self, local_ref: &str) -> Result<Option<(String, Held)>, Error> {
        let repo = self.repo()?;
        let Some(mut r) = repo.try_find_reference(local_ref).map_err(git_err)? else {
            return Ok(None);
        };
        let id = r.peel_to_id().map_err(git_err)?.detach();
        let blob = repo.find_object(id).map_err(git_err)?;
        Ok(Some((id.to_string(), parse(&String::from_utf8_lossy(&blob.data)))))
    }

    /// Fetches the claim on `run` from the remote: its object id and content, if any.
    fn fetch_claim(&self, run: &str) -> Result<Option<(String, Held)>, Error> {
        let local = format!("refs/stella/remote-claims/{run}");
        let spec = format!("+{}:{local}", Self::claim_ref(run));
        match self.git(&["fetch", "-q", "--no-tags", &self.name, &spec]) {
            Ok(_) => self.read_claim(&local),
            Err(e) => {
                // No such ref on the remote is an answer, not a failure.
                if self
                    .git(&["ls-remote", "--exit-code", &self.name, &Self::claim_ref(run)])
                    .is_err()
                    && self.git(&["ls-remote", &self.name, "HEAD"]).is_ok()
                {
                    return Ok(None);
                }
                Err(e)
            }
        }
    }

    /// Claims `run` for this runner (created only if absent, atomic on the server); takes over
    /// a claim silent for longer than the lease.
    pub fn claim(&self, run: &str, key: &SshKey) -> Result<Claim, Error> {
        let claim_ref = Self::claim_ref(run);
        let me = key.fingerprint();
        // As of the last fetch, another runner holds it and renewed it within the lease: no
        // need to ask the server (runners sharing a backlog would otherwise spend a push on
        // every run the others took).
        if let Ok(Some((_, held))) = self.read_claim(&format!("refs/stella/remote-claims/{run}"))
            && held.holder != me
        {
            let age = now_secs().saturating_sub(held.at);
            if age <= self.lease.as_secs() {
                return Ok(Claim::Lost {
                    holder: held.holder,
                    age_secs: age,
                });
            }
        }
        let blob = self.claim_blob(&me)?;
        if self.push_claim(&claim_ref, &blob, "")? {
            return Ok(Claim::Won { token: blob });
        }
        let Some((current, held)) = self.fetch_claim(run)? else {
            // Removed between our push and the read: try once more.
            return if self.push_claim(&claim_ref, &blob, "")? {
                Ok(Claim::Won { token: blob })
            } else {
                Ok(Claim::Lost {
                    holder: "?".into(),
                    age_secs: 0,
                })
            };
        };
        if held.holder == me {
            // Ours already (this runner restarted): renew it under the lease of what is there.
            return match self.renew(run, key, &current)? {
                Renewal::Kept { token } => Ok(Claim::Won { token }),
                Renewal::Lost { holder } => Ok(Claim::Lost { holder, age_secs: 0 }),
            };
        }
        let age = now_secs().saturating_sub(held.at);
        if age <= self.lease.as_secs() {
            return Ok(Claim::Lost {
                holder: held.holder,
                age_secs: age,
            });
        }
        if self.push_claim(&claim_ref, &blob, &current)? {
            Ok(Claim::TakenOver {
                from: held.holder,
                token: blob,
            })
        } else {
            Ok(Claim::Lost {
                holder: held.holder,
                age_secs: 0,
            })
        }
    }

    /// Renews this runner's claim on `run`, leased on `token` (the claim object this runner
    /// last wrote): if the claim changed hands meanwhile, says so and writes nothing.
    pub fn renew(&self, run: &str, key: &SshKey, token: &str) -> Result<Renewal, Error> {
        let claim_ref = Self::claim_ref(run);
        let me = key.fingerprint();
        let blob = self.claim_blob(&me)?;
        if self.push_claim(&claim_ref, &blob, token)? {
            return Ok(Renewal::Kept { token: blob });
        }
        match self.fetch_claim(run)? {
            Some((current, held)) if held.holder == me => {
                // Still ours (an earlier renewal landed though its answer was lost).
                if self.push_claim(&claim_ref, &blob, &current)? {
                    Ok(Renewal::Kept { token: blob })
                } else {
                    Err(Error::ClaimContended(run.to_string()))
                }
            }
            Some((_, held)) => Ok(Renewal::Lost { holder: held.holder }),
            None => Ok(Renewal::Lost {
                holder: "nobody (the claim was removed)".into(),
            }),
        }
    }

    /// Gives up this runner's claim on `run` (leased on `token`: a claim that changed hands is
    /// left alone). For a run waiting at a gate, whose events are on the remote: the next
    /// runner to carry it on claims it afresh.
    pub fn release(&self, run: &str, token: &str) -> Result<(), Error> {
        let claim_ref = Self::claim_ref(run);
        let lease = format!("--force-with-lease={claim_ref}:{token}");
        self.git(&["push", "-q", &lease, &self.name, &format!(":{claim_ref}")])
            .map(|_| ())
    }

    /// Pushes `blob` to `claim_ref` leased on `expected` (empty: the ref must not exist).
    /// Ok(false) when the lease did not hold; Err when the remote could not be reached.
    fn push_claim(&self, claim_ref: &str, blob: &str, expected: &str) -> Result<bool, Error> {
        let lease = format!("--force-with-lease={claim_ref}:{expected}");
        match self.git(&["push", &lease, &self.name, &format!("{blob}:{claim_ref}")]) {
            Ok(_) => Ok(true),
            Err(Error::Cli(e))
                if e.stderr()
                    .is_some_and(|s| s.contains("stale info") || s.contains("rejected")) =>
            {
                Ok(false)
            }
            // Refused (a token that may read but not write) or unreachable: no answer on the lease.
            Err(e @ Error::Transport { .. }) => Err(e),
            Err(e) => {
                // Some servers word a lease failure differently: tell it apart from an
                // unreachable remote by asking the remote.
                if self.git(&["ls-remote", &self.name, claim_ref]).is_ok() {
                    Ok(false)
                } else {
                    Err(e)
                }
            }
        }
    }

    fn claim_blob(&self, me: &str) -> Result<String, Error> {
        let content = format!("runner {me}\nat {}\n", now_secs());
        let repo = self.repo()?;
        Ok(repo
            .write_blob(content.as_bytes())
            .map_err(git_err)?
            .detach()
            .to_string())
    }
}
