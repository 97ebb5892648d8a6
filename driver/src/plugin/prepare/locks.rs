//! One lock per key: per claim UID, so a claim's prepare and unprepare never overlap while different
//! claims run side by side; per pod sandbox id, so two events of one sandbox (a stop and a remove, a
//! `Synchronize` cleanup and a stop) never tear its network down twice at once. An entry lives only
//! while someone holds or waits for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

type KeyMutex = Arc<tokio::sync::Mutex<()>>;

/// The locks, by key.
#[derive(Default)]
pub(crate) struct KeyedLocks(Mutex<HashMap<String, KeyMutex>>);

/// A held lock; released (and its entry removed when nobody waits) on drop.
pub(crate) struct KeyedGuard<'a> {
    locks: &'a KeyedLocks,
    key: String,
    lock: Option<KeyMutex>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl KeyedLocks {
    fn map(&self) -> MutexGuard<'_, HashMap<String, KeyMutex>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for the lock of `key`.
    pub(crate) async fn lock(&self, key: &str) -> KeyedGuard<'_> {
        let lock = self.map().entry(key.to_owned()).or_default().clone();
        let guard = lock.clone().lock_owned().await;
        KeyedGuard {
            locks: self,
            key: key.to_owned(),
            lock: Some(lock),
            guard: Some(guard),
        }
    }

    /// How many keys have an entry (tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map().len()
    }
}

impl Drop for KeyedGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.locks.map();
        // Clones are made under the map lock: two owners (the map and this guard) means nobody
        // else holds or waits for it.
        if let Some(lock) = self.lock.take()
            && Arc::strong_count(&lock) == 2
        {
            map.remove(&self.key);
        }
    }
}
