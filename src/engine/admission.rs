//! Fair admission of requests: one owner's load must never hold up another's.
//!
//! - Reads (list, status, logs) take a permit of their owner (at most
//!   [`READS_PER_OWNER`] at once), then one of the daemon's
//!   [`READS_TOTAL`]: an owner flooding the daemon waits behind its own
//!   requests and holds at most a third of the shared permits.
//! - Commands (`exec`, the agent's `run_command`) run for up to minutes, so
//!   they hold no read permit at all: each owner may run
//!   [`EXECS_PER_OWNER`] at once, the daemon [`EXECS_TOTAL`]; beyond that a
//!   command is refused at once (`Busy`), never queued for minutes.
//!
//! Admin calls (scope `All`) count as one owner of their own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{EngineError, Scope};

/// Read requests served at once: 12 × at most ~8 concurrent bus calls each
/// stays well below the bus's 128 pending replies, leaving room for the
/// operations running alongside.
pub const READS_TOTAL: usize = 12;
/// Of those, at most this many for one owner.
pub const READS_PER_OWNER: usize = 4;
/// Commands running in containers at once, per owner and in all.
pub const EXECS_PER_OWNER: usize = 4;
pub const EXECS_TOTAL: usize = 32;

/// Held while a request runs.
pub struct Permit {
    _owner: OwnedSemaphorePermit,
    _total: OwnedSemaphorePermit,
}

struct Pool {
    total: Arc<Semaphore>,
    per_owner: usize,
    owners: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Pool {
    fn new(total: usize, per_owner: usize) -> Self {
        Pool {
            total: Arc::new(Semaphore::new(total)),
            per_owner,
            owners: Mutex::new(HashMap::new()),
        }
    }

    fn of(&self, key: &str) -> Arc<Semaphore> {
        let mut owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        // Owners with nothing running or waiting are forgotten.
        owners.retain(|_, s| Arc::strong_count(s) > 1 || s.available_permits() < self.per_owner);
        owners
            .entry(key.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_owner)))
            .clone()
    }
}

pub struct Admission {
    reads: Pool,
    execs: Pool,
}

fn key(scope: &Scope) -> String {
    match scope {
        Scope::All => "\0admin".into(),
        Scope::Owner(o) => o.as_str().to_string(),
    }
}

fn closed() -> EngineError {
    EngineError::HostError("the daemon is shutting down".into())
}

impl Admission {
    pub fn new() -> Self {
        Admission {
            reads: Pool::new(READS_TOTAL, READS_PER_OWNER),
            execs: Pool::new(EXECS_TOTAL, EXECS_PER_OWNER),
        }
    }

    /// Waits for a read permit: first the owner's, then a shared one.
    pub async fn read(&self, scope: &Scope) -> Result<Permit, EngineError> {
        let owner = self
            .reads
            .of(&key(scope))
            .acquire_owned()
            .await
            .map_err(|_| closed())?;
        let total = self
            .reads
            .total
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| closed())?;
        Ok(Permit {
            _owner: owner,
            _total: total,
        })
    }

    /// A permit to run a command, or `Busy` at once.
    pub fn exec(&self, scope: &Scope) -> Result<Permit, EngineError> {
        let owner = self
            .execs
            .of(&key(scope))
            .try_acquire_owned()
            .map_err(|_| {
                EngineError::Busy(format!(
                    "{EXECS_PER_OWNER} of your commands are running already; wait for one to finish"
                ))
            })?;
        let total = self.execs.total.clone().try_acquire_owned().map_err(|_| {
            EngineError::Busy(
                "the server runs as many commands as it takes right now; try again in a moment"
                    .into(),
            )
        })?;
        Ok(Permit {
            _owner: owner,
            _total: total,
        })
    }
}

impl Default for Admission {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Owner;

    fn owner(s: &str) -> Scope {
        Scope::Owner(Owner::parse(s).unwrap())
    }

    #[tokio::test]
    async fn one_owner_cannot_take_every_read_permit() {
        let a = Admission::new();
        let mut held = Vec::new();
        for _ in 0..READS_PER_OWNER {
            held.push(a.read(&owner("telegram:1")).await.unwrap());
        }
        // A's next read waits behind its own...
        let more = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            a.read(&owner("telegram:1")),
        )
        .await;
        assert!(more.is_err(), "a fifth read of one owner was let in");
        // ... while everyone else still gets in.
        for i in 2..=((READS_TOTAL - READS_PER_OWNER) / READS_PER_OWNER + 1) {
            let o = owner(&format!("telegram:{i}"));
            for _ in 0..READS_PER_OWNER {
                held.push(a.read(&o).await.unwrap());
            }
        }
        assert_eq!(held.len(), READS_TOTAL);
        drop(held);
        assert!(a.read(&owner("telegram:1")).await.is_ok());
    }

    #[tokio::test]
    async fn commands_are_refused_not_queued_past_the_owners_share() {
        let a = Admission::new();
        let held: Vec<Permit> = (0..EXECS_PER_OWNER)
            .map(|_| a.exec(&owner("telegram:1")).unwrap())
            .collect();
        assert!(matches!(
            a.exec(&owner("telegram:1")),
            Err(EngineError::Busy(_))
        ));
        // Another owner, and reads of the same owner, are unaffected.
        assert!(a.exec(&owner("telegram:2")).is_ok());
        assert!(a.read(&owner("telegram:1")).await.is_ok());
        drop(held);
        assert!(a.exec(&owner("telegram:1")).is_ok());
        // Owners with nothing running are forgotten.
        assert!(a.execs.owners.lock().unwrap().len() <= 2);
    }
}
