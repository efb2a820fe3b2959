//! A gate between the relay's claims and maintenance that needs a moment
//! with no claim transaction open: dropping a partition takes an ACCESS
//! EXCLUSIVE lock on the outbox table, which waits for every open claim (and
//! makes new ones queue behind it). Under load claims overlap without a gap,
//! so the drop would never get its lock.
//!
//! Guarantees: a claim holds a [`Pass`] from before its transaction opens
//! until the batch ends; [`ClaimGate::close`] waits for the passes out and
//! lets no new claim in until the returned guard is dropped (tokio's lock is
//! fair: a waiting `close` goes before later claims).

use std::sync::Arc;

use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

#[derive(Debug, Clone, Default)]
pub struct ClaimGate {
    lock: Arc<RwLock<()>>,
}

/// Held by one claim for its life.
pub type Pass = OwnedRwLockReadGuard<()>;

/// Held by maintenance while no claim may be open.
pub type Closed = OwnedRwLockWriteGuard<()>;

impl ClaimGate {
    /// Wait until the gate is open and take a pass.
    pub async fn enter(&self) -> Pass {
        Arc::clone(&self.lock).read_owned().await
    }

    /// Wait for every open claim to end; no claim starts until the guard
    /// is dropped.
    pub async fn close(&self) -> Closed {
        Arc::clone(&self.lock).write_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn closing_waits_for_open_claims_and_holds_new_ones() {
        let gate = ClaimGate::default();
        let pass = gate.enter().await;
        let closing = tokio::spawn({
            let gate = gate.clone();
            async move { gate.close().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!closing.is_finished(), "closed while a claim was open");
        // A claim that comes after the close waits behind it.
        let later = tokio::spawn({
            let gate = gate.clone();
            async move { gate.enter().await }
        });
        drop(pass);
        let closed = closing.await.expect("close");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!later.is_finished(), "a claim started while closed");
        drop(closed);
        later.await.expect("enter");
    }
}
