//! One lock per claim UID, so a claim's prepare and unprepare never overlap while different claims
//! run side by side; an entry lives only while someone holds or waits for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

type ClaimMutex = Arc<tokio::sync::Mutex<()>>;

/// The claim locks.
#[derive(Default)]
pub(super) struct ClaimLocks(Mutex<HashMap<String, ClaimMutex>>);

/// A held claim lock; released (and its entry removed when nobody waits) on drop.
pub(super) struct ClaimGuard<'a> {
    locks: &'a ClaimLocks,
    uid: String,
    lock: Option<ClaimMutex>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl ClaimLocks {
    fn map(&self) -> MutexGuard<'_, HashMap<String, ClaimMutex>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for the lock of `uid`.
    pub(super) async fn lock(&self, uid: &str) -> ClaimGuard<'_> {
        let lock = self.map().entry(uid.to_owned()).or_default().clone();
        let guard = lock.clone().lock_owned().await;
        ClaimGuard {
            locks: self,
            uid: uid.to_owned(),
            lock: Some(lock),
            guard: Some(guard),
        }
    }

    /// How many claims have an entry (tests).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.map().len()
    }
}

impl Drop for ClaimGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.locks.map();
        // Clones are made under the map lock: two owners (the map and this guard) means nobody
        // else holds or waits for it.
        if let Some(lock) = self.lock.take()
            && Arc::strong_count(&lock) == 2
        {
            map.remove(&self.uid);
        }
    }
}
